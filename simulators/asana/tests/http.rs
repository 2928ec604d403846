//! End-to-end checks of the simulator over real HTTP.

use asana_sim::{License, Org, OrgSpec, SimConfig, SimHandle};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

async fn start(spec: OrgSpec) -> SimHandle {
    let config = SimConfig::new(Org::generate(&spec));
    SimHandle::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn client() -> Client {
    // Never route loopback traffic through a proxy from the environment.
    Client::builder().no_proxy().build().unwrap()
}

struct Api {
    sim: SimHandle,
    http: Client,
}

impl Api {
    async fn new(spec: OrgSpec) -> Api {
        Api { sim: start(spec).await, http: client() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth("sim-token");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, text) = self.send(Method::GET, path, None).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, text) = self.send(Method::POST, path, Some(body)).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn org_gid(&self) -> String {
        self.sim.org().workspaces[0].gid.clone()
    }
}

fn assert_asana_error(body: &Value) {
    let msg = body["errors"][0]["message"].as_str();
    assert!(msg.is_some_and(|m| !m.is_empty()), "not an Asana error body: {body}");
}

#[tokio::test]
async fn users_paginate_in_pages_of_100() {
    let api = Api::new(OrgSpec { users: 250, teams: 2, workspaces: 1, seed: 1 }).await;
    let org = api.org_gid();
    let mut path = format!("/users?workspace={org}&limit=100");
    let mut pages = 0;
    let mut seen = Vec::new();
    loop {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        for u in body["data"].as_array().unwrap() {
            assert_eq!(u["resource_type"], "user");
            seen.push(u["gid"].as_str().unwrap().to_string());
        }
        let next = &body["next_page"];
        if next.is_null() {
            break;
        }
        // The relative path and the full uri agree, and carry the original filters.
        let rel = next["path"].as_str().unwrap();
        assert_eq!(next["uri"].as_str().unwrap(), api.url(rel));
        assert!(rel.contains(&format!("workspace={org}")) && rel.contains("limit=100"));
        assert!(rel.contains(&format!("offset={}", next["offset"].as_str().unwrap())));
        path = rel.to_string();
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "users come sorted by gid without repeats");

    // An offset is only valid for the listing that issued it.
    let (_, first) = api.get(&format!("/users?workspace={org}&limit=100")).await;
    let offset = first["next_page"]["offset"].as_str().unwrap().to_string();
    let (status, body) = api.get(&format!("/workspaces/{org}/workspace_memberships?limit=100&offset={offset}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_asana_error(&body);
    let (status, _) = api.get(&format!("/users?workspace={org}&limit=100&offset=not-a-token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Without limit everything comes back, with no next_page.
    let (status, body) = api.get(&format!("/workspaces/{org}/workspace_memberships")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 250);
    assert!(body.get("next_page").is_none());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn large_unpaginated_lists_are_refused() {
    let api = Api::new(OrgSpec { users: 1001, teams: 1, workspaces: 1, seed: 1 }).await;
    let (status, body) = api.get(&format!("/users?workspace={}", api.org_gid())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("too large"));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn opt_fields_select_fields() {
    let api = Api::new(OrgSpec::default()).await;
    let org = api.org_gid();

    // Compact form by default.
    let (_, body) = api.get(&format!("/workspaces/{org}/workspace_memberships?limit=3")).await;
    let m = &body["data"][0];
    let mut keys: Vec<_> = m.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["gid", "resource_type", "user", "workspace"]);
    assert_eq!(m["user"].as_object().unwrap().len(), 3, "compact user: gid, resource_type, name");
    assert!(m["user"].get("email").is_none());

    let (_, body) = api.get(&format!("/workspaces/{org}/workspace_memberships?limit=100&opt_fields=user.name,user.email,is_guest,is_active,nonsense")).await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 100);
    for m in data {
        let mut keys: Vec<_> = m.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["gid", "is_active", "is_guest", "user"]);
        let mut user_keys: Vec<_> = m["user"].as_object().unwrap().keys().cloned().collect();
        user_keys.sort();
        assert_eq!(user_keys, ["email", "gid", "name"]);
    }
    assert!(data.iter().any(|m| m["is_guest"] == true));
    assert!(data.iter().any(|m| m["is_active"] == false));

    let (_, body) = api.get("/workspaces?opt_fields=name,is_organization,email_domains").await;
    assert_eq!(body["data"][0], json!({"gid": org, "name": "Example Corp", "is_organization": true, "email_domains": ["example.com"]}));

    let team = api.sim.org().teams[0].gid.clone();
    let (_, body) = api.get(&format!("/teams/{team}/team_memberships?opt_fields=user,is_admin,is_limited_access,access_level")).await;
    let first = &body["data"][0];
    assert_eq!(first["user"].as_object().unwrap().len(), 1, "bare nested field is just its gid");
    assert!(first["is_admin"].is_boolean() && first["is_limited_access"].is_boolean());
    assert!(first["access_level"].is_string());

    let (status, body) = api.get("/users/me?opt_fields=email,workspaces.name").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["data"]["email"].as_str().unwrap().ends_with("@example.com"));
    assert_eq!(body["data"]["workspaces"].as_array().unwrap().len(), 3);
    assert!(body["data"].get("name").is_none());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn auth_limits_and_unknown_objects() {
    let api = Api::new(OrgSpec::default()).await;
    let http = client();
    let url = api.url("/workspaces");

    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["message"], "Not Authorized");
    let resp = http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    for limit in ["0", "101", "abc", "-1"] {
        let (status, body) = api.get(&format!("/workspaces?limit={limit}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={limit}");
        assert_asana_error(&body);
    }
    let (status, _) = api.get("/workspaces?limit=100").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = api.get("/workspaces/1999999999999999/teams").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_asana_error(&body);
    let (status, _) = api.get("/teams/1999999999999999/team_memberships").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every request is counted and recorded, rejected ones included.
    assert_eq!(api.sim.request_count(), 10);
    let recorded = api.sim.requests();
    assert_eq!(recorded.len(), 10);
    assert_eq!(recorded[0].path, "/workspaces");
    assert_eq!(recorded[0].status, 401);
    assert_eq!(recorded[3].query, "limit=101");
    assert_eq!(recorded[3].status, 400);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn forced_429_has_retry_after() {
    let api = Api::new(OrgSpec::default()).await;
    api.sim.force_429_next(2);
    for _ in 0..2 {
        let (status, headers, text) = api.send(Method::GET, "/workspaces", None).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "1");
        assert_asana_error(&serde_json::from_str(&text).unwrap());
    }
    let (status, _) = api.get("/workspaces").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.sim.request_count(), 3);
    let statuses: Vec<u16> = api.sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn per_minute_budget_and_injected_429s() {
    let mut config = SimConfig::new(Org::generate(&OrgSpec { users: 10, teams: 1, workspaces: 1, seed: 1 }));
    config.per_minute_budget = 3;
    let sim = SimHandle::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = http.get(format!("{}/workspaces", sim.base_url())).bearer_auth("sim-token").send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let secs: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&secs));
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    sim.shutdown().await;

    let mut config = SimConfig::new(Org::generate(&OrgSpec { users: 10, teams: 1, workspaces: 1, seed: 1 }));
    config.inject_429_rate = 0.5;
    let sim = SimHandle::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut limited = 0;
    for _ in 0..40 {
        let resp = http.get(format!("{}/workspaces", sim.base_url())).bearer_auth("sim-token").send().await.unwrap();
        limited += usize::from(resp.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!((5..=35).contains(&limited), "{limited} of 40 limited");
    sim.shutdown().await;
}

#[tokio::test]
async fn team_add_and_remove_user_change_state() {
    let api = Api::new(OrgSpec::default()).await;
    let org = api.sim.org();
    let team = org.teams.iter().find(|t| t.workspace_gid == org.workspaces[0].gid).unwrap().clone();
    let user = org
        .users
        .iter()
        .find(|u| {
            u.active
                && org.workspace_membership(&u.gid, &team.workspace_gid).is_some_and(|m| !m.is_guest)
                && !org.team_memberships.iter().any(|m| m.team_gid == team.gid && m.user_gid == u.gid)
        })
        .unwrap()
        .clone();

    let (status, body) = api.post(&format!("/teams/{}/addUser", team.gid), json!({"data": {"user": user.gid}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["resource_type"], "team_membership");
    assert_eq!(body["data"]["user"]["gid"], user.gid.as_str());
    assert_eq!(body["data"]["team"]["gid"], team.gid.as_str());
    let in_team = |org: &Org| org.team_memberships.iter().any(|m| m.team_gid == team.gid && m.user_gid == user.gid);
    assert!(in_team(&api.sim.org()));

    // By email this time; removing returns an empty data object.
    let (status, body) = api.post(&format!("/teams/{}/removeUser", team.gid), json!({"data": {"user": user.email}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": {}}));
    assert!(!in_team(&api.sim.org()));

    let (status, body) = api.post(&format!("/teams/{}/addUser", team.gid), json!({"data": {"user": "1999999999999999"}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_asana_error(&body);
    let (status, body) = api.post(&format!("/teams/{}/addUser", team.gid), json!({"data": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_asana_error(&body);
    let resp = api
        .http
        .post(api.url(&format!("/teams/{}/addUser", team.gid)))
        .bearer_auth("sim-token")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let recorded = api.sim.requests();
    assert_eq!(recorded.last().unwrap().body.as_deref(), Some("{not json"));
    assert_eq!(recorded[0].method, "POST");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn workspace_add_and_remove_user() {
    let api = Api::new(OrgSpec::default()).await;
    let org_gid = api.org_gid();

    // A new email creates a view-only user in the organization.
    let (status, body) = api.post(&format!("/workspaces/{org_gid}/addUser?opt_fields=name,email"), json!({"data": {"user": "new.hire@example.com"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["email"], "new.hire@example.com");
    assert_eq!(body["data"]["name"], "New Hire");
    let gid = body["data"]["gid"].as_str().unwrap().to_string();
    let org = api.sim.org();
    assert_eq!(org.user(&gid).unwrap().license, License::ViewOnly);
    let m = org.workspace_membership(&gid, &org_gid).unwrap();
    assert!(m.is_active && m.is_view_only && !m.is_guest);

    // Removing someone from the organization also drops their team memberships.
    let member = org.team_memberships[0].user_gid.clone();
    let (status, body) = api.post(&format!("/workspaces/{org_gid}/removeUser"), json!({"data": {"user": member}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": {}}));
    let org = api.sim.org();
    assert!(org.workspace_membership(&member, &org_gid).is_none());
    let org_teams: Vec<_> = org.teams.iter().filter(|t| t.workspace_gid == org_gid).map(|t| &t.gid).collect();
    assert!(!org.team_memberships.iter().any(|m| m.user_gid == member && org_teams.contains(&&m.team_gid)));

    let (status, _) = api.post("/workspaces/1999999999999999/addUser", json!({"data": {"user": "x@example.com"}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn scim_users_list_patch_and_create() {
    let api = Api::new(OrgSpec::default()).await;
    let org = api.sim.org();
    let org_gid = org.workspaces[0].gid.clone();
    let members: Vec<_> = org.workspace_memberships.iter().filter(|m| m.workspace_gid == org_gid).collect();
    // Deactivated users are hidden from SCIM GET.
    let expected = members.iter().filter(|m| !m.is_guest && m.is_active).count();
    assert!(members.iter().any(|m| !m.is_guest && !m.is_active));

    let (status, body) = api.get("/scim/Users?startIndex=1&count=100").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["totalResults"], expected);
    assert_eq!(body["itemsPerPage"], 100);
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:ListResponse");
    let (_, rest) = api.get("/scim/Users?startIndex=101&count=100").await;
    assert_eq!(rest["Resources"].as_array().unwrap().len(), expected - 100);
    let guest = members.iter().find(|m| m.is_guest).unwrap();
    let all: Vec<Value> = body["Resources"].as_array().unwrap().iter().chain(rest["Resources"].as_array().unwrap()).cloned().collect();
    assert!(all.iter().all(|r| r["id"] != guest.user_gid.as_str()), "guests are not SCIM users");
    assert!(all.iter().all(|r| r["active"] == true));

    let target = org
        .users
        .iter()
        .find(|u| u.active && u.license == License::Enterprise && u.gid != org.users[0].gid && members.iter().any(|m| m.user_gid == u.gid && !m.is_guest))
        .unwrap()
        .clone();
    let (status, body) = api.get(&format!("/scim/Users?filter=userName%20eq%20%22{}%22", target.email)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["totalResults"], 1);
    let r = &body["Resources"][0];
    assert_eq!(r["id"], target.gid.as_str());
    assert_eq!(r["userName"], target.email.as_str());
    assert_eq!(r["userType"], "enterprise");
    assert_eq!(r["emails"][0]["type"], "work");
    assert_eq!(r["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"], target.department.as_str());

    let path = format!("/scim/Users/{}", target.gid);
    let patch = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let (status, _, text) = api.send(Method::PATCH, &path, Some(patch(json!([{"op": "replace", "path": "userType", "value": "view only"}])))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(text.is_empty());
    let org = api.sim.org();
    assert_eq!(org.user(&target.gid).unwrap().license, License::ViewOnly);
    assert!(org.workspace_membership(&target.gid, &org_gid).unwrap().is_view_only);

    let (status, _, _) = api.send(Method::PATCH, &path, Some(patch(json!([{"op": "Replace", "value": {"active": false}}])))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let org = api.sim.org();
    assert!(!org.user(&target.gid).unwrap().active);
    assert!(org.workspace_memberships.iter().filter(|m| m.user_gid == target.gid).all(|m| !m.is_active));
    // Gone from SCIM GET, as in Asana; REST shows the membership inactive.
    let (status, _) = api.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = api.get(&format!("/scim/Users?filter=userName%20eq%20%22{}%22", target.email)).await;
    assert_eq!(body["totalResults"], 0);
    let (_, body) = api.get(&format!("/workspaces/{org_gid}/workspace_memberships?user={}&opt_fields=is_active", target.gid)).await;
    assert_eq!(body["data"][0]["is_active"], false);

    // Asana cannot reactivate.
    let (status, _, text) = api.send(Method::PATCH, &path, Some(patch(json!([{"op": "replace", "path": "active", "value": true}])))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["status"], "400");
    assert_eq!(err["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");

    let (status, _, _) = api.send(Method::PATCH, &path, Some(json!({"Operations": "nope"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = api.send(Method::PATCH, "/scim/Users/1999999999999999", Some(patch(json!([])))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let new_user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "grace.hopper@example.com",
        "name": {"givenName": "Grace", "familyName": "Hopper"},
        "emails": [{"value": "grace.hopper@example.com", "primary": true, "type": "work"}],
        "title": "Rear Admiral",
        "active": true,
    });
    let (status, headers, text) = api.send(Method::POST, "/scim/Users", Some(new_user.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["userType"], "view only");
    assert_eq!(created["name"]["formatted"], "Grace Hopper");
    assert!(headers.contains_key("location"));
    let gid = created["id"].as_str().unwrap();
    assert!(api.sim.org().workspace_membership(gid, &org_gid).is_some());
    let (status, _, text) = api.send(Method::POST, "/scim/Users", Some(new_user)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["status"], "409");
    let (status, _, _) = api.send(Method::POST, "/scim/Users", Some(json!({"name": {}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    api.sim.shutdown().await;
}
