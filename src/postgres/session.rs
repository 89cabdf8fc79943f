//! One client session: the statements it sends, by the simple or the extended protocol, its
//! parameters, its transaction block and the COPY it may have in progress.
//!
//! Outside a block each statement is answered once its rows committed. A block is tracked as
//! Postgres tracks it (an error leaves it failed, answering `25P02` until `ROLLBACK`); its
//! `INSERT`s and COPYs are checked and staged in a [`BlockStage`], which `COMMIT` writes and
//! `ROLLBACK` drops.

use super::Services;
use super::auth::SERVER_VERSION;
use super::block::BlockStage;
use super::copy_in::{CopyIn, CopyTarget};
use super::errors::{self, refused};
use super::insert::{BoundInsert, Parameters};
use super::keyed::{KEY_PARAMETER, SessionKey};
use super::pending::{Pending, Refused};
use super::returning::Returning;
use super::select;
use super::statement::{self, CopyFrom, Insert, InsertValue, Statement, column_indexes};
use super::types::parameter_type;
use crate::access::Caller;
use crate::config::AckMode;
use crate::query::Description;
use crate::schema::Tables;
use crate::schema::decode::copy::CopyKind;
use async_trait::async_trait;
use futures_util::{Sink, SinkExt, stream};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_describe_response};
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle, DEFAULT_NAME, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{Describe, Execute, TARGET_TYPE_BYTE_STATEMENT};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

mod reads;

/// Writes of a pipeline in flight at most; past them the session waits for the oldest to
/// commit before it reads on, so a pipeline of any length holds bounded memory.
const MAX_PIPELINED: usize = 4096;

/// Where a session stands with respect to a transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// No block: each statement stands alone.
    None,
    /// Inside `BEGIN` ... `COMMIT`.
    Open,
    /// A statement of the block failed; only its end is accepted.
    Failed,
}

/// The state of one session, shared by its protocol handlers.
pub struct Session {
    services: Arc<Services>,
    parameters: Mutex<BTreeMap<String, String>>,
    block: Mutex<Block>,
    copy: tokio::sync::Mutex<Option<CopyIn>>,
    /// The rows of the open block, written at its `COMMIT`; none before its first write.
    stage: tokio::sync::Mutex<Option<BlockStage>>,
    /// The writes of the `INSERT`s answered before they committed: those the client sent
    /// more messages after, in one pipeline. The last of the pipeline, or its `Sync`, waits
    /// for them all.
    pipeline: tokio::sync::Mutex<Pending>,
    /// Whether the client sent more of its pipeline after the message being handled.
    more_follows: std::sync::atomic::AtomicBool,
    /// The parameter and column types of the reporting queries this session described, by
    /// their text: drivers that send every query unnamed describe it again each time.
    descriptions: Mutex<HashMap<String, Arc<Description>>>,
    /// The connection's handle for `CancelRequest`s, once the session has run a statement.
    connection: std::sync::OnceLock<Arc<ConnectionHandle>>,
    /// The user who logged in, once the session has run a statement.
    caller: std::sync::OnceLock<Caller>,
    /// The idempotency key naming the writes that follow, once set.
    key: Arc<SessionKey>,
    parser: Arc<SqlText>,
}

impl Session {
    /// A session over `services`.
    pub fn new(services: Arc<Services>) -> Session {
        let tables = services.gateway.tables().clone();
        Session {
            services,
            parameters: Mutex::new(BTreeMap::new()),
            block: Mutex::new(Block::None),
            copy: tokio::sync::Mutex::new(None),
            stage: tokio::sync::Mutex::new(None),
            pipeline: tokio::sync::Mutex::new(Pending::default()),
            more_follows: std::sync::atomic::AtomicBool::new(false),
            descriptions: Mutex::default(),
            connection: std::sync::OnceLock::new(),
            caller: std::sync::OnceLock::new(),
            key: Arc::default(),
            parser: Arc::new(SqlText { tables }),
        }
    }

    fn block(&self) -> Block {
        *self
            .block
            .lock()
            .expect("a session's block lock is never poisoned")
    }

    fn set_block(&self, block: Block) {
        *self
            .block
            .lock()
            .expect("a session's block lock is never poisoned") = block;
    }

    /// Carries out one statement, answering rows in `format`.
    async fn execute(
        &self,
        statement: &Statement,
        format: &Format,
        parameters: &Parameters<'_>,
    ) -> PgWireResult<Response> {
        if self.block() == Block::Failed && !matches!(statement, Statement::Commit | Statement::Rollback) {
            return Err(in_failed_block());
        }
        self.carry_out(statement, format, parameters)
            .await
            .inspect_err(|_| self.fail_block())
    }

    /// The error of a statement that does not parse, which fails an open block like any other.
    fn syntax_error(&self, why: String) -> PgWireError {
        self.fail_block();
        refused(errors::SYNTAX_ERROR, why)
    }

    /// Marks an open block failed, after an error of one of its statements.
    fn fail_block(&self) {
        if self.block() == Block::Open {
            self.set_block(Block::Failed);
        }
    }

    async fn carry_out(
        &self,
        statement: &Statement,
        formats: &Format,
        parameters: &Parameters<'_>,
    ) -> PgWireResult<Response> {
        let format = formats.format_for(0);
        Ok(match statement {
            Statement::Begin => {
                self.set_block(Block::Open);
                Response::TransactionStart(Tag::new("BEGIN"))
            }
            Statement::Commit => {
                let failed = self.block() == Block::Failed;
                self.set_block(Block::None);
                let stage = self.stage.lock().await.take();
                if failed {
                    return Ok(Response::TransactionEnd(Tag::new("ROLLBACK")));
                }
                if let Some(stage) = stage {
                    let gateway = &self.services.gateway;
                    stage
                        .commit(gateway.tables(), gateway.writes(), &self.key)
                        .await?;
                }
                Response::TransactionEnd(Tag::new("COMMIT"))
            }
            Statement::Rollback => {
                self.set_block(Block::None);
                self.stage.lock().await.take();
                Response::TransactionEnd(Tag::new("ROLLBACK"))
            }
            Statement::Insert(insert) => self.insert(insert, parameters, formats).await?,
            Statement::Set { name, value } => {
                if name == "statement_timeout" {
                    select::statement_timeout(value).map_err(|e| refused("22023", e))?;
                }
                if name == KEY_PARAMETER {
                    self.key.set(value)?;
                }
                self.parameters().insert(name.clone(), value.clone());
                Response::Execution(Tag::new("SET"))
            }
            Statement::Reset { name } => {
                let mut parameters = self.parameters();
                if name == "all" || name == KEY_PARAMETER {
                    self.key.clear();
                }
                if name == "all" {
                    parameters.clear();
                } else {
                    parameters.remove(name);
                }
                Response::Execution(Tag::new("RESET"))
            }
            Statement::Show { name } => {
                let value = self.show(name)?;
                one_value(name, Type::TEXT, value, format)?
            }
            Statement::Deallocate { all } => {
                Response::Execution(Tag::new(if *all { "DEALLOCATE ALL" } else { "DEALLOCATE" }))
            }
            Statement::Discard => {
                self.parameters().clear();
                self.key.clear();
                Response::Execution(Tag::new("DISCARD ALL"))
            }
            Statement::SelectInteger { value, label } => match i32::try_from(*value) {
                Ok(small) => one_value(label, Type::INT4, small, format)?,
                Err(_) => one_value(label, Type::INT8, *value, format)?,
            },
            Statement::SelectVersion => one_value(
                "version",
                Type::TEXT,
                format!("PostgreSQL {SERVER_VERSION}"),
                format,
            )?,
            Statement::CopyFrom(copy) => self.start_copy(copy.clone()).await?,
            Statement::Select(sql) => {
                let queries = self.services.gateway.queries();
                select::run(queries, sql, self.bounds()?).await?
            }
            Statement::CopyTo(copy) => {
                let queries = self.services.gateway.queries();
                Response::CopyOut(select::copy_out(queries, copy, self.bounds()?).await?)
            }
            Statement::Catalog(sql) => Response::Query(
                self.services
                    .metadata
                    .run(sql, parameters, &Format::UnifiedText)
                    .await?,
            ),
            Statement::Unsupported(what) => return Err(errors::not_supported(what)),
            Statement::Redirected { what, hint } => return Err(errors::redirected(what, hint)),
        })
    }

    /// An `INSERT`: written and answered once committed (once queued, when more of its
    /// pipeline follows, whose end waits for the commit), or checked and staged in a block;
    /// what it returns is answered in `formats`.
    async fn insert(
        &self,
        insert: &Insert,
        parameters: &Parameters<'_>,
        formats: &Format,
    ) -> PgWireResult<Response> {
        let tables = self.services.gateway.tables();
        let mut bound = BoundInsert::bind(insert, tables, parameters)?;
        let schema = tables.get(bound.table());
        self.may_write(&schema.name)?;
        if self.key.is_set() && !bound.returning().is_empty() {
            return Err(errors::not_supported(&format!(
                "INSERT ... RETURNING while {KEY_PARAMETER} is set (a retry would not return what the first attempt stored)"
            )));
        }
        let returned = if self.block() == Block::Open {
            let returned = bound.check(tables, self.services.gateway.writes())?;
            if !bound.returning().is_empty() {
                bound.keep_returned(&returned);
            }
            let mut stage = self.stage.lock().await;
            let stage = stage.get_or_insert_with(|| self.new_stage());
            stage.insert(&bound).await?;
            returned
        } else if let Some(key) = self.key.next() {
            let mut pipeline = self.pipeline.lock().await;
            if let Err(refused) = pipeline.settle().await {
                return Err(pipeline_error(refused, tables));
            }
            bound
                .write_keyed(tables, self.services.gateway.writes(), &key)
                .await?;
            Vec::new()
        } else if schema.ack == AckMode::Spool {
            let mut spooling = bound.spool(tables, self.services.gateway.writes())?;
            let returned = spooling.take_returned();
            spooling
                .durable()
                .await
                .map_err(|refusal| errors::user_error(errors::write_refused(&refusal, &schema.name)))?;
            returned
        } else {
            let mut pipeline = self.pipeline.lock().await;
            if pipeline.has_refusal()
                && let Err(refused) = pipeline.settle().await
            {
                return Err(pipeline_error(refused, tables));
            }
            let mut submitted = bound.submit(tables, self.services.gateway.writes())?;
            let returned = submitted.take_returned();
            pipeline.push(bound.table(), submitted);
            if self.more_follows.load(std::sync::atomic::Ordering::Relaxed) {
                pipeline.wait_below(MAX_PIPELINED).await;
            } else if let Err(refused) = pipeline.settle().await {
                return Err(pipeline_error(refused, tables));
            }
            returned
        };
        Ok(if bound.returning().is_empty() {
            Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(bound.rows()))
        } else {
            bound.returning().response(schema, formats, &returned)
        })
    }

    /// Tells the session whether the client sent more of its pipeline after the message it
    /// is about to handle, so an `INSERT` may be answered before it committed.
    pub fn set_more_follows(&self, more: bool) {
        self.more_follows
            .store(more, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for the writes of the pipeline a `Sync` ends: an error when one was refused and
    /// not told yet.
    pub async fn end_pipeline(&self) -> PgWireResult<()> {
        let settled = self.pipeline.lock().await.end().await;
        settled
            .map(|_| ())
            .map_err(|refused| pipeline_error(refused, self.services.gateway.tables()))
    }

    fn new_stage(&self) -> BlockStage {
        BlockStage::new(Arc::clone(&self.services.blocks))
    }

    fn parameters(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.parameters
            .lock()
            .expect("a session's parameter lock is never poisoned")
    }

    /// A parameter's value: one set in the session, else the value every session starts with.
    fn show(&self, name: &str) -> PgWireResult<String> {
        if let Some(value) = self.parameters().get(name) {
            return Ok(value.clone());
        }
        let value = match name {
            "server_version" => SERVER_VERSION,
            "server_encoding" | "client_encoding" => "UTF8",
            "timezone" => "UTC",
            "datestyle" => "ISO, MDY",
            "integer_datetimes" | "standard_conforming_strings" => "on",
            "transaction_isolation" | "default_transaction_isolation" => "read committed",
            "transaction_read_only" | "default_transaction_read_only" => "off",
            "search_path" => "public",
            "max_identifier_length" => "63",
            _ => {
                return Err(refused(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                ));
            }
        };
        Ok(value.to_string())
    }

    /// Refuses a write into `table` outside the user's write grant.
    fn may_write(&self, table: &str) -> PgWireResult<()> {
        let caller = self.caller()?;
        if caller.may_write(table) {
            return Ok(());
        }
        let user = caller.name().unwrap_or_default();
        Err(errors::permission_denied(user, table, "write"))
    }

    /// Checks the COPY's table and columns and enters copy-in mode.
    async fn start_copy(&self, copy: CopyFrom) -> PgWireResult<Response> {
        let tables = self.services.gateway.tables();
        let (table, schema) = tables.lookup(&copy.table).ok_or_else(|| {
            refused(
                errors::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", copy.table),
            )
        })?;
        self.may_write(&schema.name)?;
        let columns = column_indexes(schema, &copy.columns)?;
        let width = columns.len();
        let wire_format = i8::from(copy.format.kind == CopyKind::Binary);
        let target = CopyTarget {
            table,
            format: Arc::new(copy.format),
            columns,
            header: copy.header,
        };
        let block = match self.block() {
            Block::Open => Some(self.stage.lock().await.take().unwrap_or_else(|| self.new_stage())),
            _ => None,
        };
        let copy_in = CopyIn::new(
            target,
            tables.clone(),
            self.services.gateway.writes().clone(),
            self.services.chunks,
            (block, Arc::clone(&self.key)),
        );
        *self.copy.lock().await = Some(copy_in);
        Ok(Response::CopyIn(CopyResponse::new(
            wire_format,
            width,
            stream::empty(),
        )))
    }
}

/// The error of a pipeline whose writes were `refused`.
fn pipeline_error(refused: Refused, tables: &Tables) -> PgWireError {
    let schema = tables.get(refused.table);
    let mut info = errors::write_refused(&refused.refusal, &schema.name);
    if refused.writes > 1 {
        let resend = errors::Resend::of(schema, false);
        info.detail = Some(errors::pipeline_detail(refused.committed, refused.rows, resend));
    }
    errors::user_error(info)
}

/// What a statement of the simple protocol is bound to: nothing.
const NO_PARAMETERS: Parameters<'static> = Parameters {
    values: &[],
    format: &Format::UnifiedText,
    types: &[],
};

/// A result of one row and one column, in `format`.
fn one_value<T>(column: &str, ty: Type, value: T, format: FieldFormat) -> PgWireResult<Response>
where
    T: pgwire::types::ToSqlText + tokio_postgres::types::ToSql + Sized,
{
    let fields = Arc::new(vec![FieldInfo::new(column.to_string(), None, None, ty, format)]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&value)?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter([Ok(row)]),
    )))
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.remember_connection(client);
        let mut responses = Vec::new();
        for sql in statement::split(query) {
            let outcome = match statement::classify(sql) {
                Ok(statement) => {
                    self.execute(&statement, &Format::UnifiedText, &NO_PARAMETERS)
                        .await
                }
                Err(why) => Err(self.syntax_error(why)),
            };
            match outcome {
                Ok(response) => {
                    let copying = matches!(response, Response::CopyIn(_));
                    responses.push(response);
                    if copying {
                        break;
                    }
                }
                Err(PgWireError::UserError(info)) => {
                    responses.push(Response::Error(info));
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(responses)
    }
}

/// Parses the extended protocol's statements once, at `Parse`; the declared tables give an
/// `INSERT`'s parameters their columns' types.
pub struct SqlText {
    tables: Arc<Tables>,
}

/// A statement of the extended protocol as parsed at `Parse`, kept with the prepared
/// statement so each `Execute` carries it out without reading its SQL again.
#[derive(Debug)]
pub enum Prepared {
    /// One statement.
    One(Statement),
    /// More than one, which a prepared statement may not hold.
    Many,
    /// SQL that does not parse, with why.
    Invalid(String),
}

#[async_trait]
impl QueryParser for SqlText {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Arc<Prepared>>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let prepared = match statement::split(sql).as_slice() {
            [] => return Ok(None),
            [one] => match statement::classify(one) {
                Ok(statement) => Prepared::One(statement),
                Err(why) => Prepared::Invalid(why),
            },
            _ => Prepared::Many,
        };
        Ok(Some(Arc::new(prepared)))
    }

    fn get_parameter_types(&self, statement: &Arc<Prepared>) -> PgWireResult<Vec<Type>> {
        let Prepared::One(Statement::Insert(insert)) = statement.as_ref() else {
            return Ok(Vec::new());
        };
        let mut types = vec![Type::TEXT; insert.parameter_count()];
        let Some((_, schema)) = self.tables.lookup(&insert.table) else {
            return Ok(types);
        };
        let columns = column_indexes(schema, &insert.columns)?;
        for row in &insert.rows {
            for (value, &column) in row.iter().zip(&columns) {
                if let InsertValue::Parameter(i) = value {
                    types[*i] = parameter_type(schema.columns[column].ty);
                }
            }
        }
        Ok(types)
    }

    fn get_result_schema(
        &self,
        statement: &Arc<Prepared>,
        formats: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = formats.map_or(FieldFormat::Text, |formats| formats.format_for(0));
        let field = |name: &str, ty| vec![FieldInfo::new(name.to_string(), None, None, ty, format)];
        let Prepared::One(statement) = statement.as_ref() else {
            return Ok(Vec::new());
        };
        Ok(match statement {
            Statement::Show { name } => field(name, Type::TEXT),
            Statement::SelectInteger { value, label } if i32::try_from(*value).is_ok() => {
                field(label, Type::INT4)
            }
            Statement::SelectInteger { label, .. } => field(label, Type::INT8),
            Statement::SelectVersion => field("version", Type::TEXT),
            Statement::Insert(insert) if !insert.returning.is_empty() => {
                let Some((_, schema)) = self.tables.lookup(&insert.table) else {
                    return Ok(Vec::new());
                };
                Returning::resolve(schema, &insert.returning)?.fields(schema, formats)
            }
            _ => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = Arc<Prepared>;
    type QueryParser = SqlText;

    fn query_parser(&self) -> Arc<SqlText> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Arc<Prepared>>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parameters = Parameters {
            values: &portal.parameters,
            format: &portal.parameter_format,
            types: &portal.statement.parameter_types,
        };
        match portal.statement.statement.as_ref() {
            Prepared::One(Statement::Select(_) | Statement::Catalog(_)) => {
                Ok(Response::Query(self.start_rows(portal).await?))
            }
            Prepared::One(statement) => {
                self.execute(statement, &portal.result_column_format, &parameters)
                    .await
            }
            Prepared::Invalid(why) => Err(self.syntax_error(why.clone())),
            Prepared::Many => Err(refused(
                errors::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            )),
        }
    }

    /// Runs a reporting query's portal here, so its rows stream to the client and an
    /// `Execute` with a row limit is resumed where it stopped; anything else is pgwire's.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.remember_connection(client);
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        if let Some(Entry::Value(portal)) = client.portal_store().get_portal(name)
            && let Prepared::One(Statement::Select(_) | Statement::Catalog(_)) =
                portal.statement.statement.as_ref()
        {
            let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
            return self
                .execute_rows(client, &portal, max_rows)
                .await
                .inspect_err(|_| self.fail_block());
        }
        self._on_execute(client, message).await
    }

    /// Answers a `Describe` of a statement that returns no rows with `NoData`, as Postgres
    /// does, also when it takes parameters: pgwire would send an empty `RowDescription`,
    /// which JDBC reads as a query and so counts its batches' rows as 0.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            if let Some(Entry::Value(statement)) = client.portal_store().get_statement(name) {
                let described = self.do_describe_statement(client, &statement).await?;
                if !described.fields.is_empty() {
                    return send_describe_response(client, &described).await;
                }
                let types = described.parameters.iter().map(Type::oid).collect();
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(types),
                    ))
                    .await?;
                client.send(PgWireBackendMessage::NoData(NoData::new())).await?;
                return Ok(());
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Arc<Prepared>>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let declared = &target.parameter_types;
        if let Some((parameters, fields)) = self.describe_rows(&target.statement, declared, None).await? {
            return Ok(DescribeStatementResponse::new(parameters, fields));
        }
        let fields = self.parser.get_result_schema(&target.statement, None)?;
        let ours = self.parser.get_parameter_types(&target.statement)?;
        let count = ours.len().max(target.parameter_types.len());
        let types = (0..count)
            .map(|i| {
                let declared = target.parameter_types.get(i).cloned().flatten();
                declared.or_else(|| ours.get(i).cloned()).unwrap_or(Type::UNKNOWN)
            })
            .collect();
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Arc<Prepared>>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let formats = &target.result_column_format;
        let declared = &target.statement.parameter_types;
        let statement = &target.statement.statement;
        if let Some((_, fields)) = self.describe_rows(statement, declared, Some(formats)).await? {
            return Ok(DescribePortalResponse::new(fields));
        }
        let fields = self
            .parser
            .get_result_schema(&target.statement.statement, Some(formats))?;
        Ok(DescribePortalResponse::new(fields))
    }
}

#[async_trait]
impl CopyHandler for Session {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut copy = self.copy.lock().await;
        let Some(copy_in) = copy.as_mut() else {
            return Ok(());
        };
        if let Err(error) = copy_in.data(&copy_data.data).await {
            *copy = None;
            self.fail_block();
            return Err(error);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(copy_in) = self.copy.lock().await.take() else {
            return Ok(());
        };
        let (rows, block) = copy_in.done().await.inspect_err(|_| self.fail_block())?;
        if block.is_some() {
            *self.stage.lock().await = block;
        }
        let tag = Tag::new("COPY").with_rows(rows);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy.lock().await.take();
        self.fail_block();
        refused("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}

/// The refusal of any statement but the end of a failed block.
fn in_failed_block() -> PgWireError {
    refused(
        errors::IN_FAILED_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}
