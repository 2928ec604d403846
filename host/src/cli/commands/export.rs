//! `tether export`: the grants of a sync, one row each with who holds
//! them, on what, and whether a revoke can take them away, as CSV for a
//! spreadsheet or JSON Lines for a program. Rows stream from the sync file
//! to the output, so memory stays flat at millions of grants.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::sync::review::{self, SpreadsheetCsv, GRANT_COLUMNS};
use crate::sync::SyncFile;

#[derive(Args)]
pub struct ExportArgs {
    /// The sync file.
    file: PathBuf,
    /// The sync run to export (it must have succeeded); default, the last good one.
    #[arg(long, value_name = "N")]
    run: Option<i64>,
    /// csv: UTF-8 with a byte order mark, RFC 4180 quoting, cells that a
    /// spreadsheet would read as a formula prefixed with '. jsonl: one JSON
    /// object per line.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    format: ExportFormat,
    /// Where to write; default, stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

/// `tether export FILE`.
pub fn run(mut args: ExportArgs) -> Result<()> {
    // `-` is standard output, as with `sync --jsonl -` (it wrote a file named "-").
    if args.out.as_deref() == Some(std::path::Path::new("-")) {
        args.out = None;
    }
    if let Some(path) = &args.out {
        crate::cli::output_target::check(path, &[&args.file], crate::cli::output_target::Writes::Through)?;
    }
    let file = SyncFile::open_reader(&args.file)?;
    let run = review::reviewable_run(&file, args.run).with_context(|| format!("cannot export {}", args.file.display()))?;
    // A file is written beside the target and renamed over it once whole:
    // an export that fails (a damaged sync file) leaves the last one as it
    // was. A FIFO or a device is written through.
    let staged = match &args.out {
        Some(path) if std::fs::metadata(path).map_or(true, |m| m.is_file()) => Some(crate::cli::output_target::staged_beside(path, ".tether-export-", ".tmp")?),
        _ => None,
    };
    let out: Box<dyn Write + '_> = match (&args.out, &staged) {
        (_, Some(temp)) => Box::new(temp.as_file()),
        (Some(path), None) => Box::new(std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?),
        (None, None) => crate::terminal::stdout_for_data(match args.format {
            ExportFormat::Csv => crate::terminal::Lines::Csv,
            ExportFormat::Jsonl => crate::terminal::Lines::Json,
        }),
    };
    let mut out = std::io::BufWriter::new(out);
    let grants = match args.format {
        ExportFormat::Csv => {
            let mut csv = SpreadsheetCsv::new(&mut out)?;
            csv.write_row(GRANT_COLUMNS)?;
            let grants = review::for_each_grant(&file, &run, |grant| csv.write_row(grant.cells()))?;
            csv.finish()?;
            grants
        }
        ExportFormat::Jsonl => review::for_each_grant(&file, &run, |grant| {
            serde_json::to_writer(&mut out, grant).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            Ok(())
        })?,
    };
    out.flush()?;
    drop(out);
    if let (Some(temp), Some(path)) = (staged, &args.out) {
        temp.as_file().sync_all()?;
        temp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.out {
        eprintln!("exported {grants} grants of sync run {} ({}) to {}", run.id, run.started_at, path.display());
    }
    Ok(())
}
