//! `shardgate admin ...`: the admin API from the command line. Lists shards, migrations and hot
//! keys, plans and starts adding a shard, splits a key by hand, and follows a migration with a
//! progress bar until it ends (exit status 1 when it fails).

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use shardgate::config::Config;
use std::path::PathBuf;
use std::time::Duration;

/// The admin API's URL without a config.
const DEFAULT_URL: &str = "http://127.0.0.1:8081";

/// How often a watched migration is polled.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Options of `shardgate admin`.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// Base URL of shardgate's admin API [default: the config's server.admin_listen, https
    /// with [server.tls]; else http://127.0.0.1:8081].
    #[arg(long, env = "SHARDGATE_ADMIN_URL")]
    url: Option<String>,
    /// The admin token (`admin.token`), needed to change the shard set (and, with users
    /// configured, to read anything but the status page) [default: the config's].
    #[arg(long, env = "SHARDGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the authority to check an HTTPS admin API against [default: the config's
    /// tls.ca_file; else the system's trusted roots].
    #[arg(long, env = "SHARDGATE_CACERT")]
    cacert: Option<PathBuf>,
    /// A config that gives the URL, the token and the authority when the options do not.
    /// Read only if it exists.
    #[arg(long, default_value = super::query::DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand)]
enum AdminCommand {
    /// List the shards, or plan or start adding one.
    Shards {
        #[command(subcommand)]
        action: Option<ShardsAction>,
    },
    /// List the migrations, or show one (and follow it with --watch).
    Migrations {
        /// The migration to show.
        id: Option<i64>,
        /// Follow it with a progress bar until it ends.
        #[arg(long, requires = "id")]
        watch: bool,
    },
    /// List the hot keys and the splits, or split a key by hand.
    HotKeys {
        #[command(subcommand)]
        action: Option<HotKeysAction>,
    },
    /// List the spooled rows a shard refused for their data, or delete one.
    DeadLetters {
        #[command(subcommand)]
        action: Option<DeadLettersAction>,
        /// Only of this table.
        #[arg(long)]
        table: Option<String>,
        /// Only refused by this shard.
        #[arg(long)]
        shard: Option<String>,
        /// Only recorded at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Most to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(clap::Subcommand)]
enum DeadLettersAction {
    /// Spool dead letters again once their cause is fixed (all, or those named with --id);
    /// each is written once even if replayed twice.
    Replay {
        /// A dead letter to replay (repeat for more); all when none is named.
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
    /// Delete dead letter ID, once its cause is dealt with.
    Delete {
        /// The dead letter's id, as listed.
        id: i64,
    },
}

#[derive(clap::Subcommand)]
enum HotKeysAction {
    /// Spread a key's rows over FANOUT positions from now on (fan-out only grows).
    Split {
        /// The table.
        table: String,
        /// The fan-out.
        #[arg(long)]
        fanout: u32,
        /// A partition-key value: `column=text`, or `column:=json` for a number or boolean.
        #[arg(long = "key", value_name = "COLUMN=VALUE", required = true, value_parser = key_value)]
        key: Vec<(String, Value)>,
    },
}

/// A `--key` argument: `column=text` gives a string, `column:=json` any JSON value.
fn key_value(argument: &str) -> Result<(String, Value), String> {
    if let Some((column, json)) = argument.split_once(":=") {
        let value = serde_json::from_str(json).map_err(|e| format!("`{json}` is not JSON: {e}"))?;
        return Ok((column.to_string(), value));
    }
    match argument.split_once('=') {
        Some((column, text)) => Ok((column.to_string(), Value::String(text.to_string()))),
        None => Err("expected COLUMN=VALUE or COLUMN:=JSON".into()),
    }
}

#[derive(clap::Subcommand)]
enum ShardsAction {
    /// Show what adding a shard would move, changing nothing.
    Plan(NewShardArgs),
    /// Add a shard while writes go on, and follow the migration until it ends.
    Add {
        #[command(flatten)]
        shard: NewShardArgs,
        /// Start the migration and return without following it.
        #[arg(long)]
        no_watch: bool,
    },
    /// Move every range of a shard to the others, then drop it from the shard set.
    Drain {
        /// The shard to drain.
        name: String,
        /// Start the migration and return without following it.
        #[arg(long)]
        no_watch: bool,
    },
    /// Give a shard another weight, moving ranges to or from it.
    Reweight {
        /// The shard.
        name: String,
        /// Its new share of the ring.
        weight: u32,
        /// Start the migration and return without following it.
        #[arg(long)]
        no_watch: bool,
    },
}

#[derive(clap::Args)]
struct NewShardArgs {
    /// The new shard's permanent name (`s2`).
    name: String,
    /// Postgres URL of its database; give its password with SHARDGATE_SHARD_<NAME>_PASSWORD.
    url: String,
    /// Its share of the ring.
    #[arg(long, default_value_t = 1)]
    weight: u32,
}

/// Runs the admin subcommand.
pub async fn run(args: AdminArgs) -> Result<()> {
    let config = if args.config.exists() {
        Some(Config::load(&args.config)?)
    } else {
        None
    };
    let url = args.url.clone().unwrap_or_else(|| match &config {
        Some(config) => super::https::base_url(config.server.tls.is_some(), &config.server.admin_listen),
        None => DEFAULT_URL.to_string(),
    });
    let token = args.token.clone().or_else(|| {
        config
            .as_ref()
            .and_then(|config| config.admin.token.as_ref().map(|token| token.0.clone()))
    });
    let cacert = args
        .cacert
        .clone()
        .or_else(|| config.as_ref().and_then(|config| config.tls.ca_file.clone()));
    let api = Api {
        base: url.trim_end_matches('/').to_string(),
        token,
        http: super::https::client(&url, reqwest::Client::builder(), cacert.as_deref())?,
    };
    match args.command {
        AdminCommand::Shards { action: None } => print_shards(&api.get("/admin/shards").await?),
        AdminCommand::Shards {
            action: Some(ShardsAction::Plan(shard)),
        } => print_plan(&api.post("/admin/shards/plan", &shard.body()).await?),
        AdminCommand::Shards {
            action: Some(ShardsAction::Add { shard, no_watch }),
        } => {
            let started = api.post("/admin/shards", &shard.body()).await?;
            follow(&api, &started, &format!("adding {}", shard.name), no_watch).await?;
        }
        AdminCommand::Shards {
            action: Some(ShardsAction::Drain { name, no_watch }),
        } => {
            let path = format!("/admin/shards/{name}");
            let started = api.send(api.http.delete(api.url(&path))).await?;
            follow(&api, &started, &format!("draining {name}"), no_watch).await?;
        }
        AdminCommand::Shards {
            action:
                Some(ShardsAction::Reweight {
                    name,
                    weight,
                    no_watch,
                }),
        } => {
            let request = api
                .http
                .patch(api.url(&format!("/admin/shards/{name}")))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json!({ "weight": weight }).to_string());
            let started = api.send(request).await?;
            follow(
                &api,
                &started,
                &format!("giving {name} weight {weight}"),
                no_watch,
            )
            .await?;
        }
        AdminCommand::HotKeys { action: None } => print_hot_keys(&api.get("/admin/hot-keys").await?),
        AdminCommand::HotKeys {
            action: Some(HotKeysAction::Split { table, fanout, key }),
        } => {
            let key: serde_json::Map<String, Value> = key.into_iter().collect();
            let body = json!({"table": table, "key": key, "fanout": fanout});
            print_split(&api.post("/admin/hot-keys", &body).await?);
        }
        AdminCommand::DeadLetters {
            action: Some(DeadLettersAction::Replay { ids }),
            ..
        } => {
            let body = if ids.is_empty() {
                json!({})
            } else {
                json!({"ids": ids})
            };
            print_replayed(&api.post("/admin/dead-letters/replay", &body).await?);
        }
        AdminCommand::DeadLetters {
            action: Some(DeadLettersAction::Delete { id }),
            ..
        } => {
            let request = api.http.delete(api.url(&format!("/admin/dead-letters/{id}")));
            api.send(request).await?;
            println!("dead letter {id} deleted");
        }
        AdminCommand::DeadLetters {
            action: None,
            table,
            shard,
            since,
            limit,
        } => {
            let filters = [("table", table), ("shard", shard), ("since", since)];
            let params = filters
                .into_iter()
                .filter_map(|(name, value)| value.map(|value| (name, value)))
                .chain([("limit", limit.to_string())]);
            let url = reqwest::Url::parse_with_params(&api.url("/admin/dead-letters"), params)
                .context("the admin URL")?;
            let request = api.http.get(url);
            print_dead_letters(&api.send(request).await?);
        }
        AdminCommand::Migrations { id: None, .. } => print_migrations(&api.get("/admin/migrations").await?),
        AdminCommand::Migrations {
            id: Some(id),
            watch: true,
        } => watch(&api, id).await?,
        AdminCommand::Migrations {
            id: Some(id),
            watch: false,
        } => {
            let shown = api.get(&format!("/admin/migrations/{id}")).await?;
            print_migrations(&Value::Array(vec![shown["migration"].clone()]))
        }
    }
    Ok(())
}

impl NewShardArgs {
    fn body(&self) -> Value {
        json!({"name": self.name, "url": self.url, "weight": self.weight})
    }
}

/// The admin API of one shardgate.
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    /// Sends a request, with the admin token when one was given (changes to the shard set
    /// need it, and with users configured the reads too), and returns the JSON answer, or its
    /// `error` message as the error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let body: Value = serde_json::from_str(&text).with_context(|| format!("{status}: {text}"))?;
        if !status.is_success() {
            bail!("{status}: {}", body["error"].as_str().unwrap_or(&text));
        }
        Ok(body)
    }
}

/// Prints a started migration and, unless `no_watch`, follows it to its end.
async fn follow(api: &Api, started: &Value, what: &str, no_watch: bool) -> Result<()> {
    let id = started["migration"].as_i64().unwrap_or_default();
    println!("migration {id} started at epoch {}: {what}", started["epoch"]);
    print_plan(&started["plan"]);
    if no_watch {
        return Ok(());
    }
    watch(api, id).await
}

/// Follows migration `id` until it ends: a bar of rows copied (against the rows its plan
/// estimated, when the journal has them) and the phase. Fails when the migration fails.
async fn watch(api: &Api, id: i64) -> Result<()> {
    let first = api.get(&format!("/admin/migrations/{id}")).await?;
    let bar = match first["migration"]["estimated_rows"].as_u64() {
        Some(total) if total > 0 => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/~{len} rows copied, {per_sec}")
                .expect("the template is valid"),
        ),
        _ => ProgressBar::new_spinner(),
    };
    loop {
        let shown = api.get(&format!("/admin/migrations/{id}")).await?;
        let migration = &shown["migration"];
        let phase = migration["phase"].as_str().unwrap_or_default().to_string();
        let copied = migration["rows_copied"].as_u64().unwrap_or_default();
        bar.set_position(copied.min(bar.length().unwrap_or(u64::MAX)));
        let failure = migration["failure"].as_str();
        let error = match (failure, migration["error"].as_str()) {
            (Some(failure), _) => format!(" (given up: {failure})"),
            (None, Some(error)) => format!(" (retrying: {error})"),
            (None, None) => String::new(),
        };
        bar.set_message(format!("migration {id}: {phase}{error}"));
        match phase.as_str() {
            "done" => {
                bar.finish_and_clear();
                println!("migration {id} done: {copied} rows copied");
                return Ok(());
            }
            "failed" => {
                bar.finish_and_clear();
                bail!(
                    "migration {id} failed, its copies deleted and the old placement in force: {}",
                    failure.unwrap_or("no reason recorded")
                );
            }
            "cancelled" => {
                bar.finish_and_clear();
                bail!("migration {id} was cancelled: the old placement is in force");
            }
            _ => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

fn print_shards(shards: &Value) {
    println!(
        "{:<12} {:<6} {:<9} {:>6} {:>7} {:>12}  url",
        "name", "up", "prepared", "weight", "owned", "queued rows"
    );
    for shard in shards.as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "{:<12} {:<6} {:<9} {:>6} {:>6.1}% {:>12}  {}",
            shard["name"].as_str().unwrap_or_default(),
            shard["up"].to_string(),
            shard["prepared"].to_string(),
            shard["weight"].to_string(),
            shard["owned_fraction"].as_f64().unwrap_or_default() * 100.0,
            shard["queued_rows"].to_string(),
            shard["url"].as_str().unwrap_or_default()
        );
    }
}

fn print_replayed(answer: &Value) {
    let list = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
    for replayed in list("replayed") {
        println!(
            "dead letter {} replayed as write {}",
            replayed["id"],
            replayed["write_id"].as_str().unwrap_or_default()
        );
    }
    for skipped in list("not_replayed") {
        println!(
            "dead letter {} not replayed: {}",
            skipped["id"],
            skipped["reason"].as_str().unwrap_or_default()
        );
    }
    if list("replayed").is_empty() && list("not_replayed").is_empty() {
        println!("no dead letters to replay");
    }
}

fn print_dead_letters(listed: &Value) {
    let letters = listed["dead_letters"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:>6}  {:<24}  {:<16} {:<6} {:<36}  row / message",
        "id", "recorded", "table", "shard", "write id"
    );
    for letter in letters {
        println!(
            "{:>6}  {:<24}  {:<16} {:<6} {:<36}  {}\n{:>6}  {}",
            letter["id"].to_string(),
            letter["created_at"].as_str().unwrap_or_default(),
            letter["table"].as_str().unwrap_or_default(),
            letter["shard"].as_str().unwrap_or_default(),
            letter["write_id"].as_str().unwrap_or_default(),
            letter["row"],
            "",
            letter["message"].as_str().unwrap_or_default(),
        );
    }
}

fn print_hot_keys(listed: &Value) {
    let window_ms = listed["window_ms"].as_u64().unwrap_or_default();
    println!("keys above the thresholds in the last {window_ms} ms window:");
    println!(
        "  {:<16} {:<16} {:>10} {:>6} {:>7} {:>4} {:>6}",
        "table", "key hash", "rows/s", "share", "windows", "hot", "fanout"
    );
    for key in listed["keys"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "  {:<16} {:<16} {:>10.0} {:>5.1}% {:>7} {:>4} {:>6}",
            key["table"].as_str().unwrap_or_default(),
            key["key_hash"].as_str().unwrap_or_default(),
            key["rows_per_second"].as_f64().unwrap_or_default(),
            key["share"].as_f64().unwrap_or_default() * 100.0,
            key["windows"].to_string(),
            if key["hot"] == true { "yes" } else { "no" },
            key["fanout"].to_string(),
        );
    }
    println!("splits:");
    println!(
        "  {:<16} {:<16} {:>6} {:>6} {:<9}  key",
        "table", "key hash", "fanout", "epoch", "source"
    );
    for split in listed["splits"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let values = match &split["key_values"] {
            Value::Null => "(detected: values not recorded)".to_string(),
            values => values.to_string(),
        };
        println!(
            "  {:<16} {:<16} {:>6} {:>6} {:<9}  {values}",
            split["table"].as_str().unwrap_or_default(),
            split["key_hash"].as_str().unwrap_or_default(),
            split["fanout"].to_string(),
            split["epoch"].to_string(),
            split["source"].as_str().unwrap_or_default(),
        );
    }
}

fn print_split(answer: &Value) {
    let (table, key, fanout) = (
        answer["table"].as_str().unwrap_or_default(),
        answer["key_hash"].as_str().unwrap_or_default(),
        &answer["fanout"],
    );
    if answer["grown"] == true {
        let since = answer["since_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or_else(
                || answer["since_ms"].to_string(),
                |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            );
        println!(
            "{table} key {key} now spreads over {fanout} positions (epoch {}, rows made from {since} on)",
            answer["epoch"]
        );
    } else {
        println!("{table} key {key} already spreads over {fanout} positions; fan-out only grows");
    }
}

fn print_plan(plan: &Value) {
    let ranges = plan["ranges"].as_array().map_or(0, Vec::len);
    match plan["shard"].as_str() {
        Some(shard) => println!(
            "{shard} ({}, PostgreSQL {}) would own {:.1}% of the ring: {ranges} ranges, about {} rows",
            plan["url"].as_str().unwrap_or_default(),
            plan["server_version"].as_str().unwrap_or_default(),
            plan["owned_fraction"].as_f64().unwrap_or_default() * 100.0,
            plan["estimated_rows"]
        ),
        None => println!("{ranges} ranges move, about {} rows", plan["estimated_rows"]),
    }
    if let Some(sources) = plan["sources"].as_object() {
        for (name, source) in sources {
            println!(
                "  from {name}: {} ranges, {:.1}% of the ring, about {} rows",
                source["ranges"],
                source["fraction"].as_f64().unwrap_or_default() * 100.0,
                source["estimated_rows"]
            );
        }
    }
}

fn print_migrations(migrations: &Value) {
    println!(
        "{:>4} {:<6} {:<10} {:<9} {:>12} {:>7}  {:<20}  error",
        "id", "kind", "shard", "phase", "rows copied", "ranges", "updated"
    );
    for m in migrations.as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "{:>4} {:<6} {:<10} {:<9} {:>12} {:>7}  {:<20}  {}",
            m["id"].to_string(),
            m["kind"].as_str().unwrap_or_default(),
            m["shard"].as_str().unwrap_or_default(),
            m["phase"].as_str().unwrap_or_default(),
            m["rows_copied"].to_string(),
            m["ranges"].to_string(),
            m["updated_at"].as_str().unwrap_or_default(),
            m["failure"].as_str().or(m["error"].as_str()).unwrap_or_default()
        );
    }
}
