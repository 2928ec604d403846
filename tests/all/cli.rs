//! The `tether` binary as a user runs it: clear one-line errors and
//! non-zero exits on bad input, and the demo's readable summary.

use std::process::{Command, Output};

use crate::support::*;
use asana_sim::OrgSpec;

fn tether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether")).args(args).env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache")).output().expect("tether runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What scripts/demo.sh does: the simulator, then `tether sync` through the
/// Asana component, then the summary and `inspect`.
#[tokio::test(flavor = "multi_thread")]
async fn sync_prints_a_summary_and_writes_a_queryable_sync_file() {
    let spec = OrgSpec { users: 300, teams: 12, workspaces: 3, seed: 42 };
    let sim = start_sim(spec.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.db");
    let mut args = vec!["sync".to_string(), "--out".into(), out.to_str().unwrap().into()];
    args.extend(connector_flags(&sim, &[]));
    let run = tether_async(args).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    let minimum = asana_sim::Org::generate(&spec).minimum_requests(100);
    let line = text.lines().find(|l| l.trim_start().starts_with("HTTP requests")).expect("a request line");
    let sent: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    // Issue 9: listings run at once by default, as many as the connector
    // declares concurrent reads, and the requests are the minimum: a
    // workspace's listings get the workspace as reported (whether it is an
    // organization), so no instance asks /workspaces again.
    let err = stderr(&run);
    assert!(err.contains("upstream limits declared: 1500 requests/minute, 50 concurrent reads, 15 concurrent writes"), "{err}");
    assert!(
        err.contains(
            "1500 requests/minute (declared by the connector), 50 reads in flight (declared by the connector), 15 writes in flight (declared by the connector)"
        ),
        "{err}"
    );
    assert_eq!(workspace_rereads(&sim), 0);
    assert_eq!(sent, minimum, "{line}");
    assert_eq!(sim.request_count(), sent);
    assert!(text.contains("user") && text.contains("grants"), "{text}");

    let json = tether(&["inspect", out.to_str().unwrap(), "resources", "--type", "team", "--format", "json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let teams: Vec<serde_json::Value> = stdout(&json).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(teams.len(), 12);
    assert!(teams.iter().all(|t| t["resource_type"] == "team" && t["parent"]["resource_type"] == "workspace"));

    let unknown = tether(&["inspect", out.to_str().unwrap(), "grants", "--type", "workspaces"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("no resource type \"workspaces\"; it has: workspace, "), "{}", stderr(&unknown));

    let table = tether(&["inspect", out.to_str().unwrap(), "grants", "--type", "workspace"]);
    assert!(table.status.success());
    let header = stdout(&table).lines().next().unwrap().to_string();
    assert!(header.starts_with("id") && header.contains("principal_name"), "{header}");
    let member = &sim.org().users[5];
    assert!(stdout(&table).lines().any(|l| l.contains(&format!("user:{}", member.gid)) && l.contains(&member.name)), "grants show the principal's name");
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let run = tether(&["sync", "--bogus"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("--bogus"));
    let run = tether(&["sync", "--max-depth", "many"]);
    assert_eq!(run.status.code(), Some(2));
    for concurrency in ["0", "257", "many"] {
        let run = tether(&["sync", "--out", "x.db", "--connector", "c.wasm", "--concurrency", concurrency]);
        assert_eq!(run.status.code(), Some(2), "--concurrency {concurrency}");
        assert!(stderr(&run).contains("--concurrency"), "{}", stderr(&run));
    }
}

#[test]
fn a_missing_connector_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.db");
    let run = tether(&["sync", "--connector", "/nonexistent/c.wasm", "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    assert!(err.starts_with("error: cannot read connector /nonexistent/c.wasm"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no sync file or lock file is left behind");
}

/// A device, a FIFO or a file bigger than any module is refused before it
/// is read: `/dev/zero` was read until the machine ran out of memory, and
/// a FIFO was waited on for good.
#[test]
fn a_module_that_is_no_plain_file_or_too_big_is_refused_unread() {
    let run = tether(&["describe", "--connector", "/dev/zero"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("/dev/zero: it is not a plain file"), "{}", stderr(&run));
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big).unwrap().set_len(300 << 20).unwrap(); // sparse: no disk used
    let run = tether(&["describe", "--connector", big.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains(&format!("bytes; at most {} are read", tether_host::runtime::engine::MAX_MODULE_BYTES)), "{}", stderr(&run));

    // A FIFO nobody writes to is refused at once, not waited on for good:
    // as a module, and as a secret file (as is a device).
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let run = tether(&["describe", "--connector", fifo.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("fifo: it is not a plain file"), "{}", stderr(&run));
    for secret in [fifo.to_str().unwrap(), "/dev/zero"] {
        let out = dir.path().join("x.db");
        let run = tether(&["sync", "--connector", asana_wasm().to_str().unwrap(), "--out", out.to_str().unwrap(), "--secret", &format!("token=file:{secret}")]);
        assert_eq!(run.status.code(), Some(1));
        assert!(stderr(&run).contains(&format!("cannot read {secret}: it is not a plain file")), "{}", stderr(&run));
    }
    // As the sync file: it used to hang opening the FIFO for its lock.
    let run = tether(&[
        "sync",
        "--connector",
        asana_wasm().to_str().unwrap(),
        "--out",
        fifo.to_str().unwrap(),
        "--secret",
        "token=literal:sim-token-long",
        "--config",
        "asana-api-url=http://127.0.0.1:9/api/1.0",
        "--allow-host",
        "127.0.0.1:9",
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("is not a plain file, so it is no sync file"), "{}", stderr(&run));
}

#[test]
fn garbage_and_truncated_modules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let real = std::fs::read(asana_wasm()).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    for (module, says) in [(&garbage, "is not a WebAssembly file"), (&truncated, "is not a valid WebAssembly component")] {
        let run = tether(&["sync", "--connector", module.to_str().unwrap(), "--out", dir.path().join("x.db").to_str().unwrap(), "--no-cache"]);
        assert_eq!(run.status.code(), Some(1));
        assert!(stderr(&run).contains(says), "{}", stderr(&run));
        assert_eq!(stderr(&run).lines().count(), 1, "one line: {}", stderr(&run));
    }
}

#[test]
fn inspect_of_a_missing_file_fails_clearly() {
    let run = tether(&["inspect", "/nonexistent/sync.db", "grants"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("no sync file at /nonexistent/sync.db"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_with_a_bad_token_exits_non_zero_and_names_the_problem() {
    let sim = start_sim(OrgSpec { users: 20, teams: 1, workspaces: 1, seed: 1 }).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let args = |token_var: &str| {
        vec![
            "sync".to_string(),
            "--connector".into(),
            asana_wasm().to_str().unwrap().into(),
            "--config".into(),
            format!("asana-api-url={}", sim.base_url()),
            "--secret".into(),
            format!("token=env:{token_var}"),
            "--allow-host".into(),
            sim.addr().to_string(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let run = |token_var: &'static str, value: &'static str| {
        let args = args(token_var);
        tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_tether")).args(&args).env(token_var, value).output().unwrap())
    };
    let good = run("GOOD_TOKEN", "sim-token").await.unwrap();
    assert!(good.status.success(), "{}", stderr(&good));

    let bad = run("BAD_TOKEN", "not-the-token").await.unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(err.contains("unauthorized") && err.contains("still holds the last good sync"), "{err}");
    assert!(!err.contains("not-the-token"));

    let grants = tether(&["inspect", out.to_str().unwrap(), "grants", "--format", "json"]);
    assert!(stdout(&grants).lines().count() > 20, "the good sync is still there");

    // A secret passed as config is refused before anything is sent.
    let mut leaky = args("GOOD_TOKEN");
    leaky.extend(["--config".into(), "token=sim-token".into()]);
    let leaky = Command::new(env!("CARGO_BIN_EXE_tether")).args(&leaky).env("GOOD_TOKEN", "long-enough-token").output().unwrap();
    assert_eq!(leaky.status.code(), Some(1));
    assert!(stderr(&leaky).contains("token is a secret"), "{}", stderr(&leaky));
}

fn connector_flags(sim: &asana_sim::SimHandle, extra_config: &[&str]) -> Vec<String> {
    let mut flags = vec![
        "--connector".to_string(),
        asana_wasm().to_str().unwrap().into(),
        "--config".into(),
        format!("asana-api-url={}", sim.base_url()),
        "--secret".into(),
        "token=env:SIM_TOKEN".into(),
        "--allow-host".into(),
        sim.addr().to_string(),
    ];
    for config in extra_config {
        flags.extend(["--config".to_string(), config.to_string()]);
    }
    flags
}

async fn tether_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_tether")).args(&args).env("SIM_TOKEN", "sim-token").output().unwrap()).await.unwrap()
}

/// A dry run where the connector reports a change but held no request is
/// not shown as "already in the requested state": the operator is told what
/// the connector claimed.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_does_not_call_a_claimed_change_no_change() {
    let hostile = wasm("hostile");
    let args = |mode: &str| {
        let mut args = vec!["grant".to_string(), "--entitlement".into(), "probe:p1:member".into(), "--principal".into(), "user:u1".into()];
        args.extend(["--connector".into(), hostile.to_str().unwrap().into(), "--config".into(), format!("mode={mode}"), "--dry-run".into()]);
        args
    };
    let claimed = tether_async(args("claims-change")).await;
    assert!(claimed.status.success(), "{}", stderr(&claimed));
    assert!(stdout(&claimed).contains("nothing would be sent, though the connector reports a change: granted, trust me"), "{}", stdout(&claimed));
    assert!(!stdout(&claimed).contains("already in the requested state"), "{}", stdout(&claimed));
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_dry_run_prints_the_write_and_sends_none_then_grant_does_it() {
    let sim = start_sim(OrgSpec { users: 30, teams: 2, workspaces: 1, seed: 4 }).await;
    let org = sim.org();
    let team = &org.teams[0].gid;
    let outsider = org
        .workspace_memberships
        .iter()
        .find(|m| m.is_active && !m.is_guest && !org.team_memberships.iter().any(|t| &t.team_gid == team && t.user_gid == m.user_gid))
        .unwrap()
        .user_gid
        .clone();
    let mut args = vec!["grant".to_string(), "--entitlement".into(), format!("team:{team}:member"), "--principal".into(), format!("user:{outsider}")];
    args.extend(connector_flags(&sim, &[]));

    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let run = tether_async(dry).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(text.contains(&format!("dry run: would send POST {}/teams/{team}/addUser", sim.base_url())), "{text}");
    assert!(text.contains(&format!("{{\"data\":{{\"user\":\"{outsider}\"}}}}")), "{text}");
    assert!(sim.requests().iter().all(|r| r.method == "GET"), "a dry run sends no write");

    let run = tether_async(args.clone()).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).starts_with(&format!("changed: added user {outsider} to team {team}")), "{}", stdout(&run));
    let run = tether_async(args).await;
    assert!(stdout(&run).starts_with("no change:"), "{}", stdout(&run));
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_account_needs_yes_and_says_why() {
    let sim = start_sim(OrgSpec { users: 20, teams: 1, workspaces: 1, seed: 4 }).await;
    let target = sim.org().users[3].gid.clone();
    let mut args = vec!["disable-account".to_string(), "--user".into(), target.clone()];
    args.extend(connector_flags(&sim, &["use-service-account=true", "use-scim-api=true"]));
    let run = tether_async(args.clone()).await;
    assert_eq!(run.status.code(), Some(1));
    let text = stderr(&run);
    assert!(text.contains("refusing a write that cannot be undone without --yes") && text.contains("Asana cannot reactivate"), "{text}");
    assert_eq!(sim.request_count(), 0);

    args.push("--yes".into());
    let run = tether_async(args.clone()).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).starts_with(&format!("changed: deactivated user {target}")), "{}", stdout(&run));
    assert!(!sim.org().user(&target).unwrap().active);

    // Asana now hides the user from SCIM; a second run is no change, not `not found`.
    let run = tether_async(args).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).starts_with(&format!("no change: user {target} is already deactivated")), "{}", stdout(&run));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_account_prints_the_new_user() {
    let sim = start_sim(OrgSpec { users: 20, teams: 1, workspaces: 1, seed: 4 }).await;
    let workspace = sim.org().workspaces[0].gid.clone();
    let mut args = vec!["create-account".to_string(), "--email".into(), "cli.user@example.com".into(), "--field".into(), format!("workspace={workspace}")];
    args.extend(connector_flags(&sim, &[]));
    let run = tether_async(args).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).starts_with("changed: created account user:"), "{}", stdout(&run));
    assert!(sim.org().users.iter().any(|u| u.email == "cli.user@example.com"));

    // Fields are the connector's declared account fields, nothing else.
    let sent = sim.request_count();
    let mut bad = vec!["create-account".to_string(), "--email".into(), "x@example.com".into(), "--field".into(), "bogus=1".into()];
    bad.extend(connector_flags(&sim, &[]));
    let run = tether_async(bad).await;
    assert_eq!(run.status.code(), Some(1));
    let text = stderr(&run);
    assert!(text.contains("--field bogus: not a field this connector takes") && text.contains("workspace"), "{text}");
    assert_eq!(sim.request_count(), sent, "nothing is sent");
}

#[test]
fn describe_lists_config_keys_and_which_are_secret() {
    let run = tether(&["describe", "--connector", asana_wasm().to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    for key in ["token", "use-service-account", "use-scim-api", "default-workspace-id", "asana-api-url"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(key)), "{key} missing: {text}");
    }
    let token = text.lines().find(|l| l.trim_start().starts_with("token")).unwrap();
    assert!(token.contains("secret"), "{token}");
    // The host knows no connector: its help points at describe.
    let help = tether(&["sync", "--help"]);
    assert!(stdout(&help).contains("tether describe --connector") && !stdout(&help).contains("use-scim-api"));

    // describe runs the module too, so it takes the same trust checks.
    let zeros = "0".repeat(64);
    let pinned = tether(&["describe", "--connector", asana_wasm().to_str().unwrap(), "--digest", &zeros]);
    assert_eq!(pinned.status.code(), Some(1));
    assert!(stderr(&pinned).contains(&format!("but {zeros} was pinned")), "{}", stderr(&pinned));

    // Metadata read under the config a sync would give: the hostile module
    // declares the hosts its config names.
    let hostile = wasm("hostile");
    let shown = tether(&["describe", "--connector", hostile.to_str().unwrap(), "--config", "declare-host=api.example.com"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stdout(&shown).contains("hosts it asks for: api.example.com"), "{}", stdout(&shown));
    let typo = tether(&["describe", "--connector", asana_wasm().to_str().unwrap(), "--config", "asana-api-ulr=http://x"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(stderr(&typo).contains("--config asana-api-ulr: not a key this connector takes"), "{}", stderr(&typo));
}

/// `--jsonl -`: stdout carries only the records (the summary goes to
/// stderr), and a reader that stops early (`| head -1`) ends the command
/// cleanly, the sync recorded (it used to panic, exit 101); so do an
/// export and a diff cut short.
#[tokio::test(flavor = "multi_thread")]
async fn json_lines_on_stdout_are_only_records_and_a_closed_pipe_is_no_crash() {
    // Records well past a pipe's 64 KiB, so that writes after the reader
    // has gone meet a closed pipe.
    let sim = start_sim(OrgSpec { users: 1000, teams: 20, workspaces: 1, seed: 2 }).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let mut args = vec!["sync".to_string(), "--out".into(), out.to_str().unwrap().into(), "--jsonl".into(), "-".into()];
    args.extend(connector_flags(&sim, &[]));
    let run = tether_async(args.clone()).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{}", stdout(&run));
    assert!(stderr(&run).contains("Synced"), "the summary is on stderr: {}", stderr(&run));

    let closed = read_one_line_then_close(args).await;
    assert_eq!(closed.status.code(), Some(0), "{}", stderr(&closed));
    assert!(!stderr(&closed).contains("panicked"), "{}", stderr(&closed));

    // The same for an export of every format (the CSV writer wraps the
    // broken pipe in an error of its own: it used to exit 1).
    for format in ["csv", "jsonl"] {
        let export = vec!["export".to_string(), out.to_str().unwrap().into(), "--format".into(), format.into()];
        let closed = read_one_line_then_close(export).await;
        assert_eq!(closed.status.code(), Some(0), "{format}: {}", stderr(&closed));
    }

    // A diff whose reader stops after the first difference still answers
    // 1, "they differ" (it used to exit 2, as for an error), quietly.
    let other_sim = start_sim(OrgSpec { users: 1000, teams: 20, workspaces: 1, seed: 3 }).await;
    let other = dir.path().join("other.db");
    let mut sync_other = vec!["sync".to_string(), "--out".into(), other.to_str().unwrap().into()];
    sync_other.extend(connector_flags(&other_sim, &[]));
    let run = tether_async(sync_other).await;
    assert!(run.status.success(), "{}", stderr(&run));
    for format in ["table", "csv", "jsonl"] {
        let diff = vec!["diff".to_string(), out.to_str().unwrap().into(), other.to_str().unwrap().into(), "--format".into(), format.into()];
        let closed = read_one_line_then_close(diff).await;
        assert_eq!(closed.status.code(), Some(1), "{format}: {}", stderr(&closed));
        assert_eq!(stderr(&closed), "", "{format}");
    }
}

/// Runs tether with `args`, reads one line of its stdout and closes the
/// pipe, as `| head -1` does.
async fn read_one_line_then_close(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(&args)
            .env("SIM_TOKEN", "sim-token")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_writes_json_lines_and_an_unreachable_host_fails_clearly() {
    let sim = start_sim(OrgSpec { users: 15, teams: 1, workspaces: 1, seed: 2 }).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let jsonl = dir.path().join("s.jsonl");
    let mut args = vec!["sync".to_string(), "--out".into(), out.to_str().unwrap().into(), "--jsonl".into(), jsonl.to_str().unwrap().into()];
    args.extend(connector_flags(&sim, &[]));
    let run = tether_async(args).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["entitlement", "grant", "resource"]);

    // Nothing listens on this port: one clear line, non-zero, sync kept.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let args = vec![
        "sync".to_string(),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--connector".into(),
        asana_wasm().to_str().unwrap().into(),
        "--config".into(),
        format!("asana-api-url=http://{closed}/api/1.0"),
        "--secret".into(),
        "token=env:SIM_TOKEN".into(),
        "--allow-host".into(),
        closed.to_string(),
    ];
    let run = tether_async(args).await;
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("error: sync failed") && last.contains("request to Asana") && last.contains("onnect"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_hosts_drops_the_declared_ones() {
    let sim = start_sim(OrgSpec { users: 10, teams: 1, workspaces: 1, seed: 2 }).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["sync".to_string(), "--out".into(), dir.path().join("s.db").to_str().unwrap().into(), "--only-allowed-hosts".into()];
    args.extend(connector_flags(&sim, &[]));
    let run = tether_async(args).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let reach = stderr(&run).lines().find(|l| l.contains("may reach:")).unwrap().to_string();
    assert!(reach.ends_with(&format!("may reach: {}", sim.addr())), "app.asana.com is not reachable: {reach}");
}

/// A sync of a 1,500-user org answering each request after 4 ms, started
/// as a child process, and what the org needs at least.
async fn start_slow_sync(out: &std::path::Path, concurrency: u16) -> (asana_sim::SimHandle, std::process::Child, u64) {
    let mut config = asana_sim::SimConfig::new(asana_sim::Org::generate(&OrgSpec { users: 1500, teams: 40, workspaces: 2, seed: 8 }));
    config.latency = std::time::Duration::from_millis(4);
    let sim = start_sim_with(config).await;
    let minimum = sim.org().minimum_requests(100);
    let mut args = vec!["sync".to_string(), "--out".into(), out.to_str().unwrap().into(), "--concurrency".into(), concurrency.to_string()];
    args.extend(connector_flags(&sim, &[]));
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(&args)
        .env("SIM_TOKEN", "sim-token")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (sim, child, minimum)
}

/// Sends the sync SIGTERM and waits for it to exit.
async fn sigterm(child: std::process::Child) -> Output {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap()
}

/// Polls until the simulator has answered `count` requests.
async fn wait_for_requests(sim: &asana_sim::SimHandle, count: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sim.request_count() < count {
        assert!(std::time::Instant::now() < deadline, "the sync never got to {count} requests");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

async fn resume(sim: &asana_sim::SimHandle, out: &std::path::Path, concurrency: u16) -> Output {
    let mut args = vec!["sync".to_string(), "--resume".into(), "--out".into(), out.to_str().unwrap().into(), "--concurrency".into(), concurrency.to_string()];
    args.extend(connector_flags(sim, &[]));
    tether_async(args).await
}

/// The grant ids of run `run` in `file` equal those of a clean sync of the
/// same org.
async fn assert_same_grants_as_a_clean_sync(sim: &asana_sim::SimHandle, file: &tether_host::sync::SyncFile, run: i64) {
    let dir = tempfile::tempdir().unwrap();
    let clean_out = dir.path().join("clean.db");
    let clean = sync_sim(sim, "sim-token", &clean_out).await.expect("a clean sync");
    let ids = |file: &tether_host::sync::SyncFile, run: i64| file.grants(run, None).unwrap().into_iter().map(|g| g.id).collect::<Vec<_>>();
    let clean_file = tether_host::sync::SyncFile::open_existing(&clean_out).unwrap();
    assert_eq!(ids(file, run), ids(&clean_file, clean.run_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_at_a_page_boundary_and_resume_asks_no_page_twice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let (sim, child, minimum) = start_slow_sync(&out, 1).await;
    wait_for_requests(&sim, minimum / 3).await;
    let stopped = sigterm(child).await;
    assert_eq!(stopped.status.code(), Some(143), "{}", stderr(&stopped));
    assert!(stderr(&stopped).contains("interrupted") && stderr(&stopped).contains("tether sync --resume"), "{}", stderr(&stopped));
    let before = sim.request_count();
    assert!(before < minimum, "it stopped early: {before} of {minimum}");
    let file = tether_host::sync::SyncFile::open_existing(&out).unwrap();
    let interrupted = file.last_run().unwrap().unwrap();
    assert_eq!(interrupted.status, "interrupted");
    assert_eq!(interrupted.http_requests as u64, before);

    let resumed = resume(&sim, &out, 1).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(pages_asked_twice(&sim, &["/workspaces"]), Vec::<String>::new(), "the interrupted and the resumed run together ask for every page once");
    // The resumed process's fresh instance asks /workspaces no more.
    assert_eq!(workspace_rereads(&sim), 0);
    assert_eq!(sim.request_count(), minimum);
    let run = file.last_run().unwrap().unwrap();
    assert_eq!((run.id, run.status.as_str()), (interrupted.id, "succeeded"));
    assert_same_grants_as_a_clean_sync(&sim, &file, run.id).await;
}

/// A sync into a new file stopped by SIGTERM a third of the way: its
/// folder, the file, the simulator, the file opened, and the run it left.
async fn sync_stopped_a_third_of_the_way(
) -> (tempfile::TempDir, std::path::PathBuf, asana_sim::SimHandle, tether_host::sync::SyncFile, tether_host::sync::sync_file::RunInfo) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let (sim, child, minimum) = start_slow_sync(&out, 1).await;
    wait_for_requests(&sim, minimum / 3).await;
    let stopped = sigterm(child).await;
    assert_eq!(stopped.status.code(), Some(143), "{}", stderr(&stopped));
    let file = tether_host::sync::SyncFile::open_existing(&out).unwrap();
    let interrupted = file.last_run().unwrap().unwrap();
    (dir, out, sim, file, interrupted)
}

/// A run interrupted under one config is not resumed under another (here
/// a setting the sync does not read, so that the fresh run succeeds): two
/// upstreams' records would mix in one run. It starts over instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_under_other_config_starts_over() {
    let (_dir, out, sim, file, interrupted) = sync_stopped_a_third_of_the_way().await;

    let mut args = vec!["sync".to_string(), "--resume".into(), "--out".into(), out.to_str().unwrap().into()];
    args.extend(connector_flags(&sim, &["default-workspace-id=12345"]));
    let resumed = tether_async(args).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("was made with other config: starting over"), "{}", stderr(&resumed));
    let run = file.last_run().unwrap().unwrap();
    assert_eq!((run.id, run.status.as_str()), (interrupted.id + 1, "succeeded"));
    assert_same_grants_as_a_clean_sync(&sim, &file, run.id).await;
}

/// Nor under another module (another build of the same connector, its
/// listings perhaps other): it starts over, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_under_another_module_starts_over_and_says_so() {
    let (dir, out, sim, file, interrupted) = sync_stopped_a_third_of_the_way().await;

    let rebuilt = dir.path().join("asana-rebuilt.wasm");
    std::fs::write(&rebuilt, crate::serve::variant(&asana_wasm(), "rebuilt")).unwrap();
    let mut args = vec!["sync".to_string(), "--resume".into(), "--out".into(), out.to_str().unwrap().into()];
    args.extend(
        connector_flags(&sim, &[]).into_iter().map(|flag| if flag == asana_wasm().to_str().unwrap() { rebuilt.to_str().unwrap().into() } else { flag }),
    );
    let resumed = tether_async(args).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains(&format!("sync run {} was made by another module", interrupted.id)), "{}", stderr(&resumed));
    let run = file.last_run().unwrap().unwrap();
    assert_eq!((run.id, run.status.as_str()), (interrupted.id + 1, "succeeded"));
}

/// A listing that never comes back (an upstream that stopped answering, a
/// long rate-limit wait) does not hold a stop past its grace: the run is
/// interrupted and the resume asks that listing again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_does_not_wait_for_a_listing_that_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let (sim, child, minimum) = start_slow_sync(&out, 4).await;
    wait_for_requests(&sim, minimum / 3).await;
    sim.hold();
    // A listing is out and will not come back until released.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sim.waiting() == 0 {
        assert!(std::time::Instant::now() < deadline, "no request reached the held simulator");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let asked = std::time::Instant::now();
    let stopped = sigterm(child).await;
    let took = asked.elapsed();
    sim.release();
    assert_eq!(stopped.status.code(), Some(143), "{}", stderr(&stopped));
    assert!(took < tether_host::sync::STOP_GRACE + std::time::Duration::from_secs(10), "the stop took {took:?}");
    assert!(stderr(&stopped).contains("left for --resume"), "{}", stderr(&stopped));
    let file = tether_host::sync::SyncFile::open_existing(&out).unwrap();
    let interrupted = file.last_run().unwrap().unwrap();
    assert_eq!(interrupted.status, "interrupted");

    let resumed = resume(&sim, &out, 4).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let run = file.last_run().unwrap().unwrap();
    assert_eq!((run.id, run.status.as_str()), (interrupted.id, "succeeded"));
    assert_same_grants_as_a_clean_sync(&sim, &file, run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_outright_is_recognised_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let (sim, mut child, minimum) = start_slow_sync(&out, 1).await;
    wait_for_requests(&sim, minimum / 2).await;
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    let file = tether_host::sync::SyncFile::open_existing(&out).unwrap();
    let killed = file.last_run().unwrap().unwrap();
    assert_eq!(killed.status, "running", "nothing marked it: the process died");

    let resumed = resume(&sim, &out, 1).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    // Pages written before the kill are not asked again; the one in flight
    // when it landed may be.
    let total = sim.request_count();
    let rereads = workspace_rereads(&sim);
    assert!(pages_asked_twice(&sim, &["/workspaces"]).len() <= 1, "{:?}", pages_asked_twice(&sim, &["/workspaces"]));
    assert!((minimum..=minimum + 1 + rereads).contains(&total), "{total} requests for a minimum of {minimum}");
    let run = file.last_run().unwrap().unwrap();
    assert_eq!((run.id, run.status.as_str()), (killed.id, "succeeded"));
    assert_same_grants_as_a_clean_sync(&sim, &file, run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sync_into_the_same_file_is_refused_while_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let (sim, mut child, minimum) = start_slow_sync(&out, 1).await;
    wait_for_requests(&sim, minimum / 4).await;
    let second = resume(&sim, &out, 1).await;
    assert_eq!(second.status.code(), Some(1));
    assert!(stderr(&second).contains("another tether process is syncing into"), "{}", stderr(&second));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Issue 9, item 2: SIGTERM with 8 listings in flight lets them come in
/// and writes them; the resume, concurrent too, asks every other page once.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_concurrent_listings_resumes_asking_no_page_twice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let (sim, child, minimum) = start_slow_sync(&out, 8).await;
    wait_for_requests(&sim, minimum / 3).await;
    let stopped = sigterm(child).await;
    assert_eq!(stopped.status.code(), Some(143), "{}", stderr(&stopped));
    let before = sim.request_count();
    assert!(before < minimum, "it stopped early: {before} of {minimum}");
    let file = tether_host::sync::SyncFile::open_existing(&out).unwrap();
    let interrupted = file.last_run().unwrap().unwrap();
    assert_eq!(interrupted.status, "interrupted");
    assert_eq!(interrupted.http_requests as u64, before);

    let resumed = resume(&sim, &out, 8).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(pages_asked_twice(&sim, &["/workspaces"]), Vec::<String>::new(), "the interrupted and the resumed run together ask for every page once");
    // Fresh instances get each workspace as reported (from the sync file):
    // none reads /workspaces again.
    assert_eq!(workspace_rereads(&sim), 0);
    assert_eq!(sim.request_count(), minimum);
    let run = file.last_run().unwrap().unwrap();
    assert_eq!((run.id, run.status.as_str()), (interrupted.id, "succeeded"));
    assert_same_grants_as_a_clean_sync(&sim, &file, run.id).await;
}

/// SIGKILL with 8 listings in flight: the pages in flight are lost and
/// asked again; nothing else is.
#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_sync_killed_outright_asks_again_at_most_the_pages_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let (sim, mut child, minimum) = start_slow_sync(&out, 8).await;
    wait_for_requests(&sim, minimum / 2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = resume(&sim, &out, 8).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let twice = pages_asked_twice(&sim, &["/workspaces"]);
    assert!(twice.len() <= 8, "{twice:?}");
    let total = sim.request_count();
    let rereads = workspace_rereads(&sim);
    assert!((minimum..=minimum + 8 + rereads).contains(&total), "{total} requests for a minimum of {minimum}");
    let file = tether_host::sync::SyncFile::open_existing(&out).unwrap();
    let run = file.last_run().unwrap().unwrap();
    assert_eq!(run.status, "succeeded");
    assert_same_grants_as_a_clean_sync(&sim, &file, run.id).await;
}

/// Issue 7, item 7: revoking a user's last license deactivates them, which
/// Asana cannot undo; like disable-account it needs --yes, and a dry run
/// says so.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_last_license_needs_yes() {
    let sim = start_sim(OrgSpec { users: 20, teams: 1, workspaces: 1, seed: 4 }).await;
    let org = sim.org();
    let organization = org.workspaces.iter().find(|w| w.is_organization).unwrap().gid.clone();
    let owner = org.token_owner().unwrap().gid.clone();
    let target = org
        .users
        .iter()
        .find(|u| {
            u.active
                && u.gid != owner
                && u.license == asana_sim::License::ViewOnly
                && org.workspace_membership(&u.gid, &organization).is_some_and(|m| m.is_active)
        })
        .expect("a view-only user")
        .gid
        .clone();
    let grant = format!("license:{organization}:view only:assigned:user:{target}");
    let mut args = vec!["revoke".to_string(), "--grant".into(), grant.clone()];
    args.extend(connector_flags(&sim, &["use-service-account=true", "use-scim-api=true"]));

    let refused = tether_async(args.clone()).await;
    assert_eq!(refused.status.code(), Some(1));
    let text = stderr(&refused);
    assert!(text.contains("refusing a write that cannot be undone without --yes") && text.contains(&format!("deactivates user {target}")), "{text}");
    assert!(sim.org().user(&target).unwrap().active);

    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let run = tether_async(dry).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains(&format!("dry run: irreversible: deactivates user {target}")), "{}", stdout(&run));
    assert!(sim.org().user(&target).unwrap().active);

    args.push("--yes".into());
    let run = tether_async(args).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!sim.org().user(&target).unwrap().active, "confirmed, it deactivates");
}

/// The product's own compiler child: a module that would take gigabytes
/// to compile is stopped at the default limit, with a clear error and a
/// failed exit, by `tether` as any command runs it.
#[test]
fn a_compile_bomb_is_stopped_by_the_default_compile_limits() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    // About 2.4 GB compiled whole, against the default 1 GiB.
    std::fs::write(&bomb, compile_bomb(5_000, 5_000)).unwrap();
    let out = tether(&["describe", "--connector", bomb.to_str().unwrap(), "--cache-dir", dir.path().join("cache").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("limit exceeded: compile") && stderr.contains("more than 1024 MiB of memory"), "{stderr}");
}

/// Names that mean nothing are refused before anything is written: an
/// empty `--digest` pin (it read "…but  was pinned"), and keygen's `--out`
/// as a folder or a device (hidden `keys/.key`, `/dev/null.key`).
#[test]
fn an_empty_pin_and_a_key_name_that_is_a_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = tether(&["describe", "--connector", asana_wasm().to_str().unwrap(), "--digest", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a sha256 is 64 hex digits"));
    let folder = format!("{}/", dir.path().display());
    for name in [folder.as_str(), dir.path().to_str().unwrap(), "/dev/null"] {
        let out = tether(&["module", "keygen", "--out", name]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("give the keys' name"), "{name}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

/// Flags that could only fail later fail at once: a timeout below a
/// millisecond (5e-324 was a zero timeout), and --only-allowed-hosts with
/// no host allowed.
#[test]
fn a_zero_timeout_and_only_no_hosts_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("s.db");
    let module = asana_wasm();
    let base = ["sync", "--connector", module.to_str().unwrap(), "--secret", "token=literal:long-enough-token", "--out", out_file.to_str().unwrap()];
    let timeout = tether(&[&base[..], &["--http-timeout", "5e-324"]].concat());
    assert_ne!(timeout.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&timeout.stderr).contains("--http-timeout must be a number of seconds from 0.001"),
        "{}",
        String::from_utf8_lossy(&timeout.stderr)
    );
    let nowhere = tether(&[&base[..], &["--only-allowed-hosts"]].concat());
    assert_ne!(nowhere.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("--only-allowed-hosts without --allow-host"), "{}", String::from_utf8_lossy(&nowhere.stderr));
    assert!(!out_file.exists(), "no sync file begun");
}
