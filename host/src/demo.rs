//! `tether demo` and `tether simulate`: the Asana simulator, and a sync of
//! it through the real connector component.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use asana_sim::{Org, OrgSpec, SimConfig, SimHandle};
use clap::Args;

use crate::cli::{ConnectorArgs, LimitArgs};
use crate::config::SecretSource;
use crate::store::SyncFile;
use crate::sync::SyncSummary;

/// Asana's largest page, which the connector uses.
const PAGE_SIZE: usize = 100;

/// The simulated org, shared by `demo` and `simulate`.
#[derive(Args)]
pub struct OrgArgs {
    /// Users in the simulated org.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    users: u32,
    /// Teams in the simulated org.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    teams: u32,
    /// Workspaces in the simulated org (the first is an organization).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    workspaces: u32,
    /// Seed of the org generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl OrgArgs {
    fn spec(&self) -> OrgSpec {
        OrgSpec { users: self.users as usize, teams: self.teams as usize, workspaces: self.workspaces as usize, seed: self.seed }
    }
}

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    org: OrgArgs,
    /// The sync file to write.
    #[arg(long, value_name = "FILE", default_value = "tether-demo.db")]
    out: PathBuf,
    /// The Asana connector component (default: target/wasm/tether-asana.wasm beside this binary).
    #[arg(long, value_name = "FILE.wasm")]
    connector: Option<PathBuf>,
}

#[derive(Args)]
pub struct SimulateArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    org: OrgArgs,
    /// The bearer token the simulator accepts.
    #[arg(long, default_value = "sim-token")]
    token: String,
    /// Share of requests answered 429 at random (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    inject_429: f64,
    /// Share of requests answered 500 or 503 at random (0 to 1).
    #[arg(long = "inject-5xx", default_value_t = 0.0)]
    inject_5xx: f64,
    /// Share of requests whose connection is dropped at random (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    inject_reset: f64,
    /// Requests per minute the token may make before 429s (Asana's paid plans: 1500).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..))]
    per_minute: u32,
}

/// Where the build puts the connector: target/wasm/ beside target/<profile>/.
pub fn default_connector_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    Some(target.join("wasm").join("tether-asana.wasm"))
}

pub async fn demo(args: DemoArgs) -> Result<()> {
    let connector = match args.connector {
        Some(path) => path,
        None => default_connector_path()
            .filter(|p| p.is_file())
            .context("no connector found at target/wasm/tether-asana.wasm; build it with scripts/build-guests.sh or pass --connector")?,
    };
    let spec = args.org.spec();
    let org = Org::generate(&spec);
    let minimum = org.minimum_requests(PAGE_SIZE);
    let config = SimConfig::new(org);
    let token = config.token.clone();
    let sim = SimHandle::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.context("cannot start the Asana simulator")?;
    eprintln!("simulated Asana org on {} ({} users, {} teams, {} workspaces, seed {})", sim.base_url(), spec.users, spec.teams, spec.workspaces, spec.seed);

    let connector_args = ConnectorArgs {
        connector,
        config: vec![("asana-api-url".into(), sim.base_url())],
        secret: vec![format!("token=literal:{token}").parse::<SecretSource>().map_err(anyhow::Error::msg)?],
        allow_host: vec![sim.addr().to_string()],
        only_allowed_hosts: false,
        trust: Default::default(),
        cache_dir: None,
        no_cache: false,
        storage_dir: None,
        limits: default_limit_args(),
    };
    let result = sync_into(&connector_args, &args.out).await;
    sim.shutdown().await;
    let summary = result?;
    print_summary(&summary, &args.out, Some(minimum));
    println!();
    println!("  query it:  sqlite3 {} 'select resource_type, count(*) from resources group by 1'", args.out.display());
    println!("             tether inspect {} grants --type team", args.out.display());
    Ok(())
}

fn default_limit_args() -> LimitArgs {
    use clap::FromArgMatches;
    let matches = <LimitArgs as clap::Args>::augment_args(clap::Command::new("limits")).get_matches_from(["limits"]);
    LimitArgs::from_arg_matches(&matches).expect("the limit flags have defaults")
}

async fn sync_into(args: &ConnectorArgs, out: &Path) -> Result<SyncSummary> {
    let mut file = SyncFile::open(out)?;
    let mut prepared = crate::cli::prepare(args, false).await?;
    let progress = crate::cli::progress_bar();
    let result = crate::sync::run(&mut prepared.instance, &mut file, &prepared.module.digest, &progress).await;
    progress.finish_and_clear();
    result.with_context(|| format!("sync failed; {} still holds the last good sync", out.display()))
}

pub async fn simulate(args: SimulateArgs) -> Result<()> {
    for (flag, rate) in [("inject-429", args.inject_429), ("inject-5xx", args.inject_5xx), ("inject-reset", args.inject_reset)] {
        if !(0.0..=1.0).contains(&rate) {
            anyhow::bail!("--{flag} must be between 0 and 1");
        }
    }
    let spec = args.org.spec();
    let org = Org::generate(&spec);
    let mut config = SimConfig::new(org);
    config.token = args.token;
    config.inject_429_rate = args.inject_429;
    config.inject_5xx_rate = args.inject_5xx;
    config.inject_reset_rate = args.inject_reset;
    config.per_minute_budget = args.per_minute;
    config.seed = spec.seed;
    let sim = SimHandle::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    // A closed stdout (a parent that read the URL and went) must not stop the server.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "Asana simulator listening on {}", sim.base_url());
    let _ = writeln!(stdout, "({} users, {} teams, {} workspaces, seed {}); Ctrl-C stops it", spec.users, spec.teams, spec.workspaces, spec.seed);
    let _ = stdout.flush();
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    sim.shutdown().await;
    Ok(())
}

/// The readable summary of a sync.
pub fn print_summary(summary: &SyncSummary, out: &Path, minimum_requests: Option<u64>) {
    println!();
    println!("Synced {} {} into {} (sync run {})", summary.connector.name, summary.connector.version, out.display(), summary.run_id);
    println!("  connector sha256  {}", summary.connector.digest);
    println!();
    println!("  {:<20} {:>8}", "resource type", "count");
    for (resource_type, count) in &summary.resources {
        println!("  {resource_type:<20} {count:>8}");
    }
    println!("  {:<20} {:>8}", "entitlements", summary.entitlements);
    println!("  {:<20} {:>8}", "grants", summary.grants);
    println!();
    let mut rate_limited = if summary.rate_limited > 0 { format!(", {} answered 429 and retried", summary.rate_limited) } else { String::new() };
    if summary.retries > 0 {
        rate_limited.push_str(&format!(", {} sent again after a transient failure", summary.retries));
    }
    match minimum_requests {
        Some(minimum) => {
            println!("  HTTP requests       {:>8}   (minimum for this org at {PAGE_SIZE} per page: {minimum}{rate_limited})", summary.http_requests)
        }
        None => println!("  HTTP requests       {:>8}{rate_limited}", summary.http_requests),
    }
    println!("  elapsed             {:>8.2} s", summary.elapsed.as_secs_f64());
    if let Some(peak) = peak_memory_mib() {
        println!("  peak memory         {peak:>8} MiB");
    }
}

/// The process's peak resident memory (Linux), to show it stays flat as
/// orgs grow: pages are written as they arrive, never gathered.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
