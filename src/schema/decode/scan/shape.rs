//! The shape of a row: the bytes between its values, learned from one row read in full, so
//! that the rows after it are read by comparing those bytes whole and reading only the values.
//!
//! A row read against a shape is the learned row with each string, number or literal replaced
//! by another one. Such a replacement keeps a valid row valid (any of them may stand where
//! another stood, and each ends where the learned one's following bytes begin), so a row that
//! matches needs no other check of its grammar: its keys, nesting and punctuation are the
//! learned row's, which was checked in full.

use super::{Cursor, GaveUp, Scan, value};
use crate::schema::decode::RowEncoder;
use std::ops::Range;

/// Where one value of a row read in full lies, noted as the row is read.
#[derive(Debug, Clone)]
pub(super) enum Mark {
    /// A value of a column other than `jsonb`.
    Value {
        /// The column.
        column: usize,
        /// Its text, as positions in the body.
        span: Range<usize>,
    },
    /// Where the value of a `jsonb` column starts.
    JsonbStart(usize),
    /// A string, number or literal inside a `jsonb` value.
    Scalar(Range<usize>),
    /// Where the value of a `jsonb` column ends.
    JsonbEnd {
        /// The column.
        column: usize,
        /// The position after its last byte.
        at: usize,
    },
}

/// One step of reading a row against a shape.
#[derive(Debug, Clone)]
enum Step {
    /// Up to sixteen bytes that come next: most runs between values are that short.
    Short(Short),
    /// More bytes that come next: these positions of [`Shape::fixed`].
    Long(Range<usize>),
    /// The value of a column other than `jsonb`.
    Value(usize),
    /// The value of a `jsonb` column starts here.
    JsonbStart,
    /// A string, number or literal inside a `jsonb` value.
    Scalar,
    /// The value of a `jsonb` column ends here.
    JsonbEnd {
        /// The column.
        column: usize,
        /// Whether the bytes between its values (its keys) hold an escape.
        escaped_keys: bool,
    },
}

/// What rows of one shape have in common, and where their values go.
#[derive(Debug, Default)]
pub(super) struct Shape {
    /// The runs of bytes between values longer than sixteen, one after another.
    fixed: Vec<u8>,
    steps: Vec<Step>,
}

impl Shape {
    /// Becomes the shape of the row at `row` of `text`, whose values lie at `marks` (in order),
    /// reusing its buffers.
    pub(super) fn learn(&mut self, text: &[u8], row: Range<usize>, marks: &[Mark]) {
        self.fixed.clear();
        self.steps.clear();
        let shape = self;
        let mut at = row.start;
        let mut escaped_keys = false;
        for mark in marks {
            match mark {
                Mark::Value { column, span } => {
                    shape.fix(&text[at..span.start]);
                    shape.steps.push(Step::Value(*column));
                    at = span.end;
                }
                Mark::JsonbStart(start) => {
                    shape.fix(&text[at..*start]);
                    shape.steps.push(Step::JsonbStart);
                    at = *start;
                    escaped_keys = false;
                }
                Mark::Scalar(span) => {
                    escaped_keys |= shape.fix(&text[at..span.start]);
                    shape.steps.push(Step::Scalar);
                    at = span.end;
                }
                Mark::JsonbEnd { column, at: end } => {
                    escaped_keys |= shape.fix(&text[at..*end]);
                    shape.steps.push(Step::JsonbEnd {
                        column: *column,
                        escaped_keys,
                    });
                    at = *end;
                }
            }
        }
        shape.fix(&text[at..row.end]);
    }

    /// Adds `bytes` as bytes that come next; whether they hold a backslash.
    fn fix(&mut self, bytes: &[u8]) -> bool {
        if let Some(short) = Short::new(bytes) {
            self.steps.push(Step::Short(short));
        } else if !bytes.is_empty() {
            let start = self.fixed.len();
            self.fixed.extend_from_slice(bytes);
            self.steps.push(Step::Long(start..self.fixed.len()));
        }
        bytes.contains(&b'\\')
    }

    /// Reads the row at the cursor into the encoder when it has this shape, and finishes it.
    /// [`GaveUp`] when it has not; the cursor is then anywhere in the row, which was not
    /// finished. Values the encoder refused show in its `error_total` either way.
    pub(super) fn replay<'a>(&self, cursor: &mut Cursor<'a>, encoder: &mut RowEncoder<'a>) -> Scan {
        encoder.begin_row();
        let (mut jsonb_start, mut escapes) = (0, 0);
        for step in &self.steps {
            match step {
                Step::Short(short) => cursor.at += short.len_at_start_of(&cursor.bytes()[cursor.at..])?,
                Step::Long(range) => {
                    let fixed = &self.fixed[range.clone()];
                    if !cursor.bytes()[cursor.at..].starts_with(fixed) {
                        return Err(GaveUp);
                    }
                    cursor.at += fixed.len();
                }
                Step::Value(column) => value(cursor, encoder, *column)?,
                Step::JsonbStart => (jsonb_start, escapes) = (cursor.at, cursor.escapes),
                Step::Scalar => cursor.skip_scalar()?,
                Step::JsonbEnd { column, escaped_keys } => {
                    let raw = &cursor.text[jsonb_start..cursor.at];
                    encoder.put_body_jsonb(*column, raw, *escaped_keys || cursor.escapes > escapes);
                }
            }
        }
        encoder.finish_row();
        Ok(())
    }
}

/// One to sixteen bytes, compared in one step with the next sixteen of a body.
#[derive(Debug, Clone)]
struct Short {
    /// The bytes, little-endian, zero after `len`.
    word: u128,
    /// Ones in the bytes of `word` that count.
    mask: u128,
    len: usize,
}

impl Short {
    /// `bytes` when there are one to sixteen of them.
    fn new(bytes: &[u8]) -> Option<Short> {
        if bytes.is_empty() || bytes.len() > 16 {
            return None;
        }
        let mut word = [0; 16];
        word[..bytes.len()].copy_from_slice(bytes);
        Some(Short {
            word: u128::from_le_bytes(word),
            mask: u128::MAX >> (8 * (16 - bytes.len())),
            len: bytes.len(),
        })
    }

    /// The bytes' length when `rest` starts with them.
    fn len_at_start_of(&self, rest: &[u8]) -> Scan<usize> {
        let same = match rest.first_chunk::<16>() {
            Some(next) => (u128::from_le_bytes(*next) ^ self.word) & self.mask == 0,
            None => rest.starts_with(&self.word.to_le_bytes()[..self.len]),
        };
        if same { Ok(self.len) } else { Err(GaveUp) }
    }
}

#[cfg(test)]
mod tests {
    use super::Short;

    #[test]
    fn sixteen_bytes_at_once_compare_as_a_byte_by_byte_prefix_check() {
        let text: Vec<u8> = (0..40).map(|i| b'a' + (i % 7)).collect();
        for len in 1..=16 {
            for at in 0..=text.len() - len {
                let short = Short::new(&text[at..at + len]).expect("one to sixteen bytes");
                for rest_at in [at, at + 1, at + 7] {
                    let rest = &text[rest_at.min(text.len())..];
                    let expected = rest.starts_with(&text[at..at + len]).then_some(len);
                    assert_eq!(
                        short.len_at_start_of(rest).ok(),
                        expected,
                        "{len} bytes from {at}, compared at {rest_at}"
                    );
                }
            }
        }
        assert!(Short::new(b"").is_none() && Short::new(&[b'a'; 17]).is_none());
    }
}
