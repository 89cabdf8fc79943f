use super::*;

#[test]
fn a_query_string_splits_at_semicolons_outside_quotes_and_comments() {
    let query = "SET a = 'x;y'; SELECT 1 -- c;d\n; /* e;f */ SHOW \"b;c\"; $q$ g;h $q$;;  ";
    assert_eq!(
        split(query),
        vec![
            "SET a = 'x;y'",
            " SELECT 1 -- c;d\n",
            " /* e;f */ SHOW \"b;c\"",
            " $q$ g;h $q$"
        ]
    );
    assert!(split(" ; -- only a comment\n").is_empty());
}

#[test]
fn session_statements_are_told_apart_by_their_words() {
    let set = |name: &str, value: &str| Statement::Set {
        name: name.into(),
        value: value.into(),
    };
    let cases = [
        ("BEGIN", Statement::Begin),
        (
            "start transaction isolation level read committed",
            Statement::Begin,
        ),
        ("COMMIT", Statement::Commit),
        ("end", Statement::Commit),
        ("ROLLBACK", Statement::Rollback),
        ("SET extra_float_digits = 3", set("extra_float_digits", "3")),
        (
            "SET SESSION application_name TO 'it''s'",
            set("application_name", "it's"),
        ),
        ("set time zone 'UTC'", set("timezone", "UTC")),
        ("RESET ALL", Statement::Reset { name: "all".into() }),
        (
            "SHOW TimeZone",
            Statement::Show {
                name: "timezone".into(),
            },
        ),
        ("DISCARD ALL", Statement::Discard),
        ("DEALLOCATE _pg3_0", Statement::Deallocate { all: false }),
        ("deallocate prepare all", Statement::Deallocate { all: true }),
        (
            "SELECT 1",
            Statement::SelectInteger {
                value: 1,
                label: "?column?".into(),
            },
        ),
        (
            "select 7 AS One",
            Statement::SelectInteger {
                value: 7,
                label: "one".into(),
            },
        ),
        (
            "SELECT 1 AS \"Ok\";",
            Statement::SelectInteger {
                value: 1,
                label: "Ok".into(),
            },
        ),
        ("select version()", Statement::SelectVersion),
        ("DELETE FROM events", Statement::Unsupported("DELETE".into())),
    ];
    for (sql, expected) in cases {
        assert_eq!(classify(sql), Ok(expected), "{sql}");
    }
}

#[test]
fn copy_options_of_either_syntax_set_the_format() {
    let copy = |sql: &str| match classify(sql) {
        Ok(Statement::CopyFrom(copy)) => copy,
        other => panic!("{sql}: {other:?}"),
    };
    let text = copy("COPY events FROM STDIN");
    assert_eq!(
        (text.table.as_str(), text.format.clone(), text.header),
        ("events", CopyFormat::new(CopyKind::Text), false)
    );

    let csv = copy(
        "copy \"Events\" (a, \"B\") from stdin with (format csv, header true, delimiter ';', null 'NULL', quote '''', escape '\\')",
    );
    assert_eq!(
        (csv.table.as_str(), csv.columns.clone(), csv.header),
        ("Events", vec!["a".to_string(), "B".to_string()], true)
    );
    let mut expected = CopyFormat::new(CopyKind::Csv);
    (expected.delimiter, expected.null, expected.quote, expected.escape) =
        (b';', "NULL".into(), b'\'', b'\\');
    assert_eq!(csv.format, expected);

    let legacy = copy("COPY events FROM STDIN WITH CSV HEADER");
    assert_eq!((legacy.format.kind, legacy.header), (CopyKind::Csv, true));
    assert_eq!(
        copy("COPY events FROM STDIN (FORMAT binary)").format.kind,
        CopyKind::Binary
    );
    assert_eq!(
        copy("COPY events FROM STDIN BINARY").format.kind,
        CopyKind::Binary
    );
    let legacy_text = copy("COPY events FROM STDIN DELIMITER '|'");
    assert_eq!(
        (legacy_text.format.kind, legacy_text.format.delimiter),
        (CopyKind::Text, b'|')
    );

    let Ok(Statement::CopyTo(to)) = classify("COPY events (tenant_id, n) TO STDOUT (FORMAT csv, HEADER)")
    else {
        panic!("a COPY TO STDOUT is carried out");
    };
    assert_eq!(
        (to.query.as_str(), to.format.kind, to.header),
        ("SELECT tenant_id, n FROM events", CopyKind::Csv, true)
    );
    assert_eq!(
        classify("COPY (SELECT 1 FROM events) TO '/tmp/x'"),
        Ok(Statement::Redirected {
            what: "COPY TO a file or program",
            hint: "use COPY TO STDOUT, or psql's \\copy",
        })
    );
    assert_eq!(
        classify("COPY events TO STDOUT (FORMAT binary)"),
        Ok(Statement::Unsupported("COPY TO in binary format".into()))
    );
    assert_eq!(
        classify("COPY events FROM '/tmp/x'"),
        Ok(Statement::Redirected {
            what: "COPY FROM a file or program",
            hint: "use COPY FROM STDIN, or psql's \\copy",
        })
    );
}

#[test]
fn inserts_keep_their_values_and_name_what_is_not_carried_out() {
    let insert = classify(
        "INSERT INTO \"Events\" (a, b, c, d, e) VALUES (1, -2.5, 'x''y', DEFAULT, $2), (NULL, TRUE, '5'::bigint, timestamptz '2026-05-01', $1)",
    );
    let values = |row: &[&str]| -> Vec<InsertValue> {
        row.iter()
            .map(|v| match *v {
                "DEFAULT" => InsertValue::Default,
                "NULL" => InsertValue::Null,
                p if p.starts_with('$') => InsertValue::Parameter(p[1..].parse::<usize>().unwrap() - 1),
                literal => InsertValue::Literal(literal.to_string()),
            })
            .collect()
    };
    let expected = Insert {
        table: "Events".into(),
        columns: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
        rows: vec![
            values(&["1", "-2.5", "x'y", "DEFAULT", "$2"]),
            values(&["NULL", "true", "5", "2026-05-01", "$1"]),
        ],
        returning: Vec::new(),
    };
    assert_eq!(insert, Ok(Statement::Insert(expected.clone())));
    assert_eq!(expected.parameter_count(), 2);
    for (sql, what) in [
        ("INSERT INTO t SELECT * FROM u", "INSERT ... SELECT"),
        (
            "INSERT INTO t VALUES (1) RETURNING id + 1",
            "RETURNING of an expression other than a column",
        ),
        ("INSERT INTO t VALUES (now())", "the expression now() in VALUES"),
    ] {
        assert_eq!(classify(sql), Ok(Statement::Unsupported(what.into())), "{sql}");
    }
}

#[test]
fn returning_names_columns_labels_and_stars() {
    let Ok(Statement::Insert(insert)) =
        classify("INSERT INTO t (a) VALUES (1) RETURNING \"Id\", t.ts AS made, *")
    else {
        panic!("an INSERT");
    };
    assert_eq!(
        insert.returning,
        vec![
            ReturnedColumn::Column {
                name: "Id".into(),
                label: None
            },
            ReturnedColumn::Column {
                name: "ts".into(),
                label: Some("made".into())
            },
            ReturnedColumn::All,
        ]
    );
}

#[test]
fn queries_of_the_system_catalogs_are_told_from_reports() {
    let catalog = [
        "SELECT current_schema()",
        "select pg_catalog.current_setting('search_path')",
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname OPERATOR(pg_catalog.~) '^(events)$' COLLATE pg_catalog.default ORDER BY 2, 3",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        "SELECT oid, typname FROM pg_type WHERE typname = ANY($1)",
        "WITH t AS (SELECT 1) SELECT * FROM pg_class",
        "WITH RECURSIVE t(oid) AS (SELECT oid FROM pg_type) SELECT * FROM t",
        "SELECT typname FROM pg_catalog.pg_type LEFT JOIN (SELECT ns.oid, r.r FROM pg_namespace AS ns \
         JOIN (SELECT s.r FROM generate_series(1, 3) AS s(r)) AS r ON true) AS sp ON sp.oid = typnamespace",
    ];
    for sql in catalog {
        assert_eq!(
            classify(sql).unwrap(),
            Statement::Catalog(sql.to_string()),
            "{sql}"
        );
    }
    let reports = [
        "SELECT count(*) FROM events",
        "SELECT * FROM events WHERE tenant_id IN (SELECT relname FROM pg_class)",
        "SELECT 1",
        "WITH t AS (SELECT * FROM events) SELECT * FROM t",
        "SELECT * FROM public.pg_events",
    ];
    for sql in reports {
        assert!(!matches!(classify(sql).unwrap(), Statement::Catalog(_)), "{sql}");
    }
}
