//! Request body → binary COPY tuples grouped by shard, in one pass.
//!
//! Each row is decoded once, straight into Postgres binary field bytes in a reused scratch
//! buffer; defaults are stamped, the partition key hashed, the shard chosen from the request's
//! routing snapshot, and the finished tuple (with its `_sg_hash`) appended to that shard's
//! buffer. No per-row maps or strings. Problems with individual rows are collected (up to
//! [`MAX_ERROR_DETAILS`]) so one answer lists them all; nothing is produced when any row fails.

use super::{ColumnType, DefaultValue, JsonScalar, TableSchema, encode_jsonb, encode_scalar};
use crate::pgtype::{JSONB_VERSION, MAX_FIELD_BYTES, encode_jsonb_without_escapes, sqlstate};
use crate::routing::salt::{spread_of_id, spread_of_values};
use crate::routing::{KeyHash, KeySample, KeySplits, RoutingTable, RowOrigin, hash_key};
use scan::{GaveUp, Scanner};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Most row problems reported for one request.
pub const MAX_ERROR_DETAILS: usize = 100;

/// How the body lists its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one array of objects.
    Json,
    /// `application/x-ndjson`: one object per line.
    Ndjson,
}

/// The rows of one request bound for one shard: concatenated binary COPY tuples.
#[derive(Debug, Default)]
pub struct ShardRows {
    /// Tuples, without the COPY header or trailer.
    pub tuples: Vec<u8>,
    /// Number of tuples.
    pub rows: usize,
}

/// A decoded request: per-shard tuples, indexed like the routing snapshot's shards.
#[derive(Debug)]
pub struct EncodedRows {
    /// Rows per shard index.
    pub shards: Vec<ShardRows>,
    /// Rows in the request.
    pub rows: usize,
    /// Rows also written to the new shard of a range being copied.
    pub dual_written: usize,
    /// For a stream table, the copies of rows in ranges being copied, apart from the rows
    /// each shard owns, at index `owner * shards + target`: they are written only once their
    /// owner committed them, since only a stream's owner checks its versions (the target may
    /// not hold the stream's earlier rows yet). Empty for other tables.
    pub copies: Vec<ShardRows>,
    /// Rows of split hot keys placed at a salted position (salt above 0).
    pub salted: usize,
    /// The rows per partition key, sampled, for the hot-key watch.
    pub keys: KeySample,
    /// Rows of each rate-limited key given to [`decode_rows`], those without rows left out.
    pub limited_rows: Vec<(KeyHash, u64)>,
    /// The binary fields of the columns a source asked to have returned (an `INSERT`'s
    /// `RETURNING`), row after row in the source's order, `None` for null.
    pub returned: Vec<Option<Vec<u8>>>,
}

/// One problem with one row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// Zero-based position of the row in the body.
    pub row: usize,
    /// The column concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// The SQLSTATE Postgres gives this kind of problem, for front ends that speak its protocol.
    #[serde(skip)]
    pub sqlstate: &'static str,
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not parseable as the declared format.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// Parseable, but rows break the table's schema.
    #[error("{total} invalid value(s) in the rows")]
    InvalidRows {
        /// The first problems found.
        errors: Vec<RowError>,
        /// All problems found.
        total: usize,
        /// Rows in the body, good and bad: all of them are refused.
        rows: usize,
    },
}

/// Decodes `body` for `table`, routing each row with `routing`. `now_micros` (Unix time) stamps
/// `now()` defaults, so every row of a request gets the same time. The rows of each key of
/// `limited` (sorted) are counted.
pub fn decode_rows(
    table: &TableSchema,
    routing: &RoutingTable,
    format: BodyFormat,
    body: &[u8],
    now_micros: i64,
    limited: &[KeyHash],
) -> Result<EncodedRows, DecodeError> {
    let new_encoder = || RowEncoder::new(table, routing, now_micros, limited, body.len());
    let mut encoder = new_encoder();
    if scan_body(table, format, body, &mut encoder).is_ok() {
        return encoder.finish();
    }
    decode_with_serde(format, body, new_encoder())
}

/// Decodes `body` on the fast path; [`GaveUp`] when it must be decoded with serde_json.
fn scan_body<'a>(
    table: &TableSchema,
    format: BodyFormat,
    body: &'a [u8],
    encoder: &mut RowEncoder<'a>,
) -> Result<(), GaveUp> {
    let mut scanner = Scanner::new(table.columns.len());
    match format {
        BodyFormat::Json => scanner.array(body, encoder),
        BodyFormat::Ndjson => ndjson_lines(body).try_for_each(|(_, line)| scanner.line(line, encoder)),
    }
}

/// Decodes `body` with serde_json: the reference for every value and every error text.
fn decode_with_serde(
    format: BodyFormat,
    body: &[u8],
    mut encoder: RowEncoder<'_>,
) -> Result<EncodedRows, DecodeError> {
    // A body (or NDJSON line) checked to be UTF-8 once is parsed as text, so its strings are
    // not checked again one by one; one that is not is parsed as bytes, for the error
    // serde_json gives it.
    match format {
        BodyFormat::Json => match std::str::from_utf8(body) {
            Ok(text) => decode_array(serde_json::Deserializer::from_str(text), &mut encoder)?,
            Err(_) => decode_array(serde_json::Deserializer::from_slice(body), &mut encoder)?,
        },
        BodyFormat::Ndjson => {
            for (number, line) in ndjson_lines(body) {
                let parsed = match std::str::from_utf8(line) {
                    Ok(text) => decode_line(serde_json::Deserializer::from_str(text), &mut encoder),
                    Err(_) => decode_line(serde_json::Deserializer::from_slice(line), &mut encoder),
                };
                parsed.map_err(|e| DecodeError::Malformed(format!("line {number}: {e}")))?;
            }
        }
    }
    encoder.finish()
}

/// The lines of an NDJSON body that hold something, with their one-based numbers.
fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(index, line)| (index + 1, line))
}

/// Decodes a JSON array of rows read by `de`.
fn decode_array<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    encoder: &mut RowEncoder<'_>,
) -> Result<(), DecodeError> {
    de.deserialize_seq(RowsVisitor(encoder)).map_err(malformed)?;
    de.end().map_err(malformed)
}

/// Decodes one NDJSON line's row read by `de`.
fn decode_line<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    encoder: &mut RowEncoder<'_>,
) -> Result<(), serde_json::Error> {
    RowSeed(encoder).deserialize(&mut de).and_then(|()| de.end())
}

fn malformed(e: serde_json::Error) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// What a row gave for a column.
#[derive(Debug, Clone, Copy)]
enum Slot<'a> {
    Missing,
    /// Given, but refused (already reported).
    Invalid,
    Null,
    /// Binary field bytes at these positions of the encoder's scratch buffer.
    Value {
        start: usize,
        len: usize,
    },
    /// Binary field bytes that are the body's own bytes (a plain string of a `text` column).
    Body(&'a [u8]),
    /// The body's text of a `jsonb` value without escapes, not part of the partition key: the
    /// binary field is [`crate::pgtype::JSONB_VERSION`], then this text.
    Jsonb(&'a [u8]),
}

struct RowEncoder<'a> {
    table: &'a TableSchema,
    routing: &'a RoutingTable,
    splits: Option<&'a KeySplits>,
    now_micros: i64,
    scratch: Vec<u8>,
    slots: Vec<Slot<'a>>,
    key_scratch: Vec<u8>,
    out: Vec<ShardRows>,
    /// A stream table's copies for ranges being copied (see [`EncodedRows::copies`]).
    copies: Vec<ShardRows>,
    row: usize,
    errors: Vec<RowError>,
    error_total: usize,
    dual_written: usize,
    salted: usize,
    keys: KeySample,
    limited: &'a [KeyHash],
    limited_rows: Vec<u64>,
    /// Fields of every tuple: the declared columns and the hidden ones.
    field_count: i16,
    /// Columns whose values each row returns, as it is stored.
    returning: &'a [usize],
    returned: Vec<Option<Vec<u8>>>,
}

impl<'a> RowEncoder<'a> {
    /// An encoder for a body of `body_len` bytes, whose shard buffers start with room for
    /// their share of it and a quarter more, so they are seldom grown and copied.
    fn new(
        table: &'a TableSchema,
        routing: &'a RoutingTable,
        now_micros: i64,
        limited: &'a [KeyHash],
        body_len: usize,
    ) -> Self {
        let share = body_len / routing.shards.len().max(1);
        RowEncoder {
            table,
            routing,
            splits: routing.splits.of(&table.name),
            now_micros,
            scratch: Vec::with_capacity(512),
            slots: vec![Slot::Missing; table.columns.len()],
            key_scratch: Vec::with_capacity(64),
            out: routing
                .shards
                .iter()
                .map(|_| ShardRows {
                    tuples: Vec::with_capacity(share + share / 4),
                    rows: 0,
                })
                .collect(),
            copies: Vec::new(),
            row: 0,
            errors: Vec::new(),
            error_total: 0,
            dual_written: 0,
            salted: 0,
            keys: KeySample::default(),
            limited,
            limited_rows: vec![0; limited.len()],
            field_count: i16::try_from(table.columns.len() + super::hidden_columns(table).len())
                .expect("Postgres tables have at most 1600 columns"),
            returning: &[],
            returned: Vec::new(),
        }
    }

    fn reject(&mut self, column: usize, sqlstate: &'static str, reason: impl Into<String>) {
        self.slots[column] = Slot::Invalid;
        self.fail(Some(column), sqlstate, reason);
    }

    fn fail(&mut self, column: Option<usize>, sqlstate: &'static str, reason: impl Into<String>) {
        let column = column.map(|c| self.table.columns[c].name.clone());
        self.push_error(column, sqlstate, reason.into());
    }

    /// Records a key of the row object that names no declared column.
    fn fail_unknown_column(&mut self, name: &str) {
        self.push_error(
            Some(name.to_string()),
            sqlstate::UNDEFINED_COLUMN,
            format!("unknown column `{name}`"),
        );
    }

    fn push_error(&mut self, column: Option<String>, sqlstate: &'static str, reason: String) {
        self.error_total += 1;
        if self.errors.len() < MAX_ERROR_DETAILS {
            self.errors.push(RowError {
                row: self.row,
                column,
                reason,
                sqlstate,
            });
        }
    }

    fn begin_row(&mut self) {
        self.scratch.clear();
        self.slots.fill(Slot::Missing);
    }

    /// Records that `column` was given; false (with an error) when it already was.
    fn claim(&mut self, column: usize) -> bool {
        if matches!(self.slots[column], Slot::Missing) {
            true
        } else {
            self.fail(Some(column), sqlstate::DUPLICATE_COLUMN, "column given twice");
            false
        }
    }

    fn put_scalar(&mut self, column: usize, value: JsonScalar<'_>) {
        let start = self.scratch.len();
        match encode_scalar(self.table.columns[column].ty, value, &mut self.scratch) {
            Ok(()) => {
                self.slots[column] = Slot::Value {
                    start,
                    len: self.scratch.len() - start,
                }
            }
            Err(reason) => {
                self.scratch.truncate(start);
                self.reject(column, sqlstate::INVALID_TEXT_REPRESENTATION, reason);
            }
        }
    }

    /// Puts the raw JSON text of a jsonb value; `escaped` says whether it may hold a backslash.
    fn put_jsonb(&mut self, column: usize, raw: &str, escaped: bool) {
        if raw == "null" {
            self.slots[column] = Slot::Null;
            return;
        }
        let start = self.scratch.len();
        if escaped && let Err(reason) = encode_jsonb(raw, &mut self.scratch) {
            return self.reject(column, sqlstate::UNTRANSLATABLE_CHARACTER, reason);
        }
        if !escaped {
            encode_jsonb_without_escapes(raw, &mut self.scratch);
        }
        self.slots[column] = Slot::Value {
            start,
            len: self.scratch.len() - start,
        }
    }

    /// Puts the body's raw JSON text of a jsonb value; `escaped` says whether it may hold a
    /// backslash. Without one it is copied once, into the tuple, unless it is part of the
    /// partition key, which is hashed from its binary field.
    fn put_body_jsonb(&mut self, column: usize, raw: &'a str, escaped: bool) {
        if escaped || raw == "null" || self.table.is_partition_key(column) {
            return self.put_jsonb(column, raw, escaped);
        }
        self.slots[column] = Slot::Jsonb(raw.as_bytes());
    }

    /// Puts field bytes that the body holds as they are: they are copied once, into the tuple.
    fn put_body_bytes(&mut self, column: usize, bytes: &'a [u8]) {
        self.slots[column] = Slot::Body(bytes);
    }

    fn put_bytes(&mut self, column: usize, bytes: &[u8]) {
        let start = self.scratch.len();
        self.scratch.extend_from_slice(bytes);
        self.slots[column] = Slot::Value {
            start,
            len: bytes.len(),
        };
    }

    fn put_default(&mut self, column: usize, default: &DefaultValue) {
        match (default, self.table.columns[column].ty) {
            (DefaultValue::Now, ColumnType::Date) => {
                self.put_bytes(column, &crate::pgtype::date_from_unix_micros(self.now_micros))
            }
            (DefaultValue::Now, _) => self.put_bytes(
                column,
                &crate::pgtype::timestamptz_from_unix_micros(self.now_micros),
            ),
            (DefaultValue::UuidV7, _) => self.put_bytes(column, uuid::Uuid::now_v7().as_bytes()),
            (DefaultValue::Literal(bytes), _) => self.put_bytes(column, bytes),
        }
    }

    /// Fills absent columns, checks nulls, and appends the row to its shard's tuples.
    fn finish_row(&mut self) {
        let table = self.table;
        for (i, column) in table.columns.iter().enumerate() {
            match (self.slots[i], &column.default) {
                (Slot::Missing, Some(default)) => self.put_default(i, default),
                (Slot::Missing, None) if column.nullable => self.slots[i] = Slot::Null,
                (Slot::Missing, None) if table.is_partition_key(i) => self.fail(
                    Some(i),
                    sqlstate::NOT_NULL_VIOLATION,
                    "missing partition-key value",
                ),
                (Slot::Missing, None) => self.fail(
                    Some(i),
                    sqlstate::NOT_NULL_VIOLATION,
                    "missing value for a non-null column",
                ),
                (Slot::Null, _) if table.is_partition_key(i) => self.fail(
                    Some(i),
                    sqlstate::NOT_NULL_VIOLATION,
                    "partition-key value cannot be null",
                ),
                (Slot::Null, _) if !column.nullable => self.fail(
                    Some(i),
                    sqlstate::NOT_NULL_VIOLATION,
                    "null for a non-null column",
                ),
                _ => {}
            }
        }
        if self.error_total == 0 {
            self.emit_row();
        }
        self.row += 1;
    }

    /// The binary field of `column`, None for null.
    fn value(&self, column: usize) -> Option<Cow<'_, [u8]>> {
        match self.slots[column] {
            Slot::Jsonb(text) => Some(Cow::Owned([&[JSONB_VERSION], text].concat())),
            slot => slot_bytes(slot, &self.scratch).map(Cow::Borrowed),
        }
    }

    /// The binary field of `slot` in the pieces it is in, None for null.
    fn pieces(&self, slot: Slot<'a>) -> Option<[&[u8]; 2]> {
        match slot {
            Slot::Jsonb(text) => Some([&[JSONB_VERSION], text]),
            slot => slot_bytes(slot, &self.scratch).map(|bytes| [&[][..], bytes]),
        }
    }

    fn emit_row(&mut self) {
        let table = self.table;
        let (slots, scratch) = (&self.slots, &self.scratch);
        let key_parts = table.partition_key.iter().map(|&i| {
            let value =
                slot_bytes(slots[i], scratch).expect("finish_row checked that key values are present");
            (table.columns[i].ty, value)
        });
        let key = hash_key(key_parts, &mut self.key_scratch);
        self.keys.count(key);
        if !self.limited.is_empty()
            && let Ok(i) = self.limited.binary_search(&key)
        {
            self.limited_rows[i] += 1;
        }
        let routing = self.routing;
        let placement = routing.place_write(self.splits, key, || self.origin());
        if placement.salt > 0 {
            self.salted += 1;
        }
        let field_count = self.field_count;
        let mut tuples = std::mem::take(&mut self.out[placement.owner.0].tuples);
        let start = tuples.len();
        tuples.extend_from_slice(&field_count.to_be_bytes());
        let oversized = self.slots.iter().enumerate().find_map(|(i, &slot)| {
            append_field(&mut tuples, slot, &self.scratch)
                .err()
                .map(|len| (i, len))
        });
        if let Some((column, len)) = oversized {
            tuples.truncate(start);
            self.out[placement.owner.0].tuples = tuples;
            self.fail(
                Some(column),
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("a value of {len} bytes is larger than the {MAX_FIELD_BYTES} bytes Postgres takes in one field"),
            );
            return;
        }
        tuples.extend_from_slice(&8i32.to_be_bytes());
        tuples.extend_from_slice(&placement.position.as_i64().to_be_bytes());
        if table.id.is_none() {
            tuples.extend_from_slice(&8i32.to_be_bytes());
            tuples.extend_from_slice(&self.routing.epoch.0.to_be_bytes());
        }
        if let Some(also) = placement.also {
            let copy = if table.stream_version.is_some() {
                let shards = self.out.len();
                if self.copies.is_empty() {
                    self.copies.resize_with(shards * shards, ShardRows::default);
                }
                &mut self.copies[placement.owner.0 * shards + also.0]
            } else {
                &mut self.out[also.0]
            };
            copy.tuples.extend_from_slice(&tuples[start..]);
            copy.rows += 1;
            self.dual_written += 1;
        }
        let out = &mut self.out[placement.owner.0];
        out.tuples = tuples;
        out.rows += 1;
        for &column in self.returning {
            let value = self.value(column).map(Cow::into_owned);
            self.returned.push(value);
        }
    }

    /// What places this row among its key's salts: its id, or all its values, and when it was
    /// made.
    fn origin(&self) -> RowOrigin {
        let spread = match self.table.id {
            Some(id) => spread_of_id(&self.value(id).expect("an id is never null")),
            None => spread_of_values(self.slots.iter().map(|&slot| self.pieces(slot))),
        };
        RowOrigin {
            spread,
            made_ms: self.made_ms(),
        }
    }

    /// When this row was made: its `made_at` column, else its UUIDv7 id's time, else now.
    fn made_ms(&self) -> i64 {
        let table = self.table;
        let declared = table
            .made_at
            .and_then(|c| self.value(c))
            .and_then(|field| crate::pgtype::unix_millis_of_timestamptz(&field));
        let from_id = || {
            table
                .id
                .filter(|&id| table.columns[id].ty == ColumnType::Uuid)
                .and_then(|id| self.value(id))
                .and_then(|field| crate::pgtype::unix_millis_of_uuid_v7(&field))
        };
        declared
            .or_else(from_id)
            .unwrap_or(self.now_micros.div_euclid(1000))
    }

    fn finish(self) -> Result<EncodedRows, DecodeError> {
        if self.error_total > 0 {
            return Err(DecodeError::InvalidRows {
                errors: self.errors,
                total: self.error_total,
                rows: self.row,
            });
        }
        Ok(EncodedRows {
            shards: self.out,
            copies: self.copies,
            rows: self.row,
            dual_written: self.dual_written,
            salted: self.salted,
            keys: self.keys,
            limited_rows: self
                .limited
                .iter()
                .copied()
                .zip(self.limited_rows)
                .filter(|&(_, rows)| rows > 0)
                .collect(),
            returned: self.returned,
        })
    }
}

/// The binary field of `slot` as one slice; None for null, and for a [`Slot::Jsonb`], whose
/// field is two pieces.
fn slot_bytes<'s>(slot: Slot<'s>, scratch: &'s [u8]) -> Option<&'s [u8]> {
    match slot {
        Slot::Value { start, len } => Some(&scratch[start..start + len]),
        Slot::Body(bytes) => Some(bytes),
        Slot::Null | Slot::Missing | Slot::Invalid | Slot::Jsonb(_) => None,
    }
}

/// Appends the COPY field of `slot`: its length (-1 for null), then its bytes. A value longer
/// than Postgres takes in one field is not appended: its length is the error.
fn append_field(tuples: &mut Vec<u8>, slot: Slot<'_>, scratch: &[u8]) -> Result<(), usize> {
    let field_len = |len: usize| match i32::try_from(len) {
        Ok(framed) if len <= MAX_FIELD_BYTES => Ok(framed.to_be_bytes()),
        _ => Err(len),
    };
    match slot {
        Slot::Jsonb(text) => {
            tuples.extend_from_slice(&field_len(text.len() + 1)?);
            tuples.push(JSONB_VERSION);
            tuples.extend_from_slice(text);
        }
        slot => match slot_bytes(slot, scratch) {
            Some(bytes) => {
                tuples.extend_from_slice(&field_len(bytes.len())?);
                tuples.extend_from_slice(bytes);
            }
            None => tuples.extend_from_slice(&(-1i32).to_be_bytes()),
        },
    }
    Ok(())
}

struct RowsVisitor<'e, 'a>(&'e mut RowEncoder<'a>);

impl<'de> Visitor<'de> for RowsVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of row objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(RowSeed(self.0))?.is_some() {}
        Ok(())
    }
}

struct RowSeed<'e, 'a>(&'e mut RowEncoder<'a>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(RowVisitor(self.0))
    }
}

struct RowVisitor<'e, 'a>(&'e mut RowEncoder<'a>);

impl RowVisitor<'_, '_> {
    fn not_an_object<E>(self, what: &str) -> Result<(), E> {
        self.0.fail(
            None,
            sqlstate::DATATYPE_MISMATCH,
            format!("expected a JSON object, got {what}"),
        );
        self.0.row += 1;
        Ok(())
    }
}

impl<'de> Visitor<'de> for RowVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let encoder = self.0;
        encoder.begin_row();
        while let Some(key) = map.next_key_seed(ColumnSeed(encoder.table))? {
            match key {
                ColumnKey::Known(column) if encoder.claim(column) => map.next_value_seed(ValueSeed {
                    encoder: &mut *encoder,
                    column,
                })?,
                ColumnKey::Known(_) => {
                    map.next_value::<IgnoredAny>()?;
                }
                ColumnKey::Unknown(name) => {
                    map.next_value::<IgnoredAny>()?;
                    encoder.fail_unknown_column(&name);
                }
            }
        }
        encoder.finish_row();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object("an array")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object("a string")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object("a boolean")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object("null")
    }
}

enum ColumnKey {
    Known(usize),
    Unknown(String),
}

struct ColumnSeed<'a>(&'a TableSchema);

impl<'de> DeserializeSeed<'de> for ColumnSeed<'_> {
    type Value = ColumnKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ColumnKey, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ColumnSeed<'_> {
    type Value = ColumnKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<ColumnKey, E> {
        Ok(match self.0.column_index(name) {
            Some(index) => ColumnKey::Known(index),
            None => ColumnKey::Unknown(name.to_string()),
        })
    }
}

struct ValueSeed<'e, 'a> {
    encoder: &'e mut RowEncoder<'a>,
    column: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.encoder.table.columns[self.column].ty == ColumnType::Jsonb {
            let raw = <&RawValue>::deserialize(deserializer)?;
            self.encoder.put_jsonb(self.column, raw.get(), true);
            Ok(())
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl ValueSeed<'_, '_> {
    fn wrong_shape<E>(self, what: &str) -> Result<(), E> {
        let expected = self.encoder.table.columns[self.column].ty;
        self.encoder.reject(
            self.column,
            sqlstate::DATATYPE_MISMATCH,
            format!("expected a {expected} value, got {what}"),
        );
        Ok(())
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.encoder.put_scalar(self.column, JsonScalar::Str(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.encoder.put_scalar(self.column, JsonScalar::Int(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let scalar = i64::try_from(v).map_or(JsonScalar::UInt(v), JsonScalar::Int);
        self.encoder.put_scalar(self.column, scalar);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.encoder.put_scalar(self.column, JsonScalar::Float(v));
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.encoder.put_scalar(self.column, JsonScalar::Bool(v));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.encoder.slots[self.column] = Slot::Null;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.wrong_shape("an object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.wrong_shape("an array")
    }
}

pub mod copy;
mod scan;
#[cfg(test)]
mod tests;
pub mod values;
