//! What the commands print: the progress line and a sync's summary.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sync::SyncSummary;

/// A spinner with the sync's counts on a terminal; nothing otherwise.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if std::io::stderr().is_terminal() {
        bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The readable summary of a sync, to stdout (or to stderr when stdout
/// carries the records, `--jsonl -`).
pub fn print_summary(summary: &SyncSummary, out: &Path, to_stderr: bool) -> std::io::Result<()> {
    let mut stdout;
    let mut stderr;
    let w: &mut dyn std::io::Write = if to_stderr {
        stderr = std::io::stderr().lock();
        &mut stderr
    } else {
        stdout = std::io::stdout().lock();
        &mut stdout
    };
    writeln!(w)?;
    let esc = crate::terminal::escape;
    writeln!(w, "Synced {} {} into {} (sync run {})", esc(&summary.connector.name), esc(&summary.connector.version), out.display(), summary.run_id)?;
    writeln!(w, "  connector sha256  {}", summary.connector.digest)?;
    writeln!(w)?;
    writeln!(w, "  {:<20} {:>8}", "resource type", "count")?;
    for (resource_type, count) in &summary.resources {
        writeln!(w, "  {:<20} {count:>8}", esc(resource_type))?;
    }
    writeln!(w, "  {:<20} {:>8}", "entitlements", summary.entitlements)?;
    writeln!(w, "  {:<20} {:>8}", "grants", summary.grants)?;
    writeln!(w)?;
    let mut rate_limited = if summary.rate_limited > 0 { format!(", {} answered 429 and retried", summary.rate_limited) } else { String::new() };
    if summary.retries > 0 {
        rate_limited.push_str(&format!(", {} sent again after a transient failure", summary.retries));
    }
    writeln!(w, "  HTTP requests       {:>8}{rate_limited}", summary.http_requests)?;
    writeln!(w, "  elapsed             {:>8.2} s", summary.elapsed.as_secs_f64())?;
    if let Some(peak) = peak_memory_mib() {
        writeln!(w, "  peak memory         {peak:>8} MiB")?;
    }
    Ok(())
}

/// The process's peak resident memory (Linux), to show it stays flat as
/// orgs grow: pages are written as they arrive, never gathered.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// `text` cut to `width` characters for a table cell, ending in `…` when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}
