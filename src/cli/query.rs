//! `shardgate query "SQL"`: runs a reporting query through a running shardgate and prints the
//! answer as an aligned table, JSON or CSV.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

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
    /// Base URL of shardgate's write API.
    #[arg(long, env = "SHARDGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Sends the query and prints the answer.
pub async fn run(args: QueryArgs) -> Result<()> {
    let params: Vec<Value> = args
        .params
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.clone())))
        .collect();
    let url = format!("{}/v1/query", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json!({"sql": args.sql, "params": params}).to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = serde_json::from_str(&response.text().await?).context("the answer is not JSON")?;
    if !status.is_success() {
        bail!("{status}: {}", body["error"].as_str().unwrap_or("query failed"));
    }
    let names: Vec<String> = body["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let rows: Vec<Vec<String>> = body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| row.as_array().into_iter().flatten().map(cell_text).collect())
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        Format::Csv => print!("{}", csv(&names, &rows)),
        Format::Table => print!("{}", table(&names, &rows)),
    }
    Ok(())
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

fn csv(names: &[String], rows: &[Vec<String>]) -> String {
    let field = |f: &String| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.clone()
        }
    };
    std::iter::once(names)
        .chain(rows.iter().map(Vec::as_slice))
        .map(|r| r.iter().map(field).collect::<Vec<_>>().join(",") + "\n")
        .collect()
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
        assert_eq!(
            csv(&names, &rows),
            "tenant_id,n\na,12345678901\n\"b,\"\"c\"\"\",\n"
        );
    }
}
