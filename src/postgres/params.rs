//! A reporting query's parameters as a client binds them, in text or binary form, turned into
//! the JSON values the query engine takes (the parameters of `POST /v1/query`): each is read
//! as the type the shards infer for it, so a key pinned by a parameter is hashed as the key's
//! type, exactly as a JSON parameter would be. One-dimensional arrays (`= ANY($1)`) become
//! JSON arrays.

use super::errors::{FEATURE_NOT_SUPPORTED, refused};
use super::insert::Parameters;
use super::types::binary_as_text;
use crate::pgtype::sqlstate::{CHARACTER_NOT_IN_REPERTOIRE, INVALID_TEXT_REPRESENTATION};
use crate::pgtype::{encode_text, json_of_binary};
use crate::query::value::ResultType;
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use serde_json::Value;
use tokio_postgres::types::Kind;

/// A parameter in text form: one value, or an array's elements (`None` for NULL).
enum Texts {
    One(String),
    Array(Vec<Option<String>>),
}

/// The JSON value of every parameter the statement takes; `inferred` holds the types the
/// shards give them (`None` for one they never see, such as LIMIT's).
pub fn json_parameters(parameters: &Parameters<'_>, inferred: &[Option<Type>]) -> PgWireResult<Vec<Value>> {
    if parameters.values.len() < inferred.len() {
        return Err(refused(
            "08P01",
            format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                parameters.values.len(),
                inferred.len()
            ),
        ));
    }
    (0..inferred.len())
        .map(|i| {
            let Some(bytes) = &parameters.values[i] else {
                return Ok(Value::Null);
            };
            let declared = parameters
                .types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN);
            let texts = if parameters.format.is_binary(i) {
                // Sent as the type the client declared, else as the one it was described.
                let sent_as = declared
                    .clone()
                    .or_else(|| inferred[i].clone())
                    .unwrap_or(Type::INT8);
                binary_texts(bytes, &sent_as, i)?
            } else {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    refused(
                        CHARACTER_NOT_IN_REPERTOIRE,
                        "invalid byte sequence for encoding \"UTF8\"",
                    )
                })?;
                match inferred[i].as_ref().or(declared.as_ref()).map(Type::kind) {
                    Some(Kind::Array(_)) => Texts::Array(array_elements(text, i)?),
                    _ => Texts::One(text.to_string()),
                }
            };
            json_of_texts(texts, inferred[i].as_ref().or(declared.as_ref()), i)
        })
        .collect()
}

/// A binary parameter of type `ty` in text form.
fn binary_texts(bytes: &[u8], ty: &Type, index: usize) -> PgWireResult<Texts> {
    let unread = || {
        refused(
            FEATURE_NOT_SUPPORTED,
            format!(
                "parameter ${} is of type {} in binary form, which shardgate does not read; send it as text",
                index + 1,
                ty.name()
            ),
        )
    };
    match ty.kind() {
        Kind::Array(element) => {
            let elements = binary_array_elements(bytes).ok_or_else(|| malformed(index))?;
            let texts = elements
                .into_iter()
                .map(|e| {
                    e.map(|e| binary_as_text(e, element).ok_or_else(unread))
                        .transpose()
                })
                .collect::<PgWireResult<_>>()?;
            Ok(Texts::Array(texts))
        }
        _ => binary_as_text(bytes, ty).map(Texts::One).ok_or_else(unread),
    }
}

/// The elements of a one-dimensional array in Postgres's binary form: the number of
/// dimensions, a null flag, the element type, each dimension's length and lower bound, then
/// each element's length (-1 for NULL) and bytes.
fn binary_array_elements(bytes: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let word = |at: usize| Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let dimensions = word(0)?;
    if dimensions == 0 {
        return Some(Vec::new());
    }
    if dimensions != 1 {
        return None;
    }
    let count = usize::try_from(word(12)?).ok()?;
    let mut at = 20;
    let mut elements = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = word(at)?;
        at += 4;
        if len < 0 {
            elements.push(None);
            continue;
        }
        let end = at + usize::try_from(len).ok()?;
        elements.push(Some(bytes.get(at..end)?));
        at = end;
    }
    (at == bytes.len()).then_some(elements)
}

/// The elements of a one-dimensional array in Postgres's text form, `{a,"b c",NULL}`.
fn array_elements(text: &str, index: usize) -> PgWireResult<Vec<Option<String>>> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| malformed(index))?;
    let mut elements = Vec::new();
    if inner.trim().is_empty() {
        return Ok(elements);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let (element, quoted) = match chars.peek() {
            Some('"') => {
                chars.next();
                let mut element = String::new();
                loop {
                    match chars.next().ok_or_else(|| malformed(index))? {
                        '"' => break,
                        '\\' => element.push(chars.next().ok_or_else(|| malformed(index))?),
                        c => element.push(c),
                    }
                }
                (element, true)
            }
            Some('{') => return Err(malformed(index)),
            _ => {
                let mut element = String::new();
                while let Some(c) = chars.next_if(|&c| c != ',') {
                    element.push(c);
                }
                (element.trim_end().to_string(), false)
            }
        };
        if !quoted && element.is_empty() {
            return Err(malformed(index));
        }
        elements.push((quoted || !element.eq_ignore_ascii_case("NULL")).then_some(element));
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(_) => return Err(malformed(index)),
        }
    }
    Ok(elements)
}

fn malformed(index: usize) -> PgWireError {
    refused(
        INVALID_TEXT_REPRESENTATION,
        format!("parameter ${} is not a one-dimensional array", index + 1),
    )
}

/// A parameter's text read as `ty`: through the column type's binary form when it is one, as
/// a number for `numeric`, element by element for an array, and, for a parameter no shard
/// types (LIMIT's), as an integer when it is one, else as a string.
fn json_of_texts(texts: Texts, ty: Option<&Type>, index: usize) -> PgWireResult<Value> {
    match (texts, ty.map(Type::kind)) {
        (Texts::Array(elements), Some(Kind::Array(element))) => elements
            .iter()
            .map(|e| {
                e.as_deref()
                    .map_or(Ok(Value::Null), |e| json_of_text(e, Some(element), index))
            })
            .collect::<PgWireResult<Vec<_>>>()
            .map(Value::Array),
        (Texts::Array(_), _) => Err(refused(
            "42804",
            format!("parameter ${} is an array where none is expected", index + 1),
        )),
        (Texts::One(text), _) => json_of_text(&text, ty, index),
    }
}

fn json_of_text(text: &str, ty: Option<&Type>, index: usize) -> PgWireResult<Value> {
    let Some(ty) = ty else {
        return Ok(text
            .parse::<i64>()
            .map_or_else(|_| Value::from(text), Value::from));
    };
    let invalid = |message: String| refused(INVALID_TEXT_REPRESENTATION, message);
    match ResultType::of(ty) {
        Some(ResultType::Column(column)) => {
            let mut binary = Vec::new();
            encode_text(column, text, &mut binary).map_err(|e| refused(e.sqlstate, e.message))?;
            json_of_binary(column, &binary).map_err(|e| invalid(format!("parameter ${}: {e}", index + 1)))
        }
        Some(ResultType::Numeric) => serde_json::from_str::<serde_json::Number>(text.trim())
            .map(Value::Number)
            .map_err(|_| invalid(format!("invalid input syntax for type numeric: \"{text}\""))),
        None => Err(refused(
            FEATURE_NOT_SUPPORTED,
            format!(
                "parameter ${} has type {}, which queries over this listener do not take yet",
                index + 1,
                ty.name()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_arrays_are_read_as_postgres_writes_them() {
        let read = |text: &str| array_elements(text, 0).map_err(|e| e.to_string());
        let some = |s: &str| Some(s.to_string());
        assert_eq!(read("{}").unwrap(), Vec::<Option<String>>::new());
        assert_eq!(read("{1,2,3}").unwrap(), vec![some("1"), some("2"), some("3")]);
        assert_eq!(
            read(r#"{ a , "b c","NULL",NULL,"x\"y\\z"}"#).unwrap(),
            vec![some("a"), some("b c"), some("NULL"), None, some("x\"y\\z")]
        );
        assert!(read("{a,}").is_err());
        assert!(read(r#"{"a"b}"#).is_err());
        assert!(read("{{1},{2}}").is_err());
        assert!(read("1,2").is_err());
        assert!(read("{\"open}").is_err());
    }

    #[test]
    fn binary_arrays_are_split_into_their_elements() {
        let mut bytes = Vec::new();
        for word in [1i32, 1, 20, 3, 1] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes.extend_from_slice(&8i32.to_be_bytes());
        bytes.extend_from_slice(&7i64.to_be_bytes());
        bytes.extend_from_slice(&(-1i32).to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        let seven = 7i64.to_be_bytes();
        assert_eq!(
            binary_array_elements(&bytes),
            Some(vec![Some(&seven[..]), None, Some(&[][..])])
        );
        assert_eq!(
            binary_array_elements(&bytes[..bytes.len() - 5]),
            None,
            "truncated"
        );
        assert_eq!(binary_array_elements(&0i32.to_be_bytes()), Some(Vec::new()));
    }
}
