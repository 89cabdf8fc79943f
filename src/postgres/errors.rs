//! The one place a refusal becomes an `ErrorResponse`: a SQLSTATE a client can branch on, the
//! message Postgres would give, and a detail saying what was and was not stored.

use crate::ingest::keys::KeyRefused;
use crate::ingest::write::WriteRefused;
use crate::pgtype::sqlstate;
use crate::schema::decode::{DecodeError, RowError};
use crate::shards::queue::{SubmitError, WriteError};
use pgwire::error::{ErrorInfo, PgWireError};

/// `0A000 feature_not_supported`.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `25P02 in_failed_sql_transaction`.
pub const IN_FAILED_TRANSACTION: &str = "25P02";
/// `42P01 undefined_table`.
pub const UNDEFINED_TABLE: &str = "42P01";
/// `42601 syntax_error`.
pub const SYNTAX_ERROR: &str = "42601";
/// `53000 insufficient_resources`: a full queue or a key over its rate cap; retry later.
pub const INSUFFICIENT_RESOURCES: &str = "53000";
/// `57P01 admin_shutdown`: the server is shutting down.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `53300 too_many_connections`.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `54000 program_limit_exceeded`.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `08006 connection_failure`: a shard that could not commit.
pub const CONNECTION_FAILURE: &str = "08006";
/// `40001 serialization_failure`: the routing changed under the rows; retrying routes anew.
pub const SERIALIZATION_FAILURE: &str = "40001";

/// `28000 invalid_authorization_specification`.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// `42501 insufficient_privilege`.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Postgres's refusal of a table outside the user's grant, naming the grant it lacks.
pub fn permission_denied(user: &str, table: &str, grant: &str) -> PgWireError {
    let mut info = error(
        INSUFFICIENT_PRIVILEGE,
        format!("permission denied for table {table}"),
    );
    info.detail = Some(format!(
        "user {user} has no {grant} grant for table {table}; add it to the {grant} list of the \
         user's [[users]] entry"
    ));
    user_error(info)
}

/// An `ERROR` with `code` and `message`.
pub fn error(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), code.to_string(), message.into())
}

/// `info` as the error a handler returns.
pub fn user_error(info: ErrorInfo) -> PgWireError {
    PgWireError::UserError(Box::new(info))
}

/// `error` as the error a handler returns.
pub fn refused(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(error(code, message)))
}

/// The statement named `what` is not carried out here; `hint` says what to use instead.
pub fn redirected(what: &str, hint: &str) -> PgWireError {
    let mut info = error(
        FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported by shardgate"),
    );
    info.hint = Some(hint.to_string());
    user_error(info)
}

/// The statement named `what` is not carried out.
pub fn not_supported(what: &str) -> PgWireError {
    refused(
        FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported by shardgate"),
    )
}

/// Where a COPY stopped, for its error: the table, the line of the stream, and the rows of
/// the stream before it that committed.
pub struct CopyPlace<'a> {
    /// The table copied into.
    pub table: &'a str,
    /// The line of the stream the refusal is about (1 is the first, a header included).
    pub line: usize,
    /// Rows of the stream committed before it; none for a COPY in a transaction block,
    /// whose rows are written at `COMMIT`.
    pub committed: Option<usize>,
    /// Whether rows sent again are stored once, and why.
    pub resend: Resend,
}

/// Whether a client may send again the rows of a refused write without storing some twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// The table has an id: rows whose id is stored are skipped.
    SkipsStoredIds,
    /// The session's idempotency key names the writes: set it again and send the same
    /// statements, and what was written is skipped.
    UnderTheSameKey,
    /// Neither: rows sent again are stored twice.
    StoresTwice,
}

impl Resend {
    /// How rows of `table` sent again fare, in a session whose writes are `keyed` or not.
    pub fn of(table: &crate::schema::TableSchema, keyed: bool) -> Resend {
        match (table.id.is_some(), keyed) {
            (_, true) => Resend::UnderTheSameKey,
            (true, false) => Resend::SkipsStoredIds,
            (false, false) => Resend::StoresTwice,
        }
    }
}

impl CopyPlace<'_> {
    /// What a client should know of the rows sent before the refusal.
    fn detail(&self) -> String {
        match self.committed {
            Some(committed) => format!(
                "{committed} rows before it were committed; {}.",
                sending_again(self.resend)
            ),
            None => "the transaction block is aborted: none of its rows were written.".into(),
        }
    }
}

/// The detail of a `COMMIT` refused after `committed` of its block's `rows` committed.
pub fn commit_detail(committed: usize, rows: usize, resend: Resend) -> String {
    format!(
        "{committed} of the transaction block's {rows} rows were committed before the error; {}.",
        sending_again(resend)
    )
}

/// The detail of a pipeline refused after `committed` of the `rows` its statements wrote
/// since the last `Sync` committed.
pub fn pipeline_detail(committed: usize, rows: usize, resend: Resend) -> String {
    format!(
        "{committed} of the {rows} rows written since the last Sync were committed before the error; {}.",
        sending_again(resend)
    )
}

fn sending_again(resend: Resend) -> &'static str {
    match resend {
        Resend::SkipsStoredIds => {
            "sending the same data again is safe: rows whose id is stored already are skipped"
        }
        Resend::UnderTheSameKey => {
            "sending the same statements again under the same shardgate.idempotency_key is safe: what was written is skipped"
        }
        Resend::StoresTwice => "the table has no id, so sending those rows again would store them twice",
    }
}

/// The `ErrorResponse` of a write refused while copying into `place`.
pub fn copy_refused(refusal: &WriteRefused, place: &CopyPlace<'_>) -> ErrorInfo {
    let mut info = write_refused(refusal, place.table);
    if let WriteRefused::Invalid(DecodeError::InvalidRows { errors, .. }) = refusal
        && let Some(first) = errors.first()
    {
        let line = place.line + first.row;
        info.where_context = Some(match &first.column {
            Some(column) => format!("COPY {}, line {line}, column {column}", place.table),
            None => format!("COPY {}, line {line}", place.table),
        });
    }
    info.detail = Some(place.detail());
    info
}

/// The `ErrorResponse` of a write to `table` refused.
pub fn write_refused(refusal: &WriteRefused, table: &str) -> ErrorInfo {
    match refusal {
        WriteRefused::Invalid(DecodeError::InvalidRows { errors, .. }) => match errors.first() {
            Some(first) => row_error(first, table),
            None => error(sqlstate::INVALID_TEXT_REPRESENTATION, refusal.to_string()),
        },
        WriteRefused::Invalid(DecodeError::Malformed(message)) => {
            error(sqlstate::BAD_COPY_FILE_FORMAT, message.clone())
        }
        WriteRefused::QueueFull(full) => {
            let mut info = error(INSUFFICIENT_RESOURCES, full.to_string());
            info.hint = Some("retry the statement in a moment".into());
            info
        }
        WriteRefused::TooLarge(SubmitError::TooLarge { .. } | SubmitError::QueueFull { .. }) => {
            error(PROGRAM_LIMIT_EXCEEDED, refusal.to_string())
        }
        WriteRefused::KeyOverLimit(over) => {
            let mut info = error(INSUFFICIENT_RESOURCES, over.to_string());
            info.hint = Some("retry the statement in a moment".into());
            info
        }
        WriteRefused::SpoolFull(full) => error(INSUFFICIENT_RESOURCES, full.to_string()),
        WriteRefused::SpoolFailed(_) => error("58030", refusal.to_string()),
        WriteRefused::Failed { failures, .. } => match failures.first() {
            Some(failure) => shard_failure(failure),
            None => error(CONNECTION_FAILURE, refusal.to_string()),
        },
        WriteRefused::Key(KeyRefused::InFlight(_)) => error("55P03", refusal.to_string()),
        WriteRefused::Key(KeyRefused::Reused(_)) => error("23505", refusal.to_string()),
        WriteRefused::Key(KeyRefused::Unknown { .. }) => error(CONNECTION_FAILURE, refusal.to_string()),
    }
}

/// One row problem, worded as Postgres words it where they differ.
fn row_error(problem: &RowError, table: &str) -> ErrorInfo {
    let message = match (&problem.column, problem.sqlstate) {
        (Some(column), sqlstate::NOT_NULL_VIOLATION) => {
            format!("null value in column \"{column}\" of relation \"{table}\" violates not-null constraint")
        }
        _ => problem.reason.clone(),
    };
    error(problem.sqlstate, message)
}

/// A shard that did not commit its rows: refused for their data with the SQLSTATE the shard
/// gave, unreachable, or no longer the owner.
fn shard_failure(failure: &WriteError) -> ErrorInfo {
    let code = match failure {
        WriteError::Unavailable { .. } => CONNECTION_FAILURE,
        WriteError::Rejected { sqlstate, .. } => sqlstate.as_str(),
        WriteError::RoutingChanged { .. } | WriteError::StreamConflict { .. } => SERIALIZATION_FAILURE,
    };
    error(code, failure.to_string())
}
