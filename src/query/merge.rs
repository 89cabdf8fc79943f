//! Merging the shards' answers into one: an ordered k-way merge that streams rows holding one
//! per shard, and a group merge that combines every shard's partial aggregates per group.

use super::QueryError;
use super::plan::{Aggregate, QueryPlan, SortKey, counted_value};
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

/// The rows of several shards merged into one sequence ordered by `keys` (positions in a
/// row), each shard's rows arriving in that order; holds one row per shard.
pub struct SortedMerge {
    keys: Vec<SortKey>,
    inputs: Vec<ShardRows>,
    heads: Vec<Option<Vec<Cell>>>,
    primed: bool,
}

impl SortedMerge {
    /// Merges `inputs`, each sorted by `keys`.
    pub fn new(inputs: Vec<ShardRows>, keys: Vec<SortKey>) -> SortedMerge {
        SortedMerge {
            keys,
            heads: inputs.iter().map(|_| None).collect(),
            inputs,
            primed: false,
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
        let Some(best) = self.best() else {
            return Ok(None);
        };
        let row = self.heads[best].take();
        self.heads[best] = self.inputs[best].next().await?;
        Ok(row)
    }

    /// The shard whose next row comes first.
    fn best(&self) -> Option<usize> {
        let mut best: Option<(usize, &Vec<Cell>)> = None;
        for (shard, head) in self.heads.iter().enumerate() {
            let Some(row) = head else { continue };
            if best.is_none_or(|(_, b)| compare_by(&self.keys, row, b) == Ordering::Less) {
                best = Some((shard, row));
            }
        }
        best.map(|(shard, _)| shard)
    }
}

/// The rows of a non-aggregated query in ORDER BY order (each shard's rows arrive sorted),
/// OFFSET skipped and LIMIT applied, one at a time, without the hidden sort keys.
pub struct OrderedMerge {
    merge: SortedMerge,
    visible: usize,
    to_skip: u64,
    left: u64,
    cap: Option<usize>,
    emitted: usize,
}

impl OrderedMerge {
    /// Merges `inputs`; without LIMIT more than `cap` rows (if any) is an error.
    pub fn new(plan: Arc<QueryPlan>, inputs: Vec<ShardRows>, cap: Option<usize>) -> OrderedMerge {
        OrderedMerge {
            merge: SortedMerge::new(inputs, plan.order_by.clone()),
            visible: plan.visible,
            to_skip: plan.offset,
            left: plan.limit.unwrap_or(u64::MAX),
            cap: cap.filter(|_| plan.limit.is_none()),
            emitted: 0,
        }
    }

    /// The next row, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Cell>>, QueryError> {
        while self.left > 0 {
            let Some(mut row) = self.merge.next().await? else {
                return Ok(None);
            };
            if self.to_skip > 0 {
                self.to_skip -= 1;
                continue;
            }
            if self.cap == Some(self.emitted) {
                return Err(QueryError::TooManyRows(self.emitted));
            }
            self.emitted += 1;
            self.left -= 1;
            row.truncate(self.visible);
            return Ok(Some(row));
        }
        Ok(None)
    }
}

/// Combines the shards' per-group partial results (`layout` says how, per output), finishes
/// each group's outputs, applies HAVING, then orders and limits the groups. Reads every shard
/// at once and holds one row per group, with the distinct values of each counted value; a
/// shard sending more than `max_groups` rows fails the query, since a group missing from one
/// shard's part would be merged wrong. (Distinct values of any number are counted from sorted
/// rows instead: [`super::runs`].)
pub async fn merge_groups(
    plan: &QueryPlan,
    layout: &[Vec<Combine>],
    inputs: Vec<ShardRows>,
    params: &[serde_json::Value],
    max_groups: usize,
) -> Result<Vec<Vec<Cell>>, QueryError> {
    let shape = RowShape::of(plan, layout);
    let counting = shape.counted > 0;
    let mut groups: HashMap<Vec<u8>, GroupState> = HashMap::new();
    let mut rows = futures_util::stream::select_all(inputs.into_iter().map(|input| {
        Box::pin(futures_util::stream::unfold(
            (input, 0),
            move |(mut input, sent)| async move {
                let row = match input.next().await.transpose()? {
                    Ok(_) if sent == max_groups => Err(too_many_rows(input.name(), max_groups, counting)),
                    other => other,
                };
                Some((row, (input, sent + 1)))
            },
        ))
    }));
    while let Some(row) = rows.next().await {
        let row = row?;
        let group = groups
            .entry(group_key(shape.keys(&row)))
            .or_insert_with(|| GroupState::new(shape.counted, Distinct::held));
        group.absorb_row(&shape, &row)?;
    }
    let groups = groups
        .into_values()
        .map(|group| finish_group(plan, layout, group));
    finish_answer(plan, groups.collect::<Result<_, _>>()?, params)
}

/// The error for shard `shard` sending more than `limit` rows to be held: groups, or with
/// values `counting`, (group, value) pairs.
fn too_many_rows(shard: &str, limit: usize, counting: bool) -> QueryError {
    let shard = shard.to_string();
    match counting {
        true => QueryError::TooManyHeldValues { shard, limit },
        false => QueryError::TooManyGroups { shard, limit },
    }
}

/// Where the parts of a grouped shard row are: the partial results, then the group keys,
/// then the counted values (and with several, the `GROUPING(...)` of the set the row is in).
pub(super) struct RowShape {
    combines: Vec<Combine>,
    /// Partial result columns.
    pub width: usize,
    /// End of the group keys.
    pub keys_end: usize,
    /// Counted values.
    pub counted: usize,
}

impl RowShape {
    /// The shape of `plan`'s shard rows, whose outputs combine as `layout` says.
    pub fn of(plan: &QueryPlan, layout: &[Vec<Combine>]) -> RowShape {
        let combines: Vec<Combine> = layout.iter().flatten().copied().collect();
        let width = combines.len();
        RowShape {
            combines,
            width,
            keys_end: width + plan.group_by.len(),
            counted: plan.distinct_columns.len(),
        }
    }

    /// The group keys of `row`.
    pub fn keys<'r>(&self, row: &'r [Cell]) -> &'r [Cell] {
        &row[self.width..self.keys_end]
    }
}

/// Finishes an aggregated answer from its merged groups: the one row of aggregates over no
/// input, HAVING, ORDER BY, OFFSET and LIMIT.
pub(super) fn finish_answer(
    plan: &QueryPlan,
    mut rows: Vec<Vec<Cell>>,
    params: &[serde_json::Value],
) -> Result<Vec<Vec<Cell>>, QueryError> {
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
    rows.sort_by(|a, b| compare_by(&plan.order_by, a, b));
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
            Some(
                Aggregate::CountRows
                | Aggregate::Count
                | Aggregate::CountDistinct
                | Aggregate::CountDistinctKeys,
            ) => Cell::Int(0),
            _ => Cell::Null,
        })
        .collect()
}

/// The distinct values of one counted value in one group, as far as they have been read.
pub(super) enum Distinct {
    /// Every value seen, by its group key: for rows in no particular order.
    Held(HashSet<Vec<u8>>),
    /// How many runs of equal values, and the last value: for rows sorted by the value.
    Runs {
        /// Runs counted so far.
        count: i64,
        /// The value of the current run.
        last: Option<Cell>,
    },
}

impl Distinct {
    /// Values held, for rows in any order.
    pub fn held() -> Distinct {
        Distinct::Held(HashSet::new())
    }

    /// Runs counted, for rows sorted by the value.
    pub fn runs() -> Distinct {
        Distinct::Runs { count: 0, last: None }
    }

    /// Notes `value` (NULLs are not counted).
    fn note(&mut self, value: &Cell) {
        if *value == Cell::Null {
            return;
        }
        match self {
            Distinct::Held(seen) => {
                seen.insert(group_key(std::slice::from_ref(value)));
            }
            Distinct::Runs { count, last } => {
                if last
                    .as_ref()
                    .is_none_or(|l| l.compare(value, false, false) != Ordering::Equal)
                {
                    *count += 1;
                    *last = Some(value.clone());
                }
            }
        }
    }

    /// How many distinct values.
    fn count(&self) -> i64 {
        match self {
            Distinct::Held(seen) => seen.len() as i64,
            Distinct::Runs { count, .. } => *count,
        }
    }
}

/// A group being merged: its combined partial results, and per counted value its distinct
/// values so far.
pub(super) struct GroupState {
    partials: Option<Vec<Cell>>,
    distinct: Vec<Distinct>,
}

impl GroupState {
    /// A group of no rows yet, counting `counted` values as `start` begins each count.
    pub fn new(counted: usize, start: fn() -> Distinct) -> GroupState {
        GroupState {
            partials: None,
            distinct: (0..counted).map(|_| start()).collect(),
        }
    }

    /// Combines one shard row of this group, shaped as `shape` says: its partial results (a
    /// row of the first grouping set carries them) and its counted value.
    pub fn absorb_row(&mut self, shape: &RowShape, row: &[Cell]) -> Result<(), QueryError> {
        let set = grouping_set(row, shape.keys_end, shape.counted)?;
        if set == 0 {
            self.absorb(&shape.combines, &row[..shape.width])?;
        }
        if let Some(value) = row.get(shape.keys_end + set).filter(|_| shape.counted > 0) {
            self.distinct[set].note(value);
        }
        Ok(())
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
}

/// Which counted value a shard row carries: with several, the grouping set its `GROUPING(...)`
/// column names (the one argument grouped has a zero bit, the first argument the highest);
/// the first (0) otherwise. The first set's rows also carry the partial aggregates.
pub(super) fn grouping_set(row: &[Cell], keys_end: usize, counted: usize) -> Result<usize, QueryError> {
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

/// A group's outputs from its combined partial results and distinct counts.
pub(super) fn finish_group(
    plan: &QueryPlan,
    layout: &[Vec<Combine>],
    group: GroupState,
) -> Result<Vec<Cell>, QueryError> {
    let partials = group.partials.ok_or_else(|| {
        QueryError::Unsupported(Unsupported(
            "a group arrived without its partial aggregates".into(),
        ))
    })?;
    let mut cells = partials.into_iter();
    let mut row = Vec::with_capacity(plan.columns.len());
    for (column, parts) in plan.columns.iter().zip(layout) {
        let mut parts: Vec<Cell> = cells.by_ref().take(parts.len()).collect();
        let counted = counted_value(&column.output)
            .and_then(|value| plan.distinct_columns.iter().position(|d| *d == value));
        let cell = match (column.output.aggregate(), parts.as_slice(), counted) {
            (Some(Aggregate::Avg), [sum, Cell::Int(count)], _) => average(sum, *count)?,
            (Some(Aggregate::CountDistinct), [], Some(index)) => Cell::Int(group.distinct[index].count()),
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

/// Order of two rows under sort keys over their positions.
pub(super) fn compare_by(keys: &[SortKey], a: &[Cell], b: &[Cell]) -> Ordering {
    keys.iter()
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

    #[test]
    fn runs_count_values_postgres_finds_equal_once_and_nulls_not_at_all() {
        let sorted = [
            Cell::Float(-0.0),
            Cell::Float(0.0),
            Cell::Float(1.5),
            Cell::Float(f64::NAN),
            Cell::Float(f64::NAN),
            Cell::Null,
        ];
        let mut floats = Distinct::runs();
        sorted.iter().for_each(|v| floats.note(v));
        assert_eq!(floats.count(), 3, "0 = -0, NaN = NaN, NULL not counted");
        let decimal = |unscaled, scale| Cell::Numeric(Decimal { unscaled, scale });
        let mut numerics = Distinct::runs();
        for value in [decimal(15, 1), decimal(150, 2), decimal(1500, 3), decimal(2, 0)] {
            numerics.note(&value);
        }
        assert_eq!(numerics.count(), 2, "1.5 = 1.50 = 1.500");
    }
}
