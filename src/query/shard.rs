//! One shard's part of a query: a task runs the rendered statement in a read-only transaction
//! with a statement timeout and passes the decoded rows through a bounded channel, so a merge
//! holds a few rows per shard however many the shard returns, and every shard reads at once.

use super::QueryError;
use super::value::{Cell, JsonParam, ResultType};
use crate::pg::describe_pool_error;
use bytes::BytesMut;
use deadpool_postgres::{Pool, PoolError, TimeoutType};
use futures_util::{FutureExt, TryStreamExt, pin_mut};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

/// Most rows the reader passes to the merge in one message: as many as the shard has already
/// sent, so a slow shard's rows still go one by one while a fast one's pay one hand-over per
/// batch.
const ROWS_PER_MESSAGE: usize = 64;

/// Messages buffered per shard between its reader task and the merge: with full messages,
/// 256 rows.
const MESSAGES_IN_FLIGHT: usize = 4;

/// The statement every visited shard runs.
#[derive(Clone)]
pub struct ShardStatement {
    /// SQL rendered from the checked plan.
    pub sql: String,
    /// Values of its `$1..$n`.
    pub params: Vec<JsonParam>,
    /// The numbers those parameters have in the query as sent (for error messages).
    pub numbers: Vec<usize>,
    /// `statement_timeout` for the shard transaction.
    pub timeout: Duration,
    /// `TimeZone` for the shard transaction (validated: no quotes).
    pub time_zone: String,
}

impl ShardStatement {
    /// The same statement with other SQL (binding the same parameters).
    pub fn with_sql(&self, sql: String) -> ShardStatement {
        ShardStatement { sql, ..self.clone() }
    }
}

enum Message {
    Columns(Vec<Type>),
    Rows(Vec<Vec<Cell>>),
    Done,
    Failed(QueryError),
}

/// A shard's result rows, read as the merge asks for them. Dropping it stops the reader, which
/// rolls its transaction back.
pub struct ShardRows {
    name: String,
    types: Vec<Type>,
    receiver: mpsc::Receiver<Message>,
    /// Rows of the last message not yet taken.
    received: std::vec::IntoIter<Vec<Cell>>,
    finished: bool,
}

impl ShardRows {
    /// Starts the statement on the shard behind `pool` and waits for its result description.
    pub async fn open(
        name: &str,
        pool: Pool,
        statement: Arc<ShardStatement>,
    ) -> Result<ShardRows, QueryError> {
        let (sender, mut receiver) = mpsc::channel(MESSAGES_IN_FLIGHT);
        tokio::spawn(read_shard(name.to_string(), pool, statement, sender));
        match receiver.recv().await {
            Some(Message::Columns(types)) => Ok(ShardRows {
                name: name.to_string(),
                types,
                receiver,
                received: Vec::new().into_iter(),
                finished: false,
            }),
            Some(Message::Failed(e)) => Err(e),
            _ => Err(stopped(name)),
        }
    }

    /// The shard's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Postgres types of the result columns, as the shard described them.
    pub fn types(&self) -> &[Type] {
        &self.types
    }

    /// The next row; `None` once the last has been read and the shard's transaction committed.
    pub async fn next(&mut self) -> Result<Option<Vec<Cell>>, QueryError> {
        if let Some(row) = self.received.next() {
            return Ok(Some(row));
        }
        if self.finished {
            return Ok(None);
        }
        match self.receiver.recv().await {
            Some(Message::Rows(rows)) => {
                self.received = rows.into_iter();
                Ok(self.received.next())
            }
            Some(Message::Done) => {
                self.finished = true;
                Ok(None)
            }
            Some(Message::Failed(e)) => {
                self.finished = true;
                Err(e)
            }
            Some(Message::Columns(_)) | None => Err(stopped(&self.name)),
        }
    }
}

/// A query connection to the shard: 503 when all stay busy for `query.wait_timeout`, 502 when
/// none can be opened.
pub async fn checkout(name: &str, pool: &Pool) -> Result<deadpool_postgres::Object, QueryError> {
    pool.get().await.map_err(|e| match e {
        PoolError::Timeout(TimeoutType::Wait) => QueryError::Busy {
            shard: name.to_string(),
        },
        other => QueryError::Unreachable {
            shard: name.to_string(),
            reason: describe_pool_error(&other),
        },
    })
}

fn stopped(name: &str) -> QueryError {
    failed(
        name,
        "its rows stopped before the end (was the answer read more slowly than the statement timeout allows?)"
            .to_string(),
    )
}

fn failed(name: &str, message: String) -> QueryError {
    QueryError::ShardFailed {
        shard: name.to_string(),
        message,
    }
}

/// Sorts a shard's error: a timeout (504), a query it refused as invalid (400), else a failure.
pub fn classify(name: &str, e: tokio_postgres::Error) -> QueryError {
    match e.code() {
        Some(code) if *code == SqlState::QUERY_CANCELED => QueryError::Timeout {
            shard: name.to_string(),
        },
        Some(code) if code.code().starts_with("42") || code.code().starts_with("22") => QueryError::Invalid {
            shard: name.to_string(),
            message: e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_string()),
        },
        _ => {
            let message = e.as_db_error().map_or_else(
                || e.to_string(),
                |db| format!("{} ({})", db.message(), db.code().code()),
            );
            failed(name, message)
        }
    }
}

/// Encodes each parameter once as the type the shard inferred for it, so a value that does not
/// fit is the caller's error (400) rather than a failure while sending.
fn check_parameters(statement: &ShardStatement, types: &[Type]) -> Result<(), QueryError> {
    let mut scratch = BytesMut::new();
    for ((param, ty), number) in statement.params.iter().zip(types).zip(&statement.numbers) {
        scratch.clear();
        param
            .to_sql_checked(ty, &mut scratch)
            .map_err(|e| QueryError::BadParameter {
                number: *number,
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// Runs the shard's part until it is done, or until the merge is gone (its client cancelled
/// or left, or a LIMIT was reached): then the statement is cancelled on the shard, so the
/// shard stops working on it at once rather than at the statement timeout.
async fn read_shard(name: String, pool: Pool, statement: Arc<ShardStatement>, sender: mpsc::Sender<Message>) {
    let backend = AtomicI32::new(0);
    let mut client = match checkout(&name, &pool).await {
        Ok(client) => client,
        Err(e) => {
            let _ = tokio::time::timeout(statement.timeout, sender.send(Message::Failed(e))).await;
            return;
        }
    };
    let sent = tokio::select! {
        biased;
        sent = send_rows(&name, &mut client, &statement, &sender, &backend) => Some(sent),
        () = sender.closed() => None,
    };
    let Some(sent) = sent else {
        // The cancel goes over another connection while this one stays checked out, and this
        // one is then closed rather than pooled: a cancel that lands late (on the rollback of
        // the abandoned transaction, or on whatever ran next) can reach no other query.
        stop_backend(&name, &pool, backend.load(Ordering::Relaxed)).await;
        drop(deadpool_postgres::Object::take(client));
        return;
    };
    drop(client);
    if let Err(e) = sent {
        // The connection is back in the pool by now; a reader that never drains the buffer
        // finds it closed without this message.
        let _ = tokio::time::timeout(statement.timeout, sender.send(Message::Failed(e))).await;
    }
}

/// Passes `message` to the merge. `Ok(false)`: the merge is gone. A merge that takes nothing
/// for the statement timeout (its client stopped reading) stops the shard's part.
async fn pass(
    name: &str,
    statement: &ShardStatement,
    sender: &mpsc::Sender<Message>,
    message: Message,
) -> Result<bool, QueryError> {
    match tokio::time::timeout(statement.timeout, sender.send(message)).await {
        Ok(sent) => Ok(sent.is_ok()),
        Err(_) => Err(QueryError::NotRead {
            shard: name.to_string(),
        }),
    }
}

/// Cancels what shard `name`'s `backend` process (0: not known yet) runs, from another of its
/// query connections.
async fn stop_backend(name: &str, pool: &Pool, backend: i32) {
    if backend == 0 {
        return;
    }
    match checkout(name, pool).await {
        Ok(client) => {
            if let Err(e) = client.execute("SELECT pg_cancel_backend($1)", &[&backend]).await {
                tracing::warn!(shard = name, error = %e, "could not cancel an abandoned query");
            }
        }
        Err(e) => tracing::warn!(shard = name, error = %e, "could not cancel an abandoned query"),
    }
}

/// Sends the result description, then the rows, then `Done` after the commit, over `client`; the shard's
/// process id goes into `backend` as soon as it is known. Stops quietly when the merge no
/// longer listens, and with an error when it stops taking rows.
async fn send_rows(
    name: &str,
    client: &mut deadpool_postgres::Object,
    statement: &ShardStatement,
    sender: &mpsc::Sender<Message>,
    backend: &AtomicI32,
) -> Result<(), QueryError> {
    let classify = |e| classify(name, e);
    let transaction = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(classify)?;
    let timeout_ms = statement.timeout.as_millis();
    let time_zone = &statement.time_zone;
    let set_up = transaction
        .simple_query(&format!(
            "SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL TimeZone = '{time_zone}'; SELECT pg_backend_pid()"
        ))
        .await
        .map_err(classify)?;
    let pid = set_up.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|pid| pid.parse::<i32>().ok()),
        _ => None,
    });
    backend.store(pid.unwrap_or(0), Ordering::Relaxed);
    let prepared = transaction.prepare(&statement.sql).await.map_err(classify)?;
    check_parameters(statement, prepared.params())?;
    let types: Vec<Type> = prepared.columns().iter().map(|c| c.type_().clone()).collect();
    let result_types: Option<Vec<ResultType>> = types.iter().map(ResultType::of).collect();
    if !pass(name, statement, sender, Message::Columns(types)).await? {
        return Ok(());
    }
    // A type shardgate cannot return: the engine refuses the query from the description.
    let Some(result_types) = result_types else {
        return Ok(());
    };
    let params = statement.params.iter().map(|p| p as &(dyn ToSql + Sync));
    let rows = transaction.query_raw(&prepared, params).await.map_err(classify)?;
    pin_mut!(rows);
    let read = |row: tokio_postgres::Row| {
        result_types
            .iter()
            .enumerate()
            .map(|(i, ty)| Cell::read(&row, i, *ty))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(name, e.to_string()))
    };
    let mut ended = false;
    while !ended {
        let Some(row) = rows.try_next().await.map_err(classify)? else {
            break;
        };
        let mut batch = vec![read(row)?];
        // Take the rows already received, without waiting for more.
        while batch.len() < ROWS_PER_MESSAGE {
            let Some(next) = rows.try_next().now_or_never() else {
                break;
            };
            match next.map_err(classify)? {
                Some(row) => batch.push(read(row)?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if !pass(name, statement, sender, Message::Rows(batch)).await? {
            return Ok(());
        }
    }
    // Every row is read: nothing is left for a cancel to stop.
    backend.store(0, Ordering::Relaxed);
    transaction.commit().await.map_err(classify)?;
    let _ = sender.send(Message::Done).await;
    Ok(())
}
