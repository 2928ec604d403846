//! The `tether` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{ConnectorConfig, SecretSource, Secrets};
use crate::connector::{ConnectorInstance, Grants};
use crate::engine::{ConnectorEngine, LoadedModule};
use crate::http::AllowedHost;
use crate::inspect::{InspectFormat, InspectWhat};
use crate::limits::Limits;
use crate::store::SyncFile;
use crate::trust::ModuleTrust;

#[derive(Parser)]
#[command(name = "tether", version, about = "Runs identity-governance connectors built as WebAssembly components")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts a simulated Asana org on 127.0.0.1 and syncs it through the
    /// Asana connector component.
    Demo(crate::demo::DemoArgs),
    /// Syncs a connector into a sync file.
    Sync(SyncArgs),
    /// Shows what the last good sync in a sync file found.
    Inspect(InspectArgs),
    /// Runs the Asana simulator on its own.
    Simulate(crate::demo::SimulateArgs),
    /// Signs connector modules and checks signatures: keygen, sign, verify.
    Module(crate::trust::ModuleArgs),
    /// Shows what a connector declares: resource types, config keys (which
    /// are secrets), hosts, account fields.
    Describe(DescribeArgs),
    /// Grants an entitlement to a principal.
    Grant(crate::provision::GrantArgs),
    /// Revokes a grant.
    Revoke(crate::provision::RevokeArgs),
    /// Creates an account (invite only, no password).
    CreateAccount(crate::provision::CreateAccountArgs),
    /// Disables an account. Asana cannot reactivate it: needs --yes.
    DisableAccount(crate::provision::DisableAccountArgs),
}

/// How to load and sandbox a connector: shared by every command that runs one.
#[derive(Args, Debug, Clone)]
pub struct ConnectorArgs {
    /// The connector component (.wasm).
    #[arg(long, value_name = "FILE.wasm")]
    pub connector: PathBuf,
    /// A config value for the connector (repeatable), e.g. asana-api-url=https://…
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// A secret for the connector (repeatable): NAME=env:VAR, NAME=file:PATH or NAME=literal:VALUE.
    /// The connector never sees its value; the host attaches it to requests to allowed hosts.
    #[arg(long = "secret", value_name = "NAME=SOURCE")]
    pub secret: Vec<SecretSource>,
    /// Also allow requests to this host (repeatable). Plain http only with an http:// prefix or for loopback.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_host: Vec<String>,
    /// Allow only the --allow-host hosts, not those the connector declares:
    /// a new module version cannot widen where the token goes.
    #[arg(long)]
    pub only_allowed_hosts: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Where compiled code is cached (default: ~/.cache/tether/compiled).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the module afresh and cache nothing.
    #[arg(long)]
    pub no_cache: bool,
    /// Root of the connectors' storage namespaces (default: no storage).
    #[arg(long, value_name = "DIR")]
    pub storage_dir: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What a module must prove before the host compiles it.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Refuse the module unless its sha256 is this.
    #[arg(long, value_name = "SHA256")]
    pub digest: Option<String>,
    /// Refuse the module unless it carries a good signature by this key: a
    /// NAME.pub file from `tether module keygen`, or 64 hex digits.
    #[arg(long, value_name = "NAME.pub|HEX")]
    pub require_signature: Option<String>,
    /// The module's signature (default: FILE.wasm.sig beside it).
    #[arg(long, value_name = "FILE", requires = "require_signature")]
    pub signature: Option<PathBuf>,
}

impl TrustArgs {
    fn to_trust(&self) -> Result<ModuleTrust> {
        Ok(ModuleTrust {
            digest: self.digest.clone(),
            signer: self.require_signature.as_deref().map(crate::trust::parse_verifying_key).transpose()?,
            signature: self.signature.clone(),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Linear memory per connector instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_memory_mb: usize,
    /// CPU seconds one connector call may use.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub cpu_seconds: f64,
    /// Wall-clock seconds one connector call may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub call_timeout: f64,
    /// Seconds one HTTP request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub http_timeout: f64,
    /// HTTP requests one connector call may make.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_requests_per_call: usize,
    /// HTTP requests per minute to any one host (Asana allows 1500); past it requests wait.
    #[arg(long, value_name = "N", default_value_t = 1_500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_minute: u32,
    /// Times an idempotent request (GET, or one with an Idempotency-Key header) is tried again after a
    /// 500/502/503/504, a timeout or a broken connection; other writes only when nothing was sent.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub http_retries: u32,
    /// First wait before a retry, in seconds; it doubles each time, plus jitter.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.25)]
    pub http_retry_base: f64,
    /// Longest wait between retries, in seconds (before jitter).
    #[arg(long, value_name = "SECONDS", default_value_t = 8.0)]
    pub http_retry_max: f64,
    /// Retries one sync (one connector instance) may make in all; then failures go to the connector.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub retry_budget: u32,
    /// Largest HTTP response body, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub max_response_mb: usize,
    /// Most records one page may carry.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_page_records: usize,
    /// Most log lines per call.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_log_lines: usize,
    /// Longest log line kept, in bytes (longer ones are cut).
    #[arg(long, value_name = "BYTES", default_value_t = 4_096)]
    pub max_log_line_bytes: usize,
    /// Most bytes of strings one page may carry, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub max_page_mb: usize,
    /// Most bytes the host copies out of the connector in one call, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub max_hostcall_mb: usize,
    /// Most elements per wasm table.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub max_table_elements: usize,
    /// Most wasm instances (and memories) per connector instance.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_instances: usize,
    /// Size quota of the connector's storage namespace, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 1_024)]
    pub max_storage_kb: u64,
}

impl LimitArgs {
    pub fn to_limits(&self) -> Result<Limits> {
        let seconds = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value < 86_400.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                bail!("--{name} must be a number of seconds between 0 and 86400")
            }
        };
        Ok(Limits {
            memory_bytes: self.max_memory_mb.checked_mul(1 << 20).context("--max-memory-mb is too large")?,
            cpu_per_call: seconds("cpu-seconds", self.cpu_seconds)?,
            wall_per_call: seconds("call-timeout", self.call_timeout)?,
            http_timeout: seconds("http-timeout", self.http_timeout)?,
            http_requests_per_call: self.max_requests_per_call,
            http_requests_per_minute: self.max_requests_per_minute,
            http_retries: self.http_retries,
            http_retry_base: seconds("http-retry-base", self.http_retry_base)?,
            http_retry_max_delay: seconds("http-retry-max", self.http_retry_max)?,
            http_retry_budget: self.retry_budget,
            http_response_bytes: self.max_response_mb.checked_mul(1 << 20).context("--max-response-mb is too large")?,
            records_per_page: self.max_page_records,
            log_lines_per_call: self.max_log_lines,
            log_bytes_per_line: self.max_log_line_bytes,
            bytes_per_page: self.max_page_mb.checked_mul(1 << 20).context("--max-page-mb is too large")?,
            hostcall_bytes: self.max_hostcall_mb.checked_mul(1 << 20).context("--max-hostcall-mb is too large")?,
            table_elements: self.max_table_elements,
            instances: self.max_instances,
            storage_bytes: self.max_storage_kb.checked_mul(1 << 10).context("--max-storage-kb is too large")?,
            ..Limits::default()
        })
    }
}

#[derive(Args)]
struct DescribeArgs {
    /// The connector component (.wasm).
    #[arg(long, value_name = "FILE.wasm")]
    connector: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
}

/// What the Asana connector takes, for `tether sync --help`; `tether
/// describe` reads the same from any connector's metadata.
const ASANA_CONFIG_HELP: &str = "\
Connector config and secrets: `tether describe --connector FILE.wasm` lists what a connector takes.
The Asana connector (target/wasm/tether-asana.wasm):
  --secret token=env:VAR          personal access token or service account token (secret; the connector never sees it)
  --config use-service-account=B  the token is a service account's (Enterprise); needed for SCIM (default false)
  --config use-scim-api=B         users and licenses from SCIM, license and account writes through it; needs use-service-account
  --config default-workspace-id=G workspace new accounts join when the request names none
  --config asana-api-url=URL      REST base URL (default https://app.asana.com/api/1.0; for test servers)
  --config scim-url=URL           SCIM base URL (default asana-api-url + /scim)";

#[derive(Args)]
#[command(after_help = ASANA_CONFIG_HELP)]
struct SyncArgs {
    #[command(flatten)]
    connector: ConnectorArgs,
    /// The sync file (SQLite); created if missing. A failed sync never replaces the last good one.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also write the synced records as JSON Lines to PATH, or - for stdout.
    #[arg(long, value_name = "PATH|-")]
    jsonl: Option<String>,
    /// If the last sync in FILE failed (same module), go on from where it
    /// stopped instead of starting over.
    #[arg(long)]
    resume: bool,
}

#[derive(Args)]
struct InspectArgs {
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

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => crate::demo::demo(args).await,
        Command::Simulate(args) => crate::demo::simulate(args).await,
        Command::Module(args) => crate::trust::run(args),
        Command::Describe(args) => describe(args).await,
        Command::Sync(args) => sync_command(args).await,
        Command::Grant(args) => crate::provision::grant(args).await,
        Command::Revoke(args) => crate::provision::revoke(args).await,
        Command::CreateAccount(args) => crate::provision::create_account(args).await,
        Command::DisableAccount(args) => crate::provision::disable_account(args).await,
        Command::Inspect(args) => {
            let file = SyncFile::open_existing(&args.file)?;
            crate::inspect::print(&file, args.what, args.resource_type.as_deref(), args.format, &mut std::io::stdout().lock())
        }
    }
}

/// A connector loaded and started as the flags say.
pub struct Prepared {
    pub engine: ConnectorEngine,
    pub module: LoadedModule,
    pub instance: ConnectorInstance,
}

pub async fn prepare(args: &ConnectorArgs, dry_run: bool) -> Result<Prepared> {
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(ConnectorEngine::default_cache_dir) };
    let engine = ConnectorEngine::new(cache_dir)?;
    let trust = args.trust.to_trust()?;
    let module = engine.load_trusted(&args.connector, &trust)?;
    eprintln!(
        "loaded {} (sha256 {}{}, tether:connector@{}) in {:.0} ms{}",
        module.path.display(),
        module.digest,
        trust.signer.map(|key| format!(", signed by key {}", crate::trust::key_id(&key))).unwrap_or_default(),
        module.api,
        module.load_time.as_secs_f64() * 1000.0,
        if module.from_cache { ", compiled code from cache" } else { "" }
    );
    let hosts = args.allow_host.iter().map(|h| AllowedHost::parse(h)).collect::<Result<Vec<_>>>()?;
    let grants = Grants {
        config: ConnectorConfig::new(args.config.clone()),
        secrets: Arc::new(Secrets::resolve(&args.secret)?),
        extra_hosts: hosts,
        only_extra_hosts: args.only_allowed_hosts,
        limits: args.limits.to_limits()?,
        storage_root: args.storage_dir.clone(),
        dry_run,
    };
    let instance = ConnectorInstance::start(&engine, &module, &grants).await?;
    check_config_against_metadata(&instance, args)?;
    // Secrets are attached for these hosts: the operator should see them.
    eprintln!("{} {} may reach: {}", instance.metadata.name, instance.metadata.version, instance.http().allowed_hosts().join(", "));
    Ok(Prepared { engine, module, instance })
}

/// Secrets must not travel as config, and required keys must be given.
fn check_config_against_metadata(instance: &ConnectorInstance, args: &ConnectorArgs) -> Result<()> {
    for field in &instance.metadata.config {
        let as_config = args.config.iter().any(|(key, _)| key == &field.key);
        let as_secret = args.secret.iter().any(|s| s.name == field.key);
        if field.secret && as_config {
            bail!("{} is a secret: give it with --secret {}=env:VAR (or file:PATH), not --config", field.key, field.key);
        }
        if field.required && !as_config && !as_secret {
            let flag = if field.secret { "--secret" } else { "--config" };
            bail!("the connector needs {}: {} (give it with {flag} {}=…)", field.key, field.description, field.key);
        }
    }
    Ok(())
}

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

async fn sync_command(args: SyncArgs) -> Result<()> {
    let mut file = SyncFile::open(&args.out)?;
    let mut prepared = prepare(&args.connector, false).await?;
    let progress = progress_bar();
    let result = crate::sync::run_or_resume(&mut prepared.instance, &mut file, &prepared.module.digest, &progress, args.resume).await;
    progress.finish_and_clear();
    let summary = result.with_context(|| format!("sync failed; {} still holds the last good sync (--resume goes on from here)", args.out.display()))?;
    crate::demo::print_summary(&summary, &args.out, None);
    if let Some(target) = &args.jsonl {
        crate::inspect::export_jsonl(&file, summary.run_id, target)?;
    }
    Ok(())
}

async fn describe(args: DescribeArgs) -> Result<()> {
    let engine = ConnectorEngine::new(ConnectorEngine::default_cache_dir())?;
    let module = engine.load_trusted(&args.connector, &args.trust.to_trust()?)?;
    let grants = Grants::default();
    let instance = ConnectorInstance::start(&engine, &module, &grants).await?;
    let m = &instance.metadata;
    println!("{} {} — {}", m.name, m.version, m.description);
    println!("sha256 {}", module.digest);
    println!("\nresource types:");
    for t in &m.resource_types {
        let listed = t.listed_under.as_deref().map(|p| format!(" (listed per {p})")).unwrap_or_default();
        println!("  {:<12} {}{listed}", t.id, t.description);
    }
    let fields = |title: &str, fields: &[crate::bindings::guest::ConfigField]| {
        println!("\n{title}:");
        for f in fields {
            let mut notes = vec![];
            if f.secret {
                notes.push("secret: give with --secret".to_string());
            }
            if f.required {
                notes.push("required".to_string());
            }
            if let Some(default) = &f.default_value {
                notes.push(format!("default {default}"));
            }
            let notes = if notes.is_empty() { String::new() } else { format!(" [{}]", notes.join(", ")) };
            println!("  {:<22} {}{notes}", f.key, f.description);
        }
    };
    fields("config", &m.config);
    fields("create-account fields", &m.account_fields);
    println!("\nhosts it reaches: {}", m.hosts.join(", "));
    Ok(())
}
