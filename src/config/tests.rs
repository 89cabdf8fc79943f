use super::*;

const VALID: &str = r#"
[server]
listen = "127.0.0.1:9000"
admin_listen = "127.0.0.1:9001"

[[shards]]
name = "s0"
url = "postgres://app:secret@db0:5432/events"

[[shards]]
name = "s1"
url = "postgres://app@db1/events"
weight = 2

[[tables]]
name = "events"
id = "event_id"
partition_key = ["tenant_id", "event_type"]
columns = [
  { name = "event_id", type = "uuid" },
  { name = "tenant_id", type = "text" },
  { name = "event_type", type = "text" },
  { name = "ts", type = "timestamptz", default = "now()" },
  { name = "payload", type = "jsonb", nullable = true },
]
"#;

fn problems(text: &str) -> Vec<Problem> {
    match Config::parse(text).unwrap().validate() {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn has(problems: &[Problem], key: &str, reason: &str) -> bool {
    problems.iter().any(|p| p.key == key && p.reason.contains(reason))
}

#[test]
fn a_complete_config_validates_with_defaults_filled_in() {
    let config = Config::parse(VALID).unwrap();
    config.validate().unwrap();
    assert_eq!(config.routing.vnodes, 256);
    assert_eq!(config.batch.max_rows, 5_000);
    assert_eq!(config.shards[0].weight, 1);
    assert_eq!(config.shards[1].weight, 2);
    assert_eq!(
        config.catalog_url(),
        Some("postgres://app:secret@db0:5432/events")
    );
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = Config::parse(&VALID.replace("[server]", "[server]\nlisten_adress = \"x\"")).unwrap_err();
    assert!(err.contains("unknown field `listen_adress`"), "{err}");
}

#[test]
fn environment_overrides_urls() {
    let mut config = Config::parse(VALID).unwrap();
    let vars = [
        ("SHARDGATE_SHARD_S1_URL", "postgres://app:other@db9/events"),
        ("SHARDGATE_CATALOG_URL", "postgres://cat/catalog"),
        ("SHARDGATE_SHARD_S7_PASSWORD", "hunter2"),
        ("HOME", "/home/app"),
    ];
    config.apply_env(vars.map(|(k, v)| (k.to_string(), v.to_string())));
    assert_eq!(config.shards[1].url, "postgres://app:other@db9/events");
    assert_eq!(config.shards[0].url, "postgres://app:secret@db0:5432/events");
    assert_eq!(config.catalog_url(), Some("postgres://cat/catalog"));
    assert_eq!(
        config.shard_password("s7"),
        Some("hunter2"),
        "a shard only the catalog names"
    );
    assert_eq!(
        config.shard_url_override("s1"),
        Some("postgres://app:other@db9/events")
    );
    assert!(
        !config.environment.contains_key("HOME"),
        "only SHARDGATE_ variables are kept"
    );
}

#[test]
fn table_problems_name_the_key_path() {
    let text = VALID
        .replace(
            "[\"tenant_id\", \"event_type\"]",
            "[\"tenant_id\", \"kind\", \"payload\"]",
        )
        .replace("id = \"event_id\"", "id = \"missing\"");
    let found = problems(&text);
    assert!(
        has(
            &found,
            "tables[0].partition_key[1]",
            "column `kind` is not declared"
        ),
        "{found:?}"
    );
    assert!(has(&found, "tables[0].partition_key[2]", "nullable"), "{found:?}");
    assert!(
        has(&found, "tables[0].id", "column `missing` is not declared"),
        "{found:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = VALID
        .replace("name = \"s1\"", "name = \"s0\"")
        .replace("weight = 2", "weight = 0")
        .replace("\"127.0.0.1:9001\"", "\"nowhere\"")
        .replace(
            "type = \"timestamptz\", default = \"now()\"",
            "type = \"integer\", default = \"now()\"",
        );
    let found = problems(&text);
    assert!(has(&found, "shards[1].name", "declared twice"), "{found:?}");
    assert!(has(&found, "shards[1].weight", "must be positive"), "{found:?}");
    assert!(
        has(&found, "server.admin_listen", "not a socket address"),
        "{found:?}"
    );
    assert!(
        has(&found, "tables[0].columns[3].default", "expected an integer"),
        "{found:?}"
    );
    let message = ConfigError::Invalid(found).to_string();
    assert!(
        message.contains("shards[1].name: shard `s0` declared twice"),
        "{message}"
    );
}

#[test]
fn reserved_and_malformed_names_are_refused() {
    let text = VALID
        .replace("name = \"events\"", "name = \"Events\"")
        .replace("name = \"ts\"", "name = \"_sg_hash\"");
    let found = problems(&text);
    assert!(has(&found, "tables[0].name", "[a-z_][a-z0-9_]*"), "{found:?}");
    assert!(has(&found, "tables[0].columns[3].name", "_sg_"), "{found:?}");
}

#[test]
fn queue_must_hold_at_least_one_batch() {
    let text = format!("{VALID}\n[queue]\nmax_rows = 10\n");
    assert!(has(&problems(&text), "queue.max_rows", "at least batch.max_rows"));
}

#[test]
fn a_bad_type_names_the_column() {
    let err = Config::parse(&VALID.replace("type = \"jsonb\"", "type = \"json\"")).unwrap_err();
    assert!(err.contains("unknown variant `json`"), "{err}");
    assert!(err.contains("line 24"), "{err}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../config/shardgate.example.toml");
    let config = Config::parse(text).unwrap();
    config.validate().unwrap();
    let defaults = Config::default();
    assert_eq!(
        config.server.max_body_size, defaults.server.max_body_size,
        "example shows the defaults"
    );
    assert_eq!(config.batch.max_rows, defaults.batch.max_rows);
    assert_eq!(config.queue.max_rows, defaults.queue.max_rows);
    assert_eq!(
        config.pool.connections_per_shard,
        defaults.pool.connections_per_shard
    );
}

#[test]
fn an_unreadable_tls_ca_file_is_named() {
    let text = format!("[tls]\nca_file = \"/nonexistent/ca.pem\"\n{VALID}");
    assert!(has(
        &problems(&text),
        "tls.ca_file",
        "cannot read /nonexistent/ca.pem"
    ));
}

#[test]
fn idempotency_records_are_kept_a_day_and_at_least_a_minute() {
    assert_eq!(
        Config::parse(VALID).unwrap().idempotency.retention,
        std::time::Duration::from_secs(86_400)
    );
    let text = format!("[idempotency]\nretention = \"30s\"\n{VALID}");
    assert!(has(
        &problems(&text),
        "idempotency.retention",
        "must be at least 1m"
    ));
}

#[test]
fn a_stream_needs_a_not_null_integer_version_outside_its_key_and_the_commit_ack() {
    let stream = |version: &str, ack: &str| {
        format!(
            "{VALID}\n[[tables]]\nname = \"account_events\"\npartition_key = [\"account_id\"]\n\
             stream = {{ version = \"{version}\" }}\n{ack}columns = [\n\
             {{ name = \"account_id\", type = \"text\" }},\n\
             {{ name = \"version\", type = \"bigint\" }},\n\
             {{ name = \"seq\", type = \"integer\", nullable = true }},\n\
             {{ name = \"kind\", type = \"text\" }},\n]\n"
        )
    };
    let valid = Config::parse(&stream("version", "")).unwrap();
    valid.validate().unwrap();
    let at = "tables[1].stream.version";
    assert!(has(
        &problems(&stream("missing", "")),
        at,
        "column `missing` is not declared"
    ));
    assert!(has(
        &problems(&stream("kind", "")),
        at,
        "column `kind` is text; a version must be a bigint or an integer"
    ));
    assert!(has(
        &problems(&stream("seq", "")),
        at,
        "must be not null and without a default"
    ));
    assert!(has(&problems(&stream("account_id", "")), at, "is text"));
    assert!(has(
        &problems(&stream("version", "ack = \"spool\"\n")),
        "tables[1].ack",
        "a stream table acknowledges on commit only"
    ));
}

#[test]
fn a_query_time_zone_that_is_not_a_name_is_named() {
    let text = format!("[query]\ntime_zone = \"UTC'; DROP TABLE x\"\n{VALID}");
    assert!(has(
        &problems(&text),
        "query.time_zone",
        "must be a time zone name such as UTC or Europe/Paris"
    ));
}

#[test]
fn the_admin_token_comes_from_the_file_or_the_environment_and_is_never_shown() {
    let short = format!("[admin]\ntoken = \"short\"\n{VALID}");
    assert!(has(
        &problems(&short),
        "admin.token",
        "must be at least 16 visible ASCII characters without spaces"
    ));
    let mut config = Config::parse(&format!("[admin]\ntoken = \"from-the-file-0123\"\n{VALID}")).unwrap();
    config.validate().unwrap();
    let token = config.admin.token.clone().unwrap();
    assert!(token.matches("from-the-file-0123"));
    assert!(!token.matches("from-the-file-0124") && !token.matches("from-the-file"));
    config.apply_env([(ADMIN_TOKEN_ENV.to_string(), "from-the-environment".to_string())]);
    assert!(
        config
            .admin
            .token
            .as_ref()
            .unwrap()
            .matches("from-the-environment")
    );
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("from-the-environment") && shown.contains("SHARDGATE_ADMIN_TOKEN"),
        "Debug names the variable and hides the token"
    );
}

#[test]
fn a_backfill_share_outside_zero_to_one_is_named() {
    for share in ["0.0", "1.5", "nan"] {
        let text = format!("{VALID}\n[reshard]\nbusy_share = {share}\n");
        assert!(
            has(
                &problems(&text),
                "reshard.busy_share",
                "must be above 0 and at most 1"
            ),
            "busy_share = {share}"
        );
    }
    let text = format!("{VALID}\n[reshard]\nbusy_share = 1.0\n");
    Config::parse(&text).unwrap().validate().unwrap();
}

#[test]
fn hot_key_thresholds_out_of_range_are_named() {
    let text = format!(
        "{VALID}\n[hot_keys]\nwindow = \"10ms\"\nmin_share = 1.5\nmin_rows_per_second = 0\nwindows = 0\n\
         max_fanout = 1\nrows_per_position = 0\nsketch_counters = 2\nsplit_delay = \"0s\"\n"
    );
    let found = problems(&text);
    for (key, reason) in [
        ("hot_keys.window", "between 100ms and 60s"),
        ("hot_keys.min_share", "above 0 and at most 1"),
        ("hot_keys.min_rows_per_second", "must be positive"),
        ("hot_keys.windows", "between 1 and 100"),
        ("hot_keys.max_fanout", "between 2 and 256"),
        ("hot_keys.rows_per_position", "must be positive"),
        ("hot_keys.sketch_counters", "between 8 and 4096"),
        ("hot_keys.split_delay", "between 10ms and 60s"),
    ] {
        assert!(has(&found, key, reason), "{key}: {found:?}");
    }
}

#[test]
fn a_made_at_column_must_be_a_declared_timestamptz() {
    let with = |column: &str| {
        VALID.replace(
            "id = \"event_id\"\n",
            &format!("id = \"event_id\"\nmade_at = \"{column}\"\n"),
        )
    };
    let config = Config::parse(&with("ts")).unwrap();
    assert!(config.validate().is_ok());
    assert_eq!(config.tables[0].made_at.as_deref(), Some("ts"));
    assert!(has(
        &problems(&with("when")),
        "tables[0].made_at",
        "column `when` is not declared"
    ));
    assert!(has(
        &problems(&with("tenant_id")),
        "tables[0].made_at",
        "column `tenant_id` is text; it must be a timestamptz"
    ));
}

#[test]
fn a_table_that_may_spool_needs_a_spool_directory_and_sane_sizes() {
    let config = Config::parse(VALID).unwrap();
    assert_eq!(config.tables[0].ack, AckMode::Commit, "commit is the default");
    assert!(!config.may_spool());

    let spooling = VALID.replace("name = \"events\"\n", "name = \"events\"\nack = \"spool\"\n");
    let found = problems(&spooling);
    assert!(
        has(
            &found,
            "spool.dir",
            "required: table `events` (tables[0]) may be acknowledged once spooled"
        ),
        "{found:?}"
    );
    let on_request = VALID.replace(
        "name = \"events\"\n",
        "name = \"events\"\nack_per_request = true\n",
    );
    assert!(has(&problems(&on_request), "spool.dir", "required"));

    let with_dir =
        format!("{on_request}\n[spool]\ndir = \"spool\"\nmax_bytes = \"1MiB\"\nsegment_bytes = \"4MiB\"\n");
    let found = problems(&with_dir);
    assert!(
        has(&found, "spool.max_bytes", "at least twice spool.segment_bytes"),
        "{found:?}"
    );
    assert!(!has(&found, "spool.dir", ""), "{found:?}");
    let tiny = with_dir.replace("\"4MiB\"", "\"1KiB\"");
    assert!(has(
        &problems(&tiny),
        "spool.segment_bytes",
        "between 64KiB and 1GiB"
    ));
    let good = with_dir.replace("\"4MiB\"", "\"512KiB\"");
    let config = Config::parse(&good).unwrap();
    config.validate().unwrap();
    assert!(config.may_spool());

    let unknown = Config::parse(&VALID.replace("name = \"events\"\n", "name = \"events\"\nack = \"fast\"\n"))
        .unwrap_err();
    assert!(
        unknown.contains("unknown variant `fast`, expected `commit` or `spool`"),
        "{unknown}"
    );
}

#[test]
fn a_body_limit_past_what_postgres_takes_in_a_field_and_zero_read_timeouts_are_named() {
    let text = VALID.replace(
        "admin_listen = \"127.0.0.1:9001\"",
        "admin_listen = \"127.0.0.1:9001\"\nmax_body_size = \"2GiB\"\nmax_inflight_body_bytes = \"3GiB\"\n\
         header_read_timeout = \"0s\"\nbody_read_timeout = \"0s\"",
    );
    let found = problems(&text);
    assert!(
        has(
            &found,
            "server.max_body_size",
            "must be at most 1GiB, the most Postgres takes in one field"
        ),
        "{found:?}"
    );
    assert!(
        has(&found, "server.header_read_timeout", "must be positive"),
        "{found:?}"
    );
    assert!(
        has(&found, "server.body_read_timeout", "must be positive"),
        "{found:?}"
    );
    let at_the_cap = VALID.replace(
        "admin_listen = \"127.0.0.1:9001\"",
        "admin_listen = \"127.0.0.1:9001\"\nmax_body_size = \"1GiB\"\nmax_inflight_body_bytes = \"1GiB\"",
    );
    assert!(Config::parse(&at_the_cap).is_ok());
}

#[test]
fn the_postgres_listener_needs_a_user_with_a_password_and_checks_its_own_keys() {
    let on = |users: &str| {
        format!(
            "{VALID}\n[postgres]\nlisten = \"127.0.0.1:6432\"\nmax_sessions = 0\ntls_cert = \"c.pem\"\nmax_block_size = 0\nblock_dir = \"/no/such/dir\"\nmetadata_database = \"\"\n{users}"
        )
    };
    let found = problems(&on(""));
    for (key, reason) in [
        ("users", "at least one [[users]] entry with a password"),
        ("postgres.max_sessions", "must be positive"),
        ("postgres.tls_key", "go together"),
        ("postgres.max_block_size", "must be positive"),
        ("postgres.block_dir", "/no/such/dir is not a directory"),
        ("postgres.metadata_database", "1 to 63 bytes"),
    ] {
        assert!(has(&found, key, reason), "{key}: {found:?}");
    }
    let token_only = "[[users]]\nname = \"svc\"\ntoken = \"a-token-of-20-chars!\"\n";
    assert!(has(&problems(&on(token_only)), "users", "with a password"));
    let moved = "[[postgres.users]]\nname = \"app\"\npassword = \"x\"\n";
    assert!(
        has(
            &problems(&on(moved)),
            "postgres.users",
            "declared at the top level now, as [[users]]"
        ),
        "the old place of users is refused with the new one named"
    );
}

#[test]
fn users_need_unique_names_a_credential_and_grants_of_declared_tables() {
    let users = "[[users]]\nname = \"app\"\nwrite = [\"events\", \"evnets\"]\n\
                 [[users]]\nname = \"app\"\npassword = \"x\"\nread = [\"*\"]\ntoken = \"short\"\n\
                 [[users]]\nname = \"v\"\npassword = \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB\"\n";
    let found = problems(&format!("{VALID}\n{users}"));
    for (key, reason) in [
        (
            "users[0].password",
            "SHARDGATE_USER_APP_PASSWORD / SHARDGATE_USER_APP_TOKEN",
        ),
        ("users[0].write[1]", "no table \"evnets\" is declared"),
        ("users[1].name", "unique"),
        ("users[1].token", "at least 16"),
        ("users[2].password", "32 bytes"),
    ] {
        assert!(has(&found, key, reason), "{key}: {found:?}");
    }
    assert_eq!(found.len(), 5, "{found:?}");

    let mut config = Config::parse(&format!(
        "{VALID}\n[[users]]\nname = \"app-1\"\nread = [\"events\"]\n"
    ))
    .unwrap();
    config.apply_env([
        (
            "SHARDGATE_USER_APP_1_PASSWORD".to_string(),
            "from-env".to_string(),
        ),
        (
            "SHARDGATE_USER_APP_1_TOKEN".to_string(),
            "token-from-the-env".to_string(),
        ),
    ]);
    config.validate().unwrap();
    let user = &config.users[0];
    assert_eq!(user.password(), Some(Ok(Password::Plain("from-env"))));
    assert_eq!(user.token.as_deref(), Some("token-from-the-env"));
    assert!(user.may_read("events") && !user.may_write("events"));
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("from-env") && !shown.contains("token-from"),
        "Debug shows neither password nor token: {shown}"
    );
}
