//! Sync figures beside their bounds (issue 9), for orgs of 1k and 10k users
//! (100k with `--big`) at 0, 100 and 300 ms of upstream latency:
//!
//! - wall time beside `max(requests ÷ rate, requests × latency ÷ concurrency)`
//!   (issue 9's bound) and beside the floor no concurrency lowers: the
//!   requests that must follow each other (a listing's pages) × latency;
//! - requests beside the minimum the org needs (the simulator says it);
//! - the sync process's own CPU seconds and peak memory;
//! - sync-file bytes per grant.
//!
//! The simulator runs in its own process, so neither its memory (it holds
//! the whole org) nor its CPU is counted. These print figures; they are not
//! timed tests.
//!
//! By default the simulator allows Asana's published 1,500 requests a
//! minute and the host runs with the limits the connector declares (no
//! flags), so the bound is what Asana would allow. `--rate N` sets both
//! sides (`--rate 1000000`: unbounded, to measure Tether itself);
//! `--concurrency N` is passed to the host.
//!
//! Run: scripts/bench.sh [--release] [--big] [--concurrency N] [--rate PER_MINUTE] [--latencies 0,100,300]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Asana's published budget per token, which the simulator enforces by default.
const ASANA_RATE: u32 = 1_500;

struct Options {
    big: bool,
    /// For the host; None: what the connector declares.
    concurrency: Option<u32>,
    /// Requests per minute for the simulator and, when given, the host.
    rate: Option<u32>,
    latencies: Vec<u64>,
}

fn options() -> Options {
    let mut options = Options { big: false, concurrency: None, rate: None, latencies: vec![0, 100, 300] };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--big" => options.big = true,
            "--concurrency" => options.concurrency = Some(args.next().and_then(|v| v.parse().ok()).expect("--concurrency N")),
            "--rate" => options.rate = Some(args.next().and_then(|v| v.parse().ok()).expect("--rate PER_MINUTE")),
            "--latencies" => {
                options.latencies = args.next().expect("--latencies 0,100").split(',').map(|v| v.parse().expect("a number of ms")).collect();
            }
            // cargo bench adds --bench.
            _ => {}
        }
    }
    options
}

fn main() {
    let options = options();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    // TETHER_BIN_DIR: binaries built elsewhere (another target folder).
    let bin_dir = std::env::var_os("TETHER_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target").join(profile));
    let tether = bin_dir.join("tether");
    let simulator = bin_dir.join("asana-sim");
    let connector = root.join("target/wasm/tether-asana.wasm");
    assert!(tether.is_file() && simulator.is_file() && connector.is_file(), "build first: scripts/bench.sh builds what it needs");
    // Compile the connector once, so every row measures a sync from the
    // compiled-code cache.
    let warm = Command::new(&tether).args(["describe", "--connector", connector.to_str().unwrap()]).output().expect("describe runs");
    assert!(warm.status.success());

    let mut orgs = vec![(1_000, 50), (10_000, 300)];
    if options.big {
        orgs.push((100_000, 2_000));
    }
    let describe = |value: Option<u32>| value.map_or("the connector's".to_string(), |v| v.to_string());
    println!(
        "{} build; simulator {} requests/minute; host: concurrency {}, rate {} (used values below, as tether reports them)",
        profile,
        options.rate.unwrap_or(ASANA_RATE),
        describe(options.concurrency),
        describe(options.rate)
    );
    println!(
        "{:>7} {:>5} {:>7} | {:>5} {:>7} | {:>8} {:>8} | {:>8} {:>8} {:>6} {:>8} | {:>6} {:>8} | {:>8} {:>8}",
        "users", "teams", "latency", "conc", "rate/m", "requests", "minimum", "wall s", "bound s", "ratio", "chain s", "cpu s", "peak MiB", "grants", "B/grant"
    );
    for (users, teams) in orgs {
        for &latency in &options.latencies {
            let row = sync_once(&tether, &simulator, &connector, users, teams, latency, &options, &[]);
            // The rate is the lower of the simulator's and the host's.
            let rate = f64::from(row.rate.min(options.rate.unwrap_or(ASANA_RATE)));
            let bound = (row.requests as f64 / (rate / 60.0)).max(row.requests as f64 * latency as f64 / 1000.0 / f64::from(row.concurrency.max(1)));
            let chain = row.sequential as f64 * latency as f64 / 1000.0;
            println!(
                "{users:>7} {teams:>5} {:>5}ms | {:>5} {:>7} | {:>8} {:>8} | {:>8.2} {:>8.2} {:>6} {:>8.2} | {:>6.2} {:>8} | {:>8} {:>8.0}",
                latency,
                row.concurrency,
                rate,
                row.requests,
                row.minimum,
                row.wall.as_secs_f64(),
                bound,
                if bound > 0.05 { format!("{:.2}", row.wall.as_secs_f64() / bound) } else { "-".into() },
                chain,
                row.cpu,
                row.peak_mib,
                row.grants,
                row.file_bytes as f64 / row.grants.max(1) as f64,
            );
        }
    }
    // The rows above load compiled code from the cache; a module's first
    // sync on a machine (or under `tether serve`, each new version) compiles
    // it, in a child process (its CPU counts here; the peak is the larger
    // of the two processes').
    let cold = sync_once(&tether, &simulator, &connector, 10_000, 300, 0, &options, &["--no-cache"]);
    println!(
        "first sync of a module (--no-cache: compiled in a child process), 10000 users, 0ms: wall {:.2} s, cpu {:.2} s, peak {} MiB",
        cold.wall.as_secs_f64(),
        cold.cpu,
        cold.peak_mib
    );
}

struct Row {
    /// Reads in flight and requests per minute the host used.
    concurrency: u32,
    rate: u32,
    requests: u64,
    minimum: u64,
    /// Requests that must follow each other (the simulator says).
    sequential: u64,
    wall: Duration,
    cpu: f64,
    peak_mib: String,
    grants: u64,
    file_bytes: u64,
}

#[allow(clippy::too_many_arguments)]
fn sync_once(tether: &Path, simulator: &Path, connector: &Path, users: u32, teams: u32, latency: u64, options: &Options, extra: &[&str]) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    let mut sim = Command::new(simulator)
        .args(["--users", &users.to_string(), "--teams", &teams.to_string(), "--per-minute", &options.rate.unwrap_or(ASANA_RATE).to_string()])
        .args(["--latency-ms", &latency.to_string(), "--url-file", url_file.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .expect("simulator starts");
    let (base_url, minimum, sequential) = wait_for_url(&url_file, &mut sim);
    let addr = base_url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let out_file = dir.path().join("s.db");
    let cpu_before = children_cpu_seconds();
    let started = Instant::now();
    let mut sync = Command::new(tether);
    sync.args(["sync", "--connector", connector.to_str().unwrap(), "--out", out_file.to_str().unwrap()]).args([
        "--config",
        &format!("asana-api-url={base_url}"),
        "--secret",
        "token=literal:sim-token",
        "--allow-host",
        &addr,
    ]);
    if let Some(rate) = options.rate {
        sync.args(["--max-requests-per-minute", &rate.to_string()]);
    }
    if let Some(concurrency) = options.concurrency {
        sync.args(["--concurrency", &concurrency.to_string()]);
    }
    sync.args(extra);
    let out = sync.output().expect("sync runs");
    let wall = started.elapsed();
    // The sync is the only child waited for in between.
    let cpu = children_cpu_seconds() - cpu_before;
    let _ = sim.kill();
    let _ = sim.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let figure = |label: &str| {
        // "HTTP requests  1159, 16 answered 429 and retried": the number.
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().nth(label.split(' ').count()))
            .map(|n| n.trim_end_matches(',').to_string())
            .unwrap_or_else(|| "?".into())
    };
    // "… per host using 1500 requests/minute (…), 50 reads in flight (…), …"
    let stderr = String::from_utf8_lossy(&out.stderr);
    let used = stderr.lines().find_map(|l| l.split_once("per host using ")).map(|(_, used)| used.to_string()).unwrap_or_default();
    let number_before = |unit: &str| used.split(unit).next().and_then(|head| head.split_whitespace().last()).and_then(|n| n.parse().ok()).unwrap_or(0);
    let file_bytes = ["s.db", "s.db-wal"].iter().filter_map(|f| std::fs::metadata(dir.path().join(f)).ok()).map(|m| m.len()).sum();
    Row {
        concurrency: number_before(" reads in flight"),
        rate: number_before(" requests/minute"),
        requests: figure("HTTP requests").parse().unwrap_or(0),
        minimum,
        sequential,
        wall,
        cpu,
        peak_mib: figure("peak memory"),
        grants: figure("grants").parse().unwrap_or(0),
        file_bytes,
    }
}

/// A debug-built simulator takes minutes to generate 100k users.
const START_TIMEOUT: Duration = Duration::from_secs(1800);

/// The simulator writes its base URL, the org's minimum requests and how
/// many must follow each other once it listens.
fn wait_for_url(path: &Path, sim: &mut Child) -> (String, u64, u64) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() >= 3 {
                let number = |line: &str| line.trim().parse().expect("the simulator writes numbers");
                return (lines[0].trim().to_string(), number(lines[1]), number(lines[2]));
            }
        }
        assert!(sim.try_wait().unwrap().is_none(), "the simulator exited");
        if Instant::now() > deadline {
            let _ = sim.kill();
            let _ = sim.wait();
            panic!("the simulator did not start within {:?}", START_TIMEOUT);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// User and system CPU time of the children this process has waited for.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we hand it.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
