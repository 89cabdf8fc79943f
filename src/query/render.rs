//! The statement each shard runs, re-rendered from the checked plan (invariant 8): outputs as
//! values or partial aggregates, group keys appended and grouped by position, parameters
//! renumbered to the ones it binds.

use super::expr::Parameters;
use super::merge::Combine;
use super::plan::{Aggregate, Output, QueryPlan};
use crate::routing::TokenRange;
use crate::schema::{HASH_COLUMN, quote_ident};

/// The statement each shard runs, with the parameters it binds and how its columns combine.
pub struct RenderedQuery {
    /// The SQL.
    pub sql: String,
    /// Original numbers of the parameters it binds, in the order of its `$1..$n`.
    pub parameters: Vec<usize>,
    /// Per output, how each of its partial columns combines across shards.
    pub layout: Vec<Vec<Combine>>,
}

/// The SQL each shard runs: the checked plan re-rendered. Aggregates are computed per group on
/// each shard (their partial results have the final types), with the group keys, and the
/// values `count(DISTINCT x)` count, appended and grouped by position; ordering and limits of
/// aggregated queries are applied after the merge. `limit` is the LIMIT each shard gets (none
/// for `None`): the query's LIMIT + OFFSET for rows, one more than the group cap for groups,
/// none for the sorted (group, value) rows distinct values are counted from. Rows whose
/// `_sg_hash` falls in a `skipped` range are left out: a shard still holding rows of ranges
/// it no longer owns (invariant 12).
pub fn render(plan: &QueryPlan, limit: Option<u64>, skipped: &[TokenRange]) -> RenderedQuery {
    let mut parameters = Parameters::default();
    let mut select = Vec::new();
    let mut layout = Vec::new();
    for column in &plan.columns {
        let parts = partials(&column.output, &mut parameters);
        layout.push(parts.iter().map(|(_, combine)| *combine).collect());
        select.extend(parts.into_iter().map(|(sql, _)| sql));
    }
    let first_key = select.len() + 1;
    select.extend(plan.group_by.iter().map(|key| parameters.render(key)));
    let keys: Vec<usize> = (first_key..=select.len()).collect();
    let counted: Vec<String> = plan
        .distinct_columns
        .iter()
        .map(|c| parameters.render(c))
        .collect();
    let first_counted = select.len() + 1;
    select.extend(counted.iter().cloned());
    if counted.len() > 1 {
        select.push(format!("GROUPING({})", counted.join(", ")));
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        select.join(", "),
        quote_ident(&plan.table.name)
    );
    let filter = plan.filter.as_ref().map(|f| parameters.render(f));
    match (filter, skip_clause(skipped)) {
        (Some(filter), None) => sql.push_str(&format!(" WHERE {filter}")),
        (None, Some(skip)) => sql.push_str(&format!(" WHERE {skip}")),
        (Some(filter), Some(skip)) => sql.push_str(&format!(" WHERE ({filter}) AND {skip}")),
        (None, None) => {}
    }
    sql.push_str(&group_by_clause(&keys, first_counted, counted.len()));
    if !plan.order_by.is_empty() && !plan.aggregated {
        let keys: Vec<String> = plan
            .order_by
            .iter()
            .map(|k| {
                let direction = if k.descending { "DESC" } else { "ASC" };
                let nulls = if k.nulls_first { "FIRST" } else { "LAST" };
                format!("{} {direction} NULLS {nulls}", k.output + 1)
            })
            .collect();
        sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    }
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    RenderedQuery {
        sql,
        parameters: parameters.used,
        layout,
    }
}

/// `NOT (_sg_hash BETWEEN lo AND hi OR ...)` over every stored interval of `skipped`, the
/// condition that leaves a shard's rows it no longer owns out of a read (invariant 12); the
/// bounds are numbers, never user text.
pub fn skip_clause(skipped: &[TokenRange]) -> Option<String> {
    let intervals: Vec<String> = skipped
        .iter()
        .flat_map(TokenRange::stored_intervals)
        .map(|(lo, hi)| format!("{HASH_COLUMN} BETWEEN {lo} AND {hi}"))
        .collect();
    if intervals.is_empty() {
        None
    } else {
        Some(format!("NOT ({})", intervals.join(" OR ")))
    }
}

/// The GROUP BY of the shard statement, by position: the group keys and the one counted value;
/// with several counted values, one grouping set per value (its rows carry that value, and the
/// first set's rows also the partial aggregates), told apart by the `GROUPING(...)` column.
fn group_by_clause(keys: &[usize], first_counted: usize, counted: usize) -> String {
    let counted_positions = first_counted..first_counted + counted;
    let list = |positions: &mut dyn Iterator<Item = usize>| {
        positions.map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    };
    if counted > 1 {
        let sets: Vec<String> = counted_positions
            .map(|value| format!("({})", list(&mut keys.iter().copied().chain([value]))))
            .collect();
        return format!(" GROUP BY GROUPING SETS ({})", sets.join(", "));
    }
    let all = list(&mut keys.iter().copied().chain(counted_positions));
    if all.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {all}")
    }
}

/// The columns each shard returns for an output, with how each combines: the value, or the
/// aggregate's partial results (an average needs a sum and a count; `count(DISTINCT x)` is
/// counted from the distinct values of `x` the shards group by).
fn partials(output: &Output, parameters: &mut Parameters) -> Vec<(String, Combine)> {
    let call = match output {
        Output::Value(value) => return vec![(parameters.render(value), Combine::Keep)],
        Output::Aggregate(call) => call,
    };
    let x = call.argument.as_ref().map(|a| parameters.render(a));
    let x = x.as_deref().unwrap_or("*");
    let filter = call
        .filter
        .as_ref()
        .map(|f| format!(" FILTER (WHERE {})", parameters.render(f)))
        .unwrap_or_default();
    let part = |function: &str, combine: Combine| (format!("{function}({x}){filter}"), combine);
    match call.kind {
        Aggregate::CountRows | Aggregate::Count => vec![part("count", Combine::Add)],
        Aggregate::Sum => vec![part("sum", Combine::Add)],
        Aggregate::Min => vec![part("min", Combine::Min)],
        Aggregate::Max => vec![part("max", Combine::Max)],
        Aggregate::BoolAnd => vec![part("bool_and", Combine::And)],
        Aggregate::BoolOr => vec![part("bool_or", Combine::Or)],
        Aggregate::Avg => vec![part("sum", Combine::Add), part("count", Combine::Add)],
        Aggregate::CountDistinct => Vec::new(),
        Aggregate::CountDistinctKeys => vec![(format!("count(DISTINCT {x}){filter}"), Combine::Add)],
    }
}
