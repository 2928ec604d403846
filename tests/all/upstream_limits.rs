//! Issue 9: what a connector declares its upstream allows (contract 0.4.0)
//! is the default for the rate, the read and write caps per host and the
//! sync pool size; an untrusted module's absurd declaration is clamped; the
//! operator's flags win; and the host never asks for listings a type says
//! it has none of.

use std::process::{Command, Output};

use tether_host::runtime::api_version::ApiVersion;
use tether_host::runtime::imports::config::ConnectorConfig;
use tether_host::runtime::imports::upstream::Access;
use tether_host::runtime::instance::{ConnectorInstance, Permissions};
use tether_host::runtime::upstream_limits::{Source, MAX_CONCURRENCY, MAX_REQUESTS_PER_MINUTE};
use tether_host::sync::SyncFile;

use crate::support::*;
use asana_sim::OrgSpec;

fn tether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether")).args(args).env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache")).output().expect("tether runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn widgets(config: &[(&str, &str)]) -> Permissions {
    Permissions { config: ConnectorConfig::new(config.iter().map(|(k, v)| (k.to_string(), v.to_string()))), ..Permissions::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn asanas_declared_limits_are_the_defaults_and_the_operator_overrides_them() {
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let sim = start_sim(OrgSpec { users: 40, teams: 3, workspaces: 2, seed: 9 }).await;
    let grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");

    // No flags: Asana's 1500/min, 50 reads (so 50 instances), 15 writes.
    let pool = ConnectorInstance::start_pool(&engine, &module, &grants, None).await.unwrap();
    assert_eq!(pool.len(), 50, "the pool is as large as the reads Asana allows at once");
    let used = pool[0].upstream_settings();
    assert_eq!((used.requests_per_minute.value, used.concurrent_reads.value, used.concurrent_writes.value), (1500, 50, 15));
    assert_eq!(used.concurrent_writes.source, Source::Connector);
    assert_eq!((pool[0].http().throttle.cap(Access::Read), pool[0].http().throttle.cap(Access::Write)), (50, 15));
    drop(pool);

    // The operator's values win, each on its own.
    let mut operator = grants.clone();
    operator.limits.upstream.requests_per_minute = Some(600);
    operator.limits.upstream.concurrent_writes = Some(2);
    let pool = ConnectorInstance::start_pool(&engine, &module, &operator, Some(4)).await.unwrap();
    assert_eq!(pool.len(), 4);
    let used = pool[0].upstream_settings();
    assert_eq!((used.requests_per_minute.value, used.concurrent_reads.value, used.concurrent_writes.value), (600, 4, 2));
    assert!([used.requests_per_minute.source, used.concurrent_reads.source, used.concurrent_writes.source].iter().all(|s| *s == Source::Operator));

    // The same through the flags of `tether sync`, which says what it uses.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let run = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["sync", "--out", out.to_str().unwrap(), "--connector", asana_wasm().to_str().unwrap()])
        .args(["--config", &format!("asana-api-url={}", sim.base_url()), "--secret", "token=env:SIM_TOKEN", "--allow-host", &sim.addr().to_string()])
        .args(["--concurrency", "3", "--max-requests-per-minute", "900", "--max-concurrent-writes", "5"])
        .env("SIM_TOKEN", "sim-token")
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let err = text(&run.stderr);
    assert!(err.contains("upstream limits declared: 1500 requests/minute, 50 concurrent reads, 15 concurrent writes"), "{err}");
    assert!(
        err.contains("900 requests/minute (set by the operator), 3 reads in flight (set by the operator), 5 writes in flight (set by the operator)"),
        "{err}"
    );
    assert_eq!(SyncFile::open_existing(&out).unwrap().last_good_run().unwrap().unwrap().http_requests as u64, sim.org().minimum_requests(100));

    // describe shows what Asana declares, and which types list nothing.
    let run = tether(&["describe", "--connector", asana_wasm().to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let out = text(&run.stdout);
    assert!(out.contains("upstream limits it declares, per host: 1500 requests/minute, 50 concurrent reads, 15 concurrent writes"), "{out}");
    let user = out.lines().find(|l| l.trim_start().starts_with("user ")).expect("a user line");
    assert!(user.contains("[no entitlements, no grants]"), "{user}");
    let team = out.lines().find(|l| l.trim_start().starts_with("team ")).expect("a team line");
    assert!(!team.contains("no grants"), "{team}");
}

/// The widgets fixture declares u32::MAX for everything by default; its
/// parts list no entitlements nor grants and fail the sync if asked, and
/// its widget listings fail unless given the widget's reported `color`.
#[tokio::test(flavor = "multi_thread")]
async fn absurd_declared_limits_are_clamped_and_unlisted_types_are_never_asked() {
    let engine = engine();
    let module = load(&engine, &wasm("connector-v0-4"));
    assert_eq!(module.api, ApiVersion::V0_4);
    let greedy = widgets(&[]);
    let mut pool = ConnectorInstance::start_pool(&engine, &module, &greedy, None).await.unwrap();
    assert_eq!(pool.len(), MAX_CONCURRENCY as usize, "at most 64 instances, whatever the module declares");
    let used = pool[0].upstream_settings();
    assert_eq!(used.requests_per_minute.value, MAX_REQUESTS_PER_MINUTE);
    assert_eq!(used.requests_per_minute.source, Source::Clamped { declared: u32::MAX });
    assert_eq!((used.concurrent_reads.value, used.concurrent_writes.value), (64, 64));
    assert_eq!(pool[0].declared.limits.concurrent_reads, Some(u32::MAX), "what it declared is kept, to be shown");

    // A whole sync on the pool: parts are listed under widgets with the
    // widget as reported, and never asked for entitlements or grants.
    let dir = tempfile::tempdir().unwrap();
    let mut file = SyncFile::open(&dir.path().join("w.db")).unwrap();
    let summary = tether_host::sync::run_pool(&mut pool, &mut file, &module.digest, &indicatif::ProgressBar::hidden(), &Default::default())
        .await
        .expect("the sync asks nothing a type says it lacks");
    assert_eq!(summary.resources, vec![("widget".to_string(), 2), ("part".to_string(), 2)]);
    assert_eq!((summary.entitlements, summary.grants), (2, 0));
    let parts = file.resources(summary.run_id, Some("part")).unwrap();
    assert!(parts.iter().all(|p| p.parent.as_ref().is_some_and(|w| w.resource_type == "widget")), "{parts:?}");
    drop(pool);

    // None and 0 are no declaration: the host's defaults.
    let modest = widgets(&[("declare-rate", "none"), ("declare-reads", "0"), ("declare-writes", "none")]);
    let instance = ConnectorInstance::start(&engine, &module, &modest).await.unwrap();
    let used = instance.upstream_settings();
    assert_eq!((used.requests_per_minute.value, used.concurrent_reads.value, used.concurrent_writes.value), (1500, 16, 16));
    assert_eq!(used.concurrent_reads.source, Source::HostDefault);
    assert!(instance.declared.limits.is_empty());

    // describe says what was declared and that it was clamped.
    let run = tether(&["describe", "--connector", wasm("connector-v0-4").to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let out = text(&run.stdout);
    assert!(out.contains("4294967295 requests/minute, 4294967295 concurrent reads, 4294967295 concurrent writes"), "{out}");
    assert!(out.contains("60000 requests/minute (the connector declares 4294967295, more than the host allows)"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("part") && l.contains("[no entitlements, no grants]")), "{out}");
}

/// A module of 0.2.0 (no limits, no listing flags, resource references)
/// syncs on a pool as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_v0_2_module_still_syncs_beside_v0_4() {
    let engine = engine();
    let module = load(&engine, &wasm("connector-v0-2"));
    assert_eq!(module.api, ApiVersion::V0_2);
    let mut pool = ConnectorInstance::start_pool(&engine, &module, &Permissions::default(), None).await.unwrap();
    assert_eq!(pool.len(), 16, "no declaration before 0.4.0: the host's default");
    let dir = tempfile::tempdir().unwrap();
    let mut file = SyncFile::open(&dir.path().join("v2.db")).unwrap();
    let summary = tether_host::sync::run_pool(&mut pool, &mut file, &module.digest, &indicatif::ProgressBar::hidden(), &Default::default()).await.unwrap();
    // Both listings for every widget, as before 0.4.0.
    assert_eq!((summary.resources.clone(), summary.entitlements), (vec![("widget".to_string(), 2)], 2));
}

/// `limits.*` of a serve config are the same overrides as the flags; what
/// it leaves out stays the connector's to declare.
#[tokio::test(flavor = "multi_thread")]
async fn a_serve_configs_limits_override_the_declared_ones_and_only_those_given() {
    let sim = start_sim(OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 4 }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.toml");
    let instance = |name: &str, limits: &str| crate::serve::asana_instance(name, &asana_wasm(), &sim, "interval = \"1h\"", "") + limits;
    let text = crate::serve::server_section(dir.path())
        + &instance("given", "[instances.given.limits]\nmax-concurrent-writes = 3\nconcurrency = 7\n")
        + &instance("left", "");
    // The token from a file: no environment variable to set.
    let token = dir.path().join("token");
    std::fs::write(&token, "sim-token").unwrap();
    std::fs::write(&path, text.replace("env:SIM_TOKEN", &format!("file:{}", token.display()))).unwrap();
    let config = tether_host::serve::config::load_for_sync(&path).unwrap_or_else(|e| panic!("{e:?}"));
    let given = &config.instances["given"];
    assert_eq!((given.limits.upstream.concurrent_writes, given.limits.upstream.requests_per_minute, given.sync_limits.concurrency), (Some(3), None, Some(7)));
    let left = &config.instances["left"];
    assert_eq!((left.limits.upstream, left.sync_limits.concurrency), (Default::default(), None));

    // The pool the scheduler starts for each.
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let permissions = tether_host::serve::loader::permissions(given, dir.path(), false, None);
    let pool = ConnectorInstance::start_pool(&engine, &module, &permissions, given.sync_limits.concurrency).await.unwrap();
    let used = pool[0].upstream_settings();
    assert_eq!((pool.len(), used.requests_per_minute.value, used.concurrent_writes.value), (7, 1500, 3));
    assert_eq!(used.requests_per_minute.source, Source::Connector);
}

/// Under serve, an instance's syncs and API writes share one upstream
/// budget: instances started on a shared throttle count against one rate,
/// where each used to get a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn instances_on_one_throttle_share_its_rate() {
    use std::sync::Arc;
    use std::time::Duration;
    use tether_host::runtime::imports::upstream::HostThrottle;
    use tether_host::runtime::upstream_limits::{UpstreamLimits, UpstreamSettings};
    let sim = start_sim(OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 8 }).await;
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let mut grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    grants.limits.upstream.requests_per_minute = Some(2);
    let shared = Arc::new(HostThrottle::new(UpstreamSettings::resolve(&UpstreamLimits::default(), &grants.limits.upstream)));
    let on_shared = Permissions { throttle: Some(shared), ..grants.clone() };
    let mut first = ConnectorInstance::start(&engine, &module, &on_shared).await.unwrap();
    first.test_connection().await.unwrap();
    first.test_connection().await.unwrap();
    // The budget of two a minute is spent: a second instance on the same
    // throttle waits, one on a throttle of its own does not.
    let mut own = ConnectorInstance::start(&engine, &module, &grants).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), own.test_connection()).await.expect("a budget of its own").unwrap();
    let mut second = ConnectorInstance::start(&engine, &module, &on_shared).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(2), second.test_connection()).await.is_err(), "the shared budget was spent");
}
