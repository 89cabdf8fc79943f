use super::*;
use crate::config::Config;

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
    match plan_query(sql, 1, &tables()) {
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
            "HAVING operand count(*) + 1 is not supported",
        ),
        (
            "SELECT count(DISTINCT n), count(DISTINCT tenant_id) FROM events",
            "count(DISTINCT ...) of both n and tenant_id",
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
            "SELECT lower(tenant_id) FROM events",
            "function lower is not supported",
        ),
        (
            "SELECT * FROM events WHERE md5(tenant_id) = 'a'",
            "function md5 is not supported (allowed in WHERE: lower",
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
            "SELECT * FROM events LIMIT $1",
            "LIMIT must be a non-negative integer literal",
        ),
        ("SELEKT 1", "cannot parse the query"),
    ];
    for (sql, needle) in cases {
        let message = refused(sql);
        assert!(message.contains(needle), "{sql}: {message}");
    }
}

#[test]
fn a_plan_keeps_columns_order_limit_and_key_equalities() {
    let sql = "SELECT n AS value, event_id FROM events WHERE tenant_id = 'a' AND n > $1 \
               ORDER BY value DESC, 2 LIMIT 10 OFFSET 5";
    let plan = plan_query(sql, 1, &tables()).unwrap();
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
    assert_eq!(plan.key_equalities.len(), 1);
    assert_eq!(plan.key_equalities[0].0, 1);
}

#[test]
fn unquoted_identifiers_fold_to_lower_case() {
    let plan = plan_query("SELECT Tenant_ID FROM Events", 0, &tables()).unwrap();
    assert_eq!(plan.columns[0].name, "tenant_id");
    assert!(refused("SELECT \"Tenant_ID\" FROM events").contains("unknown column Tenant_ID"));
}
