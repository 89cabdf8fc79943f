//! The reading side of a session: reporting queries and catalog queries described before
//! they run, their portals started and their rows streamed (a row limit suspends them), and
//! what bounds them: the session's statement timeout and its connection's cancel handle.

use super::{Block, Prepared, Session, in_failed_block};
use crate::access::Caller;
use crate::postgres::errors::{self, refused};
use crate::postgres::insert::Parameters;
use crate::postgres::params::json_parameters;
use crate::postgres::select;
use crate::postgres::statement::Statement;
use crate::query::Description;
use futures_util::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::results::{FieldInfo, QueryResponse, Tag};
use pgwire::api::{ClientInfo, ConnectionHandle, METADATA_USER, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::PortalSuspended;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

/// Query descriptions a session keeps at most; past them it forgets them all.
const MAX_DESCRIPTIONS: usize = 256;

impl Session {
    /// Who runs the session's queries and what bounds them: the `statement_timeout` it set,
    /// if any (validated when set), and its connection's cancel handle.
    pub(super) fn bounds(&self) -> PgWireResult<select::Bounds> {
        let timeout = self.parameters().get("statement_timeout").cloned();
        Ok(select::Bounds {
            caller: self.caller()?,
            timeout: timeout.and_then(|value| select::statement_timeout(&value).ok().flatten()),
            cancel: self.connection.get().cloned(),
        })
    }

    /// Keeps the connection's cancel handle, which pgwire registered at login, and the user
    /// who logged in.
    pub(super) fn remember_connection<C: ClientInfo>(&self, client: &C) {
        if self.connection.get().is_none()
            && let Some(handle) = client.session_extensions().get::<Arc<ConnectionHandle>>()
        {
            let _ = self.connection.set(handle.as_ref().clone());
        }
        if self.caller.get().is_none()
            && let Some(name) = client.metadata().get(METADATA_USER)
            && let Some(user) = self.services.gateway.access().user(name)
        {
            let _ = self.caller.set(Caller::User(user.clone()));
        }
    }

    /// The user who logged in.
    pub(super) fn caller(&self) -> PgWireResult<Caller> {
        self.caller.get().cloned().ok_or_else(|| {
            refused(
                errors::INVALID_AUTHORIZATION,
                "the session's user is not one of the configured users",
            )
        })
    }

    /// The parameter and column types of the reporting query `sql`, asked of a shard the first
    /// time this session describes it.
    pub(super) async fn description(&self, sql: &str) -> PgWireResult<Arc<Description>> {
        if let Some(known) = self.known_descriptions().get(sql) {
            return Ok(known.clone());
        }
        let description = select::describe(self.services.gateway.queries(), sql)
            .await
            .inspect_err(|_| self.fail_block())?;
        let description = Arc::new(description);
        let mut known = self.known_descriptions();
        if known.len() >= MAX_DESCRIPTIONS {
            known.clear();
        }
        known.insert(sql.to_string(), description.clone());
        Ok(description)
    }

    pub(super) fn known_descriptions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Description>>> {
        self.descriptions
            .lock()
            .expect("a session's descriptions lock is never poisoned")
    }

    /// The parameter types (those the client `declared`, else those described) and result
    /// columns in `formats` of a statement that returns rows from the shards or the metadata
    /// database; `None` for any other statement.
    pub(super) async fn describe_rows(
        &self,
        statement: &Prepared,
        declared: &[Option<Type>],
        formats: Option<&Format>,
    ) -> PgWireResult<Option<(Vec<Type>, Vec<FieldInfo>)>> {
        Ok(Some(match statement {
            Prepared::One(Statement::Select(sql)) => {
                let description = self.description(sql).await?;
                let parameters = select::parameter_types(&description, declared);
                (parameters, select::fields(&description.columns, formats))
            }
            Prepared::One(Statement::Catalog(sql)) => {
                let description = self.services.metadata.describe(sql).await?;
                (description.parameter_types(declared), description.fields(formats))
            }
            _ => return Ok(None),
        }))
    }

    /// Starts the rows of `portal`, a reporting query over the shards or a catalog query.
    pub(super) async fn start_rows(&self, portal: &Portal<Arc<Prepared>>) -> PgWireResult<QueryResponse> {
        let parameters = Parameters {
            values: &portal.parameters,
            format: &portal.parameter_format,
            types: &portal.statement.parameter_types,
        };
        let formats = &portal.result_column_format;
        match portal.statement.statement.as_ref() {
            Prepared::One(Statement::Catalog(sql)) => {
                self.services.metadata.run(sql, &parameters, formats).await
            }
            Prepared::One(Statement::Select(sql)) => {
                let description = self.description(sql).await?;
                let params = json_parameters(&parameters, &description.parameters)?;
                let queries = self.services.gateway.queries();
                select::start(queries, sql, params, formats, self.bounds()?).await
            }
            _ => Err(refused(errors::SYNTAX_ERROR, "the portal is not a query")),
        }
    }

    /// Starts the query of `portal` at its first `Execute` and sends up to `max_rows` of its
    /// rows (all when 0), then `PortalSuspended` while rows remain, or `SELECT n` after the
    /// last; a later `Execute` of the portal sends on from there.
    pub(super) async fn execute_rows<C>(
        &self,
        client: &mut C,
        portal: &Portal<Arc<Prepared>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.block() == Block::Failed {
            return Err(in_failed_block());
        }
        let state = portal.state();
        let mut state = state.lock().await;
        if matches!(*state, PortalExecutionState::Initial) {
            let started = match self.connection.get() {
                Some(handle) => {
                    let canceled = handle.start_query().await;
                    tokio::select! {
                        started = self.start_rows(portal) => started,
                        Ok(()) = canceled => Err(PgWireError::QueryCanceled),
                    }
                }
                None => self.start_rows(portal).await,
            };
            *state = PortalExecutionState::Suspended(started?);
        }
        let PortalExecutionState::Suspended(answer) = &mut *state else {
            let tag = Tag::new("SELECT").with_rows(0);
            return Ok(client
                .send(PgWireBackendMessage::CommandComplete(tag.into()))
                .await?);
        };
        let rows = answer.data_rows();
        let mut sent = 0;
        while max_rows == 0 || sent < max_rows {
            let Some(row) = rows.next().await else {
                *state = PortalExecutionState::Finished;
                let tag = Tag::new("SELECT").with_rows(sent);
                return Ok(client
                    .send(PgWireBackendMessage::CommandComplete(tag.into()))
                    .await?);
            };
            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            sent += 1;
        }
        Ok(client
            .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
            .await?)
    }
}
