//! `count(DISTINCT x)` of any size. Each shard sends its (group, counted value) rows sorted by
//! group and value; the merge reads every shard's rows in that one order, so a group's rows
//! arrive together and equal values side by side, and a group's distinct values are counted
//! as runs of equal values. Memory holds the finished groups, never the values.

use super::QueryError;
use super::merge::{Combine, Distinct, GroupState, RowShape, SortedMerge, finish_answer, finish_group};
use super::plan::{QueryPlan, SortKey};
use super::shard::ShardRows;
use super::value::Cell;
use std::cmp::Ordering;
use tokio_postgres::types::Type;

/// The positions of a grouped shard row its rows are sorted by: the group keys, then (with
/// several counted values) the grouping set, then the counted values; ascending, NULLs last.
pub fn sort_keys(plan: &QueryPlan, layout: &[Vec<Combine>]) -> Vec<SortKey> {
    let shape = RowShape::of(plan, layout);
    let counted = shape.keys_end..shape.keys_end + shape.counted;
    let grouping = (shape.counted > 1).then_some(shape.keys_end + shape.counted);
    (shape.width..shape.keys_end)
        .chain(grouping)
        .chain(counted)
        .map(|output| SortKey {
            output,
            descending: false,
            nulls_first: false,
        })
        .collect()
}

/// Whether `plan`'s distinct values can be counted from sorted rows: it counts some, and the
/// merge orders every group key and counted value (of the shard statement's `types`) exactly
/// as the shards sort them.
pub fn countable(plan: &QueryPlan, layout: &[Vec<Combine>], types: &[Type]) -> bool {
    !plan.distinct_columns.is_empty()
        && sort_keys(plan, layout)
            .iter()
            .all(|key| types.get(key.output).is_some_and(orders_like_shards))
}

/// Whether the merge orders values of `ty` as a shard's ORDER BY does (text once ordered
/// bytewise): every type but jsonb, whose order Postgres does not spell out, and `char(n)`,
/// whose order ignores trailing spaces.
fn orders_like_shards(ty: &Type) -> bool {
    !matches!(*ty, Type::JSONB | Type::BPCHAR)
}

/// Whether values of `ty` take a collation.
fn is_text(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::NAME)
}

/// The shard statement `sql`, whose result columns have `types`, with its rows in the order of
/// `keys`; text is ordered bytewise (`COLLATE "C"`), as the merge compares it, whatever the
/// shard's collation.
pub fn ordered(sql: &str, types: &[Type], keys: &[SortKey]) -> String {
    let names: Vec<String> = (1..=types.len()).map(|i| format!("c{i}")).collect();
    let order: Vec<String> = keys
        .iter()
        .map(|key| {
            let collate = if is_text(&types[key.output]) {
                " COLLATE \"C\""
            } else {
                ""
            };
            format!("c{}{collate} ASC NULLS LAST", key.output + 1)
        })
        .collect();
    format!(
        "SELECT * FROM ({sql}) AS parts({}) ORDER BY {}",
        names.join(", "),
        order.join(", ")
    )
}

/// [`super::merge::merge_groups`] for shard rows sorted as [`sort_keys`] says: a group is
/// finished as soon as a row of the next one arrives, and its distinct values are counted as
/// runs. More than `max_groups` groups in all fails the query.
pub async fn merge_sorted_groups(
    plan: &QueryPlan,
    layout: &[Vec<Combine>],
    inputs: Vec<ShardRows>,
    params: &[serde_json::Value],
    max_groups: usize,
) -> Result<Vec<Vec<Cell>>, QueryError> {
    let shape = RowShape::of(plan, layout);
    let mut merge = SortedMerge::new(inputs, sort_keys(plan, layout));
    let mut groups = Vec::new();
    let mut current: Option<(Vec<Cell>, GroupState)> = None;
    let finish = |groups: &mut Vec<Vec<Cell>>, group: GroupState| {
        if groups.len() == max_groups {
            return Err(QueryError::TooManyMergedGroups(max_groups));
        }
        groups.push(finish_group(plan, layout, group)?);
        Ok(())
    };
    while let Some(row) = merge.next().await? {
        let keys = shape.keys(&row);
        if let Some((_, finished)) = current.take_if(|(current_keys, _)| !same_keys(current_keys, keys)) {
            finish(&mut groups, finished)?;
        }
        let (_, group) =
            current.get_or_insert_with(|| (keys.to_vec(), GroupState::new(shape.counted, Distinct::runs)));
        group.absorb_row(&shape, &row)?;
    }
    if let Some((_, last)) = current {
        finish(&mut groups, last)?;
    }
    finish_answer(plan, groups, params)
}

/// Whether two rows' group keys are one group: equal as the merge orders them (so `0.0` and
/// `-0.0`, or numerics of different scales, are one group, as in Postgres).
fn same_keys(a: &[Cell], b: &[Cell]) -> bool {
    a.iter()
        .zip(b)
        .all(|(a, b)| a.compare(b, false, false) == Ordering::Equal)
}
