//! Queries of the system catalogs (psql's `\d` and `\dt`, JDBC's `DatabaseMetaData`, BI tools'
//! navigators, drivers' type loading) are answered by the metadata database: a real Postgres
//! database, on the catalog's server, that holds each declared table as users see it (its
//! declared columns, types, `NOT NULL`, `now()` defaults and primary key) and no rows. Its own
//! catalogs answer any such query exactly as Postgres would, with none of the shards' hidden
//! columns and none of shardgate's internal tables.
//!
//! The database is created when missing and its tables re-made from the config at the first
//! catalog query (and again after a failure), so a server that is down at start-up delays only
//! these queries. Its sessions are read-only.

use super::errors::{self, refused};
use super::select::format_of;
use super::types::{binary_as_text, data_row};
use crate::config::Config;
use crate::pg::{PoolSettings, build_pool, connect_once};
use crate::schema::{Tables, user_facing_table_sql};
use deadpool_postgres::Pool;
use futures_util::{TryStreamExt, stream};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse};
use pgwire::error::{PgWireError, PgWireResult};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};
use std::sync::Arc;
use tokio_postgres::types::{FromSql, IsNull, ToSql, to_sql_checked};

/// Key of the advisory lock that serialises re-making the metadata tables between proxies.
const METADATA_LOCK_KEY: i64 = 0x5347_4d45_5441_4441;

/// Connections to the metadata database at most.
const METADATA_CONNECTIONS: usize = 4;

/// The parameter and column types of a catalog query, as the metadata database describes it.
pub struct CatalogDescription {
    /// Per `$n`, its type.
    pub parameters: Vec<Type>,
    /// Column names and types.
    pub columns: Vec<(String, Type)>,
}

impl CatalogDescription {
    /// The parameter types a `ParameterDescription` lists: those the client declared, else
    /// the described ones.
    pub fn parameter_types(&self, declared: &[Option<Type>]) -> Vec<Type> {
        self.parameters
            .iter()
            .enumerate()
            .map(|(i, described)| {
                declared
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| described.clone())
            })
            .collect()
    }

    /// The result columns as a `RowDescription` lists them, in `formats` (text when `None`).
    pub fn fields(&self, formats: Option<&Format>) -> Vec<FieldInfo> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                FieldInfo::new(name.clone(), None, None, ty.clone(), format_of(formats, i))
            })
            .collect()
    }
}

/// The metadata database: where it is, and its pool once it is set up.
pub struct Metadata {
    catalog_url: Option<String>,
    database: String,
    connect_timeout: std::time::Duration,
    statement_timeout: std::time::Duration,
    tls: crate::config::TlsConfig,
    tables: Arc<Tables>,
    pool: tokio::sync::Mutex<Option<Pool>>,
}

impl Metadata {
    /// The metadata database of `config` (`postgres.metadata_database`, else the catalog
    /// database's name with `_metadata`), for `tables`; nothing is connected yet.
    pub fn new(config: &Config, tables: Arc<Tables>) -> Metadata {
        let catalog_url = config.catalog_url().map(str::to_string);
        let database = config.postgres.metadata_database.clone().unwrap_or_else(|| {
            let catalog = catalog_url
                .as_deref()
                .and_then(|url| url.parse::<tokio_postgres::Config>().ok())
                .and_then(|c| c.get_dbname().map(str::to_string))
                .unwrap_or_else(|| "shardgate".into());
            let mut name = format!("{catalog}_metadata");
            while name.len() > 63 {
                name.remove(0);
            }
            name
        });
        Metadata {
            catalog_url,
            database,
            connect_timeout: config.pool.connect_timeout,
            statement_timeout: config.query.statement_timeout,
            tls: config.tls.clone(),
            tables,
            pool: tokio::sync::Mutex::new(None),
        }
    }

    /// Describes `sql` without running it.
    pub async fn describe(&self, sql: &str) -> PgWireResult<CatalogDescription> {
        let client = self.client().await?;
        let statement = client.prepare(sql).await.map_err(answered)?;
        Ok(CatalogDescription {
            parameters: statement.params().to_vec(),
            columns: statement
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), c.type_().clone()))
                .collect(),
        })
    }

    /// Runs `sql` with `parameters` (as bound, in their formats) and answers its rows in
    /// `formats`: all text, or all binary.
    pub async fn run(
        &self,
        sql: &str,
        parameters: &super::insert::Parameters<'_>,
        formats: &Format,
    ) -> PgWireResult<QueryResponse> {
        let description = self.describe(sql).await?;
        let fields = description.fields(Some(formats));
        let binary = fields
            .iter()
            .filter(|f| f.format() == FieldFormat::Binary)
            .count();
        let rows = if binary == 0 {
            let sql = inline_parameters(sql, parameters, &description.parameters)?;
            self.text_rows(&sql).await?
        } else if binary == fields.len() {
            self.binary_rows(sql, parameters).await?
        } else {
            return Err(refused(
                errors::FEATURE_NOT_SUPPORTED,
                "catalog queries answer all columns in text or all in binary, not a mix",
            ));
        };
        let rows = stream::iter(rows.into_iter().map(Ok));
        Ok(QueryResponse::new(Arc::new(fields), rows))
    }

    /// The rows of `sql`, a query with its parameters written in, in text form.
    async fn text_rows(&self, sql: &str) -> PgWireResult<Vec<pgwire::messages::data::DataRow>> {
        let client = self.client().await?;
        let messages = client.simple_query(sql).await.map_err(answered)?;
        Ok(messages
            .iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    let fields: Vec<Option<&[u8]>> =
                        (0..row.len()).map(|i| row.get(i).map(str::as_bytes)).collect();
                    Some(data_row(fields.into_iter()))
                }
                _ => None,
            })
            .collect())
    }

    /// The rows of `sql` bound to `parameters`, in binary form.
    async fn binary_rows(
        &self,
        sql: &str,
        parameters: &super::insert::Parameters<'_>,
    ) -> PgWireResult<Vec<pgwire::messages::data::DataRow>> {
        let client = self.client().await?;
        let statement = client.prepare(sql).await.map_err(answered)?;
        let bound: Vec<Bound<'_>> = parameters
            .values
            .iter()
            .enumerate()
            .map(|(i, value)| Bound {
                value: value.as_deref(),
                binary: parameters.format.is_binary(i),
            })
            .collect();
        let rows: Vec<tokio_postgres::Row> = client
            .query_raw(&statement, bound.iter())
            .await
            .map_err(answered)?
            .try_collect()
            .await
            .map_err(answered)?;
        Ok(rows
            .iter()
            .map(|row| {
                let fields: Vec<Option<&[u8]>> = (0..row.len())
                    .map(|i| row.get::<_, Option<Raw<'_>>>(i).map(|raw| raw.0))
                    .collect();
                data_row(fields.into_iter())
            })
            .collect())
    }

    /// A connection to the metadata database, setting it up first when it is not yet.
    async fn client(&self) -> PgWireResult<deadpool_postgres::Object> {
        let mut pool = self.pool.lock().await;
        if pool.is_none() {
            let ready = self.set_up().await.map_err(|reason| {
                tracing::warn!(database = %self.database, %reason, "the metadata database is not ready");
                refused(
                    errors::CONNECTION_FAILURE,
                    format!(
                        "catalog queries cannot be answered: metadata database {}: {reason}",
                        self.database
                    ),
                )
            })?;
            *pool = Some(ready);
        }
        let ready = pool.as_ref().expect("set up above").clone();
        drop(pool);
        ready.get().await.map_err(|e| {
            refused(
                errors::CONNECTION_FAILURE,
                format!(
                    "metadata database {}: {}",
                    self.database,
                    crate::pg::describe_pool_error(&e)
                ),
            )
        })
    }

    /// Creates the database when missing and re-makes its tables from the declared ones.
    async fn set_up(&self) -> Result<Pool, String> {
        let url = self
            .catalog_url
            .as_deref()
            .ok_or("no catalog database is configured")?;
        let server = connect_once(url, None, &self.tls).await?;
        let exists = server
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&self.database])
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        if !exists {
            let create = format!("CREATE DATABASE \"{}\"", self.database.replace('"', "\"\""));
            if let Err(e) = server.batch_execute(&create).await
                && e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE)
            {
                return Err(format!(
                    "cannot create it ({e}); create it, or name one in postgres.metadata_database"
                ));
            }
        }
        let setup = format!(
            "SET default_transaction_read_only = on; SET statement_timeout = {}",
            self.statement_timeout.as_millis()
        );
        let pool = build_pool(&PoolSettings {
            url,
            database: Some(&self.database),
            max_size: METADATA_CONNECTIONS,
            connect_timeout: self.connect_timeout,
            wait_timeout: Some(self.statement_timeout),
            application_name: "shardgate-metadata",
            session_setup: &setup,
            password: None,
            tls: &self.tls,
        })?;
        let mut client = pool.get().await.map_err(|e| crate::pg::describe_pool_error(&e))?;
        self.make_tables(&mut client).await.map_err(|e| e.to_string())?;
        Ok(pool)
    }

    /// Drops the metadata database's tables and makes the declared ones, in one transaction.
    async fn make_tables(&self, client: &mut tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        let transaction = client.build_transaction().read_only(false).start().await?;
        transaction
            .batch_execute(&format!(
                "SET LOCAL client_min_messages = warning; SELECT pg_advisory_xact_lock({METADATA_LOCK_KEY})"
            ))
            .await?;
        let existing = transaction
            .query(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await?;
        for row in existing {
            let name: String = row.get(0);
            transaction
                .batch_execute(&format!("DROP TABLE {name} CASCADE"))
                .await?;
        }
        for (_, table) in self.tables.iter() {
            transaction.batch_execute(&user_facing_table_sql(table)).await?;
        }
        transaction.commit().await
    }
}

/// The metadata database's error, with its SQLSTATE, as the client's.
fn answered(error: tokio_postgres::Error) -> PgWireError {
    match error.as_db_error() {
        Some(db) => refused(db.code().code(), db.message().to_string()),
        None => refused(errors::CONNECTION_FAILURE, format!("metadata database: {error}")),
    }
}

/// `sql` with each `$n` replaced by its bound value as a quoted literal (cast to the type the
/// client declared, if any), for the simple protocol, whose rows come in text form.
fn inline_parameters(
    sql: &str,
    parameters: &super::insert::Parameters<'_>,
    described: &[Type],
) -> PgWireResult<String> {
    if described.is_empty() {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| refused(errors::SYNTAX_ERROR, e.to_string()))?;
    let mut out = String::with_capacity(sql.len());
    for token in tokens {
        let number = match &token {
            Token::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        };
        let Some(index) = number.and_then(|n| n.checked_sub(1)) else {
            out.push_str(&token.to_string());
            continue;
        };
        let ty = described.get(index).cloned().unwrap_or(Type::UNKNOWN);
        match parameters.values.get(index) {
            None => {
                return Err(refused(
                    "08P01",
                    format!("bind message supplies no value for parameter ${}", index + 1),
                ));
            }
            Some(None) => out.push_str("NULL"),
            Some(Some(bytes)) => {
                let text = if parameters.format.is_binary(index) {
                    let sent_as = parameters
                        .types
                        .get(index)
                        .cloned()
                        .flatten()
                        .unwrap_or(ty.clone());
                    binary_as_text(bytes, &sent_as).ok_or_else(|| {
                        refused(
                            errors::FEATURE_NOT_SUPPORTED,
                            format!(
                                "parameter ${} of type {} in binary form is not read here",
                                index + 1,
                                sent_as.name()
                            ),
                        )
                    })?
                } else {
                    String::from_utf8_lossy(bytes).into_owned()
                };
                out.push_str(&format!("'{}'::{}", text.replace('\'', "''"), type_name(&ty)));
            }
        }
    }
    Ok(out)
}

/// The name a cast to `ty` is written with.
fn type_name(ty: &Type) -> String {
    format!("pg_catalog.{}", ty.name())
}

/// A bound parameter passed on as the client sent it.
#[derive(Debug)]
struct Bound<'a> {
    value: Option<&'a [u8]>,
    binary: bool,
}

impl ToSql for Bound<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.value {
            None => Ok(IsNull::Yes),
            Some(value) => {
                out.extend_from_slice(value);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> tokio_postgres::types::Format {
        if self.binary {
            tokio_postgres::types::Format::Binary
        } else {
            tokio_postgres::types::Format::Text
        }
    }

    to_sql_checked!();
}

/// A result value in binary form, as the metadata database sent it.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}
