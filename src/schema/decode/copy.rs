//! `COPY ... FROM STDIN` data in text or CSV format as a source of rows: each record is split
//! into its fields as Postgres splits it, each field read in Postgres's text form for its
//! column, and the row handed to the same row encoder as the JSON sources (validation,
//! defaults, placement, hot-key sampling). A front end cuts the stream into chunks of whole
//! records ([`CopyFormat::record_end`]) and decodes each with [`decode_copy`].

use super::{DecodeError, EncodedRows, RowEncoder, Slot};
use crate::pgtype::{check_binary, encode_text, sqlstate};
use crate::routing::{KeyHash, RoutingTable};
use crate::schema::TableSchema;

/// The two textual COPY formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// Postgres's text format: tab-separated, backslash escapes, `\N` for null.
    Text,
    /// CSV: quoted fields, an unquoted empty field for null.
    Csv,
    /// Postgres's binary format: after a signature, each tuple a field count, then each field
    /// its length (-1 for null) and its binary value.
    Binary,
}

/// The binary format's signature, which its 19-byte header starts with.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The length of the binary format's header at the start of `data` (signature, flags, header
/// extension), `None` while it has not all arrived, or why it is not one.
pub fn binary_header_len(data: &[u8]) -> Result<Option<usize>, String> {
    let signature_len = BINARY_SIGNATURE.len().min(data.len());
    if data[..signature_len] != BINARY_SIGNATURE[..signature_len] {
        return Err("COPY file signature not recognized".into());
    }
    let Some(extension) = data.get(15..19) else {
        return Ok(None);
    };
    let extension = u32::from_be_bytes(extension.try_into().expect("four bytes")) as usize;
    Ok((data.len() >= 19 + extension).then_some(19 + extension))
}

/// Where the binary tuple (or the trailer, a field count of -1) at the start of `data` ends.
fn binary_tuple_end(data: &[u8]) -> Option<usize> {
    let count = i16::from_be_bytes(data.get(..2)?.try_into().ok()?);
    let mut at = 2;
    for _ in 0..count.max(0) {
        let len = i32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?);
        at += 4 + usize::try_from(len).unwrap_or(0);
        if at > data.len() {
            return None;
        }
    }
    Some(at)
}

/// How a COPY stream spells its records, with the options of the `COPY` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// Text or CSV.
    pub kind: CopyKind,
    /// Between fields (`DELIMITER`): a tab for text, a comma for CSV.
    pub delimiter: u8,
    /// The spelling of a null (`NULL`): `\N` for text, the empty string for CSV.
    pub null: String,
    /// CSV's quote character (`QUOTE`).
    pub quote: u8,
    /// CSV's escape character inside quotes (`ESCAPE`), the quote itself by default.
    pub escape: u8,
}

impl CopyFormat {
    /// The defaults of `kind`, as Postgres has them.
    pub fn new(kind: CopyKind) -> CopyFormat {
        let (delimiter, null) = match kind {
            CopyKind::Text | CopyKind::Binary => (b'\t', "\\N"),
            CopyKind::Csv => (b',', ""),
        };
        CopyFormat {
            kind,
            delimiter,
            null: null.to_string(),
            quote: b'"',
            escape: b'"',
        }
    }

    /// Where the first record of `data` ends (one past its newline), if it ends in `data`.
    /// `state` carries the scan over calls, so a stream is scanned once as it grows.
    pub fn record_end(&self, data: &[u8], state: &mut RecordScan) -> Option<usize> {
        if self.kind == CopyKind::Binary {
            return binary_tuple_end(data);
        }
        loop {
            let rest = data.get(state.at..)?;
            let found = match (self.kind, state.quoted) {
                (CopyKind::Csv, false) => memchr::memchr2(b'\n', self.quote, rest),
                (CopyKind::Csv, true) => memchr::memchr2(self.quote, self.escape, rest),
                _ => memchr::memchr2(b'\n', b'\\', rest),
            };
            let Some(offset) = found else {
                state.at = data.len();
                return None;
            };
            let at = state.at + offset;
            let byte = data[at];
            state.at = at + 1;
            match self.kind {
                CopyKind::Csv if state.quoted && byte == self.escape && self.escape != self.quote => {
                    // The escaped character may be in the next message: step over it then.
                    if at + 1 >= data.len() {
                        state.at = at;
                        return None;
                    }
                    state.at = at + 2;
                }
                CopyKind::Csv if byte == self.quote => state.quoted = !state.quoted,
                CopyKind::Text if byte == b'\\' => {
                    if at + 1 >= data.len() {
                        state.at = at;
                        return None;
                    }
                    state.at = at + 2;
                }
                _ => {
                    *state = RecordScan::default();
                    return Some(at + 1);
                }
            }
        }
    }
}

/// How far a record's end has been looked for, and in what state the scan stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordScan {
    at: usize,
    quoted: bool,
}

/// A record the stream could not be split into fields, or whose fields do not match the
/// columns; Postgres words these as `COPY` errors (`22P04`).
fn bad_record(encoder: &mut RowEncoder<'_>, column: Option<usize>, reason: String) {
    encoder.fail(column, sqlstate::BAD_COPY_FILE_FORMAT, reason);
}

/// Decodes `data`, whole records of a COPY stream in `format`, for `table`: the fields of each
/// record fill `columns` (indexes of the table's columns, in the stream's order), the other
/// columns take their defaults, and each row is routed with `routing`. A record that is `\.`
/// ends the data. `now_micros` and `limited` are as for [`super::decode_rows`].
pub fn decode_copy(
    table: &TableSchema,
    routing: &RoutingTable,
    format: &CopyFormat,
    columns: &[usize],
    data: &[u8],
    now_micros: i64,
    limited: &[KeyHash],
) -> Result<EncodedRows, DecodeError> {
    let mut encoder = RowEncoder::new(table, routing, now_micros, limited, data.len());
    if format.kind == CopyKind::Binary {
        decode_binary(&mut encoder, columns, data);
        return encoder.finish();
    }
    let mut fields = Fields::default();
    for record in records(data, format) {
        if record == b"\\." {
            break;
        }
        encoder.begin_row();
        // Binary data went to decode_binary above: the records here are text or CSV.
        let split = if format.kind == CopyKind::Csv {
            fields.split_csv(record, format)
        } else {
            fields.split_text(record, format)
        };
        match split {
            Ok(()) => fill_row(&mut encoder, columns, &fields),
            Err(reason) => bad_record(&mut encoder, None, reason),
        }
        encoder.finish_row();
        if encoder.error_total > 0 {
            break;
        }
    }
    encoder.finish()
}

/// Decodes binary tuples, up to the trailer: each field's bytes are checked to be a value of
/// its column's type in binary form, and are then its binary COPY field as they are.
fn decode_binary(encoder: &mut RowEncoder<'_>, columns: &[usize], data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        encoder.begin_row();
        let Some(end) = binary_tuple_end(rest) else {
            bad_record(encoder, None, "unexpected EOF in COPY data".into());
            return encoder.finish_row();
        };
        let (tuple, after) = rest.split_at(end);
        rest = after;
        let count = i16::from_be_bytes([tuple[0], tuple[1]]);
        if count == -1 {
            return;
        }
        if usize::try_from(count).ok() != Some(columns.len()) {
            let reason = format!("row field count is {count}, expected {}", columns.len());
            bad_record(encoder, None, reason);
        } else {
            let mut at = 2;
            for &column in columns {
                let len = i32::from_be_bytes(tuple[at..at + 4].try_into().expect("four bytes"));
                at += 4;
                match usize::try_from(len) {
                    Ok(len) => {
                        encoder.put_binary(column, &tuple[at..at + len]);
                        at += len;
                    }
                    Err(_) => encoder.slots[column] = Slot::Null,
                }
            }
        }
        encoder.finish_row();
        if encoder.error_total > 0 {
            return;
        }
    }
}

/// The records of `data`, each without its line ending (`\n` or `\r\n`); a last record
/// without a line ending is a record too.
fn records<'d>(data: &'d [u8], format: &'d CopyFormat) -> impl Iterator<Item = &'d [u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = format
            .record_end(rest, &mut RecordScan::default())
            .unwrap_or(rest.len());
        let (record, after) = rest.split_at(end);
        rest = after;
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        Some(record.strip_suffix(b"\r").unwrap_or(record))
    })
}

/// Hands one record's fields to the encoder as the values of `columns`.
fn fill_row(encoder: &mut RowEncoder<'_>, columns: &[usize], fields: &Fields) {
    let given = fields.len();
    if given < columns.len() {
        let missing = &encoder.table.columns[columns[given]].name;
        let reason = format!("missing data for column \"{missing}\"");
        return bad_record(encoder, Some(columns[given]), reason);
    }
    if given > columns.len() {
        return bad_record(encoder, None, "extra data after last expected column".into());
    }
    for (i, &column) in columns.iter().enumerate() {
        match fields.get(i) {
            None => encoder.slots[column] = Slot::Null,
            Some(Ok(text)) => encoder.put_text(column, text),
            Some(Err(_)) => encoder.reject(
                column,
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                "invalid byte sequence for encoding \"UTF8\"",
            ),
        }
    }
}

/// One record's fields, unescaped into one buffer: each a range of it, or null.
#[derive(Debug, Default)]
struct Fields {
    text: Vec<u8>,
    bounds: Vec<Option<(usize, usize)>>,
}

impl Fields {
    fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Field `i`: None for null, else its text (an error when it is not UTF-8).
    fn get(&self, i: usize) -> Option<Result<&str, std::str::Utf8Error>> {
        self.bounds[i].map(|(start, end)| std::str::from_utf8(&self.text[start..end]))
    }

    fn clear(&mut self) {
        self.text.clear();
        self.bounds.clear();
    }

    fn push_field(&mut self, start: usize, null: bool) {
        if null {
            self.text.truncate(start);
            self.bounds.push(None);
        } else {
            self.bounds.push(Some((start, self.text.len())));
        }
    }

    /// Splits a text-format record: fields between unescaped delimiters, a field spelled as
    /// the null string (before unescaping) is null, escapes as Postgres reads them.
    fn split_text(&mut self, record: &[u8], format: &CopyFormat) -> Result<(), String> {
        self.clear();
        let mut start = 0;
        loop {
            let mut end = start;
            while let Some(offset) = memchr::memchr2(format.delimiter, b'\\', &record[end..]) {
                end += offset;
                if record[end] == format.delimiter {
                    break;
                }
                end = (end + 2).min(record.len());
            }
            if end >= record.len() || record[end] != format.delimiter {
                end = record.len();
            }
            let raw = &record[start..end];
            let field_start = self.text.len();
            let null = raw == format.null.as_bytes();
            if !null {
                unescape_text(raw, &mut self.text);
            }
            self.push_field(field_start, null);
            if end == record.len() {
                return Ok(());
            }
            start = end + 1;
        }
    }

    /// Splits a CSV record: quoted fields may hold delimiters, newlines and doubled quotes
    /// (or the escape character before a quote); an unquoted field spelled as the null
    /// string is null.
    fn split_csv(&mut self, record: &[u8], format: &CopyFormat) -> Result<(), String> {
        self.clear();
        let mut i = 0;
        loop {
            let start = self.text.len();
            let (mut quoted, mut unquoted_len) = (false, 0);
            while let Some(offset) = memchr::memchr2(format.delimiter, format.quote, &record[i..]) {
                self.text.extend_from_slice(&record[i..i + offset]);
                unquoted_len += offset;
                i += offset;
                if record[i] == format.delimiter {
                    break;
                }
                quoted = true;
                i = self.quoted_csv(record, i + 1, format)?;
            }
            if i >= record.len() || record[i] != format.delimiter {
                self.text.extend_from_slice(&record[i.min(record.len())..]);
                unquoted_len += record.len().saturating_sub(i);
                i = record.len();
            }
            let null =
                !quoted && unquoted_len == format.null.len() && self.text[start..] == *format.null.as_bytes();
            self.push_field(start, null);
            if i >= record.len() {
                return Ok(());
            }
            i += 1;
        }
    }

    /// Reads a quoted CSV section starting at `i` (past its opening quote) into the field;
    /// returns where it ends (past its closing quote).
    fn quoted_csv(&mut self, record: &[u8], mut i: usize, format: &CopyFormat) -> Result<usize, String> {
        loop {
            let found = if format.escape == format.quote {
                memchr::memchr(format.quote, &record[i..])
            } else {
                memchr::memchr2(format.quote, format.escape, &record[i..])
            };
            let offset = found.ok_or("unterminated CSV quoted field")?;
            self.text.extend_from_slice(&record[i..i + offset]);
            i += offset;
            let next = record.get(i + 1).copied();
            let escapes_next = record[i] == format.escape
                && (next == Some(format.quote)
                    || (format.escape != format.quote && next == Some(format.escape)));
            if escapes_next {
                self.text.push(record[i + 1]);
                i += 2;
            } else if record[i] == format.quote {
                return Ok(i + 1);
            } else {
                self.text.push(record[i]);
                i += 1;
            }
        }
    }
}

/// Appends `raw` with the text format's backslash escapes read: `\b \f \n \r \t \v`, octal
/// `\NNN`, hex `\xHH`, and any other character after a backslash as itself.
fn unescape_text(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(offset) = memchr::memchr(b'\\', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + offset]);
        i += offset;
        if i + 1 == raw.len() {
            break;
        }
        let next = raw[i + 1];
        i += 2;
        let byte = match next {
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'0'..=b'7' => {
                let digits = raw[i - 1..]
                    .iter()
                    .take(3)
                    .take_while(|b| (b'0'..=b'7').contains(b))
                    .count();
                let value = raw[i - 1..i - 1 + digits]
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                i += digits - 1;
                value as u8
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let digits = raw[i..]
                    .iter()
                    .take(2)
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                let hex = std::str::from_utf8(&raw[i..i + digits]).unwrap_or("0");
                i += digits;
                u8::from_str_radix(hex, 16).unwrap_or(0)
            }
            other => other,
        };
        out.push(byte);
    }
    out.extend_from_slice(&raw[i..]);
}

impl RowEncoder<'_> {
    /// Puts a value in Postgres's binary form, checked to be one of its column's type.
    pub(super) fn put_binary(&mut self, column: usize, value: &[u8]) {
        match check_binary(self.table.columns[column].ty, value) {
            Ok(()) => self.put_bytes(column, value),
            Err(refused) => self.reject(column, refused.sqlstate, refused.message),
        }
    }

    /// Puts a value in Postgres's text form, read as its column's type.
    pub(super) fn put_text(&mut self, column: usize, text: &str) {
        let start = self.scratch.len();
        match encode_text(self.table.columns[column].ty, text, &mut self.scratch) {
            Ok(()) => {
                self.slots[column] = Slot::Value {
                    start,
                    len: self.scratch.len() - start,
                }
            }
            Err(refused) => {
                self.scratch.truncate(start);
                self.reject(column, refused.sqlstate, refused.message);
            }
        }
    }
}

#[cfg(test)]
mod tests;
