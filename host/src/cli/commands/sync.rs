//! `tether sync`: one sync of a connector into a sync file, stopping
//! cleanly on SIGINT/SIGTERM so that `--resume` goes on from there.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::args::{ConnectorArgs, SyncLimitArgs};
use crate::cli::{output, start};
use crate::sync::SyncFile;

/// Where a connector's own keys are listed (the host knows no connector).
const CONNECTOR_HELP: &str = "Connector config keys, secrets and account fields: `tether describe --connector FILE.wasm` lists what a connector takes.\n\nAn instance of a `tether serve` config file syncs once with `tether sync --instance NAME --config-file FILE [--out FILE] [--resume]`.";

#[derive(Args)]
#[command(after_help = CONNECTOR_HELP)]
pub struct SyncArgs {
    #[command(flatten)]
    connector: ConnectorArgs,
    /// The sync file (SQLite); created if missing. A failed sync never replaces the last good one.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also write the synced records as JSON Lines to PATH, or - for stdout.
    #[arg(long, value_name = "PATH|-")]
    jsonl: Option<String>,
    /// If the last sync in FILE failed or was interrupted (same module and config), go
    /// on from where it stopped instead of starting over.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    sync_limits: SyncLimitArgs,
}

/// The signal that asked the running sync to stop (2: SIGINT, 15: SIGTERM).
pub static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// On SIGINT or SIGTERM (what Kubernetes sends), asks the sync to stop at
/// its next page boundary; a second signal ends the process at once.
fn stop_on_signals(stop: crate::sync::StopRequest) -> Result<()> {
    use std::sync::atomic::Ordering;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        tokio::spawn(async move {
            loop {
                let number = tokio::select! {
                    _ = terminate.recv() => 15,
                    _ = interrupt.recv() => 2,
                };
                if stop.is_requested() {
                    eprintln!("\nsecond signal: stopping now; the last page written is kept (tether sync --resume goes on from it)");
                    std::process::exit(128 + number);
                }
                STOP_SIGNAL.store(number, Ordering::SeqCst);
                stop.request();
                eprintln!("\nstopping once the pages in flight are in and written (signal again to stop at once)…");
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            STOP_SIGNAL.store(2, Ordering::SeqCst);
            stop.request();
        }
    });
    Ok(())
}

pub async fn run(args: SyncArgs) -> Result<()> {
    let options = crate::sync::SyncOptions { resume: args.resume, limits: args.sync_limits.to_limits()?, stop: Default::default() };
    // The connector first: a module that cannot load leaves no sync file behind.
    let start::Prepared { engine, module, instance, permissions } = start::prepare_with_reads(&args.connector, false, options.limits.concurrency).await?;
    // As many listings at once as reads may be in flight: --concurrency,
    // else what the connector declares (clamped), else the host's default.
    let concurrency = instance.upstream_settings().concurrent_reads.value.max(1);
    let mut pool = vec![instance];
    for _ in 1..concurrency {
        let sibling = pool[0].sibling(&engine, &module, &permissions).await?;
        pool.push(sibling);
    }
    let mut jsonl = args.jsonl.as_deref().map(|target| crate::cli::commands::inspect::open_jsonl(target, &args.out)).transpose()?;
    let mut file = SyncFile::open_for_sync(&args.out)?;
    stop_on_signals(options.stop.clone())?;
    let progress = output::progress_bar();
    // On a worker of the runtime, not the thread blocked on it: a page
    // that comes in then wakes the driver without a switch of threads.
    let digest = module.digest.clone();
    let (file, result) = tokio::spawn({
        let progress = progress.clone();
        async move {
            let result = crate::sync::run_pool(&mut pool, &mut file, &digest, &progress, &options).await;
            (file, result)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the sync's task ended abnormally: {e}"))?;
    progress.finish_and_clear();
    let summary = match result {
        Err(e) if e.is::<crate::sync::Interrupted>() => return Err(e),
        other => other.with_context(|| {
            let holds = match file.last_good_run() {
                Ok(Some(good)) => format!("{} still holds the last good sync (run {})", args.out.display(), good.id),
                _ => format!("{} holds no good sync yet", args.out.display()),
            };
            format!("sync failed; {holds}; --resume goes on from where this one stopped")
        })?,
    };
    // With the records on stdout, the summary goes to stderr.
    output::print_summary(&summary, &args.out, args.jsonl.as_deref() == Some("-"))?;
    if let Some(out) = &mut jsonl {
        crate::cli::commands::inspect::export_jsonl(&file, summary.run_id, out.as_mut())?;
    }
    Ok(())
}
