use super::*;
use crate::config::Config;
use crate::query::expr::Parameters;
use serde_json::json;

fn tables() -> Tables {
    let config = Config::parse(
        r#"[[tables]]
        name = "events"
        id = "event_id"
        partition_key = ["tenant_id"]
        columns = [
          { name = "event_id", type = "uuid" },
          { name = "tenant_id", type = "text" },
          { name = "n", type = "bigint", nullable = true },
          { name = "payload", type = "jsonb", nullable = true },
        ]"#,
    )
    .unwrap();
    Tables::from_config(&config.tables).unwrap()
}

fn refused(sql: &str) -> String {
    match plan_query(sql, &[json!(1)], &tables()) {
        Err(Unsupported(message)) => message,
        Ok(plan) => panic!("{sql} was accepted: {plan:?}"),
    }
}

#[test]
fn unsupported_constructs_are_named() {
    let cases = [
        (
            "SELECT * FROM events e JOIN events f ON e.n = f.n",
            "joins are not supported",
        ),
        (
            "SELECT * FROM events, events",
            "select from exactly one declared table",
        ),
        (
            "WITH x AS (SELECT 1) SELECT * FROM events",
            "WITH (common table expressions) is not supported",
        ),
        (
            "SELECT * FROM events WHERE n IN (SELECT n FROM events)",
            "IN with a subquery is not supported",
        ),
        (
            "SELECT * FROM events WHERE EXISTS (SELECT 1)",
            "subqueries are not supported",
        ),
        (
            "SELECT tenant_id FROM events GROUP BY tenant_id HAVING count(*) + 1 > 2",
            "aggregate count(...) is allowed only as a whole output or HAVING operand",
        ),
        (
            "SELECT sum(DISTINCT n) FROM events",
            "sum(DISTINCT ...) is not supported",
        ),
        (
            "SELECT avg(tenant_id) FROM events",
            "avg of a text column is not supported",
        ),
        (
            "SELECT n, count(*) FROM events GROUP BY tenant_id",
            "column n must appear in the GROUP BY clause",
        ),
        (
            "SELECT count(*) OVER () FROM events",
            "window functions are not supported",
        ),
        (
            "SELECT n + 1, count(*) FROM events GROUP BY tenant_id",
            "column n must appear in the GROUP BY clause",
        ),
        (
            "SELECT * FROM events WHERE random() > 0.5",
            "function random is not supported (allowed: lower",
        ),
        (
            "SELECT DISTINCT ON (tenant_id) n FROM events",
            "DISTINCT ON is not supported",
        ),
        (
            "SELECT * FROM events; SELECT * FROM events",
            "send one statement at a time",
        ),
        ("DELETE FROM events", "only SELECT is supported"),
        (
            "SELECT * FROM events UNION SELECT * FROM events",
            "UNION, INTERSECT, EXCEPT",
        ),
        ("SELECT * FROM nope", "unknown table nope"),
        (
            "SELECT colour FROM events",
            "unknown column colour in table events",
        ),
        (
            "SELECT * FROM events WHERE n > $2",
            "parameter $2 has no value (1 given)",
        ),
        (
            "SELECT * FROM events ORDER BY 9",
            "ORDER BY position 9 is not in the select list",
        ),
        (
            "SELECT * FROM events LIMIT n",
            "LIMIT must be a non-negative integer, as a literal or a parameter",
        ),
        ("SELEKT 1", "cannot parse the query"),
    ];
    for (sql, needle) in cases {
        let message = refused(sql);
        assert!(message.contains(needle), "{sql}: {message}");
    }
}

#[test]
fn a_plan_keeps_columns_order_limit_and_key_values() {
    let sql = "SELECT n AS value, event_id FROM events WHERE tenant_id = 'a' AND n > $1 \
               ORDER BY value DESC, 2 LIMIT 10 OFFSET 5";
    let plan = plan_query(sql, &[json!(1)], &tables()).unwrap();
    let names: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["value", "event_id"]);
    assert_eq!(
        plan.order_by,
        [
            SortKey {
                output: 0,
                descending: true,
                nulls_first: true
            },
            SortKey {
                output: 1,
                descending: false,
                nulls_first: false
            },
        ]
    );
    assert_eq!((plan.limit, plan.offset), (Some(10), 5));
    assert_eq!(plan.key_values.len(), 1);
    assert_eq!(plan.key_values[0].0, 1);
}

#[test]
fn unquoted_identifiers_fold_to_lower_case() {
    let plan = plan_query("SELECT Tenant_ID FROM Events", &[], &tables()).unwrap();
    assert_eq!(plan.columns[0].name, "tenant_id");
    assert!(refused("SELECT \"Tenant_ID\" FROM events").contains("unknown column Tenant_ID"));
}

#[test]
fn group_keys_resolve_like_postgres_and_compare_normalised() {
    let key = |sql: &str| {
        let plan = plan_query(sql, &[], &tables()).unwrap_or_else(|e| panic!("{sql}: {e}"));
        plan.group_by.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    };
    let lowered = ["lower(\"tenant_id\")".to_string()];
    assert_eq!(
        key("SELECT lower(tenant_id) AS t, count(*) FROM events GROUP BY t"),
        lowered
    );
    assert_eq!(
        key("SELECT lower(tenant_id), count(*) FROM events GROUP BY 1"),
        lowered
    );
    assert_eq!(
        key("SELECT lower(tenant_id), count(*) FROM events GROUP BY LOWER(Tenant_Id)"),
        lowered
    );
    assert_eq!(
        key("SELECT upper(tenant_id), n % 2, count(*) FROM events GROUP BY tenant_id, events.n"),
        ["\"tenant_id\"", "\"n\""]
    );
    // A name is a table column before it is an output alias, as in Postgres.
    assert_eq!(key("SELECT n + 1 AS n FROM events GROUP BY n"), ["\"n\""]);
    let plan = plan_query(
        "SELECT lower(tenant_id), count(*) FROM events GROUP BY 1 ORDER BY lower(tenant_id) DESC",
        &[],
        &tables(),
    )
    .unwrap();
    assert_eq!(plan.order_by[0].output, 0);
}

#[test]
fn shard_statements_bind_only_the_parameters_they_use_renumbered() {
    let plan = plan_query(
        "SELECT event_id FROM events WHERE n > $3 AND coalesce(n, $1) > $3",
        &[json!(1), json!(2), json!(3)],
        &tables(),
    )
    .unwrap();
    let mut parameters = Parameters::default();
    let sql = parameters.render(plan.filter.as_ref().unwrap());
    assert_eq!(sql, "\"n\" > $1 AND coalesce(\"n\", $2) > $1");
    assert_eq!(parameters.used, [3, 1]);
}

#[test]
fn literals_render_as_postgres_reads_them() {
    let plan = plan_query(
        r"SELECT event_id FROM events WHERE tenant_id IN ('it''s', 'a\b') AND n = -5",
        &[],
        &tables(),
    )
    .unwrap();
    let sql = Parameters::default().render(plan.filter.as_ref().unwrap());
    assert_eq!(sql, r#""tenant_id" IN ('it''s', 'a\b') AND "n" = -5"#);
    assert!(refused(r"SELECT * FROM events WHERE tenant_id = E'\x41'").contains("is not supported"));
}

#[test]
fn now_becomes_one_parameter_and_casts_are_allow_listed() {
    let plan = plan_query(
        "SELECT event_id FROM events WHERE payload IS NULL AND now() > current_timestamp - interval '1 hour'",
        &[],
        &tables(),
    )
    .unwrap();
    let mut parameters = Parameters::default();
    let sql = parameters.render(plan.filter.as_ref().unwrap());
    assert_eq!(
        sql,
        "\"payload\" IS NULL AND $1::TIMESTAMPTZ > $1::TIMESTAMPTZ - INTERVAL '1 hour'"
    );
    assert_eq!(parameters.used, [crate::query::expr::NOW_PARAMETER]);
    assert!(refused("SELECT n::interval FROM events").contains("cast to interval is not supported"));
    assert!(refused("SELECT * FROM events WHERE n = $0").contains("parameter $0 has no value"));
    let message = refused("SELECT * FROM events WHERE n > interval n");
    assert!(
        message.contains("an interval must be a quoted literal"),
        "{message}"
    );
}

#[test]
fn filters_belong_to_aggregates_and_count_distinct_counts_one_value() {
    assert!(
        refused("SELECT lower(tenant_id) FILTER (WHERE n > 1) FROM events")
            .contains("lower: FILTER applies to aggregates only")
    );
    let plan = plan_query(
        "SELECT count(DISTINCT n), count(DISTINCT tenant_id), count(DISTINCT n), \
         count(DISTINCT n) FILTER (WHERE n > 1) FROM events",
        &[],
        &tables(),
    )
    .unwrap();
    let counted: Vec<String> = plan.distinct_columns.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        counted,
        ["\"n\"", "\"tenant_id\"", "CASE WHEN \"n\" > 1 THEN \"n\" END"],
        "each counted value once"
    );
    let plan = plan_query(
        "SELECT count(DISTINCT n) FILTER (WHERE n > 1), sum(n + 1) FROM events",
        &[],
        &tables(),
    )
    .unwrap();
    assert_eq!(
        plan.distinct_columns
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        ["CASE WHEN \"n\" > 1 THEN \"n\" END"]
    );
}

#[test]
fn order_by_keys_outside_the_select_list_become_hidden_outputs() {
    let plan = plan_query(
        "SELECT tenant_id FROM events GROUP BY 1 ORDER BY count(*) DESC, tenant_id",
        &[],
        &tables(),
    )
    .unwrap();
    assert_eq!((plan.visible, plan.columns.len()), (1, 2));
    assert_eq!(plan.order_by[0].output, 1);
    assert!(plan.aggregated);
    assert!(
        refused("SELECT DISTINCT tenant_id FROM events ORDER BY n")
            .contains("with SELECT DISTINCT, order by an output column")
    );
    assert!(
        refused("SELECT tenant_id FROM events GROUP BY 1 ORDER BY n")
            .contains("column n must appear in the GROUP BY clause")
    );
}

#[test]
fn limit_and_offset_may_be_parameters() {
    let sql = "SELECT event_id FROM events WHERE n > $1 ORDER BY event_id LIMIT $2 OFFSET $3";
    let plan = plan_query(sql, &[json!(0), json!(5), json!(10)], &tables()).unwrap();
    assert_eq!((plan.limit, plan.offset), (Some(5), 10));
    let error = plan_query(sql, &[json!(0), json!("five"), json!(10)], &tables()).unwrap_err();
    assert_eq!(
        error.0,
        "LIMIT must be a non-negative integer, as a literal or a parameter"
    );
}

#[test]
fn a_shard_holding_rows_it_no_longer_owns_skips_them_by_their_stored_position() {
    use crate::query::render::render;
    use crate::routing::{ShardIndex, TokenRange};
    let plan = plan_query("SELECT count(*) FROM events WHERE n > $1", &[json!(1)], &tables()).unwrap();
    assert_eq!(
        render(&plan, Some(10), &[]).sql,
        "SELECT count(*) FROM \"events\" WHERE \"n\" > $1 LIMIT 10"
    );
    let leaving = [
        TokenRange {
            start: 10,
            end: 20,
            shard: ShardIndex(1),
        },
        TokenRange {
            start: u64::MAX - 1,
            end: 3,
            shard: ShardIndex(1),
        },
    ];
    assert_eq!(
        render(&plan, Some(10), &leaving).sql,
        "SELECT count(*) FROM \"events\" WHERE (\"n\" > $1) AND NOT (_sg_hash BETWEEN 11 AND 20 \
         OR _sg_hash BETWEEN -1 AND -1 OR _sg_hash BETWEEN 0 AND 3) LIMIT 10"
    );
    let everything = plan_query("SELECT * FROM events", &[], &tables()).unwrap();
    assert!(
        render(&everything, Some(5), &leaving[..1])
            .sql
            .ends_with("FROM \"events\" WHERE NOT (_sg_hash BETWEEN 11 AND 20) LIMIT 5")
    );
}

#[test]
fn parameters_are_counted_by_the_highest_placeholder_outside_strings() {
    assert_eq!(parameter_count("SELECT count(*) FROM events"), 0);
    assert_eq!(
        parameter_count("SELECT n FROM events WHERE tenant_id = $2 AND n > $1 LIMIT $3"),
        3
    );
    assert_eq!(
        parameter_count("SELECT '$9' FROM events -- $8\n WHERE tenant_id = $1"),
        1
    );
}
