//! Every request the Asana connector sends, checked against Asana's
//! official OpenAPI spec by Stoplight Prism standing between the connector
//! and the simulator.

mod support;

use asana_sim::OrgSpec;
use support::prism::Prism;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_sync_request_is_valid_against_the_official_spec() {
    // 230 users: the user and membership listings page with offset tokens.
    let sim = start_sim(OrgSpec { users: 230, teams: 4, workspaces: 2, seed: 21 }).await;
    let prism = tokio::task::spawn_blocking({
        let upstream = sim.base_url();
        move || Prism::start(&upstream)
    })
    .await
    .unwrap();
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let grants = grants_for(&prism.base_url(), prism.addr(), "sim-token");
    let dir = tempfile::tempdir().unwrap();

    let summary = sync_with(&engine, &module, &grants, &dir.path().join("sync.db")).await;

    let summary = summary.expect("Prism accepts every request and response (it answers 422/500 otherwise)");
    assert_eq!(summary.http_requests, sim.org().minimum_requests(100));
    assert_eq!(sim.request_count(), summary.http_requests, "every request went through Prism to the simulator");
    let shapes: std::collections::BTreeSet<String> = sim.requests().iter().map(|r| r.path.split('/').filter(|s| !s.chars().all(|c| c.is_ascii_digit())).collect::<Vec<_>>().join("/")).collect();
    assert_eq!(shapes.len(), 5, "workspaces, teams, users, workspace and team memberships: {shapes:?}");

    // The check has teeth: a request that breaks the spec is refused.
    let refused = reqwest::Client::new()
        .get(format!("{}/workspaces?limit=abc", prism.base_url()))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
}
