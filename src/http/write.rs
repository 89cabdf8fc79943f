//! The write API: `POST /v1/tables/{table}/rows`.
//!
//! A write is answered `200` once its rows committed, or `202` once they are in the spool: by
//! the table's `ack`, or as the request asks where the table allows it (`Prefer:
//! respond-async`, `Shardgate-Ack`). A write sent with an `Idempotency-Key` is written once
//! however often it is sent ([`crate::ingest::idempotent`]).
//!
//! The handler checks the table, content type, encoding and size, reads the body within the
//! in-flight budget, and hands it to [`crate::ingest::write`], which decodes, routes, queues and
//! waits for the commits (invariant 5). Each refusal has its own status and the JSON error
//! body; a refused request stores nothing, except that rows bound for other shards may have
//! committed when one shard fails late (503, 422).

use super::encoding::{BodyEncoding, EncodingError};
use super::error::error_response;
use super::state::AppState;
use crate::access::Caller;
use crate::config::AckMode;
use crate::hotkeys::cap::KeyOverLimit;
use crate::ingest::idempotent::KeyedAck;
use crate::ingest::keys::{Fingerprint, IdempotencyKey, KeyRefused};
use crate::ingest::write::{SpoolAck, WriteAck, WriteRefused};
use crate::metrics::Metrics;
use crate::schema::TableSchema;
use crate::schema::decode::{BodyFormat, DecodeError, RowError};
use crate::shards::queue::{SubmitError, WriteError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;

/// Why a request was refused; each kind maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: the path names no declared table.
    #[error("unknown table `{0}`")]
    UnknownTable(String),
    /// 404: no such endpoint.
    #[error("no such endpoint")]
    NoRoute,
    /// 403: the user has no write grant for the table.
    #[error("user {user} may not write table {table}: it needs the table in its write grant")]
    NotGranted {
        /// The user.
        user: String,
        /// The table.
        table: String,
    },
    /// 415: the body is neither JSON nor NDJSON.
    #[error(
        "unsupported content type {0}; send application/json (an array of objects) or application/x-ndjson"
    )]
    UnsupportedMediaType(String),
    /// 415, 413 or 400: the body's `Content-Encoding` is not one shardgate reads, it
    /// decompresses past `server.max_body_size`, or it is corrupt.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// 413: the body exceeds `server.max_body_size`.
    #[error("request body exceeds the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// 413: the rows for one shard exceed its whole queue.
    #[error(transparent)]
    TooLargeForQueue(SubmitError),
    /// 400: the body could not be read or parsed.
    #[error("{0}")]
    Malformed(String),
    /// 400: some rows break the schema.
    #[error("{total} invalid value(s); nothing was stored")]
    InvalidRows {
        /// The first problems.
        errors: Vec<RowError>,
        /// All problems.
        total: usize,
        /// Rows in the body, all refused.
        rows: usize,
    },
    /// 429: a target queue, or the budget of request bodies in flight, is full.
    #[error("{reason}; retry after {}", crate::units::format_duration(*.retry_after))]
    Overloaded {
        /// What is full.
        reason: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// 429: a key of the request is over its table's per-key rate limit.
    #[error("{over}; retry after {}", crate::units::format_duration(.0.retry_after), over = .0)]
    KeyOverLimit(KeyOverLimit),
    /// 400: the request asks for an ack its table does not allow, or names none.
    #[error("{0}")]
    BadAck(String),
    /// 503: the spool could not make the rows durable.
    #[error("{0}; retrying is safe, nothing was acknowledged")]
    SpoolUnavailable(String),
    /// 400: the `Idempotency-Key` header is not a key, or is sent more than once.
    #[error("{0}")]
    BadIdempotencyKey(String),
    /// 409, 422 or 503: a write with an idempotency key that cannot be written as asked.
    #[error(transparent)]
    Key(KeyRefused),
    /// 422 or 503: some shard did not commit its rows.
    #[error("{}", write_failure_message(.failures))]
    WriteFailed {
        /// One entry per failed shard.
        failures: Vec<WriteError>,
        /// Rows per shard that did commit.
        committed: BTreeMap<String, usize>,
        /// `Retry-After` for a 503.
        retry_after: Duration,
    },
}

/// Whether Postgres refused some shard's rows for their data (422), rather than a shard
/// failing to commit in time (503).
fn any_rejected(failures: &[WriteError]) -> bool {
    failures.iter().any(|f| matches!(f, WriteError::Rejected { .. }))
}

/// Whether some shard refused an append to a stream for its versions (409).
fn any_stream_conflict(failures: &[WriteError]) -> bool {
    failures
        .iter()
        .any(|f| matches!(f, WriteError::StreamConflict { .. }))
}

fn write_failure_message(failures: &[WriteError]) -> String {
    if let Some(WriteError::StreamConflict { conflict, .. }) = failures
        .iter()
        .find(|f| matches!(f, WriteError::StreamConflict { .. }))
    {
        format!("{conflict}; nothing of that stream was stored")
    } else if any_rejected(failures) {
        "a shard rejected the rows; rows for other shards may have committed".into()
    } else {
        "a shard could not commit the rows before the deadline; rows for other shards may have \
         committed, and retrying is safe for tables with an id"
            .into()
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownTable(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::NotGranted { .. } => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType(_) | ApiError::Encoding(EncodingError::Unsupported(_)) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::BodyTooLarge(_)
            | ApiError::Encoding(EncodingError::TooLarge(_))
            | ApiError::TooLargeForQueue(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Encoding(EncodingError::Corrupt { .. }) => StatusCode::BAD_REQUEST,
            ApiError::Malformed(_)
            | ApiError::InvalidRows { .. }
            | ApiError::BadAck(_)
            | ApiError::BadIdempotencyKey(_) => StatusCode::BAD_REQUEST,
            ApiError::Key(KeyRefused::InFlight(_)) => StatusCode::CONFLICT,
            ApiError::Key(KeyRefused::Reused(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Key(KeyRefused::Unknown { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::SpoolUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Overloaded { .. } | ApiError::KeyOverLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::WriteFailed { failures, .. } => {
                if any_stream_conflict(failures) {
                    StatusCode::CONFLICT
                } else if any_rejected(failures) {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            ApiError::InvalidRows { errors, .. } => json!(errors),
            ApiError::NotGranted { table, .. } => json!([{"table": table, "grant": "write"}]),
            ApiError::WriteFailed {
                failures, committed, ..
            } => {
                let mut details: Vec<serde_json::Value> = failures.iter().map(failure_detail).collect();
                details.extend(
                    committed
                        .iter()
                        .map(|(shard, rows)| json!({"shard": shard, "committed": rows})),
                );
                json!(details)
            }
            _ => json!([]),
        }
    }

    /// The `reason` label of `shardgate_requests_rejected_total`.
    fn reason(&self) -> &'static str {
        match self {
            ApiError::UnknownTable(_) | ApiError::NoRoute => "unknown_table",
            ApiError::NotGranted { .. } => "not_granted",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Encoding(EncodingError::Unsupported(_)) => "unsupported_encoding",
            ApiError::BodyTooLarge(_)
            | ApiError::Encoding(EncodingError::TooLarge(_))
            | ApiError::TooLargeForQueue(_) => "too_large",
            ApiError::Malformed(_) | ApiError::Encoding(EncodingError::Corrupt { .. }) => "malformed",
            ApiError::InvalidRows { .. } => "invalid",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::KeyOverLimit(_) => "key_over_limit",
            ApiError::BadAck(_) => "bad_ack",
            ApiError::BadIdempotencyKey(_) => "bad_idempotency_key",
            ApiError::Key(KeyRefused::InFlight(_)) => "key_in_flight",
            ApiError::Key(KeyRefused::Reused(_)) => "key_reused",
            ApiError::Key(KeyRefused::Unknown { .. }) => "unavailable",
            ApiError::SpoolUnavailable(_) => "spool_failed",
            ApiError::WriteFailed { failures, .. } => {
                if any_stream_conflict(failures) {
                    "stream_conflict"
                } else if any_rejected(failures) {
                    "rejected"
                } else {
                    failures.first().map_or("unavailable", WriteError::reason)
                }
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Overloaded { retry_after, .. } => Some(*retry_after),
            ApiError::KeyOverLimit(over) => Some(over.retry_after),
            ApiError::SpoolUnavailable(_)
            | ApiError::Key(KeyRefused::InFlight(_) | KeyRefused::Unknown { .. }) => {
                Some(Duration::from_secs(1))
            }
            ApiError::WriteFailed { retry_after, .. } if self.status() == StatusCode::SERVICE_UNAVAILABLE => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

fn failure_detail(failure: &WriteError) -> serde_json::Value {
    match failure {
        WriteError::Unavailable { shard, reason } | WriteError::RoutingChanged { shard, reason } => {
            json!({"shard": shard.0, "reason": reason})
        }
        WriteError::Rejected {
            shard,
            sqlstate,
            message,
        } => json!({"shard": shard.0, "reason": message, "sqlstate": sqlstate}),
        WriteError::StreamConflict { shard, conflict } => {
            let stream: serde_json::Map<String, serde_json::Value> = conflict
                .stream
                .iter()
                .map(|(column, value)| (column.clone(), json!(value)))
                .collect();
            json!({
                "shard": shard.0,
                "stream": stream,
                "version": conflict.version,
                "current_version": conflict.current,
            })
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(
            self.status(),
            self.to_string(),
            self.details(),
            self.retry_after(),
        )
    }
}

impl ApiError {
    /// The answer to a write the write path refused; 429 and 503 ask to retry after
    /// `retry_after`.
    fn refused(refusal: WriteRefused, retry_after: Duration) -> ApiError {
        match refusal {
            WriteRefused::Invalid(DecodeError::Malformed(message)) => {
                ApiError::Malformed(format!("malformed body: {message}"))
            }
            WriteRefused::Invalid(DecodeError::InvalidRows { errors, total, rows }) => {
                ApiError::InvalidRows { errors, total, rows }
            }
            WriteRefused::QueueFull(e) => ApiError::Overloaded {
                reason: e.to_string(),
                retry_after,
            },
            WriteRefused::TooLarge(e) => ApiError::TooLargeForQueue(e),
            WriteRefused::SpoolFull(e) => ApiError::Overloaded {
                reason: e.to_string(),
                retry_after,
            },
            WriteRefused::SpoolFailed(e) => {
                ApiError::SpoolUnavailable(WriteRefused::SpoolFailed(e).to_string())
            }
            WriteRefused::KeyOverLimit(over) => ApiError::KeyOverLimit(over),
            WriteRefused::Key(refused) => ApiError::Key(refused),
            WriteRefused::Failed { failures, committed } => ApiError::WriteFailed {
                failures,
                committed,
                retry_after,
            },
        }
    }
}

/// `POST /v1/tables/{table}/rows`: accepts the rows, answers once they committed, and records
/// the request in the metrics.
pub async fn write_rows(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let in_flight = InFlight::enter(state.gateway.metrics());
    let outcome = accept_rows(&state, &caller, &table, &headers, body).await;
    drop(in_flight);
    let label = if state.gateway.table(&table).is_some() {
        table.as_str()
    } else {
        "unknown"
    };
    if let Err(error) = &outcome {
        count_refusal(state.gateway.metrics(), label, error);
    }
    let response = outcome.into_response();
    state
        .gateway
        .metrics()
        .request_duration
        .with_label_values(&[label, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Counts a refused request by its reason, and the rows of a body refused for breaking the
/// schema (rows refused later are counted where their shard's answer is read).
fn count_refusal(metrics: &Metrics, table: &str, error: &ApiError) {
    metrics
        .requests_rejected
        .with_label_values(&[table, error.reason()])
        .inc();
    if let ApiError::InvalidRows { rows, .. } = error {
        metrics
            .rows_rejected
            .with_label_values(&[table, "invalid"])
            .inc_by(*rows as u64);
    }
}

/// Counts a request in flight until dropped, also when the client goes away mid-request.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.requests_in_flight.inc();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.requests_in_flight.dec();
    }
}

/// The answer to an accepted write: `200` once committed, `202` once spooled.
enum Accepted {
    Committed(WriteAck),
    /// A write with an idempotency key, committed now or by an earlier attempt.
    Keyed(KeyedAck),
    Spooled {
        ack: SpoolAck,
        /// Whether the spool was asked for with `Prefer: respond-async`.
        preferred: bool,
    },
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        match self {
            Accepted::Committed(ack) => Json(ack).into_response(),
            Accepted::Keyed(KeyedAck::Committed { ack, replayed }) => {
                replayed_if(Json(ack).into_response(), replayed)
            }
            Accepted::Keyed(KeyedAck::Spooled { ack, replayed }) => {
                replayed_if((StatusCode::ACCEPTED, Json(ack)).into_response(), replayed)
            }
            Accepted::Spooled { ack, preferred } => {
                let mut response = (StatusCode::ACCEPTED, Json(ack)).into_response();
                if preferred {
                    response.headers_mut().insert(
                        "preference-applied",
                        header::HeaderValue::from_static("respond-async"),
                    );
                }
                response
            }
        }
    }
}

async fn accept_rows(
    state: &AppState,
    caller: &Caller,
    table: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let (table_id, schema) = state
        .gateway
        .table(table)
        .ok_or_else(|| ApiError::UnknownTable(table.to_string()))?;
    if !caller.may_write(table) {
        return Err(ApiError::NotGranted {
            user: caller.name().unwrap_or_default().to_string(),
            table: table.to_string(),
        });
    }
    let ack = chosen_ack(schema, headers)?;
    let format = body_format(headers)?;
    let encoding = BodyEncoding::of(headers)?;
    let mut body_permit = reserve_body_memory(state, headers)?;
    let limit = state.limits.max_body_size;
    let body = encoding.decode(
        read_body(body, headers, limit).await?,
        limit,
        |more| -> Result<(), ApiError> {
            body_permit.merge(reserve_body_bytes(state, more)?);
            Ok(())
        },
    )?;
    let refused = |refusal| ApiError::refused(refusal, state.limits.retry_after);
    let key = idempotency_key(headers)?;
    let ack = match ack {
        // `Prefer: respond-async` is a preference: a keyed write to a table that commits by
        // default is answered on commit, where its key is kept.
        ChosenAck::Spool { preferred: true } if key.is_some() && schema.ack == AckMode::Commit => {
            ChosenAck::Commit
        }
        ack => ack,
    };
    if let Some(key) = key {
        let writes = state.gateway.writes();
        let fingerprint = Fingerprint::of(table, format, &body);
        let _in_flight = writes
            .keys_in_flight()
            .enter(&key, fingerprint)
            .map_err(ApiError::Key)?;
        let keyed = (&key, fingerprint);
        let answer = match ack {
            ChosenAck::Commit => {
                let submitted = writes
                    .submit_keyed((table_id, schema), format, &body, keyed)
                    .await
                    .map_err(refused)?;
                drop((body, body_permit));
                submitted.committed().await
            }
            ChosenAck::Spool { .. } => {
                let spooled = writes.spool_keyed((table_id, schema), format, &body, keyed).await;
                drop((body, body_permit));
                spooled
            }
        };
        return Ok(Accepted::Keyed(answer.map_err(refused)?));
    }
    match ack {
        ChosenAck::Commit => {
            let submitted = state
                .gateway
                .writes()
                .submit(table_id, schema, format, &body)
                .map_err(refused)?;
            drop((body, body_permit));
            Ok(Accepted::Committed(submitted.committed().await.map_err(refused)?))
        }
        ChosenAck::Spool { preferred } => {
            let spooling = state
                .gateway
                .writes()
                .spool(table_id, schema, format, &body)
                .map_err(refused)?;
            drop((body, body_permit));
            let ack = spooling.durable().await.map_err(refused)?;
            Ok(Accepted::Spooled { ack, preferred })
        }
    }
}

/// `response` with `Idempotent-Replayed: true` when an earlier attempt wrote or spooled the
/// rows.
fn replayed_if(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, header::HeaderValue::from_static("true"));
    }
    response
}

/// The ack a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChosenAck {
    Commit,
    Spool {
        /// Asked for with `Prefer: respond-async` (answered with `Preference-Applied`).
        preferred: bool,
    },
}

/// The ack of a request to `schema`: the table's `ack`, unless the request asks for another
/// and the table allows it (`ack_per_request`). `Shardgate-Ack: commit|spool` asks outright
/// and is refused when not allowed; `Prefer: respond-async` (RFC 7240) is a preference, so
/// a table that does not allow it answers as usual.
fn chosen_ack(schema: &TableSchema, headers: &HeaderMap) -> Result<ChosenAck, ApiError> {
    let explicit = match headers.get(ACK_HEADER) {
        None => None,
        Some(value) => match value.to_str().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Ok("commit") => Some(AckMode::Commit),
            Ok("spool") => Some(AckMode::Spool),
            _ => {
                return Err(ApiError::BadAck(format!(
                    "{ACK_HEADER} must be `commit` or `spool`, not {value:?}"
                )));
            }
        },
    };
    let preferred = prefers_async(headers);
    let asked = explicit.or(preferred.then_some(AckMode::Spool));
    let mode = match asked {
        Some(mode) if mode != schema.ack && !schema.ack_per_request => {
            if explicit.is_some() {
                return Err(ApiError::BadAck(format!(
                    "table `{}` acknowledges with `{}` only; set ack_per_request = true on it to let requests choose",
                    schema.name,
                    ack_name(schema.ack)
                )));
            }
            schema.ack
        }
        Some(mode) => mode,
        None => schema.ack,
    };
    Ok(match mode {
        AckMode::Commit => ChosenAck::Commit,
        AckMode::Spool => ChosenAck::Spool {
            preferred: preferred && explicit.is_none(),
        },
    })
}

/// The header a request names its ack with.
const ACK_HEADER: &str = "shardgate-ack";

/// The header naming a write's idempotency key.
const KEY_HEADER: &str = "idempotency-key";

/// The header saying an answer is that of an earlier attempt with the same idempotency key.
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The request's idempotency key, if it names one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadIdempotencyKey(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|e| ApiError::BadIdempotencyKey(e.to_string()))
}

fn ack_name(mode: AckMode) -> &'static str {
    match mode {
        AckMode::Commit => "commit",
        AckMode::Spool => "spool",
    }
}

/// Whether a `Prefer` header holds the `respond-async` preference.
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            let token = preference.split(';').next().unwrap_or("");
            token.trim().eq_ignore_ascii_case("respond-async")
        })
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(value) = value else {
        return Err(ApiError::UnsupportedMediaType("(none)".into()));
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" => Ok(BodyFormat::Ndjson),
        _ => Err(ApiError::UnsupportedMediaType(value)),
    }
}

/// Reserves room for the body among all bodies being read and decoded
/// (`server.max_inflight_body_bytes`): the declared length, or the body limit when none is
/// declared. Refuses with 429 when the room is taken, before anything is read. A compressed
/// body reserves more as it is decompressed ([`reserve_body_bytes`]).
fn reserve_body_memory<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<SemaphorePermit<'a>, ApiError> {
    let limit = state.limits.max_body_size;
    let declared = content_length(headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    reserve_body_bytes(state, declared.map_or(limit, |len| len as usize).max(1))
}

/// Reserves `wanted` bytes of the in-flight body budget, or refuses with 429.
fn reserve_body_bytes(state: &AppState, wanted: usize) -> Result<SemaphorePermit<'_>, ApiError> {
    // Fits u32: the config caps both limits below 4Gi.
    state
        .body_budget
        .try_acquire_many(wanted as u32)
        .map_err(|_| ApiError::Overloaded {
            reason: "too many request bodies are being read".into(),
            retry_after: state.limits.retry_after,
        })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads the whole body, refusing with 413 past `limit` bytes (declared or read).
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    if content_length(headers).is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::BodyTooLarge(limit)
        } else {
            ApiError::Malformed(format!("cannot read the request body: {e}"))
        }
    })
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
