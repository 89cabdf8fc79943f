//! The refusal of a query shardgate cannot run exactly, shared by every planner file.

/// A query shardgate cannot run: the message names the construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Refuses with `message`.
pub(super) fn unsupported<T>(message: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(message.into()))
}

/// How the refusal of a table that is not declared begins.
const UNKNOWN_TABLE: &str = "unknown table ";

impl Unsupported {
    /// The refusal of `name`, a table that is not declared.
    pub(super) fn unknown_table(name: impl std::fmt::Display) -> Unsupported {
        Unsupported(format!("{UNKNOWN_TABLE}{name}"))
    }

    /// The table named, when this refuses a table that is not declared (Postgres's `42P01`).
    pub fn table_not_declared(&self) -> Option<&str> {
        self.0.strip_prefix(UNKNOWN_TABLE)
    }
}
