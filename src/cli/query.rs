//! `shardgate query "SQL"`: runs a reporting query through a running shardgate and prints the
//! answer as an aligned table, JSON or CSV.

use super::https;
use super::login::{Credentials, LoginArgs};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use shardgate::config::Config;
use std::io::Write;
use std::path::PathBuf;

/// The config `shardgate query` takes its credentials from, when it exists: the one
/// `shardgate dev` writes.
pub const DEFAULT_CONFIG: &str = ".shardgate/dev/shardgate.toml";

/// The write API's URL without a config.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How to print the answer.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, as psql prints them.
    Table,
    /// The API's JSON answer.
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

/// Options of `shardgate query`.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// One SELECT statement; `$1`, `$2`, ... take the values of --param.
    sql: String,
    /// A value for the next `$n`, as JSON (`42`, `"acme"`, `true`); text that is not JSON is
    /// taken as a string.
    #[arg(short, long = "param")]
    params: Vec<String>,
    /// Base URL of shardgate's write API [default: the config's server.listen, https with
    /// [server.tls]; else http://127.0.0.1:8080].
    #[arg(long, env = "SHARDGATE_URL")]
    url: Option<String>,
    /// PEM file of the authority to check an HTTPS server against [default: the config's
    /// tls.ca_file; else the system's trusted roots].
    #[arg(long, env = "SHARDGATE_CACERT")]
    cacert: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print how the query would run (shards, the statement each runs, the merge) instead of
    /// running it.
    #[arg(long)]
    explain: bool,
    /// A config whose `[[users]]` give the credentials when --user or --token do not: one that
    /// may read is chosen. Read only if it exists.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(flatten)]
    login: LoginArgs,
}

/// Sends the query and prints the answer. CSV is streamed: rows are printed as they arrive,
/// so an export of any size runs in flat memory.
pub async fn run(args: QueryArgs) -> Result<()> {
    let params: Vec<Value> = args
        .params
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.clone())))
        .collect();
    let config = if args.config.exists() {
        Some(Config::load(&args.config)?)
    } else {
        None
    };
    let base = args.url.clone().unwrap_or_else(|| match &config {
        Some(config) => https::base_url(config.server.tls.is_some(), &config.server.listen),
        None => DEFAULT_URL.to_string(),
    });
    let url = format!("{}/v1/query", base.trim_end_matches('/'));
    let cacert = args
        .cacert
        .clone()
        .or_else(|| config.as_ref().and_then(|config| config.tls.ca_file.clone()));
    let accept = match args.format {
        Format::Csv => "application/x-ndjson",
        Format::Json | Format::Table => "application/json",
    };
    let credentials = args
        .login
        .credentials(config.as_ref(), |user| !user.read.is_empty(), "may read")?;
    let builder = reqwest::Client::builder().default_headers(Credentials::headers(credentials.as_ref())?);
    let response = https::client(&url, builder, cacert.as_deref())?
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, accept)
        .body(json!({"sql": args.sql, "params": params, "explain": args.explain}).to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body: Value = serde_json::from_str(&response.text().await?).context("the answer is not JSON")?;
        bail!("{status}: {}", body["error"].as_str().unwrap_or("query failed"));
    }
    if args.explain {
        let plan: Value = serde_json::from_str(&response.text().await?).context("the answer is not JSON")?;
        let shards: Vec<&str> = plan["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("shards     {}", shards.join(", "));
        println!("statement  {}", plan["statement"].as_str().unwrap_or_default());
        println!("merge      {}", plan["merge"].as_str().unwrap_or_default());
        return Ok(());
    }
    if args.format == Format::Csv {
        return stream_csv(response).await;
    }
    let body: Value = serde_json::from_str(&response.text().await?).context("the answer is not JSON")?;
    let names = column_names(&body);
    let rows: Vec<Vec<String>> = body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(row_texts)
        .collect();
    match args.format {
        Format::Table => print!("{}", table(&names, &rows)),
        Format::Json | Format::Csv => println!("{}", serde_json::to_string_pretty(&body)?),
    }
    Ok(())
}

/// Prints an NDJSON answer as CSV line by line; an error line ends it with that error.
async fn stream_csv(mut response: reqwest::Response) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut pending: Vec<u8> = Vec::new();
    let mut head = true;
    while let Some(chunk) = response.chunk().await.context("the answer broke off")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Value =
                serde_json::from_slice(&pending[..end]).context("an answer line is not JSON")?;
            pending.drain(..=end);
            if let Some(error) = line["error"].as_str() {
                out.flush()?;
                bail!("the answer ended early: {error}");
            }
            let cells = if head {
                column_names(&line)
            } else {
                row_texts(&line)
            };
            head = false;
            out.write_all(csv_line(&cells).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn column_names(answer: &Value) -> Vec<String> {
    answer["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn row_texts(row: &Value) -> Vec<String> {
    row.as_array().into_iter().flatten().map(cell_text).collect()
}

/// A cell as text: strings bare, NULL empty, everything else as JSON.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(names: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([names[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_string() + "\n"
    };
    let mut out = line(names);
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

/// One CSV record: fields with commas, quotes or line breaks quoted, quotes doubled.
fn csv_line(fields: &[String]) -> String {
    let field = |f: &String| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.clone()
        }
    };
    fields.iter().map(field).collect::<Vec<_>>().join(",") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn tables_align_and_csv_quotes() {
        let names = strings(&["tenant_id", "n"]);
        let rows = vec![strings(&["a", "12345678901"]), strings(&["b,\"c\"", ""])];
        assert_eq!(
            table(&names, &rows),
            "tenant_id | n\n----------+------------\na         | 12345678901\nb,\"c\"     |\n(2 rows)\n"
        );
        assert_eq!(csv_line(&rows[1]), "\"b,\"\"c\"\"\",\n");
    }
}
