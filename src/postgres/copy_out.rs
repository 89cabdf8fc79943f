//! `COPY ... TO STDOUT`: a reporting query's rows written as Postgres's `COPY` writes them,
//! one `CopyData` per line, in text or CSV form, with the escaping and quoting of
//! `CopyAttributeOutText` and `CopyAttributeOutCSV`.

use super::cells::cell_text;
use crate::query::value::Cell;
use crate::schema::decode::copy::{CopyFormat, CopyKind};

/// One row as a line of `format`.
pub fn line(row: &[Cell], format: &CopyFormat) -> Vec<u8> {
    let values: Vec<_> = row.iter().map(cell_text).collect();
    let single = values.len() == 1;
    fields_line(values.iter().map(Option::as_deref), format, single)
}

/// The header line of `names` (`HEADER`).
pub fn header(names: &[&str], format: &CopyFormat) -> Vec<u8> {
    let single = names.len() == 1;
    fields_line(names.iter().map(|name| Some(*name)), format, single)
}

fn fields_line<'a>(
    fields: impl Iterator<Item = Option<&'a str>>,
    format: &CopyFormat,
    single: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(format.delimiter);
        }
        match field {
            None => out.extend_from_slice(format.null.as_bytes()),
            Some(value) if format.kind == CopyKind::Csv => csv_field(value, format, single, &mut out),
            Some(value) => text_field(value, format.delimiter, &mut out),
        }
    }
    out.push(b'\n');
    out
}

/// A value in text form: backslash, the control characters Postgres names and the delimiter
/// escaped with a backslash.
fn text_field(value: &str, delimiter: u8, out: &mut Vec<u8>) {
    for &byte in value.as_bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0b => out.extend_from_slice(b"\\v"),
            b if b == delimiter => out.extend_from_slice(&[b'\\', b]),
            b => out.push(b),
        }
    }
}

/// A value in CSV form: quoted when it could be read back otherwise (it holds the delimiter,
/// the quote, a line break, spells the null string, or is a lone `\.` in a one-column row),
/// with the quote and escape characters inside escaped.
fn csv_field(value: &str, format: &CopyFormat, single: bool, out: &mut Vec<u8>) {
    let needs_quotes = value == format.null
        || (single && value == "\\.")
        || value
            .bytes()
            .any(|b| b == format.delimiter || b == format.quote || b == b'\n' || b == b'\r');
    if !needs_quotes {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(format.quote);
    for &byte in value.as_bytes() {
        if byte == format.quote || byte == format.escape {
            out.push(format.escape);
        }
        out.push(byte);
    }
    out.push(format.quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_as_postgres_copy_writes_them() {
        let row = [
            Cell::Text("a\tb\\c\nd".into()),
            Cell::Null,
            Cell::Text(String::new()),
            Cell::Text("say \"hi\", x".into()),
            Cell::Int(7),
        ];
        assert_eq!(
            String::from_utf8(line(&row, &CopyFormat::new(CopyKind::Text))).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t\tsay \"hi\", x\t7\n"
        );
        assert_eq!(
            String::from_utf8(line(&row, &CopyFormat::new(CopyKind::Csv))).unwrap(),
            "\"a\tb\\c\nd\",,\"\",\"say \"\"hi\"\", x\",7\n"
        );
        assert_eq!(
            String::from_utf8(header(&["id", "a,b"], &CopyFormat::new(CopyKind::Csv))).unwrap(),
            "id,\"a,b\"\n"
        );
    }
}
