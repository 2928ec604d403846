//! `asana-sim`: the Asana simulator as a program, for the demo and for
//! trying a connector by hand. It serves a generated org on 127.0.0.1 until
//! SIGINT/SIGTERM.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use asana_sim::{Org, OrgSpec, SimConfig, SimHandle};
use clap::Parser;

/// Asana's largest page, the one the minimum request count assumes.
const PAGE_SIZE: usize = 100;

#[derive(Parser)]
#[command(name = "asana-sim", version, about = "Serves a simulated Asana org (REST and SCIM) on 127.0.0.1")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
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
    /// Added before every answer, in milliseconds (a real upstream's round trip).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Once listening, write the base URL, the minimum number of requests a
    /// connector needs for this org, and how many of them must come one
    /// after another (one per line) to this file: a script waits for it
    /// instead of sleeping.
    #[arg(long, value_name = "PATH")]
    url_file: Option<PathBuf>,
}

/// A bad flag or a port in use is said in one line, never as a backtrace
/// (a returned error prints one when RUST_BACKTRACE is set).
fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args = Args::parse();
    for (flag, rate) in [("inject-429", args.inject_429), ("inject-5xx", args.inject_5xx), ("inject-reset", args.inject_reset)] {
        if !(0.0..=1.0).contains(&rate) {
            bail!("--{flag} must be between 0 and 1");
        }
    }
    let spec = OrgSpec { users: args.users as usize, teams: args.teams as usize, workspaces: args.workspaces as usize, seed: args.seed };
    let org = Org::generate(&spec);
    let minimum = org.minimum_requests(PAGE_SIZE);
    let sequential = org.sequential_requests(PAGE_SIZE);
    let mut config = SimConfig::new(org);
    config.token = args.token;
    config.inject_429_rate = args.inject_429;
    config.inject_5xx_rate = args.inject_5xx;
    config.inject_reset_rate = args.inject_reset;
    config.per_minute_budget = args.per_minute;
    config.seed = spec.seed;
    config.latency = std::time::Duration::from_millis(args.latency_ms);
    let sim = SimHandle::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    if let Some(path) = &args.url_file {
        // Written whole, then renamed: a reader never sees half of it.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n{minimum}\n{sequential}\n", sim.base_url())).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // A closed stdout (a parent that read the URL and went) must not stop the server.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "Asana simulator listening on {}", sim.base_url());
    let _ = writeln!(
        stdout,
        "({} users, {} teams, {} workspaces, seed {}; a sync needs at least {minimum} requests at {PAGE_SIZE} per page); Ctrl-C stops it",
        spec.users, spec.teams, spec.workspaces, spec.seed
    );
    let _ = stdout.flush();
    wait_for_stop().await?;
    sim.shutdown().await;
    Ok(())
}

async fn wait_for_stop() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        tokio::select! {
            _ = terminate.recv() => {}
            result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C")?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    Ok(())
}
