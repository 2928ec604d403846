//! `tether serve` as an operator runs it: the binary, a config file, the
//! simulator; driven only through HTTP, files and signals. Every JSON
//! answer is checked against docs/openapi.yaml.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use asana_sim::{Org, OrgSpec, SimConfig, SimHandle};
use serde_json::{json, Value};

use crate::support::process::free_port;
use crate::support::{asana_wasm, compile_bomb, repo_root, start_sim, start_sim_with, team_and_outsider, wasm};

const TOKEN: &str = "test-api-token-0123456789";

fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("tether-test-cache")
}

/// A running `tether serve`; killed if the test ends early.
pub(crate) struct Served {
    child: Child,
    base: String,
    log: PathBuf,
    client: reqwest::Client,
    doc: Value,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(config: &Path, port: u16, log: &Path) -> Child {
    let log_file = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .env("TETHER_API_TOKEN", TOKEN)
        .env("SIM_TOKEN", "sim-token")
        .env("XDG_CACHE_HOME", cache_dir())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("tether serve starts")
}

fn openapi() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo_root().join("docs/openapi.yaml")).unwrap()).expect("docs/openapi.yaml is YAML")
}

impl Served {
    /// Starts the server and waits (polling /readyz) until it is ready.
    pub(crate) async fn start(config: &Path, dir: &Path) -> Served {
        let served = Served::launch(config, dir);
        served.wait_ready().await;
        served
    }

    /// Starts the server without waiting for it.
    fn launch(config: &Path, dir: &Path) -> Served {
        let port = free_port();
        let log = dir.join(format!("serve-{port}.log"));
        let child = spawn_serve(config, port, &log);
        Served { child, base: format!("http://127.0.0.1:{port}"), log, client: reqwest::Client::new(), doc: openapi() }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self.client.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "not ready in time; log:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the API takes `token`, failing with `what` after `within`.
    async fn until_token_works(&self, token: &str, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while self.call_with("GET", "/v1/instances", None, Some(token)).await.0 != 200 {
            assert!(Instant::now() < deadline, "{what}: {}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a request with the token; checks the answer against the
    /// OpenAPI document; returns the status and the JSON body.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, Some(TOKEN)).await
    }

    async fn call_with(&self, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
        let method_value = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method_value, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        check_against_openapi(&self.doc, method, path, status, &value);
        (status, value)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, value) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {value}");
        value
    }

    pub(crate) async fn metrics(&self) -> String {
        let r = self.client.get(format!("{}/metrics", self.base)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub(crate) async fn instance(&self, name: &str) -> Value {
        self.get(&format!("/v1/instances/{name}")).await
    }

    /// Polls `check` on the instance until it holds.
    pub(crate) async fn until(&self, name: &str, what: &str, within: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let instance = self.instance(name).await;
            if check(&instance) {
                return instance;
            }
            assert!(Instant::now() < deadline, "{what} did not happen in {within:?}: {instance:#}\nlog:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/v1/instances` once it shows a config reload refused.
    async fn reload_refused(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.get("/v1/instances").await;
            if list["config_reload_refusal"].is_object() {
                return list;
            }
            assert!(Instant::now() < deadline, "no reload refused: {list}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit(within)
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not stop within {within:?}; log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of a metric line `name{labels} value` (0 when absent).
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) fn asana_instance(name: &str, module: &Path, sim: &SimHandle, schedule: &str, extra: &str) -> String {
    format!(
        r#"
[instances.{name}]
module = "{module}"
allowed_hosts = ["{addr}", "app.asana.com"]
{extra}
[instances.{name}.config]
asana-api-url = "{url}"
[instances.{name}.secrets]
token = "env:SIM_TOKEN"
[instances.{name}.schedule]
{schedule}
"#,
        module = module.display(),
        addr = sim.addr(),
        url = sim.base_url()
    )
}

pub(crate) fn server_section(dir: &Path) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\napi_token = \"env:TETHER_API_TOKEN\"\nwatch_interval = \"200ms\"\ngrace_period = \"20s\"\n",
        dir.join("data").display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_is_refused_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        r#"
data_dir = "above-its-section"
[server]
api_token = "literal:oops-a-token-inline"
colour = "blue"
max_concurrent_syncs = 0

[instances.a]
module = "missing.wasm"
colour = "red"
[instances.a.secrets]
token = "hunter2-the-token"
[instances.a.schedule]
interval = "soon"
[instances.a.limits]
max-memory-mb = "lots"
no-such-limit = 3

[instances.b]
module = "also-missing.wasm"
allowed_hosts = ["ftp://example.com"]
[instances.b.schedule]
cron = "every tuesday"

[instances.c]
module = "also-missing.wasm"
[instances.c.schedule]
cron = "0 0 30 2 *"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether")).args(["serve", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = config.display().to_string();
    for expected in [
        "[server] data_dir: missing",
        "[server] api_token: secrets are never written in the config file",
        "[server] colour: unknown key",
        "[server] max_concurrent_syncs: 0 is not from 1 to 4096",
        "top level, data_dir: unknown key (known: [server] and [instances.NAME]; keys such as data_dir go under [server])",
        "[instances.a] module: no file at",
        "[instances.a] colour: unknown key",
        "[instances.a] secrets.token: a secret is a reference",
        "[instances.a] schedule.interval: \"soon\" is not a duration",
        "[instances.a] limits.max-memory-mb: expected a number",
        "[instances.a] limits.no-such-limit: unknown limit",
        "[instances.b] module: no file at",
        "[instances.b] allowed_hosts[0]: scheme \"ftp\" is not http or https",
        "[instances.b] schedule.cron: \"every tuesday\" is not a cron expression",
        "[instances.c] schedule.cron: \"0 0 30 2 *\" never fires",
    ] {
        assert!(err.contains(&format!("{file}: {expected}")), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("oops-a-token-inline"), "an inline secret is never echoed: {err}");

    // The example in docs/ is well-formed: with its env vars set, only the
    // files it points at outside this repository are missing.
    let example = repo_root().join("docs/serve.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--check", "--config", example.to_str().unwrap()])
        .env("TETHER_API_TOKEN", TOKEN)
        .env("ASANA_TOKEN", "an-asana-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(problems.len(), 2, "{err}");
    assert!(problems[0].contains("[instances.asana] module: no file at /opt/tether/modules/tether-asana.wasm"), "{err}");
    assert!(problems[1].contains("[instances.asana] public_keys[0]: cannot read public key /etc/tether/keys/release.pub"), "{err}");
}

/// A check writes nothing of the server's: a config is often checked on a
/// build machine, without the server's data_dir, caches or rights to them.
#[tokio::test(flavor = "multi_thread")]
async fn a_check_writes_nothing() {
    let sim = start_sim(OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 3 }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    let mut text = server_section(dir.path());
    text += &format!("cache_dir = \"{}\"\n", dir.path().join("cache").display());
    text += &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "");
    std::fs::write(&config, text).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--check", "--config", config.to_str().unwrap()])
        .env("SIM_TOKEN", "sim-token")
        .env("TETHER_API_TOKEN", TOKEN)
        .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("1 instance(s), every module verified and validated"), "{check:?}");
    let left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["serve.toml"], "no data_dir, audit log, storage or cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_syncs_on_schedule_beside_a_looping_connector_and_serves_the_api() {
    let sim = start_sim(OrgSpec { users: 30, teams: 3, workspaces: 1, seed: 7 }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    let mut text = server_section(dir.path());
    text += &asana_instance("asana", &asana_wasm(), &sim, "interval = \"2s\"", "");
    // Loops in every listing until its CPU limit ends the call.
    text += &format!(
        r#"
[instances.looping]
module = "{}"
[instances.looping.config]
mode = "infinite-loop"
[instances.looping.schedule]
interval = "1s"
backoff = "3s"
max_backoff = "6s"
[instances.looping.limits]
cpu-seconds = 0.3
"#,
        wasm("hostile").display()
    );
    // Grabs memory until its limit stops it.
    text += &format!(
        r#"
[instances.hungry]
module = "{}"
[instances.hungry.config]
mode = "memory-bomb"
declare-host = "api.example.com"
[instances.hungry.schedule]
interval = "1s"
backoff = "1s"
max_backoff = "2s"
[instances.hungry.limits]
max-memory-mb = 16
"#,
        wasm("hostile").display()
    );
    std::fs::write(&config, text).unwrap();
    let mut served = Served::start(&config, dir.path()).await;
    let started = Instant::now();

    // Health checks need no token; everything else does.
    for path in ["/healthz", "/readyz"] {
        let (status, _) = served.call_with("GET", path, None, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = served.call_with("GET", "/v1/instances", None, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = served.call_with("GET", "/v1/instances", None, Some("wrong-token-wrong-token")).await;
    assert_eq!(status, 401);

    // Three scheduled Asana syncs (at 0, 2 and 4 s) while the other
    // instance loops and fails beside it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = served.metrics().await;
        if metric(&m, "tether_syncs_total", &[("instance", "asana"), ("outcome", "succeeded")]) >= 3.0 {
            assert!(metric(&m, "tether_syncs_total", &[("instance", "looping"), ("outcome", "failed")]) >= 1.0, "{m}");
            assert!(metric(&m, "tether_limit_violations_total", &[("instance", "looping"), ("limit", "cpu")]) >= 1.0, "{m}");
            assert!(metric(&m, "tether_limit_violations_total", &[("instance", "hungry"), ("limit", "memory")]) >= 1.0, "{m}");
            assert!(metric(&m, "tether_upstream_requests_total", &[("instance", "asana"), ("host", "127.0.0.1"), ("status", "200")]) > 10.0, "{m}");
            assert!(metric(&m, "tether_records_written_total", &[("instance", "asana"), ("kind", "grants")]) > 0.0, "{m}");
            assert!(metric(&m, "tether_module_loads_total", &[("instance", "asana"), ("outcome", "loaded")]) == 1.0, "{m}");
            assert!(m.contains("tether_sync_duration_seconds_bucket"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the Asana syncs did not run on schedule:\n{m}\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On schedule: the third sync started about 4 s after the first,
    // however long the looping instance spins.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());

    let list = served.get("/v1/instances").await;
    let names: Vec<&str> = list["instances"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["asana", "hungry", "looping"]);
    let asana = served.instance("asana").await;
    assert_eq!(asana["module"]["name"], "asana");
    assert_eq!(asana["module"]["declared_hosts"], json!(["app.asana.com"]));
    assert_eq!(asana["last_sync"]["outcome"], "succeeded");
    assert_eq!(asana["schedule"], "every 2s");
    assert!(asana["next_run"].is_string());
    let looping = served.instance("looping").await;
    assert!(looping["consecutive_failures"].as_u64().unwrap() >= 1, "{looping}");
    assert!(looping["last_sync"]["error"].as_str().unwrap().contains("limit exceeded: cpu"), "{looping}");
    assert!(looping["last_sync"]["run_id"].as_i64().is_some(), "a failed sync names its run: {looping}");
    // Failures back off (3 s, then 6 s) instead of retrying every 1 s tick.
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let gap = (time(&looping["next_run"]) - time(&looping["last_sync"]["ended_at"])).to_std().unwrap();
    let failures = looping["consecutive_failures"].as_u64().unwrap();
    let expected = Duration::from_secs(if failures >= 2 { 6 } else { 3 });
    assert!(
        gap + Duration::from_millis(500) >= expected && gap <= expected + Duration::from_millis(500),
        "{failures} failures, next try after {gap:?}: {looping}"
    );
    // A host a module declares is a request, shown, never a grant.
    let hungry = served.instance("hungry").await;
    assert_eq!(hungry["module"]["declared_hosts"], json!(["api.example.com"]));
    assert_eq!(hungry["allowed_hosts"], json!([]));
    let logs = served.logs();
    let load_line = logs.lines().find(|l| l.contains("\"instance\":\"hungry\"") && l.contains("loaded hostile")).unwrap_or_else(|| panic!("{logs}"));
    assert!(load_line.contains("it asks for hosts [api.example.com], the config grants []"), "{load_line}");
    assert!(logs.lines().any(|l| l.contains("\"instance\":\"hungry\"") && l.contains("does not grant, so it cannot reach them: api.example.com")), "{logs}");
    // Its own sync file, per instance.
    assert!(dir.path().join("data/instances/asana/sync.db").is_file());
    assert!(dir.path().join("data/instances/looping/sync.db").is_file());

    // Records, filtered and paged with a cursor.
    let org = sim.org();
    let first = served.get("/v1/instances/asana/resources?type=user&limit=7").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 7);
    assert!(first["items"].as_array().unwrap().iter().all(|r| r["resource_type"] == "user"));
    let mut seen = 7;
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    loop {
        let page = served.get(&format!("/v1/instances/asana/resources?type=user&limit=7&cursor={cursor}")).await;
        seen += page["items"].as_array().unwrap().len() as u64;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen as usize, org.users.len());
    let user = &org.team_memberships[0].user_gid;
    let grants = served.get(&format!("/v1/instances/asana/grants?principal=user:{user}")).await;
    assert!(!grants["items"].as_array().unwrap().is_empty());
    assert!(grants["items"].as_array().unwrap().iter().all(|g| g["principal"]["id"] == user.as_str()));
    let team = &org.teams[0].gid;
    let ents = served.get(&format!("/v1/instances/asana/entitlements?resource=team:{team}")).await;
    assert!(ents["items"].as_array().unwrap().iter().all(|e| e["resource"]["id"] == team.as_str()));
    let (status, body) = served.call("GET", "/v1/instances/asana/grants?cursor=nonsense", None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_cursor")));
    let (status, body) = served.call("GET", "/v1/instances/asana/grants?limit=lots", None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = served.call("POST", "/v1/instances/asana/grants", Some(json!({"entitlement": 3}))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("bad_request")), "{body}");
    let (status, body) = served.call("DELETE", "/metrics", None).await;
    assert_eq!((status, body["code"].as_str()), (405, Some("method_not_allowed")), "{body}");
    let (status, body) = served.call("GET", "/v1/instances/nobody/grants", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_instance")));
    // A write aimed at no instance is refused, and audited all the same.
    let (status, body) = served.call("POST", "/v1/instances/nobody/grants", Some(json!({"entitlement": "team:1:member", "principal": "user:2"}))).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_instance")), "{body}");
    let audit = served.get("/v1/audit?instance=nobody").await;
    assert!(audit["items"].as_array().unwrap().iter().any(|i| i["outcome"] == "refused" && i["upstream"] == "no such instance"), "{audit}");

    // A trigger runs a sync now; a second one while it is asked for is 409.
    let before = metric(&served.metrics().await, "tether_syncs_total", &[("instance", "asana")]);
    let (status, _) = served.call("POST", "/v1/instances/asana/sync", None).await;
    if status == 409 {
        // The schedule got there first; the next trigger is ours.
        served.until("asana", "the scheduled sync to end", Duration::from_secs(30), |i| i["running"] == false).await;
    } else {
        assert_eq!(status, 202);
        let (status, body) = served.call("POST", "/v1/instances/asana/sync", None).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("sync_running")));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&served.metrics().await, "tether_syncs_total", &[("instance", "asana")]) <= before {
        assert!(Instant::now() < deadline, "the triggered sync did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A write: dry run first (nothing sent), then for real; both audited.
    let (team, outsider) = team_and_outsider(&sim.org());
    let grant = json!({"entitlement": format!("team:{team}:member"), "principal": format!("user:{outsider}"), "dry_run": true});
    let (status, dry) = served.call("POST", "/v1/instances/asana/grants", Some(grant.clone())).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["outcome"], "dry_run");
    assert!(dry["message"].as_str().unwrap().starts_with("dry run, nothing was sent: "), "{dry}");
    let held = dry["held_requests"].as_array().unwrap();
    assert!(held.iter().any(|r| r["method"] == "POST" && r["url"].as_str().unwrap().ends_with(&format!("/teams/{team}/addUser"))), "{dry}");
    assert!(sim.requests().iter().all(|r| r.method == "GET"), "a dry run sends no write");
    let mut real = grant.clone();
    real["dry_run"] = json!(false);
    let (status, done) = served.call("POST", "/v1/instances/asana/grants", Some(real)).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["outcome"], "changed");
    assert!(sim.requests().iter().any(|r| r.method == "POST" && r.path == format!("/teams/{team}/addUser") && r.status == 200));
    // The grant it made, revoked by its id.
    let grant_id = done["id"].as_str().expect("the grant made").to_string();
    let (status, revoked) = served.call("DELETE", &format!("/v1/instances/asana/grants/{grant_id}"), None).await;
    assert_eq!((status, revoked["outcome"].as_str()), (200, Some("changed")), "{revoked}");
    assert!(sim.requests().iter().any(|r| r.method == "POST" && r.path == format!("/teams/{team}/removeUser") && r.status == 200));
    // A write the upstream cannot undo needs confirm, as the CLI needs --yes.
    let writes_before = sim.requests().iter().filter(|r| r.method != "GET").count();
    let (status, refused) = served.call("POST", &format!("/v1/instances/asana/accounts/{outsider}/disable"), Some(json!({}))).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("confirmation_required")), "{refused}");
    assert_eq!(sim.requests().iter().filter(|r| r.method != "GET").count(), writes_before);
    // A misspelt flag is refused, not ignored: ignored, a "dry run" would
    // send the write.
    let (status, refused) = served.call("DELETE", &format!("/v1/instances/asana/grants/team:{team}:member:user:{outsider}?dry-run=true"), None).await;
    assert_eq!((status, refused["code"].as_str()), (400, Some("bad_request")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("dry-run"), "{refused}");
    let disable = format!("/v1/instances/asana/accounts/{outsider}/disable");
    let (status, refused) = served.call("POST", &disable, Some(json!({"dryRun": true, "confirm": true}))).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("bad_request")), "{refused}");
    // The flags count without a Content-Type too: read as absent, a dry
    // run would deactivate the user.
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = served.client.post(format!("{}{disable}", served.base)).bearer_auth(TOKEN).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    // Read, the dry run passes the confirmation (without it: 409 above) and
    // reaches the write, which this instance (no SCIM) cannot make.
    let (status, dry) = raw(r#"{"dry_run": true}"#, None).await;
    assert_eq!((status, dry["code"].as_str()), (501, Some("unsupported")), "{dry}");
    let (status, refused) = raw("this is {not json", None).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("bad_request")), "{refused}");
    let (status, refused) = raw(r#"{"dry_run": true}"#, Some("text/plain")).await;
    assert_eq!((status, refused["code"].as_str()), (415, Some("bad_request")), "{refused}");
    let (status, refused) = served.call("POST", "/v1/instances/asana/grants", Some(json!({"entitlement": "x", "principal": "user:1", "dry-run": true}))).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("bad_request")), "{refused}");
    // Flags in the place the other writes take them are refused, not
    // ignored: ignored, `?dry_run=true` on a grant made the grant.
    let outsider_grant = json!({"entitlement": format!("team:{team}:member"), "principal": format!("user:{outsider}")});
    let (status, refused) = served.call("POST", "/v1/instances/asana/grants?dry_run=true", Some(outsider_grant)).await;
    assert_eq!((status, refused["code"].as_str()), (400, Some("bad_request")), "{refused}");
    let member = format!("/v1/instances/asana/grants/team:{team}:member:user:{outsider}");
    let (status, refused) = served.call("DELETE", &member, Some(json!({"dry_run": true}))).await;
    assert_eq!((status, refused["code"].as_str()), (400, Some("bad_request")), "{refused}");
    assert_eq!(sim.requests().iter().filter(|r| r.method != "GET").count(), writes_before, "nothing was sent");

    // Every attempt is audited, those refused before they reached the
    // connector too (a body that is not JSON, flags in the wrong place).
    let audit = served.get("/v1/audit?instance=asana").await;
    let items = audit["items"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = items.iter().map(|i| (i["action"].as_str().unwrap(), i["outcome"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        [
            ("revoke", "refused"),
            ("grant", "refused"),
            ("grant", "refused"),
            ("disable-account", "refused"),
            ("disable-account", "refused"),
            ("disable-account", "failed"),
            ("disable-account", "refused"),
            ("revoke", "refused"),
            ("disable-account", "refused"),
            ("revoke", "changed"),
            ("grant", "changed"),
            ("grant", "dry_run"),
            ("grant", "refused"),
        ],
        "{audit}"
    );
    assert!(items[1]["upstream"].as_str().unwrap().contains("takes no query"), "{audit}");
    assert!(items[3]["upstream"].as_str().unwrap().starts_with("415"), "{audit}");
    let granted = &items[10];
    assert_eq!(granted["target"]["principal"], format!("user:{outsider}"));
    assert_eq!(granted["dry_run"], false);
    assert!(granted["upstream"].as_str().unwrap().contains(&format!("added user {outsider} to team {team}")), "{audit}");
    // Paged, newest first.
    let page = served.get("/v1/audit?instance=asana&limit=4").await;
    let rest = served.get(&format!("/v1/audit?instance=asana&limit=4&cursor={}", page["next_cursor"].as_str().unwrap())).await;
    assert_eq!(rest["items"][0]["id"], items[4]["id"]);
    assert_eq!(items[5]["dry_run"], true, "the flags of the disable without a Content-Type were read");
    // An id the connector cannot read is the client's mistake: 400, not a
    // 502 a client would retry.
    let (status, refused) = served.call("DELETE", "/v1/instances/asana/grants/not-an-asana-grant?dry_run=true", None).await;
    assert_eq!((status, refused["code"].as_str()), (400, Some("bad_request")), "{refused}");

    // Structured logs: every line an instance wrote names it.
    let logs = served.logs();
    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        lines.iter().any(|l| l["span"]["instance"] == "asana" && l["fields"]["message"].as_str().is_some_and(|m| m.starts_with("sync succeeded"))),
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l["span"]["instance"] == "looping" && l["fields"]["message"].as_str().is_some_and(|m| m.starts_with("sync failed"))),
        "{logs}"
    );

    // SIGTERM: a clean stop, well within the grace period.
    let status = served.terminate(Duration::from_secs(25));
    assert!(status.success(), "{status:?}\n{}", served.logs());
}

/// The module with a custom section appended: the same code, new bytes.
pub(crate) fn variant(module: &Path, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(module).unwrap();
    let name = b"tether-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0);
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(&payload);
    bytes
}

pub(crate) fn sign(key: &ed25519_dalek::SigningKey, bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
    hex::encode(tether_host::runtime::trust::sign_digest(key, &digest).to_bytes())
}

/// Puts a new module in place as a deploy would: signature first, then
/// the module renamed over the old one.
fn install(module: &Path, bytes: &[u8], signature: Option<String>) {
    if let Some(signature) = signature {
        std::fs::write(tether_host::runtime::trust::signature_path_for(module), signature).unwrap();
    }
    let staged = module.with_extension("staged");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, module).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_module_is_swapped_in_between_syncs_and_a_bad_one_is_refused() {
    let sim = start_sim(OrgSpec { users: 12, teams: 2, workspaces: 1, seed: 3 }).await;
    let dir = tempfile::tempdir().unwrap();
    let key = tether_host::runtime::trust::generate_signing_key().unwrap();
    let public = dir.path().join("release.pub");
    std::fs::write(&public, hex::encode(key.verifying_key().as_bytes())).unwrap();
    let module = dir.path().join("asana.wasm");
    let v1 = variant(&asana_wasm(), "v1");
    install(&module, &v1, Some(sign(&key, &v1)));
    let config = dir.path().join("serve.toml");
    // The hostile module reads `declare-host`; the Asana one ignores it.
    let extra = "public_keys = [\"release.pub\"]";
    let mut text = server_section(dir.path());
    text += &asana_instance("asana", &module, &sim, "interval = \"1h\"", extra);
    // app.asana.com, which every Asana version asks for, is not granted
    // (the simulator is): a new version asking for no more than the
    // running one swaps in, as it would load at a restart.
    let text = text.replace(", \"app.asana.com\"]", "]");
    std::fs::write(&config, text.replace("[instances.asana.config]\n", "[instances.asana.config]\ndeclare-host = \"evil.example.com\"\n")).unwrap();
    let served = Served::start(&config, dir.path()).await;

    let first = served.until("asana", "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    let d1 = first["module"]["digest"].as_str().unwrap().to_string();
    assert_eq!(first["last_sync"]["module_digest"], d1.as_str());
    assert!(first["module"]["signer"].is_string());

    // A signed new version: swapped in, no restart; the next sync runs it.
    let v2 = variant(&asana_wasm(), "v2");
    install(&module, &v2, Some(sign(&key, &v2)));
    let swapped = served.until("asana", "the swap", Duration::from_secs(60), |i| i["module"]["digest"] != d1.as_str()).await;
    let d2 = swapped["module"]["digest"].as_str().unwrap().to_string();
    let (status, _) = served.call("POST", "/v1/instances/asana/sync", None).await;
    assert_eq!(status, 202);
    served.until("asana", "a sync on the new version", Duration::from_secs(60), |i| i["last_sync"]["module_digest"] == d2.as_str()).await;

    // Unsigned: refused, the running version stays and keeps syncing.
    let v3 = variant(&asana_wasm(), "v3");
    install(&module, &v3, None);
    let refused = served.until("asana", "the refusal", Duration::from_secs(60), |i| i["last_refusal"].is_object()).await;
    assert!(refused["last_refusal"]["reason"].as_str().unwrap().contains("not a good signature"), "{refused}");
    assert_eq!(refused["module"]["digest"], d2.as_str());
    // Its signature arrives: swapped in, and the refusal no longer stands.
    install(&module, &v3, Some(sign(&key, &v3)));
    let swapped = served.until("asana", "the late swap", Duration::from_secs(60), |i| i["module"]["digest"] != d2.as_str()).await;
    assert!(swapped["last_refusal"].is_null(), "{swapped}");
    let d2 = swapped["module"]["digest"].as_str().unwrap().to_string();

    // Signed, but asking for a host the config does not grant and the
    // running version did not ask for: refused, naming the host.
    let hostile = std::fs::read(wasm("hostile")).unwrap();
    install(&module, &hostile, Some(sign(&key, &hostile)));
    let refused = served
        .until("asana", "the host refusal", Duration::from_secs(60), |i| i["last_refusal"]["reason"].as_str().is_some_and(|r| r.contains("evil.example.com")))
        .await;
    assert!(refused["last_refusal"]["reason"].as_str().unwrap().contains("does not grant"), "{refused}");
    assert_eq!(refused["module"]["digest"], d2.as_str());
    let runs_before = refused["last_sync"]["run_id"].as_i64().unwrap();
    let (status, _) = served.call("POST", "/v1/instances/asana/sync", None).await;
    assert_eq!(status, 202);
    let after = served.until("asana", "a sync after the refusals", Duration::from_secs(60), |i| i["last_sync"]["run_id"].as_i64() > Some(runs_before)).await;
    assert_eq!(after["last_sync"]["outcome"], "succeeded");
    assert_eq!(after["last_sync"]["module_digest"], d2.as_str());

    let m = served.metrics().await;
    assert_eq!(metric(&m, "tether_reload_refusals_total", &[("instance", "asana")]), 2.0, "{m}");
    // Which build runs, one series an instance: the one swapped in last.
    assert_eq!(metric(&m, "tether_module_info", &[("instance", "asana")]), 1.0, "{m}");
    assert_eq!(metric(&m, "tether_module_info", &[("instance", "asana"), ("digest", &d2), ("contract", "0.5.0"), ("connector", "asana")]), 1.0, "{m}");
    assert_eq!(metric(&m, "tether_module_loads_total", &[("instance", "asana"), ("outcome", "loaded")]), 3.0, "{m}");
    assert!(served.logs().contains("new module version refused"));

    // The release key is revoked (its file now holds another key) and the
    // config reloaded: the running module, which only it signed, no longer
    // runs. The reload is refused, and the instance syncs nothing until a
    // module signed by a trusted key loads.
    let successor = tether_host::runtime::trust::generate_signing_key().unwrap();
    std::fs::write(&public, hex::encode(successor.verifying_key().as_bytes())).unwrap();
    unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };
    let revoked = served.until("asana", "the revocation", Duration::from_secs(60), |i| i["module"].is_null()).await;
    assert!(revoked["last_refusal"]["reason"].as_str().unwrap().contains("is no longer trusted"), "{revoked}");
    let (status, _) = served.call("POST", "/v1/instances/asana/sync", None).await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !served.logs().contains("no module loaded; nothing to sync") {
        assert!(Instant::now() < deadline, "the sync asked for was not declined: {}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served.instance("asana").await["last_sync"]["run_id"], after["last_sync"]["run_id"], "no sync ran");
    // A module the new key signed loads.
    let v4 = variant(&asana_wasm(), "v4");
    install(&module, &v4, Some(sign(&successor, &v4)));
    let back = served.until("asana", "a module of the new key", Duration::from_secs(60), |i| i["module"].is_object()).await;
    assert!(back["last_refusal"].is_null(), "{back}");

    // The module file gone: the running version stays, and the refusal
    // says why (the next start would fail on it).
    std::fs::remove_file(&module).unwrap();
    let gone = served
        .until("asana", "the missing file reported", Duration::from_secs(60), |i| {
            i["last_refusal"]["reason"].as_str().is_some_and(|r| r.contains("cannot read the new module"))
        })
        .await;
    assert!(gone["module"].is_object(), "{gone}");
}

/// A version refused for a host the config does not grant, then accepted
/// by a config reload that grants it, leaves no refusal standing beside
/// it (the API showed the refusal of the very digest that ran).
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_loads_a_refused_version_clears_its_refusal() {
    let sim = start_sim(OrgSpec { users: 12, teams: 2, workspaces: 1, seed: 3 }).await;
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("asana.wasm");
    install(&module, &std::fs::read(asana_wasm()).unwrap(), None);
    let config = dir.path().join("serve.toml");
    let mut text = server_section(dir.path());
    text += &asana_instance("asana", &module, &sim, "interval = \"1h\"", "allow_downgrade = true");
    // The hostile fixture declares the host `declare-host` names.
    let text = text.replace("[instances.asana.config]\n", "[instances.asana.config]\ndeclare-host = \"evil.example.com\"\n");
    std::fs::write(&config, &text).unwrap();
    let served = Served::start(&config, dir.path()).await;
    served.until("asana", "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;

    install(&module, &std::fs::read(wasm("hostile")).unwrap(), None);
    served
        .until("asana", "the host refusal", Duration::from_secs(60), |i| i["last_refusal"]["reason"].as_str().is_some_and(|r| r.contains("evil.example.com")))
        .await;
    let granted = text.replace("\"app.asana.com\"]", "\"app.asana.com\", \"evil.example.com\"]");
    assert_ne!(granted, text);
    std::fs::write(&config, granted).unwrap();
    unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };
    let loaded = served.until("asana", "the reload", Duration::from_secs(60), |i| i["module"]["version"] == "0.1.0").await;
    assert!(loaded["last_refusal"].is_null(), "{loaded}");
}

/// A signature covers a build, not its place in time: an older signed
/// version (here the hostile fixture, 0.1.0, after Asana's 0.2.0) is
/// refused as a rollback unless the instance allows downgrades.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_signed_version_is_refused_as_a_rollback() {
    let sim = start_sim(OrgSpec { users: 12, teams: 2, workspaces: 1, seed: 3 }).await;
    let dir = tempfile::tempdir().unwrap();
    let key = tether_host::runtime::trust::generate_signing_key().unwrap();
    std::fs::write(dir.path().join("release.pub"), hex::encode(key.verifying_key().as_bytes())).unwrap();
    let config = dir.path().join("serve.toml");
    let mut text = server_section(dir.path());
    for (name, extra) in [("strict", "public_keys = [\"release.pub\"]"), ("lenient", "public_keys = [\"release.pub\"]\nallow_downgrade = true")] {
        let module = dir.path().join(format!("{name}.wasm"));
        let v1 = variant(&asana_wasm(), name);
        install(&module, &v1, Some(sign(&key, &v1)));
        text += &asana_instance(name, &module, &sim, "interval = \"1h\"", extra);
    }
    std::fs::write(&config, &text).unwrap();
    let served = Served::start(&config, dir.path()).await;
    let hostile = std::fs::read(wasm("hostile")).unwrap();
    for name in ["strict", "lenient"] {
        let first = served.until(name, "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
        assert_eq!(first["module"]["version"], "0.2.0", "{first}");
        install(&dir.path().join(format!("{name}.wasm")), &hostile, Some(sign(&key, &hostile)));
    }
    let refused = served.until("strict", "the rollback refusal", Duration::from_secs(60), |i| i["last_refusal"].is_object()).await;
    let reason = refused["last_refusal"]["reason"].as_str().unwrap();
    assert!(reason.contains("version 0.1.0 is older than the running 0.2.0: refused as a rollback"), "{refused}");
    assert_eq!(refused["module"]["version"], "0.2.0");
    let swapped = served.until("lenient", "the allowed downgrade", Duration::from_secs(60), |i| i["module"]["version"] == "0.1.0").await;
    assert!(swapped["last_refusal"].is_null(), "{swapped}");

    // An edit of the strict instance's schedule loads its module again: the
    // rollback is refused there too, and the whole reload with it.
    std::fs::write(&config, text.replacen("interval = \"1h\"", "interval = \"2h\"", 1)).unwrap();
    unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };
    let list = served.reload_refused().await;
    assert!(list["config_reload_refusal"]["reason"].as_str().unwrap().contains("refused as a rollback"), "{list}");
    assert_eq!(served.instance("strict").await["module"]["version"], "0.2.0");

    // Nor does a restart bring it back: with nothing running, the version
    // of the instance's last good sync is the one a rollback is measured
    // against, and the start fails.
    let mut served = served;
    assert!(served.terminate(Duration::from_secs(30)).success());
    let mut restarted = Served::launch(&config, dir.path());
    assert_eq!(restarted.wait_exit(Duration::from_secs(60)).code(), Some(1), "{}", restarted.logs());
    assert!(restarted.logs().contains("older than the running 0.2.0: refused as a rollback"), "{}", restarted.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_checkpoints_a_running_sync_and_the_next_start_resumes_it() {
    let mut sim_config = SimConfig::new(Org::generate(&OrgSpec { users: 40, teams: 4, workspaces: 1, seed: 5 }));
    sim_config.latency = Duration::from_millis(60);
    let sim = start_sim_with(sim_config).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    // One listing at a time: with a pool, the pages in flight at the stop
    // (let in before the checkpoint) could be all this small org has left.
    let one_at_a_time = "[instances.asana.limits]\nconcurrency = 1\n";
    std::fs::write(&config, server_section(dir.path()) + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "") + one_at_a_time).unwrap();
    let mut served = Served::start(&config, dir.path()).await;
    served.until("asana", "the sync to start", Duration::from_secs(30), |i| i["running"] == true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.request_count() < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Held answers keep the sync running until the stop has been asked for,
    // however fast the machine; then the page in flight ends and the sync
    // checkpoints.
    sim.hold();
    unsafe { libc::kill(served.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !served.logs().contains("running syncs checkpoint") {
        assert!(Instant::now() < deadline, "{}", served.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.release();
    let status = served.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(served.logs().contains("sync interrupted"), "{}", served.logs());
    drop(served);
    let requests_at_stop = sim.request_count();

    let served = Served::start(&config, dir.path()).await;
    let done = served.until("asana", "the resumed sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    // The same run went on (a fresh one would be run 2).
    assert_eq!(done["last_sync"]["run_id"], 1, "{done}");
    assert!(sim.request_count() > requests_at_stop);
}

#[tokio::test(flavor = "multi_thread")]
async fn tether_sync_runs_one_instance_of_the_config_file() {
    let sim = start_sim(OrgSpec { users: 10, teams: 2, workspaces: 1, seed: 2 }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, server_section(dir.path()) + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "")).unwrap();
    let config_path = config.clone();
    let run = move |instance: &str| {
        let config = config_path;
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["sync", "--instance", instance, "--config-file", config.to_str().unwrap()])
            .env("SIM_TOKEN", "sim-token")
            .env("XDG_CACHE_HOME", cache_dir())
            .output()
            .unwrap()
    };
    let sim_requests = sim.request_count();
    let out = tokio::task::spawn_blocking(move || run("asana")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sim.request_count() > sim_requests);
    let check = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--check", "--config", config.to_str().unwrap()])
        .env("SIM_TOKEN", "sim-token")
        .env("TETHER_API_TOKEN", TOKEN)
        .env("XDG_CACHE_HOME", cache_dir())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("1 instance(s), every module verified and validated"), "{check:?}");
    let file = dir.path().join("data/instances/asana/sync.db");
    let synced = tether_host::sync::SyncFile::open_existing(&file).unwrap();
    assert!(synced.last_good_run().unwrap().is_some());

    let config2 = config.clone();
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["sync", "--instance", "nobody", "--config-file", config2.to_str().unwrap()])
        .env("SIM_TOKEN", "sim-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no instance \"nobody\" (it has: asana)"));
}

/// The Dockerfile and Kubernetes manifests agree with what `tether serve`
/// does: its port, probe paths, config path and data folder.
#[test]
fn the_container_and_manifests_match_what_serve_does() {
    let root = repo_root();
    let port: u16 = tether_host::serve::config::DEFAULT_LISTEN.rsplit(':').next().unwrap().parse().unwrap();
    let docs: Vec<Value> = std::fs::read_dir(root.join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .flat_map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            serde_yaml_ng::Deserializer::from_str(&text).map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap()).collect::<Vec<_>>()
        })
        .collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k} in deploy/"));
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let openapi = openapi();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], port, "{probe}");
        assert_eq!(openapi["paths"][path]["get"]["security"], json!([]), "{path} needs no token");
    }
    // The config file: where the container reads it is where the ConfigMap is mounted.
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let config_path = args.iter().position(|a| *a == "--config").map(|i| args[i + 1]).expect("--config in args");
    assert!(args.windows(2).any(|w| w == ["--listen", &format!("0.0.0.0:{port}")]), "{args:?}");
    let mount = |volume_kind: &str| {
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| !v[volume_kind].is_null()).unwrap_or_else(|| panic!("no {volume_kind} volume"));
        let name = volume["name"].as_str().unwrap();
        let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
        (volume.clone(), mount["mountPath"].as_str().unwrap().to_string())
    };
    let (config_volume, config_dir) = mount("configMap");
    let config_map = kind("ConfigMap");
    assert_eq!(config_volume["configMap"]["name"], config_map["metadata"]["name"]);
    let file_name = Path::new(config_path).file_name().unwrap().to_str().unwrap();
    assert_eq!(Path::new(config_path).parent().unwrap(), Path::new(&config_dir));
    let serve_toml: toml::Table = config_map["data"][file_name].as_str().expect("the config file in the ConfigMap").parse().unwrap();
    let (_, data_dir) = mount("persistentVolumeClaim");
    assert_eq!(serve_toml["server"]["data_dir"].as_str(), Some(data_dir.as_str()));
    // The API token comes from the Secret, by the env var the config names.
    let token_var = serve_toml["server"]["api_token"].as_str().unwrap().strip_prefix("env:").unwrap();
    let env = container["env"].as_array().unwrap().iter().find(|e| e["name"] == token_var).expect("the token's env var");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], kind("Secret")["metadata"]["name"]);
    // The image: the same port and config path, no root, no shell.
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    assert!(dockerfile.contains("USER nonroot"));
    assert!(dockerfile.contains(&format!("TETHER_CONFIG={config_path}")), "the image's default config path is the manifests'");
    let last_from = dockerfile.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(last_from.contains("distroless"), "{last_from}");
}

/// Checks `value` (the answer to `method path` with `status`) against the
/// OpenAPI document: the path and status are documented, and the body
/// matches the schema (types, required and documented properties, enums).
fn check_against_openapi(doc: &Value, method: &str, path: &str, status: u16, value: &Value) {
    let path_only = path.split('?').next().unwrap();
    let (template, item) = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(template, _)| {
            let a: Vec<&str> = template.split('/').collect();
            let b: Vec<&str> = path_only.split('/').collect();
            a.len() == b.len() && a.iter().zip(&b).all(|(t, p)| t.starts_with('{') || t == p)
        })
        .unwrap_or_else(|| panic!("{path_only} is not in docs/openapi.yaml"));
    let operation = &item[method.to_ascii_lowercase()];
    if operation.is_null() && status == 405 {
        // A method the path does not take: the API's error shape.
        if let Err(e) = validate(doc, value, &doc["components"]["schemas"]["Error"], "$") {
            panic!("{method} {path} (405): {e}");
        }
        return;
    }
    assert!(operation.is_object(), "{method} {template} is not in docs/openapi.yaml");
    let mut response = &operation["responses"][status.to_string()];
    assert!(!response.is_null(), "{method} {template} answered {status}, which docs/openapi.yaml does not list");
    if let Some(reference) = response["$ref"].as_str() {
        response = resolve(doc, reference);
    }
    let schema = &response["content"]["application/json"]["schema"];
    if let Err(e) = validate(doc, value, schema, "$") {
        panic!("{method} {path} ({status}) does not match docs/openapi.yaml: {e}\n{value:#}");
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    reference.trim_start_matches("#/").split('/').fold(doc, |v, key| &v[key])
}

fn validate(doc: &Value, value: &Value, schema: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        return validate(doc, value, resolve(doc, reference), at);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        return if options.iter().any(|s| validate(doc, value, s, at).is_ok()) { Ok(()) } else { Err(format!("{at}: matches none of oneOf")) };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
    if !type_ok {
        return Err(format!("{at}: expected {types:?}, found {value}"));
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object()) {
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().unwrap();
            if !object.contains_key(key) {
                return Err(format!("{at}: missing required {key}"));
            }
        }
        for (key, field) in object {
            let property = properties.get(key).ok_or_else(|| format!("{at}: {key} is not documented"))?;
            validate(doc, field, property, &format!("{at}.{key}"))?;
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(doc, item, schema, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_applies_all_of_a_good_file_and_none_of_a_bad_one() {
    let sim = start_sim(OrgSpec { users: 10, teams: 2, workspaces: 1, seed: 9 }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    let first = server_section(dir.path()) + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "");
    std::fs::write(&config, &first).unwrap();
    let served = Served::start(&config, dir.path()).await;
    served.until("asana", "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    let names = |list: &Value| list["instances"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let hangup = || unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };

    // A new instance beside one whose connector refuses its new config:
    // neither is applied, and the refusal is shown.
    let bad = first.replace("[instances.asana.config]\n", "[instances.asana.config]\ndefault-workspace-id = \"not-digits\"\n")
        + &asana_instance("second", &asana_wasm(), &sim, "interval = \"1h\"", "");
    std::fs::write(&config, bad).unwrap();
    hangup();
    let refused = served.reload_refused().await;
    let reason = refused["config_reload_refusal"]["reason"].as_str().unwrap();
    assert!(reason.contains("[instances.asana]") && reason.contains("default-workspace-id"), "{reason}");
    assert_eq!(names(&refused), ["asana"]);
    assert!(metric(&served.metrics().await, "tether_reload_refusals_total", &[("instance", "-")]) >= 1.0);

    // A good file: the new instance starts and syncs; the refusal clears.
    std::fs::write(&config, first + &asana_instance("second", &asana_wasm(), &sim, "interval = \"1h\"", "")).unwrap();
    hangup();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = served.get("/v1/instances").await;
        if names(&list) == ["asana", "second"] && list["config_reload_refusal"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "not applied: {list}\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served.until("second", "the new instance's sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    assert!(dir.path().join("data/instances/second/sync.db").is_file());

    // [server]'s timings apply at once; what needs a restart is named.
    let reloads = |logs: &str| logs.matches("config reloaded").count();
    let before = reloads(&served.logs());
    let text = std::fs::read_to_string(&config).unwrap().replace("grace_period = \"20s\"", "grace_period = \"7s\"\ncache_dir = \"elsewhere\"");
    std::fs::write(&config, text).unwrap();
    hangup();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reloads(&served.logs()) == before {
        assert!(Instant::now() < deadline, "not reloaded; log:\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served.logs().contains("changed [server] cache_dir take effect at the next start"), "{}", served.logs());
    let mut served = served;
    assert!(served.terminate(Duration::from_secs(25)).success());
    assert!(served.logs().contains("grace period 7s"), "{}", served.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_sync_finishes_on_its_version_and_a_version_failing_validation_is_refused() {
    let sim = start_sim(OrgSpec { users: 30, teams: 3, workspaces: 1, seed: 11 }).await;
    // Unanswered requests keep the first sync running until the swap is seen.
    sim.hold();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("asana.wasm");
    install(&module, &variant(&asana_wasm(), "first"), None);
    let config = dir.path().join("serve.toml");
    // The hostile module refuses this config in `validate`; Asana ignores the key.
    let text = server_section(dir.path()) + &asana_instance("asana", &module, &sim, "interval = \"1h\"", "");
    std::fs::write(&config, text.replace("[instances.asana.config]\n", "[instances.asana.config]\nfail-validate = \"no such tenant\"\n")).unwrap();
    let served = Served::start(&config, dir.path()).await;
    let running = served.until("asana", "the first sync to start", Duration::from_secs(30), |i| i["running"] == true).await;
    let d1 = running["module"]["digest"].as_str().unwrap().to_string();

    install(&module, &variant(&asana_wasm(), "second"), None);
    let swapped = served.until("asana", "the swap", Duration::from_secs(60), |i| i["module"]["digest"] != d1.as_str()).await;
    assert_eq!(swapped["running"], true, "the sync should still run when the new version lands");
    let d2 = swapped["module"]["digest"].as_str().unwrap().to_string();
    sim.release();
    let done = served.until("asana", "the first sync to end", Duration::from_secs(60), |i| i["last_sync"].is_object()).await;
    assert_eq!(done["last_sync"]["outcome"], "succeeded");
    assert_eq!(done["last_sync"]["module_digest"], d1.as_str(), "the running sync kept its version");
    assert_eq!(done["module"]["digest"], d2.as_str());

    // A new version that refuses the instance's config in `validate` is
    // refused; the running version stays.
    install(&module, &std::fs::read(wasm("hostile")).unwrap(), None);
    let refused = served.until("asana", "the refusal", Duration::from_secs(60), |i| i["last_refusal"].is_object()).await;
    let reason = refused["last_refusal"]["reason"].as_str().unwrap();
    assert!(reason.contains("the connector refused its configuration") && reason.contains("no such tenant"), "{reason}");
    assert_eq!(refused["module"]["digest"], d2.as_str());
}

/// Every item of a listing, read page by page as a client would, checking
/// each page's size and that all pages read one run.
async fn page_all(served: &Served, path: &str, limit: usize) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (mut items, mut cursor, mut run) = (Vec::new(), None::<String>, None::<Value>);
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let page = served.get(&url).await;
        let got = page["items"].as_array().unwrap();
        assert_eq!(*run.get_or_insert_with(|| page["run_id"].clone()), page["run_id"], "{url}");
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(got.len(), limit, "{url}: a page before the last is full");
                cursor = Some(next.to_string());
            }
            None => {
                assert!(got.len() <= limit, "{url}");
                return items;
            }
        }
    }
}

/// The items sorted by id, checked to hold no id twice.
fn by_id(mut items: Vec<Value>, what: &str) -> Vec<Value> {
    let key = |v: &Value| format!("{}:{}", v["resource_type"].as_str().unwrap_or(""), v["id"].as_str().unwrap());
    items.sort_by_key(key);
    let ids: Vec<String> = items.iter().map(key).collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what}: an item came twice");
    items
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_page_through_a_real_sync_each_record_once_with_filters() {
    let sim = start_sim(OrgSpec { users: 40, teams: 4, workspaces: 1, seed: 11 }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, server_section(dir.path()) + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "")).unwrap();
    let mut served = Served::start(&config, dir.path()).await;
    served.until("asana", "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;

    // What the run holds, read straight from the sync file.
    let file = tether_host::sync::SyncFile::open_existing(&dir.path().join("data/instances/asana/sync.db")).unwrap();
    let run = file.last_good_run().unwrap().unwrap().id;
    let grants: Vec<tether_host::sync::model::Grant> = file.grants(run, None).unwrap();
    let as_json = |items: Vec<Value>| by_id(items, "expected");
    let all = as_json(grants.iter().map(|g| json!(g)).collect());
    assert!(all.len() > 40, "a real sync has grants: {}", all.len());

    // All grants, 7 at a time: each exactly once, exactly as stored.
    assert_eq!(by_id(page_all(&served, "/v1/instances/asana/grants", 7).await, "grants"), all);

    // By the entitled resource's type.
    let mut typed = 0;
    for t in ["workspace", "team", "project", "user"] {
        let expected = as_json(file.grants(run, Some(t)).unwrap().iter().map(|g| json!(g)).collect());
        typed += expected.len();
        assert_eq!(by_id(page_all(&served, &format!("/v1/instances/asana/grants?type={t}"), 5).await, t), expected, "type={t}");
    }
    assert!(typed > 0 && typed <= all.len());

    // By entitlement: the one with the most grants, more than a page.
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for g in &grants {
        *counts.entry(g.entitlement_id.as_str()).or_default() += 1;
    }
    let (entitlement, count) = counts.iter().max_by_key(|(_, n)| **n).map(|(e, n)| (*e, *n)).unwrap();
    assert!(count > 3, "{count}");
    let expected = as_json(grants.iter().filter(|g| g.entitlement_id == entitlement).map(|g| json!(g)).collect());
    assert_eq!(by_id(page_all(&served, &format!("/v1/instances/asana/grants?entitlement={entitlement}"), 3).await, "by entitlement"), expected);

    // By principal, alone and with a type.
    let mut held = std::collections::BTreeMap::<(&str, &str), usize>::new();
    for g in &grants {
        *held.entry((g.principal.resource_type.as_str(), g.principal.id.as_str())).or_default() += 1;
    }
    let ((ptype, pid), count) = held.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (*k, *n)).unwrap();
    assert!(count >= 2, "{count}");
    let mine: Vec<&tether_host::sync::model::Grant> = grants.iter().filter(|g| g.principal.resource_type == ptype && g.principal.id == pid).collect();
    let path = format!("/v1/instances/asana/grants?principal={ptype}:{pid}");
    assert_eq!(by_id(page_all(&served, &path, 1).await, "by principal"), as_json(mine.iter().map(|g| json!(g)).collect()));
    let team_grants: std::collections::BTreeSet<String> = file.grants(run, Some("team")).unwrap().into_iter().map(|g| g.id).collect();
    let expected = as_json(mine.iter().filter(|g| team_grants.contains(&g.id)).map(|g| json!(g)).collect());
    assert_eq!(by_id(page_all(&served, &format!("{path}&type=team"), 1).await, "by principal and type"), expected);
    // Someone holding nothing: an empty last page.
    let none = served.get("/v1/instances/asana/grants?principal=user:no-such-user").await;
    assert_eq!((none["items"].as_array().unwrap().len(), &none["next_cursor"]), (0, &Value::Null));

    // Resources and entitlements page the same way.
    let resources = as_json(file.resources(run, None).unwrap().iter().map(|r| json!(r)).collect());
    assert_eq!(by_id(page_all(&served, "/v1/instances/asana/resources", 9).await, "resources"), resources);
    let entitlements = as_json(file.entitlements(run, Some("team")).unwrap().iter().map(|e| json!(e)).collect());
    assert!(entitlements.len() > 2);
    assert_eq!(by_id(page_all(&served, "/v1/instances/asana/entitlements?type=team", 2).await, "entitlements"), entitlements);

    // A cursor this API did not give for this listing is a 400 JSON error;
    // one of a run no longer kept is 410.
    let resource_cursor = served.get("/v1/instances/asana/resources?limit=1").await["next_cursor"].as_str().unwrap().to_string();
    let grant_cursor = served.get("/v1/instances/asana/grants?limit=1").await["next_cursor"].as_str().unwrap().to_string();
    let tampered = format!("{grant_cursor}x");
    for bad in ["nonsense", "r1k", "r1k-1.2", "r1k1.2.3", resource_cursor.as_str(), tampered.as_str(), "r1k1%20.2"] {
        let (status, body) = served.call("GET", &format!("/v1/instances/asana/grants?limit=5&cursor={bad}"), None).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("bad_cursor")), "{bad}: {body}");
    }
    let (status, body) = served.call("GET", &format!("/v1/instances/asana/resources?cursor={grant_cursor}"), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_cursor")), "{body}");
    let (status, body) = served.call("GET", "/v1/instances/asana/grants?cursor=r999k1.1", None).await;
    assert_eq!((status, body["code"].as_str()), (410, Some("cursor_expired")), "{body}");
    let (status, body) = served.call("GET", "/v1/instances/asana/grants?limit=1001", None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");

    assert!(served.terminate(Duration::from_secs(25)).success());
}

/// Issue 10 item 4: two connectors side by side in one `tether serve`, the
/// Asana connector against the simulator and the SCIM connector against a
/// real scim2-server, each on its own schedule, file and upstream.
#[tokio::test(flavor = "multi_thread")]
async fn the_asana_and_scim_connectors_sync_side_by_side_in_tether_serve() {
    use crate::scim_connector::{scim_wasm, seed, Api, TOKEN as SCIM_TOKEN};
    use crate::support::scim2::Scim2Server;

    let sim = start_sim(OrgSpec { users: 20, teams: 3, workspaces: 1, seed: 7 }).await;
    let server = tokio::task::spawn_blocking(|| Scim2Server::start_with_token(SCIM_TOKEN)).await.unwrap();
    let s = seed(&Api::new(&server)).await;

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("scim-token");
    std::fs::write(&token_file, SCIM_TOKEN).unwrap();
    let config = dir.path().join("serve.toml");
    let mut text = server_section(dir.path());
    text += &asana_instance("asana", &asana_wasm(), &sim, "interval = \"2s\"", "");
    text += &format!(
        r#"
[instances.scim]
module = "{module}"
allowed_hosts = ["{addr}"]
[instances.scim.config]
base-url = "{url}"
[instances.scim.secrets]
token = "file:{token}"
[instances.scim.schedule]
interval = "2s"
"#,
        module = scim_wasm().display(),
        addr = server.addr(),
        url = server.base_url(),
        token = token_file.display()
    );
    std::fs::write(&config, text).unwrap();
    let mut served = Served::start(&config, dir.path()).await;
    let started = Instant::now();

    // On schedule: two good syncs of each, at 0 and 2 s, side by side.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = served.metrics().await;
        let good = |instance: &str| metric(&m, "tether_syncs_total", &[("instance", instance), ("outcome", "succeeded")]);
        if good("asana") >= 2.0 && good("scim") >= 2.0 {
            assert_eq!(metric(&m, "tether_syncs_total", &[("outcome", "failed")]), 0.0, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the syncs did not run on schedule:\n{m}\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let asana = served.instance("asana").await;
    let scim = served.instance("scim").await;
    assert_eq!((asana["module"]["name"].as_str(), asana["last_sync"]["outcome"].as_str()), (Some("asana"), Some("succeeded")), "{asana}");
    assert_eq!(scim["last_sync"]["outcome"], "succeeded", "{scim}");
    assert_eq!(scim["schedule"], "every 2s");
    let scim_name = scim["module"]["name"].as_str().unwrap().to_string();
    assert_ne!(scim_name, "asana");

    // Each file holds only its own connector's runs and records.
    for (instance, name) in [("asana", "asana"), ("scim", scim_name.as_str())] {
        let file = tether_host::sync::SyncFile::open_existing(&dir.path().join(format!("data/instances/{instance}/sync.db"))).unwrap();
        let last = file.last_run().unwrap().unwrap().id;
        let runs: Vec<_> = (1..=last).filter_map(|id| file.run(id).unwrap()).collect();
        assert!(runs.len() >= 2, "{instance}: {} runs", runs.len());
        assert!(runs.iter().all(|r| r.connector_name == name), "{instance}: {:?}", runs.iter().map(|r| &r.connector_name).collect::<Vec<_>>());
    }
    let key = |r: &Value| (r["resource_type"].as_str().unwrap().to_string(), r["id"].as_str().unwrap().to_string());
    let scim_resources: BTreeSet<(String, String)> = page_all(&served, "/v1/instances/scim/resources", 2).await.iter().map(key).collect();
    let seeded: BTreeSet<(String, String)> = [("user", &s.ann), ("user", &s.bob), ("user", &s.cat), ("group", &s.eng), ("group", &s.ops)]
        .into_iter()
        .map(|(t, id)| (t.to_string(), id.clone()))
        .collect();
    assert_eq!(scim_resources, seeded);
    let scim_grants: BTreeSet<(String, String)> = page_all(&served, "/v1/instances/scim/grants", 1)
        .await
        .iter()
        .map(|g| (g["entitlement_id"].as_str().unwrap().to_string(), g["principal"]["id"].as_str().unwrap().to_string()))
        .collect();
    let member = format!("group:{}:member", s.eng);
    assert_eq!(scim_grants, BTreeSet::from([(member.clone(), s.ann.clone()), (member, s.bob.clone())]));
    let asana_resources = page_all(&served, "/v1/instances/asana/resources", 100).await;
    let org = sim.org();
    assert_eq!(asana_resources.iter().filter(|r| r["resource_type"] == "user").count(), org.users.len());
    assert!(asana_resources.iter().all(|r| r["resource_type"] != "group" && !seeded.contains(&key(r))), "SCIM records in the Asana file");
    let scim_ids: BTreeSet<&String> = seeded.iter().map(|(_, id)| id).collect();
    let asana_grants = page_all(&served, "/v1/instances/asana/grants", 1000).await;
    assert!(asana_grants.len() > 20);
    assert!(asana_grants.iter().all(|g| !scim_ids.contains(&g["principal"]["id"].as_str().unwrap().to_string())));

    // Each upstream saw only its own connector's requests: the simulator
    // no SCIM paths, scim2-server (which refuses any other token) only the
    // seed's five POSTs and the SCIM syncs' authorised GETs.
    let sim_requests = sim.requests();
    assert!(!sim_requests.is_empty());
    assert!(sim_requests.iter().all(|r| r.method == "GET" && !r.path.contains("Users") && !r.path.contains("Groups") && !r.path.starts_with("/v2")));
    assert!(served.terminate(Duration::from_secs(25)).success(), "{}", served.logs());
    let scim_log = server.log();
    let requests: Vec<&str> = scim_log.lines().filter(|l| l.contains(" HTTP/1.1\" ")).collect();
    assert_eq!(requests.iter().filter(|l| l.contains("\"POST /v2/")).count(), 5, "{scim_log}");
    let reads: Vec<&&str> = requests.iter().filter(|l| !l.contains("\"POST ")).collect();
    assert!(reads.iter().all(|l| l.contains("\"GET /v2/") && l.contains("HTTP/1.1\" 200 ")), "{scim_log}");
    // Two syncs at least, each listing users and groups.
    assert!(reads.iter().filter(|l| l.contains("\"GET /v2/Users?")).count() >= 2, "{scim_log}");
}

/// A registry that takes connections and never answers.
async fn silent_registry() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = vec![];
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    (addr, held)
}

/// A stop is not held up by a registry that never answers, neither while
/// the modules load at start (where SIGHUP, before its handler was
/// installed, ended the server) nor during a SIGHUP reload (the signal
/// loop waited for the reload: a minute for three lookups).
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_is_not_held_up_by_a_start_or_a_reload_waiting_on_a_registry() {
    let sim = start_sim(OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 3 }).await;
    let (registry, _held) = silent_registry().await;
    let stuck = asana_instance("stuck", Path::new(&format!("oci://{registry}/conn/asana:1.0")), &sim, "interval = \"1h\"", "");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");

    // At start: the health check answers while the module is looked up.
    std::fs::write(&config, server_section(dir.path()) + &stuck).unwrap();
    let mut starting = Served::launch(&config, dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while starting.client.get(format!("{}/healthz", starting.base)).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "no health check; log:\n{}", starting.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unsafe { libc::kill(starting.child.id() as i32, libc::SIGHUP) };
    let alive = starting.client.get(format!("{}/healthz", starting.base)).send().await.map(|r| r.status().as_u16());
    assert_eq!(alive.ok(), Some(200), "a SIGHUP while the modules load does not end the server; log:\n{}", starting.logs());
    assert!(starting.child.try_wait().unwrap().is_none());
    let status = starting.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}; log:\n{}", starting.logs());
    assert!(starting.logs().contains("stopped while the modules loaded"), "{}", starting.logs());

    // During a reload that adds the stuck instance.
    let first = server_section(dir.path()) + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "");
    std::fs::write(&config, &first).unwrap();
    let mut served = Served::start(&config, dir.path()).await;
    served.until("asana", "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    std::fs::write(&config, first + &stuck).unwrap();
    unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !served.logs().contains("reloading") {
        assert!(Instant::now() < deadline, "no reload; log:\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The lookup gives up after 20 s; the stop does not wait for it.
    let status = served.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}; log:\n{}", served.logs());
    assert!(served.logs().contains("stopped cleanly"), "{}", served.logs());
}

/// An instance removed while its sync runs, then added again, waits for
/// that sync to end: both write one sync file, and the second used to fail
/// at once with "another tether process is syncing" (it was this one).
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_removed_mid_sync_and_added_again_waits_for_its_old_sync() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    let hostile = |name: &str, mode: &str| {
        format!(
            "\n[instances.{name}]\nmodule = \"{}\"\n[instances.{name}.config]\nmode = \"{mode}\"\n[instances.{name}.schedule]\ninterval = \"1h\"\n",
            wasm("hostile").display()
        )
    };
    // A config needs an instance: this one stays.
    let base = server_section(dir.path()) + &hostile("stays", "benign");
    std::fs::write(&config, base.clone() + &hostile("h", "sleep")).unwrap();
    let served = Served::start(&config, dir.path()).await;
    served.until("h", "its sleeping sync", Duration::from_secs(60), |i| i["running"] == true).await;
    let hangup = || unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };

    std::fs::write(&config, &base).unwrap();
    hangup();
    let deadline = Instant::now() + Duration::from_secs(60);
    while served.get("/v1/instances").await["instances"].as_array().unwrap().iter().any(|i| i["name"] == "h") {
        assert!(Instant::now() < deadline, "not removed; log:\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&config, base + &hostile("h", "benign")).unwrap();
    hangup();
    while !served.get("/v1/instances").await["instances"].as_array().unwrap().iter().any(|i| i["name"] == "h") {
        assert!(Instant::now() < deadline, "not added again; log:\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served.until("h", "the first sync of the instance added again", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    let logs = served.logs();
    assert!(logs.contains("waiting for the sync of the instance removed under this name to end"), "{logs}");
    assert!(!logs.contains("another tether process"), "{logs}");
}

/// A stop waits for an API write in progress: the write that reached the
/// upstream gets its answer, and the audit table has it (recorded as
/// started before it went out, then with its outcome).
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_waits_for_an_api_write_and_the_audit_keeps_it() {
    let mut sim_config = SimConfig::new(Org::generate(&OrgSpec { users: 10, teams: 2, workspaces: 1, seed: 21 }));
    sim_config.latency = Duration::from_millis(700);
    let sim = start_sim_with(sim_config).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, server_section(dir.path()) + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "")).unwrap();
    let mut served = Served::start(&config, dir.path()).await;
    let (team, outsider) = team_and_outsider(&sim.org());
    let grant = json!({"entitlement": format!("team:{team}:member"), "principal": format!("user:{outsider}")});
    let request = served.client.post(format!("{}/v1/instances/asana/grants", served.base)).bearer_auth(TOKEN).json(&grant);
    let answer = tokio::spawn(async move {
        let response = request.send().await.expect("the write is answered, stop or not");
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    });
    // The write has begun once the audit table says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let audit = served.get("/v1/audit?instance=asana").await;
        if audit["items"].as_array().unwrap().iter().any(|i| i["outcome"] == "started") {
            break;
        }
        assert!(Instant::now() < deadline, "the write did not start: {audit}\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served.terminate(Duration::from_secs(30)).success());
    let (status, done) = answer.await.unwrap();
    assert_eq!((status, done["outcome"].as_str()), (200, Some("changed")), "{done}");
    assert!(sim.requests().iter().any(|r| r.method == "POST" && r.path == format!("/teams/{team}/addUser") && r.status == 200));
    let audit = rusqlite::Connection::open(dir.path().join("data").join("audit.db")).unwrap();
    let outcome: String = audit.query_row("SELECT outcome FROM audit WHERE action = 'grant'", [], |row| row.get(0)).unwrap();
    assert_eq!(outcome, "changed");
}

/// A token rotated in its file applies with the reload: the old one (which
/// may have leaked) is refused at once, not at the next start.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_api_token_applies_on_reload() {
    let sim = start_sim(OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 4 }).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api-token");
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    std::fs::write(&token_file, old).unwrap();
    let config = dir.path().join("serve.toml");
    let server = server_section(dir.path()).replace("env:TETHER_API_TOKEN", &format!("file:{}", token_file.display()));
    std::fs::write(&config, server + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "")).unwrap();
    let served = Served::start(&config, dir.path()).await;
    assert_eq!(served.call_with("GET", "/v1/instances", None, Some(old)).await.0, 200);

    std::fs::write(&token_file, new).unwrap();
    unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };
    served.until_token_works(new, Duration::from_secs(60), "the new token was not taken").await;
    assert_eq!(served.call_with("GET", "/v1/instances", None, Some(old)).await.0, 401, "the old token is refused");

    // Rotated with a reload that adds a module still compiling (minutes,
    // as far as the compile limits let it): the token does not wait.
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(30_000, 100)).unwrap();
    let newest = "newest-token-0123456789abcdef";
    std::fs::write(&token_file, newest).unwrap();
    let with_bomb = std::fs::read_to_string(&config).unwrap()
        + &format!("\n[instances.slow]\nmodule = \"{}\"\n[instances.slow.schedule]\ninterval = \"1h\"\n", bomb.display());
    std::fs::write(&config, with_bomb).unwrap();
    unsafe { libc::kill(served.child.id() as i32, libc::SIGHUP) };
    served.until_token_works(newest, Duration::from_secs(20), "the newest token waited for the compile").await;
    assert_eq!(served.call_with("GET", "/v1/instances", None, Some(new)).await.0, 401, "the token before it is refused");
}

/// A server of one Asana instance over a small simulated org, synced
/// hourly: for tests of the server itself. The folder lives as long as
/// the value kept.
async fn one_small_instance() -> (SimHandle, tempfile::TempDir, Served) {
    let sim = start_sim(OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 4 }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, server_section(dir.path()) + &asana_instance("asana", &asana_wasm(), &sim, "interval = \"1h\"", "")).unwrap();
    let served = Served::start(&config, dir.path()).await;
    (sim, dir, served)
}

/// Connections that never send a request (no token needed to open one)
/// are capped in number and the oldest idle one is closed to make room:
/// they cannot take every file descriptor, nor hold the API (and the
/// health check) shut.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_and_cannot_starve_the_api() {
    use tokio::io::AsyncReadExt;
    let (_sim, _dir, served) = one_small_instance().await;
    let addr = served.base.trim_start_matches("http://").to_string();
    let mut idle = vec![];
    for _ in 0..tether_host::serve::http_server::MAX_CONNECTIONS + 40 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The API answers at once: the oldest idle connection makes room (it
    // used to wait in the listen queue for the idle ones' header timeout).
    // A client of its own: the shared one's kept-alive connection, the
    // oldest idle one, is among those closed to make room.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let health = client.get(format!("{}/healthz", served.base)).timeout(Duration::from_secs(60)).send().await.expect("the API answers");
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < tether_host::serve::http_server::HEADER_READ_TIMEOUT / 2, "{:?}", started.elapsed());
    // The first idle connection was closed by the server: it reads the end.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), idle[0].read(&mut byte)).await.expect("closed within the header timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Requests whose body never finishes (authenticated: without the token
/// the 401 comes before the body is read) cannot hold the API: one more
/// connection than there are slots closes the oldest still sending its
/// body, and each is answered once the body's deadline passes. Before,
/// they held every slot and the health check as long as the clients liked.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_that_never_finish_cannot_starve_the_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sim, _dir, served) = one_small_instance().await;
    let addr = served.base.trim_start_matches("http://").to_string();
    let head = format!(
        "POST /v1/instances/asana/grants HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    );
    let mut slow = vec![];
    for _ in 0..tether_host::serve::http_server::MAX_CONNECTIONS + 8 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let client = reqwest::Client::new();
    let health = client.get(format!("{}/healthz", served.base)).timeout(Duration::from_secs(60)).send().await.expect("the API answers");
    assert_eq!(health.status(), 200);
    // At once: a connection still sending its body makes room as an idle
    // one does (before, every slot was held until the bodies' deadline).
    assert!(started.elapsed() < tether_host::serve::http_server::HEADER_READ_TIMEOUT / 2, "{:?}", started.elapsed());
    let deadline = tether_host::serve::api::BODY_READ_TIMEOUT;
    // The oldest slow request was closed or got an error answer, not a write.
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(deadline * 3, slow[0].read(&mut answer)).await.expect("answered within the body's deadline");
    let answer = String::from_utf8_lossy(&answer[..read.unwrap_or(0)]).into_owned();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(sim.requests().iter().all(|r| r.method == "GET"), "nothing was written");
}

/// A module that would compile for minutes does not hold up a stop at
/// start: the compile runs in a child process the stop does not wait for,
/// and the child ends with the server.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_is_not_held_up_by_a_module_still_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    // Minutes of CPU, in little memory.
    std::fs::write(&bomb, compile_bomb(30_000, 100)).unwrap();
    let config = dir.path().join("serve.toml");
    let instance = format!("\n[instances.slow]\nmodule = \"{}\"\n[instances.slow.schedule]\ninterval = \"1h\"\n", bomb.display());
    std::fs::write(&config, server_section(dir.path()) + &instance).unwrap();
    let mut starting = Served::launch(&config, dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while starting.client.get(format!("{}/healthz", starting.base)).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "no health check; log:\n{}", starting.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = starting.child.id();
    let compiling = || compiler_child_running(server);
    while !compiling() {
        assert!(Instant::now() < deadline, "no compiler child; log:\n{}", starting.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = starting.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}; log:\n{}", starting.logs());
    assert!(starting.logs().contains("stopped while the modules loaded"), "{}", starting.logs());
    let deadline = Instant::now() + Duration::from_secs(10);
    while compiling() {
        assert!(Instant::now() < deadline, "the compiler child outlived the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Syncs across instances are capped by `max_concurrent_syncs`: with one
/// slot, a second instance due at start waits while the first syncs (a
/// config of hundreds of instances all syncing at once ran the host out of
/// memory mappings).
#[tokio::test(flavor = "multi_thread")]
async fn syncs_beyond_max_concurrent_syncs_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    let sleeper = |name: &str| {
        format!(
            "\n[instances.{name}]\nmodule = \"{}\"\n[instances.{name}.config]\nmode = \"sleep\"\n[instances.{name}.schedule]\ninterval = \"1h\"\n",
            wasm("hostile").display()
        )
    };
    let server = server_section(dir.path()) + "max_concurrent_syncs = 1\n";
    std::fs::write(&config, server + &sleeper("a") + &sleeper("b")).unwrap();
    let served = Served::start(&config, dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !served.logs().contains("waiting for a sync slot") {
        assert!(Instant::now() < deadline, "no instance waited; log:\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = || async { served.get("/v1/instances").await["instances"].as_array().unwrap().iter().filter(|i| i["running"] == true).count() };
    while running().await == 0 {
        assert!(Instant::now() < deadline, "nothing runs; log:\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running().await, 1, "one slot, one sync; log:\n{}", served.logs());
}

/// A module still compiling for one instance holds back no other
/// instance's swap: each instance's load runs on its own task (the watcher
/// used to load one instance after another).
#[tokio::test(flavor = "multi_thread")]
async fn a_module_compiling_for_one_instance_does_not_hold_back_another_swap() {
    let sim = start_sim(OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 3 }).await;
    let dir = tempfile::tempdir().unwrap();
    let (slow, quick) = (dir.path().join("slow.wasm"), dir.path().join("quick.wasm"));
    let v1 = variant(&asana_wasm(), "v1");
    install(&slow, &v1, None);
    install(&quick, &v1, None);
    let config = dir.path().join("serve.toml");
    let text = server_section(dir.path())
        + &asana_instance("slow", &slow, &sim, "interval = \"1h\"", "")
        + &asana_instance("quick", &quick, &sim, "interval = \"1h\"", "");
    std::fs::write(&config, text).unwrap();
    let served = Served::start(&config, dir.path()).await;
    let first = served.until("quick", "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    let d1 = first["module"]["digest"].as_str().unwrap().to_string();

    // Minutes of CPU to compile, in little memory: the watcher starts on it.
    install(&slow, &compile_bomb(30_000, 100), None);
    let server = served.child.id();
    let compiling = || compiler_child_running(server);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !compiling() {
        assert!(Instant::now() < deadline, "the bomb is not being compiled; log:\n{}", served.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    install(&quick, &variant(&asana_wasm(), "v2"), None);
    // Well inside the compile limit (60 s of CPU) the bomb still holds.
    let swapped = served.until("quick", "the swap beside the compile", Duration::from_secs(20), |i| i["module"]["digest"] != d1.as_str()).await;
    assert!(swapped["last_refusal"].is_null(), "{swapped}");
    assert!(compiling(), "the bomb was still compiling: the swap did not wait for it");
}

/// Whether a compiler child of the server `pid` is running (see
/// `runtime::compile`).
fn compiler_child_running(pid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok()).any(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.get(1) == Some(&&b"__compile-component"[..]) && args.get(2) == Some(&pid.to_string().as_bytes())
    })
}
