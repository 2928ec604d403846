//! Sync cost as the org grows: requests, wall time, the syncing process's
//! CPU time and peak memory, for orgs of 1k, 10k and 50k users. The
//! simulator runs in its own process so its memory (it holds the whole org)
//! and its CPU (it filters the whole org for every page) are not counted.
//!
//! Run: cargo bench -p tether-host --bench sync_scale

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let tether = root.join("target/debug/tether");
    let simulator = root.join("target/debug/asana-sim");
    let connector = root.join("target/wasm/tether-asana.wasm");
    assert!(tether.is_file() && simulator.is_file() && connector.is_file(), "build first: scripts/build-guests.sh && cargo build -p tether-host -p asana-sim");
    // Compile the connector once, so every row measures a sync from the
    // compiled-code cache.
    let warm = Command::new(&tether).args(["describe", "--connector", connector.to_str().unwrap()]).output().expect("describe runs");
    assert!(warm.status.success());
    println!("{:>8} {:>6} {:>9} {:>9} {:>9} {:>10}", "users", "teams", "requests", "seconds", "cpu s", "peak MiB");
    for (users, teams) in [(1_000, 50), (10_000, 300), (50_000, 1_000)] {
        let mut sim = Command::new(&simulator)
            // Asana's 1500 requests a minute would make this a measure of
            // waiting: lift the budget to measure Tether.
            .args(["--users", &users.to_string(), "--teams", &teams.to_string(), "--per-minute", "1000000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("simulator starts");
        // Keep the pipe open while the simulator runs.
        let mut sim_output = BufReader::new(sim.stdout.take().unwrap());
        let mut first = String::new();
        sim_output.read_line(&mut first).unwrap();
        let base_url = first.trim().rsplit(' ').next().unwrap().to_string();
        let addr = base_url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let cpu_before = children_cpu_seconds();
        let out = Command::new(&tether)
            .args(["sync", "--connector", connector.to_str().unwrap(), "--out", dir.path().join("s.db").to_str().unwrap()])
            .args(["--config", &format!("asana-api-url={base_url}"), "--secret", "token=literal:sim-token", "--allow-host", &addr])
            .args(["--max-requests-per-minute", "1000000"])
            .output()
            .expect("sync runs");
        // The sync is the only child waited for in between.
        let cpu = children_cpu_seconds() - cpu_before;
        let _ = sim.kill();
        let _ = sim.wait();
        drop(sim_output);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let figure = |label: &str| {
            text.lines().find(|l| l.trim_start().starts_with(label)).and_then(|l| l.split_whitespace().nth(label.split(' ').count())).unwrap_or("?").to_string()
        };
        println!("{users:>8} {teams:>6} {:>9} {:>9} {cpu:>9.2} {:>10}", figure("HTTP requests"), figure("elapsed"), figure("peak memory"));
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
