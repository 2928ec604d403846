//! The `tether` command line.

//!
//! `args` holds the flags commands share, `start` loads and starts a
//! connector from them, `output` is what commands print, and `commands/`
//! has one module per command.

pub mod args;
pub mod commands;
pub mod output;
pub mod output_target;
pub mod registry;
pub mod start;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::{describe, diff, export, inspect, module, report, serve, sync, write};

#[derive(Parser)]
#[command(name = "tether", version, about = "Runs identity-governance connectors built as WebAssembly components")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Syncs a connector into a sync file.
    Sync(sync::SyncArgs),
    /// Shows what the last good sync in a sync file found.
    Inspect(inspect::InspectArgs),
    /// Lists resources, entitlements and grants added, removed or changed
    /// between two syncs; exits 0 if none, 1 if some, 2 on an error.
    Diff(diff::DiffArgs),
    /// Writes the grants of a sync as CSV or JSON Lines, for an access review.
    Export(export::ExportArgs),
    /// Writes one self-contained HTML page for an access review of a sync.
    Report(report::ReportArgs),
    /// Signs connector modules, checks signatures, publishes and fetches them
    /// through OCI registries: keygen, sign, verify, push, pull.
    Module(module::ModuleArgs),
    /// Shows what a connector declares: resource types, config keys (which
    /// are secrets), hosts, account fields, and its storage namespace.
    Describe(describe::DescribeArgs),
    /// Grants an entitlement to a principal.
    Grant(write::GrantArgs),
    /// Revokes a grant.
    Revoke(write::RevokeArgs),
    /// Creates an account (invite only, no password).
    CreateAccount(write::CreateAccountArgs),
    /// Disables an account (needs --yes where the upstream cannot undo it).
    DisableAccount(write::DisableAccountArgs),
    /// Runs many connector instances on their schedules behind an HTTP API,
    /// as a config file says (`tether sync --instance NAME --config-file
    /// FILE` runs one of them once).
    Serve(serve::ServeArgs),
}

pub fn main() -> ExitCode {
    if let Some(code) = serve::main_if_config_sync() {
        return code;
    }
    let cli = Cli::parse();
    if let Command::Serve(args) = &cli.command {
        crate::serve::logging::init(args.log_format);
    } else {
        init_logs();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !matches!(cli.command, Command::Serve(_)) && std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        // The command itself runs on this thread (`block_on`): a sync's
        // driver writes every page here while the workers run the guests and
        // their HTTP. A worker per core besides it only made the three
        // contend for two cores (a 100k sync: about 0.3 CPU-s of context
        // switches). serve's main thread only waits.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        builder.worker_threads(cores.saturating_sub(1).max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `diff` exits as diff(1) does: 1 says "changes", so errors are 2.
    let is_diff = matches!(cli.command, Command::Diff(_));
    let failure = if is_diff { ExitCode::from(2) } else { ExitCode::FAILURE };
    let result = runtime.block_on(run(cli));
    // Work left behind (a config reload `serve` gave up on when it was
    // stopped, a compile in it) is not waited on for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        // Stopped by a signal, with the run saved: 128 + the signal's
        // number, as a shell reports a process the signal ended.
        Err(e) if e.chain().any(|c| c.is::<crate::sync::Interrupted>()) => {
            eprintln!("error: {}", shown(&e));
            ExitCode::from(128 + sync::STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst).clamp(1, 127) as u8)
        }
        // A reader that stopped early (`| head`) is not an error; but a diff
        // cut short before its first difference cannot say whether the
        // syncs differ, hence `failure` (see `diff::run`).
        Err(e) if is_broken_pipe(&e) => {
            if is_diff {
                eprintln!("error: the output was closed before the diff finished");
                failure
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {}", shown(&e));
            failure
        }
    }
}

/// Whether `error` comes from an output its reader closed (`| head`).
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// An error as the operator's terminal gets it. What a connector or an
/// upstream says is escaped and clipped where it enters an error; this is
/// the backstop for any text that reached one without: no control
/// character, and no screenful, gets through.
fn shown(error: &anyhow::Error) -> String {
    crate::terminal::escape_keeping_lines(&crate::terminal::clip(&format!("{error:#}"), 16 * crate::terminal::MAX_CONNECTOR_TEXT))
}

fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or pipe gets plain
        // text, in which any escape sequence would be a connector's.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Diff(args) => return Ok(if diff::run(args)? { ExitCode::from(1) } else { ExitCode::SUCCESS }),
        Command::Export(args) => export::run(args),
        Command::Report(args) => report::run(args),
        Command::Module(args) => module::run(args).await,
        Command::Describe(args) => describe::run(args).await,
        Command::Sync(args) => sync::run(args).await,
        Command::Grant(args) => write::grant(args).await,
        Command::Revoke(args) => write::revoke(args).await,
        Command::CreateAccount(args) => write::create_account(args).await,
        Command::DisableAccount(args) => write::disable_account(args).await,
        Command::Inspect(args) => inspect::run(args),
        Command::Serve(args) => serve::run(args).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
