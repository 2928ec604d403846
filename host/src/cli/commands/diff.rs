//! `tether diff`: what changed between two syncs — two runs of one sync
//! file, or the last good runs of two files — record by record: resources,
//! entitlements and grants added, removed or changed. Like `diff`, the exit
//! status says whether anything changed (0 no, 1 yes, 2 trouble), so an
//! access review can gate a pipeline on it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::sync::review::{self, Change, DiffCounts, Difference, Kind, SpreadsheetCsv};
use crate::sync::sync_file::RunInfo;
use crate::sync::SyncFile;
use crate::terminal::escape;

#[derive(Args)]
#[command(after_help = "Exit status: 0 if nothing changed, 1 if something did, 2 on an error.")]
pub struct DiffArgs {
    /// The sync file; with OTHER, the earlier of the two.
    file: PathBuf,
    /// A second sync file: compares the last good sync of FILE with that of OTHER.
    other: Option<PathBuf>,
    /// The earlier run of FILE; default, the good run before --to.
    #[arg(long, value_name = "RUN", conflicts_with = "other")]
    from: Option<i64>,
    /// The later run of FILE; default, the last good one.
    #[arg(long, value_name = "RUN", conflicts_with = "other")]
    to: Option<i64>,
    /// table: for a reader, with counts at the end; jsonl: one JSON object
    /// per difference; csv: one row per difference (as `tether export` writes CSV).
    #[arg(long, value_enum, default_value_t = DiffFormat::Table)]
    format: DiffFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum DiffFormat {
    Table,
    Jsonl,
    Csv,
}

/// The CSV columns of a difference.
const CSV_COLUMNS: [&str; 6] = ["change", "kind", "id", "name", "on", "changes"];

/// `tether diff`: whether anything changed.
pub fn run(args: DiffArgs) -> Result<bool> {
    let first = SyncFile::open_reader(&args.file)?;
    let second = match &args.other {
        Some(other) => Some(SyncFile::open_reader(other)?),
        None => None,
    };
    let (from, to) = match &second {
        Some(second) => (
            review::reviewable_run(&first, None).with_context(|| format!("cannot diff {}", args.file.display()))?,
            review::reviewable_run(second, None).with_context(|| format!("cannot diff {}", args.other.as_ref().expect("a second file").display()))?,
        ),
        None => {
            let context = || format!("cannot diff {}", args.file.display());
            let to = review::reviewable_run(&first, args.to).with_context(context)?;
            let from = match args.from {
                Some(from) => review::reviewable_run(&first, Some(from)).with_context(context)?,
                None => review::good_run_before(&first, to.id).with_context(context)?,
            };
            (from, to)
        }
    };
    let later = second.as_ref().unwrap_or(&first);
    let mut out = std::io::BufWriter::new(crate::terminal::stdout_for_data(match args.format {
        DiffFormat::Table => crate::terminal::Lines::Text,
        DiffFormat::Csv => crate::terminal::Lines::Csv,
        DiffFormat::Jsonl => crate::terminal::Lines::Json,
    }));
    // A reader that stops early (`| head`) closes the output: once a
    // difference has come, the answer (1, "they differ") is known all the
    // same.
    let mut found = false;
    let written = (|| -> Result<()> {
        write_differences(&args, &first, later, (&from, &to), &mut out, &mut found)?;
        Ok(out.flush()?)
    })();
    match written {
        Ok(()) => Ok(found),
        Err(e) if found && crate::cli::is_broken_pipe(&e) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Writes the differences between runs `from` and `to` in the format
/// asked for; `found` is set by the first.
fn write_differences(
    args: &DiffArgs,
    first: &SyncFile,
    later: &SyncFile,
    (from, to): (&RunInfo, &RunInfo),
    out: &mut impl Write,
    found: &mut bool,
) -> Result<()> {
    let counts = match args.format {
        DiffFormat::Table => {
            let name = |path: &PathBuf, run: &RunInfo| format!("sync run {} of {} ({})", run.id, path.display(), run.started_at);
            let later_path = args.other.as_ref().unwrap_or(&args.file);
            writeln!(out, "{} → {}", name(&args.file, from), name(later_path, to))?;
            let mut header = false;
            let counts = review::diff(first, from.id, later, to.id, |d| {
                *found = true;
                if !header {
                    writeln!(out, "{:<8} {:<12} {:<30} {:<30} id", "change", "kind", "name", "on")?;
                    header = true;
                }
                write_table_row(out, d)
            })?;
            write_counts(out, &counts)?;
            counts
        }
        DiffFormat::Jsonl => review::diff(first, from.id, later, to.id, |d| {
            *found = true;
            serde_json::to_writer(&mut *out, d).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            Ok(())
        })?,
        DiffFormat::Csv => {
            let mut csv = SpreadsheetCsv::new(&mut *out)?;
            csv.write_row(CSV_COLUMNS)?;
            let counts = review::diff(first, from.id, later, to.id, |d| {
                *found = true;
                let changes: Vec<String> = d.changes.iter().map(|c| format!("{}: {} → {}", c.field, c.from, c.to)).collect();
                csv.write_row([d.change.as_str(), d.kind.as_str(), &d.id, &d.name, &d.on, &changes.join("; ")])
            })?;
            csv.finish()?;
            counts
        }
    };
    *found |= counts.total() > 0;
    Ok(())
}

/// A difference on one line (and a line per changed field), every
/// connector-given string escaped for the terminal.
fn write_table_row(out: &mut dyn Write, d: &Difference) -> Result<()> {
    writeln!(
        out,
        "{:<8} {:<12} {:<30} {:<30} {}",
        d.change.as_str(),
        d.kind.as_str(),
        crate::cli::output::truncate(&escape(&d.name), 30),
        crate::cli::output::truncate(&escape(&d.on), 30),
        escape(&d.id)
    )?;
    for c in &d.changes {
        writeln!(out, "{:<22}{}: {} → {}", "", escape(&c.field), escape(&c.from.to_string()), escape(&c.to.to_string()))?;
    }
    Ok(())
}

fn write_counts(out: &mut dyn Write, counts: &DiffCounts) -> Result<()> {
    writeln!(out)?;
    writeln!(out, "{:<14}{:>9}{:>9}{:>9}", "", "added", "removed", "changed")?;
    for (kind, label) in Kind::ALL.into_iter().zip(["resources", "entitlements", "grants"]) {
        writeln!(out, "{label:<14}{:>9}{:>9}{:>9}", counts.get(kind, Change::Added), counts.get(kind, Change::Removed), counts.get(kind, Change::Changed))?;
    }
    if counts.total() == 0 {
        writeln!(out, "no differences")?;
    }
    Ok(())
}
