//! `tether report`: one self-contained HTML page for an access review of a
//! sync (see `crate::report`). The page is written beside its destination
//! and moved into place when complete, so a failed report never leaves a
//! half page or destroys an earlier one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::report;
use crate::sync::review;
use crate::sync::SyncFile;

#[derive(Args)]
pub struct ReportArgs {
    /// The sync file.
    file: PathBuf,
    /// The sync run to show (it must have succeeded); default, the last good
    /// one. Changes are those since the good run before it.
    #[arg(long, value_name = "N")]
    run: Option<i64>,
    /// The HTML file to write.
    #[arg(long, value_name = "FILE.html")]
    out: PathBuf,
}

/// `tether report FILE --out PAGE.html`.
pub fn run(args: ReportArgs) -> Result<()> {
    if args.out == std::path::Path::new("-") {
        anyhow::bail!("--out -: the report is a page written to a file; give its path, such as review.html");
    }
    crate::cli::output_target::check(&args.out, &[&args.file], crate::cli::output_target::Writes::ByRename)?;
    let file = SyncFile::open_reader(&args.file)?;
    let context = || format!("cannot report on {}", args.file.display());
    let run = review::reviewable_run(&file, args.run).with_context(context)?;
    let previous = report::previous_run(&file, &run);
    let label = args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| args.file.display().to_string());

    let page = crate::cli::output_target::staged_beside(&args.out, ".tether-report-", ".html.tmp")?;
    let stats = report::write(&file, &label, &run, previous.as_ref().map_err(String::as_str), std::io::BufWriter::new(page.as_file()))
        .with_context(|| format!("cannot write the report {}", args.out.display()))?;
    page.as_file().sync_all()?;
    page.persist(&args.out).map_err(|e| e.error).with_context(|| format!("cannot write the report {}", args.out.display()))?;

    let mib = stats.bytes as f64 / (1 << 20) as f64;
    let since = match &previous {
        Ok(before) => format!(", {} changes since sync run {}", stats.changes, before.id),
        Err(_) => String::from(", no earlier good sync to compare with"),
    };
    eprintln!("wrote {} ({mib:.1} MiB): {} grants of sync run {} ({}){since}", args.out.display(), stats.grants, run.id, run.started_at);
    if let Some(newer) = report::newer_unsuccessful_run(&file, &run) {
        eprintln!("note: a newer sync did not succeed (run {}, started {}, {}); the page says so", newer.id, newer.started_at, newer.status);
    }
    if stats.bytes > report::BIG_PAGE_BYTES {
        eprintln!(
            "warning: the page is big ({mib:.0} MiB) and will be slow to open; `tether export` writes the same grants as CSV for a spreadsheet or a database"
        );
    }
    Ok(())
}
