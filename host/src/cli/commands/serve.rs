//! `tether serve`, and `tether sync --instance NAME --config-file FILE`:
//! one sync of an instance of the serve config file, so that the file is
//! the one source of truth for both.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser};

use crate::serve::logging::LogFormat;

#[derive(Args)]
pub struct ServeArgs {
    /// The config file (TOML); see docs/serve.example.toml.
    #[arg(long, value_name = "FILE", env = "TETHER_CONFIG")]
    pub config: PathBuf,
    /// Where the API listens (default: [server] listen, else 127.0.0.1:8787).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Check the config file and every instance's module, then exit.
    #[arg(long)]
    pub check: bool,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    crate::serve::run(crate::serve::ServeOptions { config: args.config, listen: args.listen, check: args.check }).await
}

/// `tether sync --instance NAME --config-file FILE`.
#[derive(Parser)]
#[command(name = "tether")]
struct ConfigSyncCli {
    #[command(subcommand)]
    command: ConfigSyncCommand,
}

#[derive(clap::Subcommand)]
enum ConfigSyncCommand {
    /// Syncs one instance of a `tether serve` config file into its sync file.
    Sync(ConfigSyncArgs),
}

#[derive(Args)]
struct ConfigSyncArgs {
    /// The instance, as the config file names it.
    #[arg(long, value_name = "NAME")]
    instance: String,
    /// The `tether serve` config file.
    #[arg(long, value_name = "FILE", env = "TETHER_CONFIG")]
    config_file: PathBuf,
    /// The sync file (default: the one `tether serve` uses, under data_dir).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Go on from where the last sync stopped, if it failed or was interrupted.
    #[arg(long)]
    resume: bool,
}

/// `sync` given `--config-file`: a sync as configured for `serve`. Taken
/// apart from `tether sync`'s own flags, which need `--connector`.
pub fn main_if_config_sync() -> Option<ExitCode> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let is_config_sync =
        argv.get(1).is_some_and(|a| a == "sync") && argv.iter().any(|a| a.to_str().is_some_and(|a| a == "--config-file" || a.starts_with("--config-file=")));
    if !is_config_sync {
        return None;
    }
    let ConfigSyncCommand::Sync(args) = ConfigSyncCli::parse_from(argv).command;
    crate::serve::logging::init(LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    Some(match runtime.block_on(config_sync(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    })
}

async fn config_sync(args: ConfigSyncArgs) -> Result<()> {
    let config = crate::serve::config::load_for_sync(&args.config_file).map_err(anyhow::Error::new)?;
    let settings = config.instances.get(&args.instance).with_context(|| {
        format!(
            "{} has no instance {:?} (it has: {})",
            args.config_file.display(),
            args.instance,
            config.instances.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let data_dir = &config.server.data_dir;
    let cache_dir = config.server.cache_dir.clone().or_else(crate::runtime::engine::ConnectorEngine::default_cache_dir);
    let engine = crate::runtime::engine::ConnectorEngine::new(cache_dir)?;
    let modules = crate::serve::module_cache_in(&config.server);
    let version = crate::serve::loader::resolve_and_load(&engine, settings, &modules, data_dir, None).await?;
    let out = args.out.unwrap_or_else(|| crate::serve::sync_file_in(data_dir, &settings.name));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let permissions = crate::serve::loader::permissions(settings, data_dir, false, None);
    let mut pool = crate::runtime::instance::ConnectorInstance::start_pool(&engine, &version.module, &permissions, settings.sync_limits.concurrency).await?;
    let options = crate::sync::SyncOptions { resume: args.resume, limits: settings.sync_limits.clone(), stop: Default::default() };
    let summary = crate::serve::adapter::run_sync(&mut pool, &out, &version.digest, &options).await.with_context(|| {
        // Said as `sync` says it: the file may hold no good sync, or be no sync file.
        let last_good = crate::sync::SyncFile::open_reader(&out).ok().and_then(|file| file.last_good_run().ok().flatten());
        match last_good {
            Some(good) => format!("sync failed; {} still holds the last good sync (run {})", out.display(), good.id),
            None => format!("sync failed; {} holds no good sync", out.display()),
        }
    })?;
    crate::cli::output::print_summary(&summary, &out, false)?;
    Ok(())
}
