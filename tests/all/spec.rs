//! Every request the Asana connector sends, checked against Asana's
//! official OpenAPI spec by Stoplight Prism standing between the connector
//! and the simulator.

use crate::support::prism::Prism;
use crate::support::*;
use asana_sim::OrgSpec;

/// Starts Prism (a blocking wait for its port) in front of the simulator.
async fn prism_in_front_of(sim: &asana_sim::SimHandle) -> Prism {
    let upstream = sim.base_url();
    tokio::task::spawn_blocking(move || Prism::start(&upstream)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sync_request_is_valid_against_the_official_spec() {
    // 230 users: the user and membership listings page with offset tokens.
    let sim = start_sim(OrgSpec { users: 230, teams: 4, workspaces: 2, seed: 21 }).await;
    let prism = prism_in_front_of(&sim).await;
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let grants = permissions_for(&prism.base_url(), prism.addr(), "sim-token");
    let dir = tempfile::tempdir().unwrap();

    let summary = sync_with(&engine, &module, &grants, &dir.path().join("sync.db")).await;

    let summary = summary.expect("Prism accepts every request and response (it answers 422/500 otherwise)");
    assert_eq!(summary.http_requests, sim.org().minimum_requests(100));
    assert_eq!(sim.request_count(), summary.http_requests, "every request went through Prism to the simulator");
    let shapes: std::collections::BTreeSet<String> =
        sim.requests().iter().map(|r| r.path.split('/').filter(|s| !s.chars().all(|c| c.is_ascii_digit())).collect::<Vec<_>>().join("/")).collect();
    assert_eq!(shapes.len(), 5, "workspaces, teams, users, workspace and team memberships: {shapes:?}");

    // The check has teeth: a request that breaks the spec is refused.
    let refused = reqwest::Client::new().get(format!("{}/workspaces?limit=abc", prism.base_url())).bearer_auth("sim-token").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rest_write_request_is_valid_against_the_official_spec() {
    use tether_host::runtime::bindings::{guest, ResourceRef};
    use tether_host::runtime::instance::ConnectorInstance;

    let sim = start_sim(OrgSpec { users: 40, teams: 2, workspaces: 2, seed: 8 }).await;
    let org = sim.org();
    let prism = prism_in_front_of(&sim).await;
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let mut grants = permissions_for(&prism.base_url(), prism.addr(), "sim-token");
    grants.config = tether_host::runtime::imports::config::ConnectorConfig::new([
        ("asana-api-url".to_string(), prism.base_url()),
        ("default-workspace-id".to_string(), org.workspaces[0].gid.clone()),
    ]);
    let mut connector = ConnectorInstance::start(&engine, &module, &grants).await.unwrap();

    let team = org.teams.iter().find(|t| t.workspace_gid == org.workspaces[0].gid).unwrap();
    let outsider = org
        .workspace_memberships
        .iter()
        .find(|m| {
            m.workspace_gid == team.workspace_gid
                && m.is_active
                && !m.is_guest
                && !org.team_memberships.iter().any(|t| t.team_gid == team.gid && t.user_gid == m.user_gid)
        })
        .unwrap()
        .user_gid
        .clone();
    let user = ResourceRef { resource_type: "user".into(), id: outsider.clone() };
    let small = &org.workspaces[1].gid;
    let stranger = org
        .workspace_memberships
        .iter()
        .find(|m| m.workspace_gid == org.workspaces[0].gid && m.is_active && !m.is_guest && org.workspace_membership(&m.user_gid, small).is_none())
        .unwrap()
        .user_gid
        .clone();
    let stranger_ref = ResourceRef { resource_type: "user".into(), id: stranger.clone() };

    connector.grant_entitlement(&format!("team:{}:member", team.gid), &user).await.expect("team addUser passes Prism");
    connector.revoke_grant(&format!("team:{}:member:user:{outsider}", team.gid)).await.expect("team removeUser passes Prism");
    connector.grant_entitlement(&format!("workspace:{small}:member"), &stranger_ref).await.expect("workspace addUser passes Prism");
    connector.revoke_grant(&format!("workspace:{small}:member:user:{stranger}")).await.expect("workspace removeUser passes Prism");
    let request = guest::AccountRequest { email: "prism.checked@example.com".into(), display_name: None, options: vec![] };
    connector.create_account(&request).await.expect("account creation passes Prism");

    let posts: Vec<String> = sim.requests().iter().filter(|r| r.method == "POST").map(|r| r.path.clone()).collect();
    assert_eq!(posts.len(), 5, "every write reached the simulator through Prism: {posts:?}");
}
