//! The generic SCIM connector (target/wasm/tether-scim.wasm) against real
//! SCIM 2.0 servers: scim2-server from PyPI, seeded through its own API,
//! then synced with the `tether` binary, written to, and synced again.
//!
//! scim2-server answers PATCH with 204 and no body (checked in its log
//! below). Its own options give the other kinds of server: `--schema` with
//! a Group schema whose `members` is `returned: never` (a server that never
//! returns members, so memberships are read by filter), and
//! `--service-provider-config` announcing no PATCH, no filter and at most
//! two results per page.
//!
//! `the_asana_and_scim_connectors_sync_side_by_side_in_one_host` loads both
//! connectors into one engine in this process and syncs them at once.
//! Its `tether serve` variant, the binary with two instances, is
//! `serve::the_asana_and_scim_connectors_sync_side_by_side_in_tether_serve`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::{json, Value};
use tether_host::runtime::imports::config::{ConnectorConfig, Secrets};
use tether_host::runtime::imports::http::AllowedHost;
use tether_host::runtime::instance::Permissions;

use crate::support::django_scim2::DjangoScim2;
use crate::support::scim2::Scim2Server;
use crate::support::*;

pub(crate) const TOKEN: &str = "scim-test-token";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

pub(crate) fn scim_wasm() -> PathBuf {
    wasm("tether-scim")
}

/// The server's own API, to seed it and to check what the connector did.
pub(crate) struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(server: &Scim2Server) -> Api {
        Api::at(server.base_url())
    }

    fn at(base: String) -> Api {
        Api { base, http: reqwest::Client::new() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.header("content-type", "application/scim+json").body(body.to_string());
        }
        let response = request.send().await.expect("scim2-server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON") })
    }

    async fn post(&self, path: &str, body: Value) -> String {
        let (status, created) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn user_named(&self, user_name: &str) -> Value {
        let filter = format!("userName eq \"{user_name}\"");
        let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("filter", &filter).finish();
        self.get(&format!("/Users?{query}")).await["Resources"][0].clone()
    }
}

/// ann (with enterprise attributes), bob and cat; group eng with ann and
/// bob, group ops with nobody.
pub(crate) struct Seeded {
    pub(crate) ann: String,
    pub(crate) bob: String,
    pub(crate) cat: String,
    pub(crate) eng: String,
    pub(crate) ops: String,
}

pub(crate) async fn seed(api: &Api) -> Seeded {
    let ann = api
        .post(
            "/Users",
            json!({"schemas": [USER, ENTERPRISE], "userName": "ann", "displayName": "Ann A",
                   "emails": [{"value": "ann@example.com", "primary": true}], "active": true,
                   ENTERPRISE: {"department": "R&D", "employeeNumber": "7"}}),
        )
        .await;
    let mut users = vec![ann];
    for name in ["bob", "cat"] {
        users.push(api.post("/Users", json!({"schemas": [USER], "userName": name, "emails": [{"value": format!("{name}@example.com")}]})).await);
    }
    let members = json!([{"value": users[0]}, {"value": users[1]}]);
    let eng = api.post("/Groups", json!({"schemas": [GROUP], "displayName": "eng", "members": members})).await;
    let ops = api.post("/Groups", json!({"schemas": [GROUP], "displayName": "ops"})).await;
    // django-scim2 ignores members on POST: they are added by PATCH there.
    if member_ids(&api.get(&format!("/Groups/{eng}")).await).is_empty() {
        let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                         "Operations": [{"op": "add", "path": "members", "value": members}]});
        let (status, answer) = api.send(reqwest::Method::PATCH, &format!("/Groups/{eng}"), Some(add)).await;
        assert!(status == 200 || status == 204, "{status} {answer}");
    }
    let [ann, bob, cat]: [String; 3] = users.try_into().unwrap();
    Seeded { ann, bob, cat, eng, ops }
}

fn flags(server: &Scim2Server, cache: &Path) -> Vec<String> {
    flags_for(&server.base_url(), server.addr(), cache)
}

fn flags_for(base_url: &str, addr: std::net::SocketAddr, cache: &Path) -> Vec<String> {
    [
        "--connector",
        scim_wasm().to_str().unwrap(),
        "--config",
        &format!("base-url={base_url}"),
        "--secret",
        "token=env:SCIM_TOKEN",
        "--allow-host",
        &addr.to_string(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]
    .map(str::to_string)
    .to_vec()
}

async fn tether(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_tether")).args(&args).env("SCIM_TOKEN", TOKEN).output().unwrap()).await.unwrap()
}

/// Runs `tether COMMAND ARGS FLAGS`; its stdout, failing the test on a failure.
async fn run(command: &[&str], flags: &[String]) -> String {
    let args: Vec<String> = command.iter().map(|s| s.to_string()).chain(flags.iter().cloned()).collect();
    let out = tether(args.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "tether {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

async fn sync(flags: &[String], out: &Path) {
    run(&["sync", "--out", out.to_str().unwrap()], flags).await;
}

async fn inspect(db: &Path, what: &str) -> Vec<Value> {
    let out = tether(vec!["inspect".into(), db.to_str().unwrap().into(), what.into(), "--format".into(), "json".into()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The synced memberships as (group id, user id).
async fn memberships(db: &Path) -> BTreeSet<(String, String)> {
    inspect(db, "grants")
        .await
        .iter()
        .map(|g| {
            let entitlement = g["entitlement_id"].as_str().unwrap();
            let group = entitlement.strip_prefix("group:").and_then(|e| e.strip_suffix(":member")).unwrap();
            assert_eq!(g["principal"]["resource_type"], "user");
            (group.to_string(), g["principal"]["id"].as_str().unwrap().to_string())
        })
        .collect()
}

fn set(pairs: &[(&String, &String)]) -> BTreeSet<(String, String)> {
    pairs.iter().map(|(g, u)| (g.to_string(), u.to_string())).collect()
}

/// A synced user (ids are unique per type only: django-scim2's users and
/// groups are both numbered from 1).
async fn user(db: &Path, id: &str) -> Value {
    inspect(db, "resources").await.into_iter().find(|r| r["resource_type"] == "user" && r["id"] == id).unwrap_or_else(|| panic!("user {id} not synced"))
}

fn member_ids(group: &Value) -> BTreeSet<String> {
    group["members"].as_array().into_iter().flatten().map(|m| m["value"].as_str().unwrap().to_string()).collect()
}

/// Adds `user` to `group`, then removes `leaver` from it, each twice: the
/// second time is "no change". A dry run first changes nothing.
async fn membership_writes(flags: &[String], api: &Api, s: &Seeded) {
    let ops_member = format!("group:{}:member", s.ops);
    let cat = format!("user:{}", s.cat);
    let dry = run(&["grant", "--entitlement", &ops_member, "--principal", &cat, "--dry-run"], flags).await;
    assert!(dry.contains("would send PATCH") && dry.contains("\"op\":\"add\""), "{dry}");
    assert!(member_ids(&api.get(&format!("/Groups/{}?attributes=members", s.ops)).await).is_empty(), "the dry run wrote");

    let first = run(&["grant", "--entitlement", &ops_member, "--principal", &cat], flags).await;
    assert!(first.starts_with("changed:"), "{first}");
    let again = run(&["grant", "--entitlement", &ops_member, "--principal", &cat], flags).await;
    assert!(again.starts_with("no change:"), "{again}");

    let bob_in_eng = format!("group:{}:member:user:{}", s.eng, s.bob);
    let first = run(&["revoke", "--grant", &bob_in_eng], flags).await;
    assert!(first.starts_with("changed:"), "{first}");
    let again = run(&["revoke", "--grant", &bob_in_eng], flags).await;
    assert!(again.starts_with("no change:"), "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scim_connector_syncs_writes_and_syncs_again_against_scim2_server() {
    let server = tokio::task::spawn_blocking(|| Scim2Server::start_with_token(TOKEN)).await.unwrap();
    let api = Api::new(&server);
    let s = seed(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let flags = flags(&server, dir.path());
    let db = dir.path().join("scim.db");

    sync(&flags, &db).await;
    let resources = inspect(&db, "resources").await;
    let count = |t: &str| resources.iter().filter(|r| r["resource_type"] == t).count();
    assert_eq!((count("user"), count("group")), (3, 2));
    let ann = user(&db, &s.ann).await;
    assert_eq!(ann["display_name"], "Ann A");
    assert_eq!(ann["attributes"]["department"], "R&D");
    assert_eq!(ann["attributes"]["employee_number"], "7");
    assert_eq!(ann["attributes"]["email"], "ann@example.com");
    assert_eq!(ann["attributes"]["active"], "true");
    let entitlements = inspect(&db, "entitlements").await;
    assert_eq!(entitlements.len(), 2);
    assert!(entitlements.iter().all(|e| e["grantable"] == true && e["slug"] == "member"));
    assert_eq!(memberships(&db).await, set(&[(&s.eng, &s.ann), (&s.eng, &s.bob)]));

    membership_writes(&flags, &api, &s).await;

    // create-account: a dry run sends nothing; then created once.
    let dry = run(&["create-account", "--email", "dan@example.com", "--name", "Dan D", "--dry-run"], &flags).await;
    assert!(dry.contains("would send POST"), "{dry}");
    assert!(api.user_named("dan@example.com").await.is_null(), "the dry run created dan");
    let first = run(&["create-account", "--email", "dan@example.com", "--name", "Dan D"], &flags).await;
    assert!(first.starts_with("changed:"), "{first}");
    let again = run(&["create-account", "--email", "dan@example.com", "--name", "Dan D"], &flags).await;
    assert!(again.starts_with("no change:"), "{again}");
    let dan = api.user_named("dan@example.com").await;
    assert_eq!(dan["emails"][0]["value"], "dan@example.com");

    // disable-account: reversible on SCIM (no --yes needed), then no change.
    let first = run(&["disable-account", "--user", &s.ann], &flags).await;
    assert!(first.starts_with("changed:"), "{first}");
    let again = run(&["disable-account", "--user", &s.ann], &flags).await;
    assert!(again.starts_with("no change:"), "{again}");
    assert_eq!(api.get(&format!("/Users/{}", s.ann)).await["active"], false);

    // The server answered every PATCH with 204 and no body.
    let log = server.log();
    let patches: Vec<&str> = log.lines().filter(|l| l.contains("\"PATCH ")).collect();
    assert_eq!(patches.len(), 3, "{log}"); // a grant, a revoke, a deactivation
    assert!(patches.iter().all(|l| l.contains("\" 204 ")), "{log}");

    // The server and a new sync agree.
    assert_eq!(member_ids(&api.get(&format!("/Groups/{}", s.eng)).await), BTreeSet::from([s.ann.clone()]));
    sync(&flags, &db).await;
    assert_eq!(memberships(&db).await, set(&[(&s.eng, &s.ann), (&s.ops, &s.cat)]));
    assert_eq!(user(&db, &s.ann).await["attributes"]["active"], "false");
    assert_eq!(user(&db, dan["id"].as_str().unwrap()).await["display_name"], "Dan D");
}

/// The same sync, writes and sync again against an independent
/// implementation with other quirks (see support/django_scim2.rs): PATCH
/// answered 200 with a body, member removal by path filter answered 501
/// (so the operator sets remove-member-by-value), filter support not
/// announced.
#[tokio::test(flavor = "multi_thread")]
async fn the_scim_connector_syncs_writes_and_syncs_again_against_django_scim2() {
    let server = tokio::task::spawn_blocking(|| DjangoScim2::start(TOKEN)).await.unwrap();
    let api = Api::at(server.base_url());
    let s = seed(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let mut flags = flags_for(&server.base_url(), server.addr(), dir.path());
    // Its 501 to a removal by path filter takes the member in `value`.
    flags.extend(["--config".to_string(), "remove-member-by-value=true".to_string()]);
    let db = dir.path().join("scim.db");

    sync(&flags, &db).await;
    let resources = inspect(&db, "resources").await;
    let count = |t: &str| resources.iter().filter(|r| r["resource_type"] == t).count();
    assert_eq!((count("user"), count("group")), (3, 2));
    assert_eq!(user(&db, &s.ann).await["attributes"]["email"], "ann@example.com");
    assert_eq!(memberships(&db).await, set(&[(&s.eng, &s.ann), (&s.eng, &s.bob)]));

    membership_writes(&flags, &api, &s).await;
    // The removal by path filter was refused (501), then made by value.
    let log = server.log();
    assert!(log.lines().any(|l| l.contains("\"PATCH ") && l.contains("\" 501 ")), "{log}");
    assert_eq!(member_ids(&api.get(&format!("/Groups/{}", s.eng)).await), BTreeSet::from([s.ann.clone()]));

    let first = run(&["create-account", "--email", "dan@example.com"], &flags).await;
    assert!(first.starts_with("changed:"), "{first}");
    let again = run(&["create-account", "--email", "dan@example.com"], &flags).await;
    assert!(again.starts_with("no change:"), "{again}");
    let first = run(&["disable-account", "--user", &s.ann], &flags).await;
    assert!(first.starts_with("changed:"), "{first}");
    let again = run(&["disable-account", "--user", &s.ann], &flags).await;
    assert!(again.starts_with("no change:"), "{again}");

    sync(&flags, &db).await;
    assert_eq!(memberships(&db).await, set(&[(&s.eng, &s.ann), (&s.ops, &s.cat)]));
    assert_eq!(user(&db, &s.ann).await["attributes"]["active"], "false");
    let users = inspect(&db, "resources").await.into_iter().filter(|r| r["resource_type"] == "user").count();
    assert_eq!(users, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn memberships_are_read_by_filter_from_a_server_that_never_returns_members() {
    // The RFC's schemas as scim2-server serves them, with Group.members
    // made `returned: never`.
    let plain = tokio::task::spawn_blocking(Scim2Server::start).await.unwrap();
    let mut schemas = Api::new(&plain).get("/Schemas").await["Resources"].clone();
    drop(plain);
    for schema in schemas.as_array_mut().unwrap() {
        let is_group = schema["id"] == GROUP;
        schema.as_object_mut().unwrap().remove("meta");
        for attribute in schema["attributes"].as_array_mut().unwrap() {
            if is_group && attribute["name"] == "members" {
                attribute["returned"] = json!("never");
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("schemas.json");
    std::fs::write(&schema_file, schemas.to_string()).unwrap();
    let file = schema_file.to_str().unwrap().to_string();
    let server = tokio::task::spawn_blocking(move || Scim2Server::start_with(&["--bearer-token", TOKEN, "--schema", &file])).await.unwrap();
    let api = Api::new(&server);
    let s = seed(&api).await;
    assert!(api.get(&format!("/Groups/{}?attributes=members", s.eng)).await.get("members").is_none(), "this server returns members after all");

    let flags = flags(&server, dir.path());
    let db = dir.path().join("scim.db");
    sync(&flags, &db).await;
    assert_eq!(memberships(&db).await, set(&[(&s.eng, &s.ann), (&s.eng, &s.bob)]));
    assert!(server.log().contains("filter=members.value"), "{}", server.log());

    membership_writes(&flags, &api, &s).await;
    sync(&flags, &db).await;
    assert_eq!(memberships(&db).await, set(&[(&s.eng, &s.ann), (&s.ops, &s.cat)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connector_adapts_to_a_server_without_patch_or_filter_and_with_small_pages() {
    let config = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": false}, "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": false, "maxResults": 2}, "changePassword": {"supported": false},
        "sort": {"supported": false}, "etag": {"supported": false}, "authenticationSchemes": []
    });
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("spc.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let file = config_file.to_str().unwrap().to_string();
    let server = tokio::task::spawn_blocking(move || Scim2Server::start_with(&["--bearer-token", TOKEN, "--service-provider-config", &file])).await.unwrap();
    let api = Api::new(&server);
    let s = seed(&api).await;
    let flags = flags(&server, dir.path());
    let db = dir.path().join("scim.db");

    // Pages of two (maxResults): three users take two pages.
    sync(&flags, &db).await;
    assert_eq!(inspect(&db, "resources").await.iter().filter(|r| r["resource_type"] == "user").count(), 3);
    assert!(server.log().contains("startIndex=3&count=2"), "{}", server.log());
    assert!(inspect(&db, "entitlements").await.iter().all(|e| e["grantable"] == false));
    assert_eq!(memberships(&db).await, set(&[(&s.eng, &s.ann), (&s.eng, &s.bob)]));

    // No PATCH: membership writes and deactivation are refused, clearly,
    // and nothing is sent.
    let ops_member = format!("group:{}:member", s.ops);
    let cat = format!("user:{}", s.cat);
    let mut args: Vec<String> = ["grant", "--entitlement", &ops_member, "--principal", &cat].map(str::to_string).to_vec();
    args.extend(flags.iter().cloned());
    let refused = tether(args).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs PATCH"), "{stderr}");
    assert!(!server.log().contains("\"PATCH "), "{}", server.log());
}

/// Both connectors in one engine (this process), each with only its own
/// configuration and host, synced at the same time: neither knows of the
/// other, and each reaches only its own upstream.
#[tokio::test(flavor = "multi_thread")]
async fn the_asana_and_scim_connectors_sync_side_by_side_in_one_host() {
    let sim = start_sim(asana_sim::OrgSpec { users: 20, teams: 3, workspaces: 1, seed: 7 }).await;
    let server = tokio::task::spawn_blocking(|| Scim2Server::start_with_token(TOKEN)).await.unwrap();
    let api = Api::new(&server);
    let s = seed(&api).await;

    let engine = engine();
    let asana = load(&engine, &asana_wasm());
    let scim = load(&engine, &scim_wasm());
    let asana_grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    let scim_grants = Permissions {
        config: ConnectorConfig::new([("base-url".to_string(), server.base_url())]),
        secrets: Arc::new(Secrets::resolve(&[format!("token=literal:{TOKEN}").parse().unwrap()]).unwrap()),
        extra_hosts: vec![AllowedHost::parse(&server.addr().to_string()).unwrap()],
        ..Permissions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (asana_db, scim_db) = (dir.path().join("asana.db"), dir.path().join("scim.db"));
    let (asana_summary, scim_summary) = tokio::join!(sync_with(&engine, &asana, &asana_grants, &asana_db), sync_with(&engine, &scim, &scim_grants, &scim_db));
    let (asana_summary, scim_summary) = (asana_summary.expect("Asana sync"), scim_summary.expect("SCIM sync"));

    let types = |summary: &tether_host::sync::SyncSummary| summary.resources.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    assert_eq!(types(&scim_summary), ["user", "group"]);
    assert!(types(&asana_summary).contains(&"workspace".to_string()) && !types(&asana_summary).contains(&"group".to_string()));
    assert_eq!(scim_summary.resources, [("user".to_string(), 3), ("group".to_string(), 2)]);
    assert_eq!(scim_summary.grants, 2);
    assert!(asana_summary.grants > 20);
    assert_eq!(memberships(&scim_db).await, set(&[(&s.eng, &s.ann), (&s.eng, &s.bob)]));

    // Each upstream saw only its own connector: the simulator has no SCIM
    // paths, and the SCIM server's requests are the SCIM sync's.
    assert!(sim.requests().iter().all(|r| !r.path.contains("Users") && !r.path.contains("Groups")));
    // Besides the seed's five POSTs, only the SCIM sync's reads.
    let scim_log = server.log();
    let requests: Vec<&str> = scim_log.lines().filter(|l| l.contains(" HTTP/1.1\" ")).collect();
    assert_eq!(requests.iter().filter(|l| l.contains("\"POST /v2/")).count(), 5, "{scim_log}");
    assert!(requests.iter().filter(|l| !l.contains("\"POST ")).all(|l| l.contains("\"GET /v2/")), "{scim_log}");
    assert!(requests.iter().any(|l| l.contains("\"GET /v2/Users?")), "{scim_log}");
}

/// A SCIM server that says less, or other, than the truth about a group
/// (g1, whose member u1 is): it leaves `members` out of the group, as AWS
/// IAM Identity Center does, though its filter finds u1; then it answers a
/// PATCH 200 with the group unchanged; then 501 to a removal by path
/// filter. A revoke is never "no change" while the access stays, never
/// "changed" when the server says it was not, and never falls back to a
/// removal that would take every member unless the operator says so.
#[tokio::test(flavor = "multi_thread")]
async fn revokes_believe_neither_an_omitted_member_list_nor_a_contradicting_answer() {
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    #[derive(Clone, Default)]
    struct Fake {
        /// How PATCH answers: 204, 200 with the unchanged group, or 501.
        patch: Arc<std::sync::Mutex<u16>>,
        patches: Arc<std::sync::Mutex<Vec<String>>>,
    }
    let group = || json!({"schemas": [GROUP], "id": "g1", "displayName": "G"});
    let fake = Fake::default();
    let app = axum::Router::new()
        .route("/ServiceProviderConfig", get(|| async { axum::Json(json!({"patch": {"supported": true}, "filter": {"supported": true, "maxResults": 100}})) }))
        .route("/Schemas/{id}", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/Groups/{id}",
            get(move || async move { axum::Json(group()) }).patch(|State(fake): State<Fake>, body: String| async move {
                fake.patches.lock().unwrap().push(body);
                match *fake.patch.lock().unwrap() {
                    200 => axum::Json(json!({"schemas": [GROUP], "id": "g1", "displayName": "G", "members": [{"value": "u1"}]})).into_response(),
                    501 => StatusCode::NOT_IMPLEMENTED.into_response(),
                    _ => StatusCode::NO_CONTENT.into_response(),
                }
            }),
        )
        .route(
            "/Groups",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let found = q.get("filter").is_some_and(|f| f.contains("g1") && f.contains("u1"));
                let resources = if found { vec![json!({"id": "g1"})] } else { vec![] };
                axum::Json(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": resources.len(), "Resources": resources}))
            }),
        )
        .with_state(fake.clone());
    let addr = serve_stub(app).await;
    let dir = tempfile::tempdir().unwrap();
    let flags = flags_for(&format!("http://{addr}"), addr, dir.path());
    let revoke = |flags: Vec<String>| async move {
        let args: Vec<String> = ["revoke", "--grant", "group:g1:member:user:u1"].iter().map(|s| s.to_string()).chain(flags).collect();
        tether(args).await
    };

    *fake.patch.lock().unwrap() = 204;
    let out = revoke(flags.clone()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("changed:"), "the filter found the member: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(fake.patches.lock().unwrap().len(), 1, "the removal was sent");

    *fake.patch.lock().unwrap() = 200;
    let out = revoke(flags.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("which still lists member u1: it was not removed"), "{stderr}");

    *fake.patch.lock().unwrap() = 501;
    fake.patches.lock().unwrap().clear();
    let out = revoke(flags.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("remove-member-by-value"), "{stderr}");
    assert_eq!(fake.patches.lock().unwrap().len(), 1, "no removal of every member was sent: {:?}", fake.patches.lock().unwrap());
}
