//! The catalog's tables and their versions. The layout version is recorded in the catalog
//! itself (`shardgate.catalog_version`); at start a catalog of an older layout is migrated
//! forward in the same transaction that reads it, and one of a newer layout is refused.
//!
//! Versions:
//! 1. `routing` (epoch, vnodes), `shards` (name, weight, added_epoch), `ring_tokens`; no
//!    version table.
//! 2. `shards` also records each shard's URL (without its password) and its position in the
//!    shard list, so the catalog, not the config, owns the shard list.
//! 3. `migrations` (with the weight of every shard once done) and `migration_ranges`: the
//!    journal of resharding; `shards.retired` marks a shard drained away. A range in phase
//!    `copying` is still its source's but dual-written to its target; one in phase `leaving` is
//!    the target's in the ring while its source still holds its rows (see [`super::ranges`]).
//! 4. `migrations` records the epoch that began dual-writing (tables without an id copy only
//!    rows older than it) and, apart from the last error of a step, why a migration was given up.
//! 5. `hot_keys`: each fan-out step of a split hot key (see [`super::hot_keys`]).
//! 6. `dead_letters`: spooled rows a shard refused for their data (see [`super::dead_letters`]).
//! 7. `migration_ranges` records the rows the plan expected each range to carry, so progress
//!    and the time left can be told while the copy runs.
//! 8. `key_claims`: the idempotency keys of spooled writes (see [`super::key_claims`]).

use super::CatalogError;
use super::query;

/// The layout this code reads and writes.
pub const CURRENT: i32 = 8;

/// The tables of the current layout but the journal, for a catalog created now.
const CREATE_CURRENT: &str = "
    CREATE SCHEMA IF NOT EXISTS shardgate;
    CREATE TABLE shardgate.catalog_version (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version integer NOT NULL
    );
    CREATE TABLE shardgate.routing (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        epoch bigint NOT NULL,
        vnodes integer NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE shardgate.shards (
        name text PRIMARY KEY,
        weight integer NOT NULL,
        added_epoch bigint NOT NULL,
        url text,
        ordinal integer,
        retired boolean NOT NULL DEFAULT false
    );
    CREATE TABLE shardgate.ring_tokens (
        position bigint PRIMARY KEY,
        shard text NOT NULL REFERENCES shardgate.shards (name)
    );";

/// From layout 1 to 2: the shards' URLs and order, filled in from the config at start.
const MIGRATE_1_TO_2: &str = "
    CREATE TABLE shardgate.catalog_version (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version integer NOT NULL
    );
    ALTER TABLE shardgate.shards ADD COLUMN url text, ADD COLUMN ordinal integer;";

/// From layout 2 to 3: drained shards are marked (the journal's tables come with it).
const MIGRATE_2_TO_3: &str = "
    ALTER TABLE shardgate.shards ADD COLUMN retired boolean NOT NULL DEFAULT false;";

/// From layout 3 to 4: the dual-write epoch and the failure of each migration.
const MIGRATE_3_TO_4: &str = "
    ALTER TABLE shardgate.migrations ADD COLUMN dual_write_epoch bigint, ADD COLUMN failure text;";

/// From layout 6 to 7: each range's estimated rows (unknown for ranges recorded before).
const MIGRATE_6_TO_7: &str = "
    ALTER TABLE shardgate.migration_ranges ADD COLUMN estimated_rows bigint;";

/// The fan-out steps of split hot keys (new in layout 5).
const HOT_KEY_TABLES: &str = "
    CREATE TABLE shardgate.hot_keys (
        table_name text NOT NULL,
        key_hash bigint NOT NULL,
        fanout integer NOT NULL CHECK (fanout >= 2),
        salts integer[] NOT NULL CHECK (cardinality(salts) = fanout),
        since_ms bigint NOT NULL,
        epoch bigint NOT NULL,
        key_values jsonb,
        source text NOT NULL CHECK (source IN ('detected', 'manual')),
        rows_per_second double precision,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (table_name, key_hash, fanout)
    );";

/// Spooled rows a shard refused for their data (new in layout 6); one per spool part, so a
/// part refused again after a crash is recorded once.
const DEAD_LETTER_TABLE: &str = "
    CREATE TABLE shardgate.dead_letters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        table_name text NOT NULL,
        shard text NOT NULL,
        write_id uuid NOT NULL,
        row_values jsonb NOT NULL,
        message text NOT NULL,
        spool uuid NOT NULL,
        seq bigint NOT NULL,
        part smallint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (spool, seq, part)
    );";

/// The idempotency keys spooled writes claimed (new in layout 8), pruned by age.
const KEY_CLAIM_TABLE: &str = "
    CREATE TABLE shardgate.key_claims (
        key text PRIMARY KEY,
        table_name text NOT NULL,
        fingerprint bytea NOT NULL,
        write_id uuid NOT NULL,
        rows bigint NOT NULL,
        claimed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX key_claims_claimed_at ON shardgate.key_claims (claimed_at);";

/// The resharding journal as the current layout has it (new in layout 3).
const JOURNAL_TABLES: &str = "
    CREATE TABLE shardgate.migrations (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        shard text NOT NULL,
        phase text NOT NULL,
        weights jsonb NOT NULL,
        paused boolean NOT NULL DEFAULT false,
        error text,
        dual_write_epoch bigint,
        failure text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE shardgate.migration_ranges (
        migration bigint NOT NULL REFERENCES shardgate.migrations (id),
        start_position bigint NOT NULL,
        end_position bigint NOT NULL,
        source text NOT NULL REFERENCES shardgate.shards (name),
        target text NOT NULL REFERENCES shardgate.shards (name),
        phase text NOT NULL CHECK (phase IN ('copying', 'leaving', 'cleaned', 'cancelled')),
        rows_copied bigint NOT NULL DEFAULT 0,
        estimated_rows bigint,
        PRIMARY KEY (migration, start_position)
    );";

/// Brings the catalog to the current layout, creating it when there is none. The caller holds
/// the catalog lock.
pub async fn migrate(tx: &tokio_postgres::Transaction<'_>) -> Result<(), CatalogError> {
    let found = found_version(tx).await?;
    let steps: &[(&str, &'static str)] = match found {
        0 => &[
            (CREATE_CURRENT, "create the catalog"),
            (JOURNAL_TABLES, "create the journal"),
            (HOT_KEY_TABLES, "create the hot keys"),
            (DEAD_LETTER_TABLE, "create the dead letters"),
            (KEY_CLAIM_TABLE, "create the key claims"),
        ],
        1 => &[
            (MIGRATE_1_TO_2, "migrate the catalog from layout 1"),
            (MIGRATE_2_TO_3, "migrate the catalog from layout 2"),
            (JOURNAL_TABLES, "create the journal"),
            (HOT_KEY_TABLES, "create the hot keys"),
            (DEAD_LETTER_TABLE, "create the dead letters"),
            (KEY_CLAIM_TABLE, "create the key claims"),
        ],
        2 => &[
            (MIGRATE_2_TO_3, "migrate the catalog from layout 2"),
            (JOURNAL_TABLES, "create the journal"),
            (HOT_KEY_TABLES, "create the hot keys"),
            (DEAD_LETTER_TABLE, "create the dead letters"),
            (KEY_CLAIM_TABLE, "create the key claims"),
        ],
        3 => &[
            (MIGRATE_3_TO_4, "migrate the catalog from layout 3"),
            (HOT_KEY_TABLES, "create the hot keys"),
            (DEAD_LETTER_TABLE, "create the dead letters"),
            (MIGRATE_6_TO_7, "migrate the catalog from layout 6"),
            (KEY_CLAIM_TABLE, "create the key claims"),
        ],
        4 => &[
            (HOT_KEY_TABLES, "create the hot keys"),
            (DEAD_LETTER_TABLE, "create the dead letters"),
            (MIGRATE_6_TO_7, "migrate the catalog from layout 6"),
            (KEY_CLAIM_TABLE, "create the key claims"),
        ],
        5 => &[
            (DEAD_LETTER_TABLE, "create the dead letters"),
            (MIGRATE_6_TO_7, "migrate the catalog from layout 6"),
            (KEY_CLAIM_TABLE, "create the key claims"),
        ],
        6 => &[
            (MIGRATE_6_TO_7, "migrate the catalog from layout 6"),
            (KEY_CLAIM_TABLE, "create the key claims"),
        ],
        7 => &[(KEY_CLAIM_TABLE, "create the key claims")],
        CURRENT => return Ok(()),
        newer => return Err(CatalogError::NewerLayout(newer)),
    };
    for (sql, context) in steps {
        tx.batch_execute(sql).await.map_err(query(context))?;
    }
    if found > 0 {
        tracing::info!(from = found, to = CURRENT, "catalog layout migrated");
    }
    let record = match found {
        2..=7 => "UPDATE shardgate.catalog_version SET version = $1",
        _ => "INSERT INTO shardgate.catalog_version (version) VALUES ($1)",
    };
    tx.execute(record, &[&CURRENT])
        .await
        .map_err(query("record the catalog layout"))?;
    Ok(())
}

/// The layout of the catalog as it is: 0 when there is none, 1 for a catalog without a version
/// table.
async fn found_version(tx: &tokio_postgres::Transaction<'_>) -> Result<i32, CatalogError> {
    let row = tx
        .query_one(
            "SELECT to_regclass('shardgate.catalog_version') IS NOT NULL, \
                    to_regclass('shardgate.routing') IS NOT NULL",
            &[],
        )
        .await
        .map_err(query("look for the catalog"))?;
    let (versioned, exists): (bool, bool) = (row.get(0), row.get(1));
    if !versioned {
        return Ok(i32::from(exists));
    }
    let version: i32 = tx
        .query_one("SELECT version FROM shardgate.catalog_version", &[])
        .await
        .map_err(query("read the catalog layout"))?
        .get(0);
    Ok(version)
}
