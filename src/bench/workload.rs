//! The rows a benchmark writes: events of the `shardgate dev` shape
//! `(event_id uuid, tenant_id text, event_type text, ts timestamptz, payload jsonb)`, keyed by
//! `(tenant_id, event_type)` drawn uniformly or from a Zipf distribution (with, optionally, one
//! hot key taking a given share of the rows), and their three wire forms: a JSON body for shardgate, binary COPY tuples for straight COPY, and INSERT parameters.

use crate::routing::{Epoch, KeyHash, RoutingTable, ShardIndex, hash_key};
use crate::schema::ColumnType;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use std::io::Write;

/// Unix microseconds at Postgres's epoch (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum KeyDistribution {
    /// Every tenant and event type equally likely.
    Uniform,
    /// Zipf-distributed with exponent `--zipf-s`: a few keys get most rows.
    Zipf,
}

/// Parameters of the generated rows.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Number of distinct tenants (K).
    pub tenants: u32,
    /// Number of distinct event types (M).
    pub event_types: u32,
    /// Key distribution.
    pub distribution: KeyDistribution,
    /// Zipf exponent.
    pub zipf_s: f64,
    /// Share of the rows, in [0, 1), that go to the one hot key `(tenant-0, type-0)`; the others
    /// are drawn from `distribution`.
    pub hot_share: f64,
    /// Bytes of padding in each payload.
    pub payload_bytes: usize,
    /// Whether rows carry an `event_id`.
    pub with_ids: bool,
    /// Share of the rows, in [0, 1), that repeat one of the worker's last [`RECENT_ROWS`]
    /// rows, id and all: retries, which a table with an id stores once.
    pub retry_share: f64,
}

/// Rows a worker keeps to repeat as retries.
pub const RECENT_ROWS: usize = 4096;

/// One generated row.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// The id, when the workload has ids.
    pub id: Option<uuid::Uuid>,
    /// Tenant number.
    pub tenant: u32,
    /// Event type number.
    pub event_type: u32,
    /// Sequence number within the generator.
    pub seq: u64,
}

/// Draws rows; one per worker, seeded from the worker number so runs repeat.
pub struct RowGenerator {
    spec: WorkloadSpec,
    rng: SmallRng,
    tenant_zipf: Option<Zipf<f64>>,
    type_zipf: Option<Zipf<f64>>,
    seq: u64,
    padding: String,
    /// The last rows made, to repeat as retries.
    recent: std::collections::VecDeque<BenchRow>,
}

impl RowGenerator {
    /// A generator for worker `worker`.
    pub fn new(spec: &WorkloadSpec, worker: u64) -> Result<RowGenerator, String> {
        let zipf = |n: u32| match spec.distribution {
            KeyDistribution::Uniform => Ok(None),
            KeyDistribution::Zipf => Zipf::new(f64::from(n), spec.zipf_s)
                .map(Some)
                .map_err(|e| format!("invalid Zipf parameters: {e}")),
        };
        Ok(RowGenerator {
            tenant_zipf: zipf(spec.tenants)?,
            type_zipf: zipf(spec.event_types)?,
            rng: SmallRng::seed_from_u64(0x5eed_0000 + worker),
            seq: worker << 40,
            padding: "x".repeat(spec.payload_bytes),
            spec: spec.clone(),
            recent: std::collections::VecDeque::new(),
        })
    }

    /// Whether the rows carry ids.
    pub fn with_ids(&self) -> bool {
        self.spec.with_ids
    }

    /// The next row: a new one, or with `retry_share` a recent one again.
    pub fn next_row(&mut self) -> BenchRow {
        let retry = self.spec.retry_share > 0.0
            && !self.recent.is_empty()
            && self.rng.random_bool(self.spec.retry_share);
        if retry {
            let at = self.rng.random_range(0..self.recent.len());
            return self.recent[at].clone();
        }
        let row = self.new_row();
        if self.spec.retry_share > 0.0 {
            if self.recent.len() == RECENT_ROWS {
                self.recent.pop_front();
            }
            self.recent.push_back(row.clone());
        }
        row
    }

    fn new_row(&mut self) -> BenchRow {
        self.seq += 1;
        let hot = self.spec.hot_share > 0.0 && self.rng.random_bool(self.spec.hot_share);
        let (tenant, event_type) = if hot {
            (0, 0)
        } else {
            (
                draw(&mut self.rng, self.tenant_zipf.as_ref(), self.spec.tenants),
                draw(&mut self.rng, self.type_zipf.as_ref(), self.spec.event_types),
            )
        };
        BenchRow {
            id: self.spec.with_ids.then(uuid::Uuid::now_v7),
            tenant,
            event_type,
            seq: self.seq,
        }
    }

    /// Writes the texts of `row` into `text`, reusing its buffers.
    pub fn fill_text(&self, row: &BenchRow, text: &mut RowText) {
        use std::fmt::Write as _;
        text.tenant.clear();
        text.event_type.clear();
        text.payload.clear();
        let _ = write!(text.tenant, "tenant-{}", row.tenant);
        let _ = write!(text.event_type, "type-{}", row.event_type);
        let _ = write!(
            text.payload,
            "{{\"seq\":{},\"data\":\"{}\"}}",
            row.seq, self.padding
        );
    }

    /// Appends `rows` rows as a JSON array body.
    pub fn json_body(&mut self, rows: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(rows * (self.spec.payload_bytes + 160));
        let mut text = RowText::default();
        body.push(b'[');
        for i in 0..rows {
            if i > 0 {
                body.push(b',');
            }
            let row = self.next_row();
            self.fill_text(&row, &mut text);
            body.push(b'{');
            if let Some(id) = row.id {
                let _ = write!(body, "\"event_id\":\"{id}\",");
            }
            let _ = write!(
                body,
                "\"tenant_id\":\"{}\",\"event_type\":\"{}\",\"payload\":{}}}",
                text.tenant, text.event_type, text.payload
            );
        }
        body.push(b']');
        body
    }
}

fn draw(rng: &mut SmallRng, zipf: Option<&Zipf<f64>>, n: u32) -> u32 {
    match zipf {
        // Zipf samples lie in [1, n].
        Some(zipf) => zipf.sample(rng) as u32 - 1,
        None => rng.random_range(0..n),
    }
}

/// The texts of one row (key values and payload), in buffers reused from row to row.
#[derive(Debug, Default)]
pub struct RowText {
    /// `tenant_id`.
    pub tenant: String,
    /// `event_type`.
    pub event_type: String,
    /// `payload`, as JSON.
    pub payload: String,
}

/// The ring position and shard of a row, computed as shardgate computes them for a key that
/// is not split: writing straight to the shards, the bench spreads no hot key.
pub fn place(text: &RowText, routing: &RoutingTable, scratch: &mut Vec<u8>) -> (KeyHash, ShardIndex) {
    let parts = [
        (ColumnType::Text, text.tenant.as_bytes()),
        (ColumnType::Text, text.event_type.as_bytes()),
    ];
    let key = hash_key(parts, scratch);
    (key, routing.owner_of_key(key))
}

/// Appends a row as a binary COPY tuple in the column order
/// `(event_id, tenant_id, event_type, ts, payload, _sg_hash)`; when the workload has no ids,
/// without `event_id` and with `_sg_epoch` last, holding `epoch` as shardgate's rows do.
pub fn encode_tuple(
    row: &BenchRow,
    text: &RowText,
    hash: KeyHash,
    now_micros: i64,
    epoch: Epoch,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&6i16.to_be_bytes());
    let mut field = |parts: &[&[u8]]| {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        out.extend_from_slice(&(len as i32).to_be_bytes());
        parts.iter().for_each(|p| out.extend_from_slice(p));
    };
    if let Some(id) = row.id {
        field(&[id.as_bytes()]);
    }
    field(&[text.tenant.as_bytes()]);
    field(&[text.event_type.as_bytes()]);
    field(&[&(now_micros - PG_EPOCH_UNIX_MICROS).to_be_bytes()]);
    // jsonb's binary form: version byte 1, then the JSON text.
    field(&[&[1], text.payload.as_bytes()]);
    field(&[&hash.as_i64().to_be_bytes()]);
    if row.id.is_none() {
        field(&[&epoch.0.to_be_bytes()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(distribution: KeyDistribution) -> WorkloadSpec {
        WorkloadSpec {
            tenants: 100,
            event_types: 5,
            distribution,
            zipf_s: 1.2,
            hot_share: 0.0,
            payload_bytes: 10,
            with_ids: true,
            retry_share: 0.0,
        }
    }

    #[test]
    fn a_retry_share_repeats_that_share_of_recent_rows_whole() {
        let spec = WorkloadSpec {
            retry_share: 0.1,
            ..spec(KeyDistribution::Uniform)
        };
        let mut generator = RowGenerator::new(&spec, 0).unwrap();
        let mut seen = std::collections::HashMap::new();
        let mut repeated = 0;
        for _ in 0..20_000 {
            let row = generator.next_row();
            let key = (row.tenant, row.event_type, row.seq);
            if let Some(before) = seen.insert(row.id.unwrap(), key) {
                assert_eq!(before, key, "a retry is the same row");
                repeated += 1;
            }
        }
        let share = f64::from(repeated) / 20_000.0;
        assert!((share - 0.1).abs() < 0.01, "{share}");
    }

    #[test]
    fn a_hot_share_sends_that_share_of_rows_to_one_key() {
        let spec = WorkloadSpec {
            hot_share: 0.5,
            ..spec(KeyDistribution::Uniform)
        };
        let mut generator = RowGenerator::new(&spec, 0).unwrap();
        let hot = (0..20_000)
            .map(|_| generator.next_row())
            .filter(|row| (row.tenant, row.event_type) == (0, 0))
            .count() as f64
            / 20_000.0;
        assert!((hot - 0.5).abs() < 0.02, "{hot}");
    }

    #[test]
    fn zipf_concentrates_rows_on_the_first_keys_and_uniform_does_not() {
        let share_of_tenant_zero = |distribution| {
            let mut generator = RowGenerator::new(&spec(distribution), 0).unwrap();
            (0..20_000).filter(|_| generator.next_row().tenant == 0).count() as f64 / 20_000.0
        };
        assert!(share_of_tenant_zero(KeyDistribution::Zipf) > 0.15);
        assert!(share_of_tenant_zero(KeyDistribution::Uniform) < 0.03);
    }

    #[test]
    fn json_body_is_an_array_of_event_rows() {
        let mut generator = RowGenerator::new(&spec(KeyDistribution::Uniform), 1).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&generator.json_body(3)).unwrap();
        let rows = body.as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows[0]["event_id"].as_str().unwrap().len() == 36);
        assert!(rows[0]["tenant_id"].as_str().unwrap().starts_with("tenant-"));
        assert_eq!(rows[0]["payload"]["data"], "xxxxxxxxxx");
    }
}
