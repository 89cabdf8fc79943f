//! The refusal of a query shardgate cannot run exactly, shared by every planner file.

/// A query shardgate cannot run: the message names the construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Refuses with `message`.
pub(super) fn unsupported<T>(message: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(message.into()))
}
