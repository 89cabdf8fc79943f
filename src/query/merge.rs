//! Merging the shards' answers into one: an ordered k-way merge that streams rows holding one
//! per shard, and a group merge that combines every shard's partial aggregates per group.

use super::QueryError;
use super::plan::{Aggregate, QueryPlan, counted_value};
use super::shard::ShardRows;
use super::unsupported::Unsupported;
use super::value::{Cell, Decimal};
use futures_util::StreamExt;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// How a partial result combines with another shard's for the same group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// A value computed from the group keys: equal on every shard.
    Keep,
    /// Added (counts, sums).
    Add,
    /// The smaller.
    Min,
    /// The larger.
    Max,
    /// Logical AND.
    And,
    /// Logical OR.
    Or,
}

/// The rows of a non-aggregated query in ORDER BY order (each shard's rows arrive sorted),
/// OFFSET skipped and LIMIT applied, one at a time, without the hidden sort keys.
pub struct OrderedMerge {
    plan: Arc<QueryPlan>,
    inputs: Vec<ShardRows>,
    heads: Vec<Option<Vec<Cell>>>,
    primed: bool,
    to_skip: u64,
    left: u64,
    cap: Option<usize>,
    emitted: usize,
}

impl OrderedMerge {
    /// Merges `inputs`; without LIMIT more than `cap` rows (if any) is an error.
    pub fn new(plan: Arc<QueryPlan>, inputs: Vec<ShardRows>, cap: Option<usize>) -> OrderedMerge {
        OrderedMerge {
            to_skip: plan.offset,
            left: plan.limit.unwrap_or(u64::MAX),
            cap: cap.filter(|_| plan.limit.is_none()),
            heads: inputs.iter().map(|_| None).collect(),
            inputs,
            plan,
            primed: false,
            emitted: 0,
        }
    }

    /// The next row, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Cell>>, QueryError> {
        if !self.primed {
            for (head, input) in self.heads.iter_mut().zip(&mut self.inputs) {
                *head = input.next().await?;
            }
            self.primed = true;
        }
        while self.left > 0 {
            let Some(best) = self.best() else {
                return Ok(None);
            };
            let row = self.heads[best].take();
            self.heads[best] = self.inputs[best].next().await?;
            if self.to_skip > 0 {
                self.to_skip -= 1;
                continue;
            }
            if self.cap == Some(self.emitted) {
                return Err(QueryError::TooManyRows(self.emitted));
            }
            self.emitted += 1;
            self.left -= 1;
            return Ok(row.map(|mut row| {
                row.truncate(self.plan.visible);
                row
            }));
        }
        Ok(None)
    }

    /// The shard whose next row comes first.
    fn best(&self) -> Option<usize> {
        let mut best: Option<(usize, &Vec<Cell>)> = None;
        for (shard, head) in self.heads.iter().enumerate() {
            let Some(row) = head else { continue };
            if best.is_none_or(|(_, b)| compare_rows(&self.plan, row, b) == Ordering::Less) {
                best = Some((shard, row));
            }
        }
        best.map(|(shard, _)| shard)
    }
}

/// Combines the shards' per-group partial results (`layout` says how, per output), finishes
/// each group's outputs, applies HAVING, then orders and limits the groups. Reads every shard
/// at once and holds one row per group; a shard sending more than `max_groups` fails the
/// query, since a group missing from one shard's part would be merged wrong.
pub async fn merge_groups(
    plan: &QueryPlan,
    layout: &[Vec<Combine>],
    inputs: Vec<ShardRows>,
    params: &[serde_json::Value],
    max_groups: usize,
) -> Result<Vec<Vec<Cell>>, QueryError> {
    let combines: Vec<Combine> = layout.iter().flatten().copied().collect();
    let width = combines.len();
    let keys_end = width + plan.group_by.len();
    let counted = plan.distinct_columns.len();
    let mut groups: HashMap<Vec<u8>, GroupState> = HashMap::new();
    let mut rows = futures_util::stream::select_all(inputs.into_iter().map(|input| {
        Box::pin(futures_util::stream::unfold(
            (input, 0),
            move |(mut input, sent)| async move {
                let row = match input.next().await.transpose()? {
                    Ok(_) if sent == max_groups => Err(QueryError::TooManyGroups {
                        shard: input.name().to_string(),
                        limit: max_groups,
                    }),
                    other => other,
                };
                Some((row, (input, sent + 1)))
            },
        ))
    }));
    while let Some(row) = rows.next().await {
        let row = row?;
        let set = grouping_set(&row, keys_end, counted)?;
        let group = groups
            .entry(group_key(&row[width..keys_end]))
            .or_insert_with(|| GroupState::new(counted));
        if set == 0 {
            group.absorb(&combines, &row[..width])?;
        }
        if let Some(value) = row.get(keys_end + set).filter(|_| counted > 0) {
            group.count_distinct(set, value);
        }
    }
    let distinct_index: Vec<Option<usize>> = plan
        .columns
        .iter()
        .map(|c| counted_value(&c.output).and_then(|v| plan.distinct_columns.iter().position(|d| *d == v)))
        .collect();
    let mut rows: Vec<Vec<Cell>> = groups
        .into_values()
        .map(|group| finish_group(plan, layout, &distinct_index, group))
        .collect::<Result<_, _>>()?;
    if rows.is_empty() && plan.group_by.is_empty() {
        // Aggregates without GROUP BY answer one row even for no input, as in Postgres.
        rows.push(empty_input_row(plan));
    }
    if let Some(having) = &plan.having {
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            if having.keeps(&row, params)? {
                kept.push(row);
            }
        }
        rows = kept;
    }
    rows.sort_by(|a, b| compare_rows(plan, a, b));
    let limit = plan.limit.map_or(usize::MAX, |l| l as usize);
    let visible = |mut row: Vec<Cell>| {
        row.truncate(plan.visible);
        row
    };
    Ok(rows
        .into_iter()
        .skip(plan.offset as usize)
        .take(limit)
        .map(visible)
        .collect())
}

/// The aggregates of no rows: counts are 0, everything else NULL.
fn empty_input_row(plan: &QueryPlan) -> Vec<Cell> {
    plan.columns
        .iter()
        .map(|c| match c.output.aggregate() {
            Some(Aggregate::CountRows | Aggregate::Count | Aggregate::CountDistinct) => Cell::Int(0),
            _ => Cell::Null,
        })
        .collect()
}

/// A group being merged: its combined partial results, and per counted value the keys of the
/// distinct values seen so far.
struct GroupState {
    partials: Option<Vec<Cell>>,
    distinct: Vec<HashSet<Vec<u8>>>,
}

impl GroupState {
    fn new(counted: usize) -> GroupState {
        GroupState {
            partials: None,
            distinct: vec![HashSet::new(); counted],
        }
    }

    /// Combines one shard row's partial results into the group's.
    fn absorb(&mut self, combines: &[Combine], partials: &[Cell]) -> Result<(), QueryError> {
        match &mut self.partials {
            None => self.partials = Some(partials.to_vec()),
            Some(group) => {
                for (i, combine) in combines.iter().enumerate() {
                    group[i] = combine_partials(*combine, &group[i], &partials[i])?;
                }
            }
        }
        Ok(())
    }

    /// Notes a value of counted value `index` (NULLs are not counted).
    fn count_distinct(&mut self, index: usize, value: &Cell) {
        if *value != Cell::Null {
            self.distinct[index].insert(group_key(std::slice::from_ref(value)));
        }
    }
}

/// Which counted value a shard row carries: with several, the grouping set its `GROUPING(...)`
/// column names (the one argument grouped has a zero bit, the first argument the highest);
/// the first (0) otherwise. The first set's rows also carry the partial aggregates.
fn grouping_set(row: &[Cell], keys_end: usize, counted: usize) -> Result<usize, QueryError> {
    if counted <= 1 {
        return Ok(0);
    }
    let all = (1i64 << counted) - 1;
    match row.get(keys_end + counted) {
        Some(Cell::Int(grouping)) if (all & !grouping).count_ones() == 1 => {
            let grouped_bit = (all & !grouping).trailing_zeros() as usize;
            Ok(counted - 1 - grouped_bit)
        }
        other => Err(QueryError::Unsupported(Unsupported(format!(
            "a shard row names no grouping set (GROUPING is {other:?})"
        )))),
    }
}

/// A group's outputs from its combined partial results; `distinct_index` gives, per output,
/// the counted value a `count(DISTINCT ...)` output counts.
fn finish_group(
    plan: &QueryPlan,
    layout: &[Vec<Combine>],
    distinct_index: &[Option<usize>],
    group: GroupState,
) -> Result<Vec<Cell>, QueryError> {
    let partials = group.partials.ok_or_else(|| {
        QueryError::Unsupported(Unsupported(
            "a group arrived without its partial aggregates".into(),
        ))
    })?;
    let mut cells = partials.into_iter();
    let mut row = Vec::with_capacity(plan.columns.len());
    for ((column, parts), counted) in plan.columns.iter().zip(layout).zip(distinct_index) {
        let mut parts: Vec<Cell> = cells.by_ref().take(parts.len()).collect();
        let cell = match (column.output.aggregate(), parts.as_slice(), counted) {
            (Some(Aggregate::Avg), [sum, Cell::Int(count)], _) => average(sum, *count)?,
            (Some(Aggregate::CountDistinct), [], Some(index)) => {
                Cell::Int(group.distinct[*index].len() as i64)
            }
            _ => parts.swap_remove(0),
        };
        row.push(cell);
    }
    Ok(row)
}

/// `sum / count` as Postgres's `avg` gives it (numeric for integer and numeric inputs, whose
/// sums arrive as bigint or numeric; double precision for double precision); NULL for no input.
fn average(sum: &Cell, count: i64) -> Result<Cell, QueryError> {
    let too_large = || QueryError::Unsupported(Unsupported("an average too large to compute exactly".into()));
    let exact = |sum: Decimal| Decimal::average(sum, i128::from(count)).map(Cell::Numeric);
    Ok(match sum {
        _ if count == 0 => Cell::Null,
        Cell::Int(n) => exact(Decimal::integer(i128::from(*n))).ok_or_else(too_large)?,
        Cell::Numeric(d) => exact(*d).ok_or_else(too_large)?,
        Cell::Float(x) => Cell::Float(x / count as f64),
        _ => return Err(too_large()),
    })
}

/// Two partial results for one group, combined as the aggregate over both inputs would be.
fn combine_partials(combine: Combine, a: &Cell, b: &Cell) -> Result<Cell, QueryError> {
    let overflow = || QueryError::Unsupported(Unsupported("a sum out of range while merging".into()));
    Ok(match (combine, a, b) {
        (Combine::Keep, x, _) => x.clone(),
        (_, Cell::Null, other) | (_, other, Cell::Null) => other.clone(),
        (Combine::Add, Cell::Int(x), Cell::Int(y)) => Cell::Int(x.checked_add(*y).ok_or_else(overflow)?),
        (Combine::Add, Cell::Float(x), Cell::Float(y)) => Cell::Float(x + y),
        (Combine::Add, Cell::Numeric(x), Cell::Numeric(y)) => {
            Cell::Numeric(x.checked_add(*y).ok_or_else(overflow)?)
        }
        (Combine::Min, x, y) => {
            if y.compare(x, false, false) == Ordering::Less {
                y.clone()
            } else {
                x.clone()
            }
        }
        (Combine::Max, x, y) => {
            if y.compare(x, false, false) == Ordering::Greater {
                y.clone()
            } else {
                x.clone()
            }
        }
        (Combine::And, Cell::Bool(x), Cell::Bool(y)) => Cell::Bool(*x && *y),
        (Combine::Or, Cell::Bool(x), Cell::Bool(y)) => Cell::Bool(*x || *y),
        (_, x, _) => x.clone(),
    })
}

/// A byte key for a group's values; equal values (including 0.0 and -0.0, all NaNs,
/// numerics of different scales, and jsonb values that differ only in a number's scale, as
/// Postgres groups them) give equal keys.
fn group_key(cells: &[Cell]) -> Vec<u8> {
    let mut key = Vec::new();
    for cell in cells {
        let text = match cell {
            Cell::Float(x) if *x == 0.0 => "f:0".to_string(),
            Cell::Float(x) if x.is_nan() => "f:nan".to_string(),
            Cell::Numeric(d) => format!("n:{}", d.normalized()),
            Cell::Json(value) => {
                let mut text = String::from("j:");
                canonical_json(value, &mut text);
                text
            }
            other => format!("{other:?}"),
        };
        key.extend_from_slice(&(text.len() as u32).to_be_bytes());
        key.extend_from_slice(text.as_bytes());
    }
    key
}

/// `value` in a form equal for equal jsonb values: jsonb compares numbers as numerics, so `1`,
/// `1.0` and `1.00` are one value (and one group), and object keys are unordered.
fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match value {
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(x)) if x.fract() == 0.0 && x.abs() < 9.0e15 => out.push_str(&(x as i64).to_string()),
            _ => out.push_str(&n.to_string()),
        },
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&J::String(key.clone()).to_string());
                out.push(':');
                canonical_json(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn compare_rows(plan: &QueryPlan, a: &[Cell], b: &[Cell]) -> Ordering {
    plan.order_by
        .iter()
        .map(|k| a[k.output].compare(&b[k.output], k.descending, k.nulls_first))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonb_group_keys_are_equal_exactly_when_postgres_finds_the_values_equal() {
        let key = |v: serde_json::Value| group_key(&[Cell::Json(v)]);
        let same = [
            (json!(1), json!(1.0)),
            (
                json!({"a": 1, "b": [2.50, "x"]}),
                json!({"b": [2.5, "x"], "a": 1.0}),
            ),
            (json!(null), json!(null)),
        ];
        for (a, b) in same {
            assert_eq!(key(a.clone()), key(b.clone()), "{a} = {b}");
        }
        let different = [
            (json!(1), json!("1")),
            (json!([1, 2]), json!([2, 1])),
            (json!({"a": 1}), json!({"a": 1, "b": null})),
            (json!(0.5), json!(1)),
        ];
        for (a, b) in different {
            assert_ne!(key(a.clone()), key(b.clone()), "{a} <> {b}");
        }
        assert_ne!(
            key(json!(null)),
            group_key(&[Cell::Null]),
            "jsonb null is not SQL NULL"
        );
    }
}
