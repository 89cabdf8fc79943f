//! The fast path of decoding: a scanner for bodies of flat row objects, written for the shape
//! write-heavy clients send.
//!
//! It reads the body once, byte by byte where it must and eight bytes at a time inside
//! strings, and hands each value to the [`RowEncoder`] as the serde path does. It gives up on
//! anything outside the common shape: a syntax error, a key that is unknown, repeated or
//! escaped, a row the encoder refuses, a number it cannot read exactly. The caller then decodes
//! the body again with serde_json, whose values and error texts are the reference, so a body
//! this scanner accepts gives the same tuples and one it gives up on gets the same answer as
//! before.
//!
//! Rows of one body nearly always share their shape: the same keys in the same order, the same
//! punctuation and spacing, only the values differ. The scanner reads the first row in full and
//! remembers its [`Shape`]; each later row is first read against it, comparing the bytes between
//! values whole and reading only the values. A row that differs is read in full again, and its
//! shape is remembered instead.

mod shape;

use super::{RowEncoder, Slot};
use crate::schema::{ColumnType, JsonScalar};
use shape::{Mark, Shape};

/// The scanner stopped: the body is decoded again by the serde path.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GaveUp;

type Scan<T = ()> = Result<T, GaveUp>;

/// Deepest nesting read inside a jsonb value; deeper values go to the serde path, which has its
/// own limit.
const MAX_DEPTH: usize = 64;

/// Rows that did not have the shape of the row before them, in a body where they are also over
/// half of the rows read, after which the rest of its rows are read in full: they differ too
/// often for a try to pay.
const SHAPE_MISSES: usize = 8;

/// Scans the bodies of one request, learning the order its rows list their columns in.
pub(super) struct Scanner {
    /// For the start of a row (index 0) and after each column `c` (index `c + 1`): the column
    /// that came next in the last row read.
    next_column: Vec<Option<usize>>,
    /// The shape of the last row read in full.
    shape: Option<Shape>,
    /// Rows that turned out not to have the shape of the row before them.
    shape_misses: usize,
    /// Whether shapes stopped paying in this body: its rows are read in full.
    shapes_stopped: bool,
}

impl Scanner {
    /// A scanner for rows of a table with `columns` columns.
    pub(super) fn new(columns: usize) -> Scanner {
        Scanner {
            next_column: vec![None; columns + 1],
            shape: None,
            shape_misses: 0,
            shapes_stopped: false,
        }
    }

    /// Counts a row that did not have the shape of the row before it, `rows` rows into the
    /// body, and stops the tries when they missed too often.
    fn missed_shape(&mut self, rows: usize) {
        self.shape_misses += 1;
        self.shapes_stopped = self.shape_misses > SHAPE_MISSES.max(rows / 2);
    }

    /// Decodes a JSON array of rows.
    pub(super) fn array<'a>(&mut self, body: &'a [u8], encoder: &mut RowEncoder<'a>) -> Scan {
        let text = std::str::from_utf8(body).map_err(|_| GaveUp)?;
        let mut cursor = Cursor::new(text);
        cursor.skip_whitespace();
        cursor.expect(b'[')?;
        cursor.skip_whitespace();
        if !cursor.take(b']') {
            loop {
                self.row(&mut cursor, encoder)?;
                cursor.skip_whitespace();
                if cursor.take(b']') {
                    break;
                }
                cursor.expect(b',')?;
                cursor.skip_whitespace();
            }
        }
        cursor.skip_whitespace();
        cursor.at_end()
    }

    /// Decodes one NDJSON line's row.
    pub(super) fn line<'a>(&mut self, line: &'a [u8], encoder: &mut RowEncoder<'a>) -> Scan {
        let text = std::str::from_utf8(line).map_err(|_| GaveUp)?;
        let mut cursor = Cursor::new(text);
        cursor.skip_whitespace();
        self.row(&mut cursor, encoder)?;
        cursor.skip_whitespace();
        cursor.at_end()
    }

    /// Reads one row object into the encoder: against the last row's shape when it has that
    /// shape, else in full.
    fn row<'a>(&mut self, cursor: &mut Cursor<'a>, encoder: &mut RowEncoder<'a>) -> Scan {
        if let Some(shape) = self.shape.as_ref().filter(|_| !self.shapes_stopped) {
            let (start, escapes) = (cursor.at, cursor.escapes);
            match shape.replay(cursor, encoder) {
                Ok(()) => return ok_unless_refused(encoder),
                // The encoder refused a value: the serde path gives the answer.
                Err(GaveUp) if encoder.error_total > 0 => return Err(GaveUp),
                Err(GaveUp) => {
                    self.missed_shape(encoder.row);
                    (cursor.at, cursor.escapes) = (start, escapes);
                }
            }
        }
        self.row_in_full(cursor, encoder)
    }

    /// Reads one row object into the encoder token by token, and remembers its shape.
    fn row_in_full<'a>(&mut self, cursor: &mut Cursor<'a>, encoder: &mut RowEncoder<'a>) -> Scan {
        let row_start = cursor.at;
        cursor.marks.clear();
        cursor.marking = !self.shapes_stopped;
        cursor.expect(b'{')?;
        encoder.begin_row();
        cursor.skip_whitespace();
        if !cursor.take(b'}') {
            let mut previous = None;
            loop {
                cursor.expect(b'"')?;
                let column = self.column(cursor, encoder, previous)?;
                if !matches!(encoder.slots[column], Slot::Missing) {
                    return Err(GaveUp);
                }
                cursor.skip_whitespace();
                cursor.expect(b':')?;
                cursor.skip_whitespace();
                marked_value(cursor, encoder, column)?;
                previous = Some(column);
                cursor.skip_whitespace();
                if cursor.take(b'}') {
                    break;
                }
                cursor.expect(b',')?;
                cursor.skip_whitespace();
            }
        }
        encoder.finish_row();
        ok_unless_refused(encoder)?;
        if !self.shapes_stopped {
            let shape = self.shape.get_or_insert_with(Shape::default);
            shape.learn(cursor.bytes(), row_start..cursor.at, &cursor.marks);
        }
        Ok(())
    }

    /// The column the key at the cursor names, after its opening quote. The column that
    /// followed `previous` last time is tried first, by comparing its name with the bytes that
    /// come next (column names are identifiers: no quote or escape can be inside them).
    fn column(
        &mut self,
        cursor: &mut Cursor<'_>,
        encoder: &RowEncoder<'_>,
        previous: Option<usize>,
    ) -> Scan<usize> {
        let columns = &encoder.table.columns;
        let slot = previous.map_or(0, |c| c + 1);
        if let Some(guess) = self.next_column[slot] {
            let name = columns[guess].name.as_bytes();
            let rest = &cursor.bytes()[cursor.at..];
            if rest.starts_with(name) && rest.get(name.len()) == Some(&b'"') {
                cursor.at += name.len() + 1;
                return Ok(guess);
            }
        }
        let name = cursor.plain_string()?;
        let column = encoder.table.column_index(name).ok_or(GaveUp)?;
        self.next_column[slot] = Some(column);
        Ok(column)
    }
}

/// Whether the encoder took the row: a row it refused is answered by the serde path.
fn ok_unless_refused(encoder: &RowEncoder<'_>) -> Scan {
    if encoder.error_total > 0 {
        Err(GaveUp)
    } else {
        Ok(())
    }
}

/// Reads the value of `column`, marking where it lies for the row's shape.
fn marked_value<'a>(cursor: &mut Cursor<'a>, encoder: &mut RowEncoder<'a>, column: usize) -> Scan {
    let start = cursor.at;
    if encoder.table.columns[column].ty == ColumnType::Jsonb {
        cursor.mark(Mark::JsonbStart(start));
        value(cursor, encoder, column)?;
        cursor.mark(Mark::JsonbEnd {
            column,
            at: cursor.at,
        });
    } else {
        value(cursor, encoder, column)?;
        cursor.mark(Mark::Value {
            column,
            span: start..cursor.at,
        });
    }
    Ok(())
}

/// Reads the value of `column`.
fn value<'a>(cursor: &mut Cursor<'a>, encoder: &mut RowEncoder<'a>, column: usize) -> Scan {
    if encoder.table.columns[column].ty == ColumnType::Jsonb {
        let (raw, escaped) = cursor.raw_value()?;
        encoder.put_body_jsonb(column, raw, escaped);
        return Ok(());
    }
    let scalar = match cursor.peek() {
        Some(b'"') => return string(cursor, encoder, column),
        Some(b'n') => {
            cursor.literal("null")?;
            encoder.slots[column] = Slot::Null;
            return Ok(());
        }
        Some(b't') => {
            cursor.literal("true")?;
            JsonScalar::Bool(true)
        }
        Some(b'f') => {
            cursor.literal("false")?;
            JsonScalar::Bool(false)
        }
        Some(b'-' | b'0'..=b'9') => number(cursor.number()?)?,
        _ => return Err(GaveUp),
    };
    encoder.put_scalar(column, scalar);
    Ok(())
}

/// Reads a string value of `column`; one with escapes is unescaped by serde_json.
fn string<'a>(cursor: &mut Cursor<'a>, encoder: &mut RowEncoder<'a>, column: usize) -> Scan {
    let start = cursor.at;
    cursor.at += 1;
    if let Ok(plain) = cursor.plain_string() {
        // A plain string holds no control character, so no NUL for text to refuse.
        if encoder.table.columns[column].ty == ColumnType::Text {
            encoder.put_body_bytes(column, plain.as_bytes());
        } else {
            encoder.put_scalar(column, JsonScalar::Str(plain));
        }
        return Ok(());
    }
    cursor.at = start + 1;
    cursor.skip_string()?;
    let unescaped: String = serde_json::from_str(&cursor.text[start..cursor.at]).map_err(|_| GaveUp)?;
    encoder.put_scalar(column, JsonScalar::Str(&unescaped));
    Ok(())
}

/// The scalar of a number token, as the serde path sees it: a plain integer read here, anything
/// else (a sign, a fraction, an exponent, many digits) read by serde_json itself.
fn number(token: &str) -> Scan<JsonScalar<'static>> {
    if token.len() <= 18 && token.bytes().all(|b| b.is_ascii_digit()) {
        return token.parse().map(JsonScalar::Int).map_err(|_| GaveUp);
    }
    let number: serde_json::Number = serde_json::from_str(token).map_err(|_| GaveUp)?;
    Ok(if let Some(n) = number.as_u64() {
        i64::try_from(n).map_or(JsonScalar::UInt(n), JsonScalar::Int)
    } else if let Some(n) = number.as_i64() {
        JsonScalar::Int(n)
    } else {
        JsonScalar::Float(number.as_f64().ok_or(GaveUp)?)
    })
}

/// A position in a body being scanned.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
    /// Escapes stepped over so far.
    escapes: usize,
    /// Where the values of the row being read in full lie, for its shape.
    marks: Vec<Mark>,
    /// Whether the row being read in full is marked: not once shapes stopped paying.
    marking: bool,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Cursor<'a> {
        Cursor {
            text,
            at: 0,
            escapes: 0,
            marks: Vec::new(),
            marking: true,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Notes where a value of the row being read in full lies, when its shape is wanted.
    fn mark(&mut self, mark: Mark) {
        if self.marking {
            self.marks.push(mark);
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    /// Steps over `byte` when it comes next.
    fn take(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.at += usize::from(next);
        next
    }

    fn expect(&mut self, byte: u8) -> Scan {
        if self.take(byte) { Ok(()) } else { Err(GaveUp) }
    }

    fn at_end(&self) -> Scan {
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(GaveUp)
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str) -> Scan {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(GaveUp)
        }
    }

    /// The rest of a string whose opening quote was read, when it holds no escape.
    fn plain_string(&mut self) -> Scan<&'a str> {
        let start = self.at;
        let end = special_byte(self.bytes(), start);
        if self.bytes().get(end) != Some(&b'"') {
            return Err(GaveUp);
        }
        self.at = end + 1;
        Ok(&self.text[start..end])
    }

    /// Steps over the rest of a string whose opening quote was read, checking its escapes.
    fn skip_string(&mut self) -> Scan {
        loop {
            let end = special_byte(self.bytes(), self.at);
            match self.bytes().get(end) {
                Some(b'"') => {
                    self.at = end + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at = end + 1 + escape_len(&self.bytes()[end + 1..])?;
                    self.escapes += 1;
                }
                _ => return Err(GaveUp),
            }
        }
    }

    /// A number token, checked against JSON's grammar.
    fn number(&mut self) -> Scan<&'a str> {
        let start = self.at;
        self.take(b'-');
        if !self.take(b'0') {
            self.digits()?;
        }
        if self.take(b'.') {
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if !self.take(b'+') {
                self.take(b'-');
            }
            self.digits()?;
        }
        Ok(&self.text[start..self.at])
    }

    /// One or more digits, eight at a time while eight bytes are left.
    fn digits(&mut self) -> Scan {
        let start = self.at;
        while let Some(chunk) = self.bytes().get(self.at..self.at + 8) {
            let digits = leading_digits_of_8(chunk.try_into().expect("the chunk has 8 bytes"));
            self.at += digits;
            if digits < 8 {
                break;
            }
        }
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        if self.at > start { Ok(()) } else { Err(GaveUp) }
    }

    /// The text of one JSON value, checked, as serde_json's `RawValue` gives it, and whether
    /// it holds an escape.
    fn raw_value(&mut self) -> Scan<(&'a str, bool)> {
        let (start, escapes) = (self.at, self.escapes);
        self.skip_value(0)?;
        Ok((&self.text[start..self.at], self.escapes > escapes))
    }

    /// Steps over a value, marking each string, number or literal inside it.
    fn skip_value(&mut self, depth: usize) -> Scan {
        match self.peek() {
            Some(b'{') if depth < MAX_DEPTH => self.skip_object(depth + 1),
            Some(b'[') if depth < MAX_DEPTH => self.skip_array(depth + 1),
            _ => {
                let start = self.at;
                self.skip_scalar()?;
                self.mark(Mark::Scalar(start..self.at));
                Ok(())
            }
        }
    }

    /// Steps over a string, number or literal, checked.
    fn skip_scalar(&mut self) -> Scan {
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                self.skip_string()
            }
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            _ => Err(GaveUp),
        }
    }

    fn skip_object(&mut self, depth: usize) -> Scan {
        self.at += 1;
        self.skip_whitespace();
        if self.take(b'}') {
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            self.skip_string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            self.skip_value(depth)?;
            self.skip_whitespace();
            if self.take(b'}') {
                return Ok(());
            }
            self.expect(b',')?;
            self.skip_whitespace();
        }
    }

    fn skip_array(&mut self, depth: usize) -> Scan {
        self.at += 1;
        self.skip_whitespace();
        if self.take(b']') {
            return Ok(());
        }
        loop {
            self.skip_value(depth)?;
            self.skip_whitespace();
            if self.take(b']') {
                return Ok(());
            }
            self.expect(b',')?;
            self.skip_whitespace();
        }
    }
}

/// Bytes taken by the escape after a backslash: `\"`, `\n`, ... or `\u` and four hex digits.
fn escape_len(rest: &[u8]) -> Scan<usize> {
    match rest.first() {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(1),
        Some(b'u') if rest.len() >= 5 && rest[1..5].iter().all(u8::is_ascii_hexdigit) => Ok(5),
        _ => Err(GaveUp),
    }
}

/// Whether a byte ends the plain run of a string: its closing quote, an escape, or a control
/// character JSON forbids there.
fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// How many of the eight bytes are ASCII digits before the first that is not.
///
/// A byte is a digit when its high nibble is 3 and stays 3 after adding 6 (0x30-0x39, not
/// 0x3a-0x3f). An addition's carry can only change bytes after the first non-digit (it comes
/// from a byte of 0xfa or more), so the lowest mark is exact.
fn leading_digits_of_8(chunk: &[u8; 8]) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH_NIBBLES: u64 = ONES * 0xf0;
    let word = u64::from_le_bytes(*chunk);
    let not_digit = ((word & HIGH_NIBBLES) ^ (ONES * 0x30))
        | ((word.wrapping_add(ONES * 6) & HIGH_NIBBLES) ^ (ONES * 0x30));
    (not_digit.trailing_zeros() / 8) as usize
}

/// The index of the first special byte at or after `from`, or the length of `bytes`: sixteen
/// bytes at a time where the CPU has SSE2, then eight at a time, then one by one.
fn special_byte(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = bytes.get(at..at + 16) {
        if let Some(offset) = first_special_of_16(chunk.try_into().expect("the chunk has 16 bytes")) {
            return at + offset;
        }
        at += 16;
    }
    while let Some(chunk) = bytes.get(at..at + 8) {
        if let Some(offset) = first_special_of_8(chunk.try_into().expect("the chunk has 8 bytes")) {
            return at + offset;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| is_special(b))
        .map_or(bytes.len(), |offset| at + offset)
}

/// The offset of the first special byte of a 16-byte chunk, compared lane by lane with SSE2
/// (part of every x86_64 CPU): a byte is a control character when its unsigned minimum with
/// 0x1f is itself.
#[cfg(target_arch = "x86_64")]
fn first_special_of_16(chunk: &[u8; 16]) -> Option<usize> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, so every x86_64 CPU runs these
    // instructions, and the unaligned load reads the sixteen bytes `chunk` holds, nothing else.
    let marks = unsafe {
        let splat = |byte: u8| _mm_set1_epi8(i8::from_ne_bytes([byte]));
        let word = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(word, splat(b'"'));
        let backslash = _mm_cmpeq_epi8(word, splat(b'\\'));
        let control = _mm_cmpeq_epi8(_mm_min_epu8(word, splat(0x1f)), word);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
    };
    (marks != 0).then(|| marks.trailing_zeros() as usize)
}

/// The offset of the first special byte of an 8-byte chunk, found in one word.
///
/// In each byte of a word, `(b - n) & !b & 0x80` is set when `b < n` (for `n <= 0x80`), so
/// comparing with zero after an xor finds a quote or backslash and comparing with 0x20 a control
/// character. A borrow can only mark bytes after the first true one, so the lowest mark is exact.
fn first_special_of_8(chunk: &[u8; 8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word;
    let word = u64::from_le_bytes(*chunk);
    let marks = (below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1)
        | below(word, 0x20))
        & HIGH;
    (marks != 0).then(|| (marks.trailing_zeros() / 8) as usize)
}

#[cfg(test)]
mod tests;
