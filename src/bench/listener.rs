//! The Postgres listener as a benchmark target: the same rows written through shardgate's
//! PostgreSQL protocol, one prepared autocommit `INSERT` per row (what pgbench sends), or one
//! `COPY ... FROM STDIN` per ticket (what `psql \copy` and drivers' copy APIs send).

use super::report::Recorder;
use super::targets::Plan;
use super::workload::{RowGenerator, RowText};
use bytes::Bytes;
use futures_util::SinkExt;
use indicatif::ProgressBar;
use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;
use tokio_postgres::types::Type;

/// Writes each ticket's rows one `INSERT` at a time on `client`, each answered once committed.
pub async fn insert_worker(
    plan: Arc<Plan>,
    client: tokio_postgres::Client,
    table: String,
    mut generator: RowGenerator,
    progress: ProgressBar,
) -> Recorder {
    let mut recorder = plan.recorder();
    let with_ids = generator.with_ids();
    let statement = match client
        .prepare_typed(&insert_sql(&table, with_ids), &parameter_types(with_ids))
        .await
    {
        Ok(statement) => statement,
        Err(e) => {
            recorder.failed(&format!("prepare: {e}"));
            return recorder;
        }
    };
    let mut text = RowText::default();
    while let Some((_, rows)) = plan.next().await {
        for _ in 0..rows {
            let row = generator.next_row();
            generator.fill_text(&row, &mut text);
            let (tenant, event_type, payload) = (&text.tenant, &text.event_type, &text.payload);
            let now = SystemTime::now();
            let started = Instant::now();
            let result = match row.id {
                Some(id) => {
                    client
                        .execute(&statement, &[&id, tenant, event_type, &now, payload])
                        .await
                }
                None => {
                    client
                        .execute(&statement, &[tenant, event_type, &now, payload])
                        .await
                }
            };
            match result {
                Ok(_) => {
                    recorder.acknowledged(1, started.elapsed());
                    progress.inc(1);
                }
                Err(e) => recorder.failed(&format!("insert: {e}")),
            }
        }
    }
    recorder
}

/// Writes each ticket's rows as one text-format `COPY` on `client`, answered once all of them
/// committed.
pub async fn copy_worker(
    plan: Arc<Plan>,
    client: tokio_postgres::Client,
    table: String,
    mut generator: RowGenerator,
    progress: ProgressBar,
) -> Recorder {
    let mut recorder = plan.recorder();
    let sql = copy_sql(&table, generator.with_ids());
    let mut text = RowText::default();
    while let Some((scheduled, rows)) = plan.next().await {
        let mut data = String::with_capacity(rows * 200);
        for _ in 0..rows {
            let row = generator.next_row();
            generator.fill_text(&row, &mut text);
            if let Some(id) = row.id {
                let _ = write!(data, "{id}\t");
            }
            let _ = writeln!(data, "{}\t{}\t{}", text.tenant, text.event_type, text.payload);
        }
        match copy(&client, &sql, data).await {
            Ok(copied) => {
                recorder.acknowledged(copied, scheduled.elapsed());
                progress.inc(copied);
            }
            Err(e) => recorder.failed(&format!("copy: {e}")),
        }
    }
    recorder
}

async fn copy(
    client: &tokio_postgres::Client,
    sql: &str,
    data: String,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(data)).await?;
    sink.finish().await
}

fn insert_sql(table: &str, with_ids: bool) -> String {
    let table = crate::schema::quote_ident(table);
    if with_ids {
        format!(
            "INSERT INTO {table} (event_id, tenant_id, event_type, ts, payload) VALUES ($1, $2, $3, $4, $5)"
        )
    } else {
        format!("INSERT INTO {table} (tenant_id, event_type, ts, payload) VALUES ($1, $2, $3, $4)")
    }
}

/// The types the `INSERT`'s parameters are sent as: the payload as text, which shardgate
/// reads into the `jsonb` column as Postgres's assignment cast would.
fn parameter_types(with_ids: bool) -> Vec<Type> {
    let mut types = vec![Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::TEXT];
    if with_ids {
        types.insert(0, Type::UUID);
    }
    types
}

fn copy_sql(table: &str, with_ids: bool) -> String {
    let table = crate::schema::quote_ident(table);
    if with_ids {
        format!("COPY {table} (event_id, tenant_id, event_type, payload) FROM STDIN")
    } else {
        format!("COPY {table} (tenant_id, event_type, payload) FROM STDIN")
    }
}
