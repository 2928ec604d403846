//! `tether inspect`: a sync file read back as tables or JSON, and the JSON
//! Lines export of `sync --jsonl`.

use std::io::Write;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::sync::SyncFile;

#[derive(Args)]
pub struct InspectArgs {
    /// The sync file.
    file: PathBuf,
    /// What to show.
    #[arg(value_enum)]
    what: InspectWhat,
    /// Only this resource type (for grants and entitlements: of the entitled resource).
    #[arg(long = "type", value_name = "T")]
    resource_type: Option<String>,
    #[arg(long, value_enum, default_value_t = InspectFormat::Table)]
    format: InspectFormat,
}

/// `tether inspect FILE WHAT`.
pub fn run(args: InspectArgs) -> Result<()> {
    let file = SyncFile::open_reader(&args.file)?;
    print(&file, args.what, args.resource_type.as_deref(), args.format, &mut std::io::stdout().lock())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InspectWhat {
    Resources,
    Entitlements,
    Grants,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum InspectFormat {
    Table,
    /// One JSON object per line.
    Json,
}

pub fn print(file: &SyncFile, what: InspectWhat, resource_type: Option<&str>, format: InspectFormat, out: &mut dyn Write) -> Result<()> {
    let run = file.last_good_run()?.context("the sync file holds no successful sync yet")?;
    if let Some(wanted) = resource_type {
        // A misspelt type would print nothing, as an empty one does.
        let types: Vec<String> = file.count_resources_by_type(run.id)?.into_iter().map(|(t, _)| t).collect();
        if !types.is_empty() && !types.iter().any(|t| t == wanted) {
            let known: Vec<String> = types.iter().map(|t| crate::terminal::escape(t).into_owned()).collect();
            anyhow::bail!("the last good sync has no resource type {:?}; it has: {}", crate::terminal::escape(wanted), known.join(", "));
        }
    }
    let rows: Vec<serde_json::Value> = match what {
        InspectWhat::Resources => file.resources(run.id, resource_type)?.into_iter().map(|r| json!(r)).collect(),
        InspectWhat::Entitlements => file.entitlements(run.id, resource_type)?.into_iter().map(|e| json!(e)).collect(),
        InspectWhat::Grants => file.grants(run.id, resource_type)?.into_iter().map(|g| json!(g)).collect(),
    };
    if format == InspectFormat::Json {
        for row in &rows {
            writeln!(out, "{}", crate::terminal::escape_json(&row.to_string()))?;
        }
        return Ok(());
    }
    let mut rows = rows;
    if let InspectWhat::Grants = what {
        // A reviewer reads names, not gids.
        let names: std::collections::HashMap<(String, String), String> =
            file.resources(run.id, None)?.into_iter().map(|r| ((r.resource_type, r.id), r.display_name)).collect();
        for row in &mut rows {
            let key = (row["principal"]["resource_type"].as_str().unwrap_or("").to_string(), row["principal"]["id"].as_str().unwrap_or("").to_string());
            row["principal_name"] = json!(names.get(&key).cloned().unwrap_or_default());
        }
    }
    let columns: &[&str] = match what {
        InspectWhat::Resources => &["resource_type", "id", "display_name", "parent", "attributes"],
        InspectWhat::Entitlements => &["id", "display_name", "grantable"],
        InspectWhat::Grants => &["id", "principal", "principal_name", "immutable", "attributes"],
    };
    let cells: Vec<Vec<String>> = rows.iter().map(|row| columns.iter().map(|c| cell(&row[*c])).collect()).collect();
    let widths: Vec<usize> =
        columns.iter().enumerate().map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(c.len()).min(60)).collect();
    let line = |values: Vec<String>| {
        values.iter().zip(&widths).map(|(v, w)| format!("{:<w$}", crate::cli::output::truncate(v, *w), w = *w)).collect::<Vec<_>>().join("  ")
    };
    writeln!(out, "{}", line(columns.iter().map(|c| c.to_string()).collect()).trim_end())?;
    for row in cells {
        writeln!(out, "{}", line(row).trim_end())?;
    }
    writeln!(out, "({} rows, sync run {} of {})", rows.len(), run.id, run.started_at)?;
    Ok(())
}

/// A table cell, escaped for the terminal (every value came from a connector).
fn cell(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) if map.contains_key("resource_type") && map.contains_key("id") => {
            format!("{}:{}", map["resource_type"].as_str().unwrap_or(""), map["id"].as_str().unwrap_or(""))
        }
        serde_json::Value::Object(map) if map.is_empty() => String::new(),
        other => other.to_string(),
    };
    crate::terminal::escape(&text).into_owned()
}

/// Where `sync --jsonl` writes: a path, or `-` for stdout. Opened before
/// the sync, so that a path that cannot be written fails it before any
/// request; never the sync file itself, nor another SQLite database.
pub fn open_jsonl(target: &str, sync_file: &std::path::Path) -> Result<Box<dyn Write>> {
    if target == "-" {
        return Ok(Box::new(std::io::BufWriter::new(crate::terminal::stdout_for_data(crate::terminal::Lines::Json))));
    }
    let path = std::path::Path::new(target);
    crate::cli::output_target::check(path, &[sync_file], crate::cli::output_target::Writes::Through)?;
    Ok(Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot write {target}"))?)))
}

/// Writes every record of a run as JSON Lines (`{"kind": …, …}`) to `out`.
pub fn export_jsonl(file: &SyncFile, run: i64, out: &mut dyn Write) -> Result<()> {
    for r in file.resources(run, None)? {
        writeln!(out, "{}", crate::terminal::escape_json(&json!({ "kind": "resource", "record": r }).to_string()))?;
    }
    for e in file.entitlements(run, None)? {
        writeln!(out, "{}", crate::terminal::escape_json(&json!({ "kind": "entitlement", "record": e }).to_string()))?;
    }
    for g in file.grants(run, None)? {
        writeln!(out, "{}", crate::terminal::escape_json(&json!({ "kind": "grant", "record": g }).to_string()))?;
    }
    out.flush()?;
    Ok(())
}
