//! The values of a key the watch found hot. The watch counts key hashes only, so once such a
//! key is split its values are read back from a row of it on the shard owning its own
//! position, for `GET /admin/hot-keys`. The rows of a key that hot are among the newest, so
//! the read looks only at the heap's last blocks (a TID range scan) rather than the table.

use crate::routing::KeyHash;
use crate::schema::{HASH_COLUMN, TableSchema, quote_ident};
use deadpool_postgres::Pool;

/// Heap blocks, from the end of the table, searched for a row of the key.
const RECENT_BLOCKS: i64 = 256;

/// The partition-key values of a row of `key` among the newest of `table` on the shard behind
/// `pool`, as a JSON object by column; `None` when none is found there.
pub async fn recent_key_values(
    pool: &Pool,
    table: &TableSchema,
    key: KeyHash,
) -> Result<Option<serde_json::Value>, String> {
    let client = pool.get().await.map_err(|e| crate::pg::describe_error(&e))?;
    let describe = |e: tokio_postgres::Error| crate::pg::describe_error(&e);
    let blocks: i64 = client
        .query_one(
            "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint",
            &[&quote_ident(&table.name)],
        )
        .await
        .map_err(describe)?
        .get(0);
    let from = format!("({},0)", (blocks - RECENT_BLOCKS).max(0));
    let columns: Vec<String> = table
        .partition_key
        .iter()
        .map(|&i| quote_ident(&table.columns[i].name))
        .collect();
    let sql = format!(
        "SELECT to_jsonb(k) FROM (SELECT {} FROM {} WHERE {} = $1 AND ctid >= $2::text::tid LIMIT 1) k",
        columns.join(", "),
        quote_ident(&table.name),
        quote_ident(HASH_COLUMN),
    );
    let row = client
        .query_opt(&sql, &[&key.as_i64(), &from])
        .await
        .map_err(describe)?;
    Ok(row.map(|r| r.get(0)))
}
