//! The sandbox against hostile connectors: each attack ends its own call
//! with a typed error naming the limit or policy it hit, and the host then
//! runs the Asana connector normally (a fresh instance syncs the simulator).
//!
//! The attackers are tests/fixtures/: `hostile` (its `mode` config key picks
//! the attack) and `connector-v0-2` (built against tether:connector@0.2.0),
//! plus tiny components written in WAT for what must not load. Every hostile call
//! runs under short limits, and nothing leaves 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::support::*;
use asana_sim::OrgSpec;
use tether_host::runtime::api_version::ApiVersion;
use tether_host::runtime::bindings::ConnectorError;
use tether_host::runtime::bindings::ResourceRef;
use tether_host::runtime::engine::{ConnectorEngine, LoadedModule};
use tether_host::runtime::imports::config::{ConnectorConfig, Secrets};
use tether_host::runtime::imports::http::AllowedHost;
use tether_host::runtime::instance::{CallError, ConnectorInstance, Permissions, PlannedWrite};
use tether_host::runtime::limits::Limits;
use tether_host::runtime::page::Page;
use tether_host::runtime::trust::ModuleTrust;
use tether_host::sync::SyncFile;

const TOKEN: &str = "sim-token";

/// One engine (and its compiled modules) for every test in this file.
fn shared_engine() -> &'static ConnectorEngine {
    static ENGINE: OnceLock<ConnectorEngine> = OnceLock::new();
    ENGINE.get_or_init(engine)
}

fn asana() -> &'static LoadedModule {
    static MODULE: OnceLock<LoadedModule> = OnceLock::new();
    MODULE.get_or_init(|| load(shared_engine(), &asana_wasm()))
}

fn hostile() -> &'static LoadedModule {
    static MODULE: OnceLock<LoadedModule> = OnceLock::new();
    MODULE.get_or_init(|| load(shared_engine(), &wasm("hostile")))
}

/// Short limits, so that no attack can hang a test.
fn tight_limits() -> Limits {
    Limits {
        cpu_per_call: Duration::from_secs(1),
        wall_per_call: Duration::from_secs(5),
        http_timeout: Duration::from_secs(2),
        // One quick retry: a hung upstream is tried twice, not five times.
        http_retries: 1,
        http_retry_base: Duration::from_millis(1),
        ..Limits::default()
    }
}

fn hostile_permissions(settings: &[(&str, &str)]) -> Permissions {
    Permissions { config: ConnectorConfig::new(settings.iter().map(|(k, v)| (k.to_string(), v.to_string()))), limits: tight_limits(), ..Permissions::default() }
}

/// `grants` plus the operator allowing `addr` and giving the secret `token`.
fn with_server(grants: Permissions, addr: SocketAddr) -> Permissions {
    Permissions {
        extra_hosts: vec![AllowedHost::parse(&addr.to_string()).unwrap()],
        secrets: Arc::new(Secrets::resolve(&[format!("token=literal:{TOKEN}").parse().unwrap()]).unwrap()),
        ..grants
    }
}

/// Starts the hostile connector and runs its attack (listing `probe`).
async fn attack(grants: &Permissions) -> Result<Page, CallError> {
    let mut instance = ConnectorInstance::start(shared_engine(), hostile(), grants).await.expect("the hostile connector starts");
    instance.list_resources("probe", None, None).await
}

/// The limit an attack ran into, and the error's text.
fn limit_hit(outcome: Result<Page, CallError>) -> (&'static str, String) {
    match outcome {
        Err(CallError::Limit(limit)) => (limit.limit, limit.to_string()),
        other => panic!("expected a limit, got {other:?}"),
    }
}

/// The typed error the connector reported.
fn connector_error(outcome: Result<Page, CallError>) -> ConnectorError {
    match outcome {
        Err(CallError::Connector(error)) => error,
        other => panic!("expected a connector error, got {other:?}"),
    }
}

/// The one probe a successful attack reports, as (display name, attributes).
fn single_probe(outcome: Result<Page, CallError>) -> (String, Vec<(String, String)>) {
    let page = outcome.expect("the call succeeds");
    let probe = page.resources.into_iter().next().expect("a probe");
    (probe.display_name, probe.attributes.into_iter().map(|p| (p.name, p.value)).collect())
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> &'a str {
    attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no attribute {name}: {attributes:?}"))
}

/// The host is healthy after an attack: a fresh Asana instance syncs the
/// simulator.
async fn asana_still_syncs() {
    let sim = start_sim(OrgSpec { users: 30, teams: 2, workspaces: 1, seed: 3 }).await;
    let dir = tempfile::tempdir().unwrap();
    let grants = permissions_for(&sim.base_url(), sim.addr(), TOKEN);
    let summary = sync_with(shared_engine(), asana(), &grants, &dir.path().join("sync.db")).await.expect("the Asana connector still syncs");
    assert!(summary.grants > 0 && summary.http_requests == sim.request_count(), "{summary:?}");
}

/// A web server on 127.0.0.1 misbehaving as an upstream might: redirects
/// elsewhere, echoes the request, answers too much or never.
async fn start_misbehaving_server() -> SocketAddr {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let redirect = |to: &'static str| move || async move { (StatusCode::FOUND, [(header::LOCATION, to)]) };
    let app = axum::Router::new()
        .route("/redirect-away", get(redirect("http://not-allowed.example/collect")))
        .route("/redirect-metadata", get(redirect("http://169.254.169.254/latest/meta-data/")))
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                let seen = |name: header::HeaderName| headers.get(&name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
                ([("x-echo-authorization", seen(header::AUTHORIZATION))], format!("authorization: {}", seen(header::AUTHORIZATION)))
            }),
        )
        .route(
            "/echo-encoding",
            get(|headers: HeaderMap| async move {
                let seen = |name: header::HeaderName| headers.get(&name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
                format!("accept-encoding: {}; range: {}; te: {}", seen(header::ACCEPT_ENCODING), seen(header::RANGE), seen(header::TE))
            }),
        )
        .route("/gzip", get(|| async { ([(header::CONTENT_ENCODING, "gzip")], vec![0x1f, 0x8b, 8, 0]) }))
        .route("/big", get(|| async { vec![b'b'; 2 << 20] }))
        .route("/hang", get(std::future::pending::<&'static str>));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn tether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether")).args(args).env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache")).output().expect("tether runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_is_stopped_by_the_cpu_limit() {
    let grants = hostile_permissions(&[("mode", "infinite-loop")]);
    let mut instance = ConnectorInstance::start(shared_engine(), hostile(), &grants).await.unwrap();
    let started = Instant::now();
    let (limit, message) = limit_hit(instance.list_resources("probe", None, None).await);
    assert_eq!(limit, "cpu", "{message}");
    assert!(message.starts_with("limit exceeded: cpu: the call ran for more than 1s of CPU"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(4), "the CPU budget, not the wall clock, stopped it: {:?}", started.elapsed());
    assert!(matches!(instance.validate().await, Err(CallError::Poisoned)), "a stopped instance is not called again");

    // The deadline yields to the executor, so the outer wall clock can stop
    // a loop too.
    let generous_cpu =
        Permissions { limits: Limits { cpu_per_call: Duration::from_secs(60), wall_per_call: Duration::from_millis(500), ..tight_limits() }, ..grants };
    assert_eq!(limit_hit(attack(&generous_cpu).await).0, "wall-clock");
    asana_still_syncs().await;
}

/// A guest that sleeps through WASI's clock spends no CPU: the call's wall
/// clock ends it, the instance is not called again, and the sleep held no
/// thread (another instance's call runs meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_guest_sleeping_on_a_wasi_clock_is_stopped_by_the_wall_clock() {
    let grants = hostile_permissions(&[("mode", "sleep")]);
    let sleepy = Permissions { limits: Limits { wall_per_call: Duration::from_secs(3), ..tight_limits() }, ..grants };
    let mut sleeper = ConnectorInstance::start(shared_engine(), hostile(), &sleepy).await.unwrap();
    let mut benign = ConnectorInstance::start(shared_engine(), hostile(), &hostile_permissions(&[("mode", "benign")])).await.unwrap();
    let sleeping = tokio::spawn(async move {
        let outcome = limit_hit(sleeper.list_resources("probe", None, None).await);
        (outcome, sleeper)
    });
    // On the runtime's only worker thread, while the sleeper sleeps there.
    let page = tokio::spawn(async move { benign.list_resources("probe", None, None).await }).await.unwrap();
    assert_eq!(page.expect("another instance runs while one sleeps").resources.len(), 3);
    assert!(!sleeping.is_finished(), "the benign call came back before the sleeper's wall clock ran out");
    let ((limit, message), mut sleeper) = sleeping.await.unwrap();
    assert_eq!(limit, "wall-clock", "{message}");
    assert!(matches!(sleeper.validate().await, Err(CallError::Poisoned)), "a stopped instance is not called again");
}

/// The epoch ticker runs only while guest code can: not while the only
/// call waits on its upstream, and again as soon as a guest that loops
/// after its request is answered runs, which the CPU limit then stops.
#[tokio::test(flavor = "multi_thread")]
async fn the_epoch_ticks_only_while_a_guest_can_run() {
    // An engine of its own: no other test's calls tick it.
    let engine = engine();
    let module = load(&engine, &wasm("hostile"));
    let addr = start_misbehaving_server().await;
    let mut grants = with_server(hostile_permissions(&[("mode", "fetch"), ("url", &format!("http://{addr}/hang"))]), addr);
    grants.limits.http_timeout = Duration::from_secs(1);
    grants.limits.http_retries = 0;
    let mut waiting = ConnectorInstance::start(&engine, &module, &grants).await.unwrap();
    let before = engine.activity().ticks();
    let started = Instant::now();
    let error = connector_error(waiting.list_resources("probe", None, None).await);
    let waited = started.elapsed();
    assert!(error.to_string().contains("timeout"), "{error}");
    let ticks = engine.activity().ticks() - before;
    // About 100 while the ticker ran regardless; a few as the call starts
    // and ends (more on a loaded machine).
    assert!(ticks <= 25, "{ticks} ticks while the only call waited {waited:?} on its upstream");
    assert_eq!(engine.activity().running(), 0);

    let grants = with_server(hostile_permissions(&[("mode", "fetch-then-loop"), ("url", &format!("http://{addr}/echo"))]), addr);
    let mut looping = ConnectorInstance::start(&engine, &module, &grants).await.unwrap();
    let (limit, message) = limit_hit(looping.list_resources("probe", None, None).await);
    assert_eq!(limit, "cpu", "{message}");
    assert!(engine.activity().ticks() - before >= 100, "the loop's second of CPU was ticked");
    assert_eq!(engine.activity().running(), 0, "every call counted itself out");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let mut grants = hostile_permissions(&[("mode", "memory-bomb")]);
    grants.limits.memory_bytes = 16 << 20;
    let (limit, message) = limit_hit(attack(&grants).await);
    assert_eq!(limit, "memory", "{message}");
    assert!(message.contains("forcing trap when growing memory"), "{message}");
    asana_still_syncs().await;
}

/// A module may ask for up to 64 instances (contract 0.4.0's concurrent
/// reads); filling every one must not multiply its memory by 64.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_of_memory_bombs_holds_no_more_than_the_pool_budget() {
    let mut grants = hostile_permissions(&[("mode", "memory-bomb")]);
    grants.limits.memory_bytes = 16 << 20;
    grants.limits.pool_memory_bytes = 40 << 20;
    let mut pool = ConnectorInstance::start_pool(shared_engine(), hostile(), &grants, Some(6)).await.expect("the pool starts");
    let mut limits = vec![];
    for instance in pool.iter_mut() {
        let (limit, message) = limit_hit(instance.list_resources("probe", None, None).await);
        assert!(instance.pool_memory_used() <= 40 << 20, "the pool holds {} bytes", instance.pool_memory_used());
        if limit == "pool-memory" {
            assert!(message.contains("--max-pool-memory-mb"), "{message}");
        }
        limits.push(limit);
    }
    // The first bombs stop at their own cap, the rest at the pool's.
    assert_eq!(limits[0], "memory", "{limits:?}");
    assert!(limits.iter().filter(|l| **l == "pool-memory").count() >= 3, "{limits:?}");
    // Dropped instances give their memory back to the pool.
    let first = pool.remove(0);
    let used = first.pool_memory_used();
    drop(pool);
    assert!(first.pool_memory_used() <= 17 << 20, "{used} then {} bytes", first.pool_memory_used());
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_and_a_stack_overflow_end_only_their_call() {
    match attack(&hostile_permissions(&[("mode", "panic")])).await {
        // The guest's own panic message, from its stderr, then the trap.
        Err(CallError::Trap(text)) => {
            assert!(text.contains("the hostile connector panics on purpose") && text.contains("unreachable"), "{text}")
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    let (limit, message) = limit_hit(attack(&hostile_permissions(&[("mode", "stack-overflow")])).await);
    assert_eq!(limit, "stack", "{message}");
    // Stderr is kept only up to a cap, and writing past it is no crime.
    attack(&hostile_permissions(&[("mode", "stderr-flood"), ("lines", "2000")])).await.expect("a stderr flood is dropped past the cap, not fatal");
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_log_lines_are_cut_off_by_the_log_limit() {
    let (limit, message) = limit_hit(attack(&hostile_permissions(&[("mode", "log-flood")])).await);
    assert_eq!(limit, "log-lines", "{message}");
    assert!(message.contains("more than 1000 log lines in one call"), "{message}");
    asana_still_syncs().await;
}

/// Metadata the host would trip over later (a type declared twice, a type
/// listed under one that is not declared) stops the connector at start.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_the_host_cannot_rely_on_is_refused_at_start() {
    let refused = ConnectorInstance::start(shared_engine(), hostile(), &hostile_permissions(&[("mode", "bad-metadata")])).await.err().expect("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("metadata is not usable") && message.contains("probe is declared twice"), "{message}");
    // Thousands of types would cost the host work in every checkpoint.
    let refused = ConnectorInstance::start(shared_engine(), hostile(), &hostile_permissions(&[("mode", "many-types")])).await.err().expect("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("declares 301 resource types (at most 256)"), "{message}");
}

/// The hosts shown to the operator are those every instance of a pool
/// reaches: an instance declaring others is refused, not obeyed.
#[tokio::test(flavor = "multi_thread")]
async fn instances_of_one_module_declaring_other_hosts_are_refused() {
    let grants = hostile_permissions(&[("mode", "shifting-hosts")]);
    let refused = ConnectorInstance::start_pool(shared_engine(), hostile(), &grants, Some(2)).await.err().expect("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("declares other hosts in another instance of it"), "{message}");
    // Declaring the same hosts in each, a pool starts.
    let grants = hostile_permissions(&[("mode", "benign"), ("declare-host", "api.example.com")]);
    assert_eq!(ConnectorInstance::start_pool(shared_engine(), hostile(), &grants, Some(2)).await.expect("a pool").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_result_pages_are_refused() {
    let (limit, message) = limit_hit(attack(&hostile_permissions(&[("mode", "huge-page"), ("records", "20000")])).await);
    assert_eq!(limit, "records-per-page", "{message}");
    assert!(message.contains("20000 records in one page (at most 10000)"), "{message}");

    let nine_mib = (9 << 20).to_string();
    let (limit, message) = limit_hit(attack(&hostile_permissions(&[("mode", "huge-strings"), ("bytes", &nine_mib)])).await);
    assert_eq!(limit, "bytes-per-page", "{message}");
    // One record may carry 64 KiB: a resource is held while its children
    // are listed.
    let (limit, message) = limit_hit(attack(&hostile_permissions(&[("mode", "huge-strings"), ("bytes", "100000")])).await);
    assert_eq!(limit, "bytes-per-record", "{message}");
    assert!(message.contains("at most 65536"), "{message}");
    // Every string counts, a reference's type too.
    let (limit, message) = limit_hit(attack(&hostile_permissions(&[("mode", "huge-reference"), ("bytes", &nine_mib)])).await);
    assert_eq!(limit, "bytes-per-page", "{message}");
    let (limit, message) = limit_hit(attack(&hostile_permissions(&[("mode", "huge-reference"), ("bytes", "100000")])).await);
    assert_eq!(limit, "bytes-per-record", "{message}");

    // Past the hostcall budget the host does not even copy the page out.
    let mut grants = hostile_permissions(&[("mode", "huge-page"), ("records", "5000")]);
    grants.limits.hostcall_bytes = 256 << 10;
    let (limit, message) = limit_hit(attack(&grants).await);
    assert_eq!(limit, "hostcall-bytes", "{message}");
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_to_a_host_not_allowed_is_denied() {
    let server = start_misbehaving_server().await;
    let unlisted_server = format!("http://127.0.0.1:{}/echo", server.port());
    for url in ["https://example.com/", "http://example.com/", unlisted_server.as_str()] {
        // The server is not on the allow-list here.
        let error = connector_error(attack(&hostile_permissions(&[("mode", "fetch"), ("url", url), ("bearer", "token")])).await);
        match error {
            ConnectorError::Forbidden(m) => assert!(m.starts_with("denied: ") && m.contains("is not an allowed host"), "{m}"),
            other => panic!("{url}: expected a denial, got {other:?}"),
        }
    }
    // The connector's own declared hosts are https only.
    let declared = format!("example.com,localhost:{}", server.port());
    let error = connector_error(attack(&hostile_permissions(&[("mode", "fetch"), ("declare-host", &declared), ("url", "http://example.com/")])).await);
    assert!(matches!(&error, ConnectorError::Forbidden(m) if m.contains("plain http to example.com:80 is not allowed")), "{error:?}");
    asana_still_syncs().await;
}

/// A path whose `..` (however spelled) the URL parser would remove goes
/// nowhere: `/workspaces/%2E%2E/addUser` would have been sent as
/// `/addUser`, another endpoint than the connector's escaping named.
#[tokio::test(flavor = "multi_thread")]
async fn a_dot_segment_path_is_refused_before_it_is_sent() {
    let server = start_misbehaving_server().await;
    for path in ["x/%2E%2E/echo", "x/../echo", "x/%2e/echo"] {
        let url = format!("http://{server}/{path}");
        let grants = with_server(hostile_permissions(&[("mode", "fetch"), ("url", &url), ("bearer", "token")]), server);
        let error = connector_error(attack(&grants).await);
        assert!(format!("{error:?}").contains("a path segment . or .."), "{path}: {error:?}");
    }
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_a_host_not_allowed_is_refused() {
    let server = start_misbehaving_server().await;
    for (path, refused) in [("redirect-away", "not-allowed.example:80"), ("redirect-metadata", "169.254.169.254:80")] {
        let url = format!("http://{server}/{path}");
        let grants = with_server(hostile_permissions(&[("mode", "fetch"), ("url", &url), ("bearer", "token")]), server);
        match connector_error(attack(&grants).await) {
            ConnectorError::Forbidden(m) => assert!(m.contains(&format!("redirect refused: {refused} is not an allowed host")), "{m}"),
            other => panic!("expected the redirect refused, got {other:?}"),
        }
    }
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_to_private_addresses_are_refused() {
    let server = start_misbehaving_server().await;
    let port = server.port().to_string();
    let denial = |settings: &[(&str, &str)]| {
        let grants = hostile_permissions(settings);
        async move {
            match connector_error(attack(&grants).await) {
                ConnectorError::Forbidden(m) => m,
                other => panic!("expected a denial, got {other:?}"),
            }
        }
    };
    // Cloud metadata, not on the allow-list.
    let m = denial(&[("mode", "fetch"), ("url", "http://169.254.169.254/latest/meta-data/")]).await;
    assert!(m.contains("169.254.169.254:80 is not an allowed host"), "{m}");
    // Declared by the connector itself: IP addresses need the operator.
    let m = denial(&[("mode", "fetch"), ("declare-host", "169.254.169.254"), ("url", "https://169.254.169.254/")]).await;
    assert!(m.contains("169.254.169.254 is an IP address, which only the operator can allow"), "{m}");
    // A declared name that resolves to a private address is refused by the
    // host's resolver.
    let declared = format!("localhost:{port}");
    let m = denial(&[("mode", "fetch"), ("declare-host", &declared), ("url", &format!("https://localhost:{port}/echo"))]).await;
    assert!(m.contains("localhost resolves only to private addresses"), "{m}");

    // The same name, listed by the operator, may resolve to loopback.
    let mut grants = hostile_permissions(&[("mode", "fetch"), ("url", &format!("http://localhost:{port}/echo"))]);
    grants.extra_hosts = vec![AllowedHost::parse(&format!("localhost:{port}")).unwrap()];
    let (status, _) = single_probe(attack(&grants).await);
    assert_eq!(status, "200");
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_responses_are_capped_in_size_and_time() {
    let server = start_misbehaving_server().await;
    let fetch = |path: &str| with_server(hostile_permissions(&[("mode", "fetch"), ("url", &format!("http://{server}/{path}"))]), server);

    let mut grants = fetch("big");
    grants.limits.http_response_bytes = 1 << 20;
    let error = connector_error(attack(&grants).await);
    assert!(matches!(&error, ConnectorError::Upstream(m) if m.starts_with("too-large: limit exceeded: http-response-bytes")), "{error:?}");

    let mut grants = fetch("hang");
    grants.limits.http_timeout = Duration::from_millis(500);
    let error = connector_error(attack(&grants).await);
    assert!(matches!(&error, ConnectorError::Upstream(m) if m.starts_with("timeout: ")), "{error:?}");

    // A request that outlives the call's wall-clock budget ends the call.
    let mut grants = fetch("hang");
    grants.limits.http_timeout = Duration::from_secs(30);
    grants.limits.wall_per_call = Duration::from_millis(500);
    assert_eq!(limit_hit(attack(&grants).await).0, "wall-clock");
    asana_still_syncs().await;
}

/// An answer compressed, or cut in pieces, would carry an echoed token
/// past redaction: the host asks for neither and takes no encoded answer.
/// Nor does a URL's user name send credentials of the connector's making.
#[tokio::test(flavor = "multi_thread")]
async fn no_answer_the_host_cannot_check_for_secrets_reaches_the_connector() {
    let server = start_misbehaving_server().await;
    let fetch = |path: &str, headers: &str| {
        with_server(hostile_permissions(&[("mode", "fetch"), ("url", &format!("http://{server}/{path}")), ("bearer", "token"), ("headers", headers)]), server)
    };
    let asked = fetch("echo-encoding", "Accept-Encoding: gzip, br|Range: bytes=0-3|TE: gzip|If-Range: x");
    let (_, attributes) = single_probe(attack(&asked).await);
    assert_eq!(attribute(&attributes, "body"), "accept-encoding: identity; range: ; te: ");

    let error = connector_error(attack(&fetch("gzip", "")).await);
    assert!(matches!(&error, ConnectorError::Upstream(m) if m.contains("is encoded (gzip), which the host refuses")), "{error:?}");

    let url = format!("http://user:pw@{server}/echo");
    let grants = with_server(hostile_permissions(&[("mode", "fetch"), ("url", &url)]), server);
    let error = connector_error(attack(&grants).await);
    assert!(matches!(&error, ConnectorError::Forbidden(m) if m.contains("holds a user name or password")), "{error:?}");
}

/// A proxy in the environment would resolve names itself, past the check
/// that keeps a declared name off private addresses: the host uses none.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_in_the_environment_is_not_used() {
    let proxy = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let declared = "localhost:9";
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["sync", "--connector", wasm("hostile").to_str().unwrap(), "--out", dir.path().join("s.db").to_str().unwrap()])
        .args(["--config", "mode=fetch", "--config", &format!("declare-host={declared}"), "--config", "url=https://localhost:9/"])
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache"))
        .env("HTTPS_PROXY", &proxy_url)
        .env("HTTP_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .output()
        .expect("tether runs");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("localhost resolves only to private addresses"), "{}", stderr(&output));
    assert!(proxy.accept().is_err(), "the proxy was asked");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_never_receives_the_token() {
    let server = start_misbehaving_server().await;
    // Asking for it as config.
    let grants = with_server(hostile_permissions(&[("mode", "read-secret"), ("secret-name", "token")]), server);
    let (seen, _) = single_probe(attack(&grants).await);
    assert_eq!(seen, "<none>");

    // Having an upstream echo it back: the host attached it, and takes it
    // out of what the connector receives.
    let url = format!("http://{server}/echo");
    let grants = with_server(hostile_permissions(&[("mode", "fetch"), ("url", &url), ("bearer", "token")]), server);
    let (_, attributes) = single_probe(attack(&grants).await);
    assert_eq!(attribute(&attributes, "body"), "authorization: Bearer <redacted>");
    assert_eq!(attribute(&attributes, "x-echo-authorization"), "Bearer <redacted>");
    assert!(!format!("{attributes:?}").contains(TOKEN));
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_keys_cannot_escape_and_the_quota_holds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let mut grants = hostile_permissions(&[("mode", "storage"), ("chunk", "3000")]);
    grants.storage_root = Some(root.clone());
    grants.limits.storage_bytes = 4096;
    let page = attack(&grants).await.expect("the storage attempts are reported");
    let result = |key: &str| {
        let probe = page.resources.iter().find(|r| r.display_name == key && r.id != "get").unwrap_or_else(|| panic!("no attempt {key:?}"));
        probe.attributes.iter().find(|p| p.name == "result").unwrap().value.clone()
    };
    for bad in ["../escape", "..", "a/b", "/etc/passwd", "nul\0key", ".hidden", ""] {
        assert!(result(bad).starts_with("invalid-key: "), "{bad:?}: {}", result(bad));
    }
    assert_eq!(result("fine-key"), "ok");
    assert_eq!(result("chunk-1"), "ok");
    assert!(result("chunk-2").starts_with("quota-exceeded: "), "{}", result("chunk-2"));
    let get = page.resources.iter().find(|r| r.id == "get").unwrap();
    assert!(get.attributes[0].value.starts_with("invalid-key: "), "{:?}", get.attributes);
    let keys = page.resources.iter().find(|r| r.id == "keys").unwrap();
    assert_eq!(keys.attributes[0].value, "chunk-1,fine-key");

    // On disk: one namespace folder holding just those two files.
    let entries = |path: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(entries(dir.path()), ["storage"]);
    assert_eq!(entries(&root), ["hostile"]);
    assert_eq!(entries(&root.join("hostile")), ["chunk-1", "fine-key"]);

    // A new version dropped in under another file name keeps the same
    // namespace when the operator names the instance as before.
    let renamed = dir.path().join("hostile-2.0.wasm");
    std::fs::copy(wasm("hostile"), &renamed).unwrap();
    let module = load(shared_engine(), &renamed);
    let same_instance = Permissions { instance_name: Some("hostile".into()), ..grants.clone() };
    let mut instance = ConnectorInstance::start(shared_engine(), &module, &same_instance).await.unwrap();
    let _ = instance.list_resources("probe", None, None).await;
    assert_eq!(entries(&root), ["hostile"]);
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_truncated_and_precompiled_modules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(asana_wasm()).unwrap();
    let precompiled = shared_engine().engine().precompile_component(&real).unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("garbage.wasm", b"\0asm but not really a module at all", "is not a valid WebAssembly component"),
        ("empty.wasm", b"", "is not a WebAssembly file"),
        ("truncated.wasm", &real[..real.len() / 3], "is not a valid WebAssembly component"),
        ("precompiled.wasm", &precompiled, "is precompiled wasmtime code"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let error = format!("{:#}", shared_engine().load(&path, None).err().unwrap_or_else(|| panic!("{name} loaded")));
        assert!(error.contains(expected), "{name}: {error}");
    }
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_importing_what_the_host_does_not_offer_is_refused() {
    // What a std guest that opens a TcpStream imports (written in WAT: the
    // Debian wasm toolchain's libc has no sockets to build one from Rust).
    let dir = tempfile::tempdir().unwrap();
    let dialer = write_wat(dir.path(), "dialer.wasm", r#"(component (import "wasi:sockets/tcp-create-socket@0.2.0" (instance)))"#);
    let error = format!("{:#}", shared_engine().load(&dialer, None).err().expect("the socket dialer is refused"));
    assert!(error.contains("refused: it imports wasi:sockets/tcp-create-socket@0.2.0, which the host does not offer"), "{error}");

    let unknown = write_wat(dir.path(), "unknown.wasm", r#"(component (import "acme:exfil/tunnel" (instance)))"#);
    let error = format!("{:#}", shared_engine().load(&unknown, None).err().expect("refused"));
    assert!(error.contains("it imports acme:exfil/tunnel, which the host does not offer"), "{error}");
    asana_still_syncs().await;
}

/// Writes the component `wat` describes to `dir/name`.
fn write_wat(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat).expect("valid WAT")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn modules_of_every_supported_version_run_and_others_are_refused() {
    // 0.1.0: the hostile connector. It has neither test-connection nor
    // check-write; for it the host assumes disabling is irreversible.
    assert_eq!(hostile().api, ApiVersion::V0_1);
    let mut instance = ConnectorInstance::start(shared_engine(), hostile(), &hostile_permissions(&[("mode", "benign")])).await.unwrap();
    match instance.test_connection().await {
        Err(CallError::Connector(ConnectorError::Unsupported(m))) => {
            assert!(m.contains("new in tether:connector@0.2.0"), "{m}")
        }
        other => panic!("a 0.1.0 module has no test-connection: {other:?}"),
    }
    let account = ResourceRef { resource_type: "user".into(), id: "1".into() };
    let effect = instance.check_write(&PlannedWrite::DisableAccount(account)).await.unwrap();
    assert!(effect.irreversible && effect.description.contains("cannot say whether that can be undone"), "{effect:?}");
    let effect = instance.check_write(&PlannedWrite::Revoke { grant_id: "probe:p1:member:user:1".into() }).await.unwrap();
    assert!(!effect.irreversible);

    // 0.5.0: the Asana connector, with test-connection and check-write
    // (0.4.0's fixture is driven in its own test below).
    assert_eq!(asana().api, ApiVersion::V0_5);
    assert_eq!(load(shared_engine(), &wasm("connector-v0-4")).api, ApiVersion::V0_4);
    let sim = start_sim(OrgSpec { users: 10, teams: 1, workspaces: 1, seed: 3 }).await;
    let mut instance = ConnectorInstance::start(shared_engine(), asana(), &permissions_for(&sim.base_url(), sim.addr(), TOKEN)).await.unwrap();
    let owner = sim.org().token_owner().unwrap().clone();
    assert_eq!(instance.test_connection().await.unwrap(), format!("connected to Asana as {} <{}>", owner.name, owner.email));
    let effect = instance.check_write(&PlannedWrite::Revoke { grant_id: format!("license:{}:view only:assigned:user:7", owner.gid) }).await.unwrap();
    assert!(effect.irreversible && effect.description.contains("Asana cannot reactivate"), "{effect:?}");

    // 0.2.0: its new function, and a whole sync through the same driver.
    let widgets = load(shared_engine(), &wasm("connector-v0-2"));
    assert_eq!(widgets.api, ApiVersion::V0_2);
    let grants = Permissions { config: ConnectorConfig::new([("greeting".to_string(), "the tests".to_string())]), ..Permissions::default() };
    let mut instance = ConnectorInstance::start(shared_engine(), &widgets, &grants).await.unwrap();
    assert_eq!(instance.api_version(), ApiVersion::V0_2);
    assert_eq!(instance.metadata.name, "widgets");
    assert_eq!(instance.test_connection().await.unwrap(), "connected as the tests");
    let dir = tempfile::tempdir().unwrap();
    let summary = sync_with(shared_engine(), &widgets, &grants, &dir.path().join("sync.db")).await.unwrap();
    assert_eq!((summary.resources.clone(), summary.entitlements), (vec![("widget".to_string(), 2)], 2));

    // Incompatible: a newer export, an import of an unknown version, no export.
    let refused = |name: &str, wat: &str| {
        let path = write_wat(dir.path(), name, wat);
        format!("{:#}", shared_engine().load(&path, None).err().unwrap_or_else(|| panic!("{name} loaded")))
    };
    let error = refused("v9.wasm", r#"(component (instance $none) (export "tether:connector/connector@9.0.0" (instance $none)))"#);
    assert!(
        error
            .contains("it exports tether:connector/connector@9.0.0, but this host supports tether:connector@0.1.0 and @0.2.0 and @0.3.0 and @0.4.0 and @0.5.0"),
        "{error}"
    );
    let error = refused("http3.wasm", r#"(component (import "tether:connector/http@0.3.0" (instance)))"#);
    assert!(error.contains("it imports tether:connector/http@0.3.0, but this host offers tether:connector/http@0.1.0"), "{error}");
    let error = refused("nothing.wasm", "(component)");
    assert!(error.contains("it does not export tether:connector/connector"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_unsigned_module_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let module = path("hostile.wasm");
    std::fs::copy(wasm("hostile"), &module).unwrap();

    let run = tether(&["module", "keygen", "--out", &path("ops")]);
    assert!(run.status.success(), "{}", stderr(&run));
    let run = tether(&["module", "sign", "--key", &path("ops.key"), &module]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(Path::new(&path("hostile.wasm.sig")).is_file());
    let run = tether(&["module", "verify", "--key", &path("ops.pub"), &module]);
    assert!(run.status.success(), "{}", stderr(&run));
    // A signature may be written over, anything else not (a sync file
    // named by mistake became two lines of text).
    std::fs::write(path("precious.db"), b"SQLite format 3\0").unwrap();
    let run = tether(&["module", "sign", "--key", &path("ops.key"), &module, "--signature", &path("precious.db")]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("exists and is not a signature: refusing to write over it"), "{}", stderr(&run));
    assert_eq!(std::fs::read(path("precious.db")).unwrap(), b"SQLite format 3\0");
    let run = tether(&["module", "sign", "--key", &path("ops.key"), &module, "--signature", &path("hostile.wasm.sig")]);
    assert!(run.status.success(), "a signature is replaced: {}", stderr(&run));

    let signer = tether_host::runtime::trust::parse_verifying_key(&path("ops.pub")).unwrap();
    let trust = ModuleTrust { signer: Some(signer), ..ModuleTrust::default() };
    let signed = shared_engine().load_trusted(Path::new(&module), &trust).expect("a signed module loads");
    ConnectorInstance::start(shared_engine(), &signed, &hostile_permissions(&[])).await.expect("and runs");

    // Tampered, yet still a valid component: one custom section appended.
    let mut bytes = std::fs::read(&module).unwrap();
    bytes.extend_from_slice(&[0, 5, 4, b'e', b'v', b'i', b'l']);
    std::fs::write(&module, &bytes).unwrap();
    shared_engine().load(Path::new(&module), None).expect("without a signature requirement it would load");
    let error = format!("{:#}", shared_engine().load_trusted(Path::new(&module), &trust).err().expect("tampered is refused"));
    assert!(error.contains("is not a good signature by key"), "{error}");
    let run = tether(&["module", "verify", "--key", &path("ops.pub"), &module]);
    assert_eq!(run.status.code(), Some(1));
    let out = path("sync.db");
    let run = tether(&["sync", "--connector", &module, "--require-signature", &path("ops.pub"), "--out", &out, "--no-cache"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("is not a good signature by key"), "{}", stderr(&run));

    // Unsigned.
    std::fs::remove_file(path("hostile.wasm.sig")).unwrap();
    let run = tether(&["sync", "--connector", &module, "--require-signature", &path("ops.pub"), "--out", &out, "--no-cache"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("is not signed: no signature at"), "{}", stderr(&run));
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sync_leaves_the_last_good_sync_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let good = sync_with(shared_engine(), hostile(), &hostile_permissions(&[("mode", "benign")]), &out).await.expect("a benign sync");
    let error = sync_with(shared_engine(), hostile(), &hostile_permissions(&[("mode", "memory-bomb")]), &out).await.expect_err("the bomb fails");
    assert!(format!("{error:#}").contains("limit exceeded: memory"), "{error:#}");

    let file = SyncFile::open_existing(&out).unwrap();
    let last_good = file.last_good_run().unwrap().unwrap();
    assert_eq!(last_good.id, good.run_id);
    let probes: Vec<String> = file.resources(last_good.id, Some("probe")).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(probes, ["p1", "p2", "p3"]);
    let last = file.last_run().unwrap().unwrap();
    assert_eq!(last.status, "failed");
    assert!(last.error.unwrap().contains("limit exceeded: memory"));
    asana_still_syncs().await;
}

/// A record with an empty id (here a resource) fails the sync, naming what
/// was empty, and nothing of its page is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_with_an_empty_id_fails_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let error = sync_with(shared_engine(), hostile(), &hostile_permissions(&[("mode", "empty-id")]), &out).await.expect_err("refused");
    assert!(format!("{error:#}").contains("the connector reported a resource with an empty type or id"), "{error:#}");
    let file = SyncFile::open_existing(&out).unwrap();
    let last = file.last_run().unwrap().unwrap();
    assert_eq!(last.status, "failed");
    assert!(file.resources(last.id, None).unwrap().is_empty(), "nothing of the page is written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_load_reuses_the_compiled_code() {
    let dir = tempfile::tempdir().unwrap();
    let first = engine_caching_in(Some(dir.path())).load(&wasm("hostile"), None).unwrap();
    assert!(!first.from_cache);
    let engine = engine_caching_in(Some(dir.path()));
    let second = engine.load(&wasm("hostile"), None).unwrap();
    assert!(second.from_cache, "the second load reads the cache");
    assert_eq!(second.digest, first.digest);
    let mut instance = ConnectorInstance::start(&engine, &second, &hostile_permissions(&[("mode", "benign")])).await.unwrap();
    assert_eq!(instance.list_resources("probe", None, None).await.unwrap().resources.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn table_instance_and_memory_limits_apply_from_instantiation() {
    let start_with = |limits: Limits| async move {
        let grants = Permissions { limits, ..hostile_permissions(&[]) };
        match ConnectorInstance::start(shared_engine(), hostile(), &grants).await {
            Ok(_) => panic!("the connector started within {:?}", grants.limits),
            Err(error) => format!("{error:#}"),
        }
    };
    let error = start_with(Limits { table_elements: 1, ..tight_limits() }).await;
    assert!(error.contains("limit exceeded: table-elements"), "{error}");
    let error = start_with(Limits { instances: 1, ..tight_limits() }).await;
    assert!(error.contains("limit exceeded: instances"), "{error}");
    let error = start_with(Limits { memory_bytes: 64 << 10, ..tight_limits() }).await;
    assert!(error.contains("limit exceeded: memory"), "{error}");
    asana_still_syncs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_flood_is_cut_off_per_call_and_paced_per_host() {
    let sim = start_sim(OrgSpec { users: 10, teams: 1, workspaces: 1, seed: 5 }).await;
    let url = format!("{}/users/me", sim.base_url());
    let flood = [("mode", "request-flood"), ("url", url.as_str()), ("bearer", "token")];

    // At most 100 requests in one call.
    let (limit, detail) = limit_hit(attack(&with_server(hostile_permissions(&flood), sim.addr())).await);
    assert_eq!(limit, "http-requests-per-call", "{detail}");
    assert_eq!(sim.request_count(), 100);

    // A per-host budget of 3 a minute: the fourth request waits, and the
    // call's wall-clock limit ends the wait.
    let mut grants = with_server(hostile_permissions(&flood), sim.addr());
    grants.limits.upstream.requests_per_minute = Some(3);
    grants.limits.wall_per_call = Duration::from_secs(2);
    let (limit, detail) = limit_hit(attack(&grants).await);
    assert_eq!(limit, "wall-clock", "{detail}");
    assert_eq!(sim.request_count(), 100 + 3, "only the budget got through");
    asana_still_syncs().await;
}

// ---- Hardening (issue 7): what an outside review broke ----

/// Runs `tether` with `args`, ending it if it outlives `deadline` (a guest
/// the host failed to stop): returns None then.
fn tether_within(args: &[&str], deadline: Duration) -> Option<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tether runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

#[test]
fn every_write_command_ends_a_looping_guest_at_the_cpu_limit() {
    let hostile = wasm("hostile");
    let writes: [&[&str]; 4] = [
        &["grant", "--entitlement", "probe:p1:member", "--principal", "user:1"],
        &["revoke", "--grant", "probe:p1:member:user:1"],
        &["create-account", "--email", "new@example.com"],
        &["disable-account", "--user", "1", "--yes"],
    ];
    for write in writes {
        let mut args: Vec<&str> = write.to_vec();
        args.extend(["--connector", hostile.to_str().unwrap(), "--config", "mode=loop-in-writes", "--cpu-seconds", "0.5", "--call-timeout", "60"]);
        let output = tether_within(&args, Duration::from_secs(45)).unwrap_or_else(|| panic!("`tether {}` never stopped the looping guest", write[0]));
        assert_eq!(output.status.code(), Some(1), "{}: {}", write[0], stderr(&output));
        assert!(stderr(&output).contains("limit exceeded: cpu"), "{}: {}", write[0], stderr(&output));
    }
}

/// Syncs the hostile connector (`settings`) under `limits` into `out`.
async fn hostile_sync(
    settings: &[(&str, &str)],
    limits: tether_host::runtime::limits::SyncLimits,
    out: &Path,
) -> anyhow::Result<tether_host::sync::SyncSummary> {
    let mut file = SyncFile::open_for_sync(out)?;
    let mut instance = ConnectorInstance::start(shared_engine(), hostile(), &hostile_permissions(settings)).await?;
    let options = tether_host::sync::SyncOptions { limits, ..Default::default() };
    tether_host::sync::run_with(&mut instance, &mut file, &hostile().digest, &indicatif::ProgressBar::hidden(), &options).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_without_end_is_stopped_by_the_sync_limits() {
    use tether_host::runtime::limits::SyncLimits;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let good = hostile_sync(&[("mode", "benign")], SyncLimits::default(), &out).await.expect("a benign sync");
    let unbounded =
        SyncLimits { records: u64::MAX, depth: u32::MAX, pages_per_listing: u64::MAX, duration: Duration::from_secs(3600), ..SyncLimits::default() };
    let cases = [
        ("nest-forever", SyncLimits::default(), "limit exceeded: nesting-depth"),
        ("nest-forever", SyncLimits { records: 300, ..unbounded.clone() }, "limit exceeded: records-per-sync"),
        ("endless-pages", SyncLimits { pages_per_listing: 50, ..unbounded.clone() }, "limit exceeded: pages-per-listing"),
        ("nest-forever", SyncLimits { duration: Duration::from_millis(300), ..unbounded.clone() }, "limit exceeded: sync-duration"),
    ];
    for (mode, limits, expected) in cases {
        let error = hostile_sync(&[("mode", mode)], limits, &out).await.expect_err("the sync is stopped");
        assert!(format!("{error:#}").contains(expected), "{mode}: {error:#}");
        let file = SyncFile::open_existing(&out).unwrap();
        assert_eq!(file.last_good_run().unwrap().unwrap().id, good.run_id, "the last good sync stays readable");
        let last = file.last_run().unwrap().unwrap();
        assert_eq!(last.status, "failed");
        assert!(last.error.unwrap().contains(expected));
    }
    let file = SyncFile::open_existing(&out).unwrap();
    let probes: Vec<String> = file.resources(good.run_id, Some("probe")).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(probes, ["p1", "p2", "p3"]);
}

/// No terminal control in what the host printed: no C0 but newline, no
/// DEL, no C1.
fn assert_terminal_safe(what: &str, text: &str) {
    let bad: Vec<char> = text.chars().filter(|&c| (c.is_control() && c != '\n') || ('\u{80}'..='\u{9f}').contains(&c)).collect();
    assert!(bad.is_empty(), "{what} carries control characters {bad:?}: {text:?}");
    for line in text.lines() {
        assert!(!line.trim_start().starts_with("INFO tether"), "{what}: a guest line passes for a host line: {line:?}");
    }
}

#[test]
fn connector_text_reaches_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let hostile = wasm("hostile");
    let sync = |mode: &str| {
        let config = format!("mode={mode}");
        let args = ["sync", "--connector", hostile.to_str().unwrap(), "--config", &config, "--out", out.to_str().unwrap()];
        Command::new(env!("CARGO_BIN_EXE_tether")).args(args).env("TETHER_LOG", "info").output().unwrap()
    };
    let logged = sync("terminal");
    assert!(logged.status.success(), "{}", stderr(&logged));
    let text = stderr(&logged);
    assert!(text.contains("\\x1b[2J") && text.contains("\\nINFO tether: sync finished"), "the log line is shown, escaped: {text}");
    assert_terminal_safe("sync's log", &text);
    assert_terminal_safe("sync's summary", &String::from_utf8_lossy(&logged.stdout));

    for what in ["resources", "grants", "entitlements"] {
        let shown = tether(&["inspect", out.to_str().unwrap(), what]);
        assert!(shown.status.success(), "{}", stderr(&shown));
        let table = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert_terminal_safe("inspect", &table);
        if what == "resources" {
            assert!(table.contains("name\\x1b[2J"), "{table}");
        }
        let json = tether(&["inspect", out.to_str().unwrap(), what, "--format", "json"]);
        assert!(json.status.success(), "{}", stderr(&json));
        let lines = String::from_utf8_lossy(&json.stdout).into_owned();
        assert_terminal_safe("inspect --format json", &lines);
        for line in lines.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("still JSON");
        }
    }
    for mode in ["terminal-error", "terminal-panic"] {
        let failed = sync(mode);
        assert_eq!(failed.status.code(), Some(1));
        let text = stderr(&failed);
        assert!(text.contains("\\x1b]0;pwned\\x07"), "{mode}: {text}");
        assert_terminal_safe(mode, &text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_cache_entry_is_never_run() {
    let cache = tempfile::tempdir().unwrap();
    let describe = |connector: &Path| {
        let args = ["describe", "--connector", connector.to_str().unwrap(), "--cache-dir", cache.path().to_str().unwrap()];
        let output = tether(&args);
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(describe(&asana_wasm()).starts_with("asana "));
    assert!(describe(&wasm("hostile")).starts_with("hostile "));
    let entries: Vec<PathBuf> =
        std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let asana_digest = asana().digest.clone();
    let (asana_entry, other) = if entries[0].to_string_lossy().contains(&asana_digest) { (&entries[0], &entries[1]) } else { (&entries[1], &entries[0]) };
    // Swap the two entries: the Asana module's name now holds the hostile code.
    let swap = cache.path().join("swap");
    std::fs::rename(asana_entry, &swap).unwrap();
    std::fs::rename(other, asana_entry).unwrap();
    std::fs::rename(&swap, other).unwrap();

    let shown = describe(&asana_wasm());
    assert!(shown.starts_with("asana ") && shown.contains(&asana_digest), "the Asana module's own code ran: {shown}");
    // Recompiled, so the entry is good again, and used.
    let engine = engine_caching_in(Some(cache.path()));
    let again = engine.load(&asana_wasm(), None).unwrap();
    assert!(again.from_cache);
    let instance = ConnectorInstance::start(&engine, &again, &Permissions::default()).await.unwrap();
    assert_eq!(instance.metadata.name, "asana");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_cannot_choose_its_storage_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    std::fs::create_dir_all(root.join("asana")).unwrap();
    std::fs::write(root.join("asana").join("sync-state"), b"the Asana instance's").unwrap();
    // A module calling itself "asana", run as the operator's instance "intruder".
    let mut grants = hostile_permissions(&[("mode", "storage"), ("declare-name", "asana")]);
    grants.storage_root = Some(root.clone());
    grants.instance_name = Some("intruder".into());
    let page = attack(&grants).await.expect("the storage attempts are reported");
    let keys = page.resources.iter().find(|r| r.id == "keys").unwrap();
    assert!(!keys.attributes[0].value.contains("sync-state"), "{:?}", keys.attributes);
    assert_eq!(std::fs::read(root.join("asana").join("sync-state")).unwrap(), b"the Asana instance's");
    assert!(root.join("intruder").join("fine-key").is_file(), "it wrote into its instance's namespace");

    // `describe` says which namespace a run uses.
    let shown = tether(&["describe", "--connector", wasm("hostile").to_str().unwrap(), "--instance", "intruder"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("storage namespace intruder"), "{}", String::from_utf8_lossy(&shown.stdout));
    let bad = tether(&["describe", "--connector", wasm("hostile").to_str().unwrap(), "--instance", "../asana"]);
    assert_eq!(bad.status.code(), Some(2), "a bad instance name is a usage error");

    // Default names come from the file name: two cleaned alike stay apart.
    let namespace = |file: &str| {
        let path = dir.path().join(file);
        std::fs::copy(wasm("hostile"), &path).unwrap();
        let shown = String::from_utf8_lossy(&tether(&["describe", "--connector", path.to_str().unwrap()]).stdout).into_owned();
        shown.lines().find_map(|l| l.split("storage namespace ").nth(1)).map(str::to_string).unwrap_or_else(|| panic!("{shown}"))
    };
    let (dotted, underscored) = (namespace("some.thing.wasm"), namespace("some_thing.wasm"));
    assert!(dotted.starts_with("some_thing-") && underscored.starts_with("some_thing"), "{dotted} {underscored}");
    assert_ne!(dotted, underscored);
}

#[test]
fn secrets_too_short_to_redact_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let run = tether(&[
        "sync",
        "--connector",
        wasm("hostile").to_str().unwrap(),
        "--config",
        "mode=benign",
        "--secret",
        "token=literal:abc",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let text = stderr(&run);
    assert!(text.contains("secret token is 3 bytes long") && text.contains("at least 8 bytes"), "{text}");
    assert!(!text.contains("abc"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_eight_byte_secret_echoed_back_is_redacted() {
    let server = start_misbehaving_server().await;
    let mut grants = with_server(hostile_permissions(&[("mode", "fetch"), ("url", &format!("http://{server}/echo")), ("bearer", "token")]), server);
    grants.secrets = Arc::new(Secrets::resolve(&["token=literal:8bytes!!".parse().unwrap()]).unwrap());
    let (_, attributes) = single_probe(attack(&grants).await);
    assert_eq!(attribute(&attributes, "body"), "authorization: Bearer <redacted>");
}

#[test]
fn a_connector_that_cannot_say_still_needs_yes_to_disable_an_account() {
    let hostile = wasm("hostile");
    let args = ["disable-account", "--user", "1", "--connector", hostile.to_str().unwrap(), "--config", "mode=benign"];
    let refused = tether(&args);
    assert_eq!(refused.status.code(), Some(1));
    let text = stderr(&refused);
    assert!(text.contains("refusing a write that cannot be undone without --yes") && text.contains("tether:connector@0.1.0"), "{text}");
    let mut confirmed = args.to_vec();
    confirmed.push("--yes");
    let run = tether(&confirmed);
    assert!(stderr(&run).contains("unsupported: no writes"), "with --yes the write is attempted: {}", stderr(&run));
}

/// A resume goes on only under the same config and the same secrets: where
/// every customer shares one URL (Asana), the token picks the organisation,
/// and a resume under another token mixed two orgs in one "good" run. The
/// fingerprint is kept in the sync file, which auditors are given: it is
/// salted and slow, so a weak secret cannot be found by hashing guesses.
#[tokio::test(flavor = "multi_thread")]
async fn the_config_fingerprint_a_resume_checks_covers_the_secrets() {
    let with_token = |token: &str| Permissions {
        secrets: Arc::new(Secrets::resolve(&[format!("token=literal:{token}").parse().unwrap()]).unwrap()),
        ..hostile_permissions(&[("mode", "benign")])
    };
    let org_a = ConnectorInstance::start(shared_engine(), hostile(), &with_token("token-of-org-a")).await.unwrap();
    let again = ConnectorInstance::start(shared_engine(), hostile(), &with_token("token-of-org-a")).await.unwrap();
    let org_b = ConnectorInstance::start(shared_engine(), hostile(), &with_token("token-of-org-b")).await.unwrap();
    let a = org_a.config_fingerprint(None);
    assert!(again.has_config(&a), "the same config and secrets");
    assert!(!org_b.has_config(&a), "another token");
    assert_ne!(a, org_a.config_fingerprint(None), "salted anew for each run");
    assert!(a.starts_with("pbkdf2-sha256-100k."), "{a}");
    assert!(!a.contains("token-of-org-a"));
    assert!(!org_a.has_config("0123abcd"), "an unsalted digest of an older tether is not taken for a match");
}

/// An upstream nothing should reach: a listener whose queue stays empty
/// unless a request was let out.
fn untouched_upstream() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/users/42/deactivate", listener.local_addr().unwrap());
    (listener, url)
}

/// Only the writes the operator confirmed may change the upstream: a
/// check-write (asked before `--yes`) or a listing that sends anything but
/// a GET is refused, and nothing leaves the host.
#[tokio::test(flavor = "multi_thread")]
async fn only_a_write_call_may_send_more_than_get() {
    let (upstream, url) = untouched_upstream();
    let addr = upstream.local_addr().unwrap();
    let widgets = load(shared_engine(), &wasm("connector-v0-4"));
    let grants = with_server(hostile_permissions(&[("write-in-check", &url)]), addr);
    let mut instance = ConnectorInstance::start(shared_engine(), &widgets, &grants).await.expect("starts");
    let account = ResourceRef { resource_type: "user".into(), id: "42".into() };
    match instance.check_write(&PlannedWrite::DisableAccount(account)).await {
        Err(CallError::Connector(ConnectorError::Forbidden(why))) => assert!(why.contains("only GET is sent outside a write call"), "{why}"),
        other => panic!("expected the write in check-write to be refused, got {other:?}"),
    }
    for method in ["post", "put", "patch", "delete"] {
        let grants = with_server(hostile_permissions(&[("mode", "fetch"), ("method", method), ("url", &url)]), addr);
        match connector_error(attack(&grants).await) {
            ConnectorError::Forbidden(why) => assert!(why.contains("only GET is sent outside a write call"), "{method}: {why}"),
            other => panic!("{method}: expected a refusal, got {other:?}"),
        }
    }
    assert!(upstream.accept().is_err(), "a request reached the upstream");
}

/// A connector logging as fast as it may per call is held to the pool's
/// log rate: lines past it are dropped and counted, and the sync goes on.
#[test]
fn a_log_flood_is_held_to_the_log_rate() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["sync", "--connector", wasm("hostile").to_str().unwrap(), "--out", dir.path().join("s.db").to_str().unwrap()])
        .args(["--config", "mode=log-pages", "--config", "pages=40", "--max-log-kb-per-second", "4"])
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache"))
        .output()
        .expect("tether runs");
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    // 40 pages of 900 lines of 4 KB would be 144 MB; the burst is 64 KiB
    // and the sync takes a few seconds at most.
    assert!(log.len() < 1 << 20, "{} bytes of log", log.len());
    assert!(log.contains("log line(s) of this connector dropped: more than 4096 bytes a second"), "{}", &log[log.len().saturating_sub(2000)..]);
}

/// A module whose compile would take minutes or gigabytes (11 bytes a
/// block of Cranelift work) is compiled in a child process, which is
/// stopped at the compile limits: the error names the limit, and the host
/// goes on compiling good modules.
#[test]
fn a_module_too_costly_to_compile_is_stopped_at_the_compile_limits() {
    use tether_host::runtime::compile::{CompileLimits, Compiler};
    let dir = tempfile::tempdir().unwrap();
    let engine_with = |limits: CompileLimits| ConnectorEngine::with_compiler(None, Compiler { exe: env!("CARGO_BIN_EXE_tether").into(), limits }).unwrap();
    // About 34 s of CPU compiled whole.
    let slow = dir.path().join("slow.wasm");
    std::fs::write(&slow, compile_bomb(4_000, 1_000)).unwrap();
    let cpu_bound = engine_with(CompileLimits { cpu: Duration::from_secs(1), wall: Duration::from_secs(120), memory_bytes: 8 << 30 });
    let started = Instant::now();
    let err = format!("{:#}", cpu_bound.load(&slow, None).err().expect("stopped"));
    assert!(err.contains("limit exceeded: compile") && err.contains("of CPU") && err.contains("cannot compile"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "stopped near its second of CPU, not after {:?}", started.elapsed());

    // About 2.4 GB compiled whole.
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, compile_bomb(5_000, 5_000)).unwrap();
    let memory_bound = engine_with(CompileLimits { cpu: Duration::from_secs(600), wall: Duration::from_secs(600), memory_bytes: 300 << 20 });
    let err = format!("{:#}", memory_bound.load(&big, None).err().expect("stopped"));
    assert!(err.contains("limit exceeded: compile") && err.contains("more than 300 MiB of memory"), "{err}");
    // The same limits let a real connector through.
    let module = memory_bound.load(&asana_wasm(), None).expect("the Asana connector compiles within them");
    assert_eq!(module.api, ApiVersion::V0_5);
}
