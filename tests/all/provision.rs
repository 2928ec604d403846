//! Provisioning through the compiled connector in the host, against the
//! simulator: each write, its idempotent repeat, its error cases, and a new
//! sync that shows the change.

use crate::support::*;
use asana_sim::{License, Org, OrgSpec, SimHandle};
use tether_host::runtime::bindings::{guest, ConnectorError, ResourceRef};
use tether_host::runtime::imports::config::ConnectorConfig;
use tether_host::runtime::instance::{CallError, ConnectorInstance, Permissions};
use tether_host::sync::SyncFile;

fn small_org() -> OrgSpec {
    OrgSpec { users: 60, teams: 3, workspaces: 2, seed: 17 }
}

fn user(gid: &str) -> ResourceRef {
    ResourceRef { resource_type: "user".into(), id: gid.into() }
}

fn with_config(mut grants: Permissions, extra: &[(&str, &str)]) -> Permissions {
    let mut pairs: Vec<(String, String)> = grants.config.keys().map(|k| (k.to_string(), grants.config.get(k).unwrap().to_string())).collect();
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    grants.config = ConnectorConfig::new(pairs);
    grants
}

fn scim(sim: &SimHandle) -> Permissions {
    with_config(permissions_for(&sim.base_url(), sim.addr(), "sim-token"), &[("use-service-account", "true"), ("use-scim-api", "true")])
}

fn rest(sim: &SimHandle) -> Permissions {
    permissions_for(&sim.base_url(), sim.addr(), "sim-token")
}

async fn instance(grants: &Permissions) -> ConnectorInstance {
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    ConnectorInstance::start(&engine, &module, grants).await.expect("connector starts")
}

fn writes(sim: &SimHandle) -> usize {
    sim.requests().iter().filter(|r| r.method != "GET").count()
}

fn outcome(result: &guest::WriteResult) -> &'static str {
    match result.outcome {
        guest::Outcome::Changed => "changed",
        guest::Outcome::NoChange => "no-change",
    }
}

async fn sync_grant_ids(sim: &SimHandle, grants: &Permissions) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    sync_with(&engine, &module, grants, &out).await.expect("sync succeeds");
    let file = SyncFile::open_existing(&out).unwrap();
    let run = file.last_good_run().unwrap().unwrap();
    let _ = sim;
    file.grants(run.id, None).unwrap().into_iter().map(|g| g.id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn team_membership_grant_and_revoke_round_trip() {
    let sim = start_sim(small_org()).await;
    let (team, outsider) = team_and_outsider(&sim.org());
    let entitlement = format!("team:{team}:member");
    let grant_id = format!("{entitlement}:user:{outsider}");
    let mut connector = instance(&rest(&sim)).await;

    let granted = connector.grant_entitlement(&entitlement, &user(&outsider)).await.unwrap();
    assert_eq!(outcome(&granted), "changed");
    assert_eq!(granted.grant.unwrap().id, grant_id);
    assert!(sim.org().team_memberships.iter().any(|m| m.team_gid == team && m.user_gid == outsider));
    assert!(sync_grant_ids(&sim, &rest(&sim)).await.contains(&grant_id), "a new sync shows the grant");

    let before = writes(&sim);
    let again = connector.grant_entitlement(&entitlement, &user(&outsider)).await.unwrap();
    assert_eq!(outcome(&again), "no-change");
    assert_eq!(writes(&sim), before, "no write for a grant already held");

    let revoked = connector.revoke_grant(&grant_id).await.unwrap();
    assert_eq!(outcome(&revoked), "changed");
    assert!(!sim.org().team_memberships.iter().any(|m| m.team_gid == team && m.user_gid == outsider));
    assert!(!sync_grant_ids(&sim, &rest(&sim)).await.contains(&grant_id), "a new sync shows it gone");

    let before = writes(&sim);
    assert_eq!(outcome(&connector.revoke_grant(&grant_id).await.unwrap()), "no-change");
    assert_eq!(writes(&sim), before);
}

/// An upstream that ignores the `user` filter of a membership lookup
/// answers with other people's memberships: the connector must not take
/// one of them for the user's and call the grant done without a write.
#[tokio::test(flavor = "multi_thread")]
async fn a_membership_lookup_answered_for_other_users_is_not_taken_for_the_users() {
    let mut config = asana_sim::SimConfig::new(Org::generate(&small_org()));
    config.ignore_user_filter = true;
    let sim = start_sim_with(config).await;
    let org = sim.org();
    let (team, outsider) = team_and_outsider(&org);
    assert!(org.team_memberships.iter().any(|m| m.team_gid == team), "the team has other members for the lookup to return");
    let small = org.workspaces[1].gid.clone();
    let stranger = org
        .workspace_memberships
        .iter()
        .find(|m| m.workspace_gid == org.workspaces[0].gid && m.is_active && !m.is_guest && org.workspace_membership(&m.user_gid, &small).is_none())
        .unwrap()
        .user_gid
        .clone();
    assert!(org.workspace_memberships.iter().any(|m| m.workspace_gid == small), "the workspace has other members");
    let mut connector = instance(&rest(&sim)).await;

    let before = writes(&sim);
    let granted = connector.grant_entitlement(&format!("team:{team}:member"), &user(&outsider)).await.unwrap();
    assert_eq!(outcome(&granted), "changed", "{}", granted.message);
    assert_eq!(writes(&sim), before + 1);
    assert!(sim.org().team_memberships.iter().any(|m| m.team_gid == team && m.user_gid == outsider));

    let granted = connector.grant_entitlement(&format!("workspace:{small}:member"), &user(&stranger)).await.unwrap();
    assert_eq!(outcome(&granted), "changed", "{}", granted.message);
    assert!(sim.org().workspace_membership(&stranger, &small).is_some());

    // Nor is someone else's membership taken for one to remove.
    let org = sim.org();
    let nobody = org.users.iter().find(|u| !org.team_memberships.iter().any(|m| m.team_gid == team && m.user_gid == u.gid)).unwrap().gid.clone();
    let before = writes(&sim);
    let revoked = connector.revoke_grant(&format!("team:{team}:member:user:{nobody}")).await.unwrap();
    assert_eq!(outcome(&revoked), "no-change", "{}", revoked.message);
    assert_eq!(writes(&sim), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_answered_503_is_not_sent_again() {
    let sim = start_sim(small_org()).await;
    let (team, outsider) = team_and_outsider(&sim.org());
    let entitlement = format!("team:{team}:member");
    let mut grants = rest(&sim);
    grants.limits.http_retry_base = std::time::Duration::from_millis(1);
    let mut connector = instance(&grants).await;

    sim.force_503_next_writes(1);
    let before = writes(&sim);
    match connector.grant_entitlement(&entitlement, &user(&outsider)).await {
        Err(CallError::Connector(ConnectorError::Upstream(m))) => assert!(m.contains("(HTTP 503)"), "{m}"),
        other => panic!("expected the 503 to reach the operator, got {other:?}"),
    }
    assert_eq!(writes(&sim), before + 1, "the POST was sent once: a write without an Idempotency-Key is not repeated");
    assert_eq!(connector.http().retries(), 0);
    assert!(!sim.org().team_memberships.iter().any(|m| m.team_gid == team && m.user_gid == outsider));

    // Reads are: the grant, tried again, reads through a 503 and writes once.
    sim.force_503_next(1);
    let granted = connector.grant_entitlement(&entitlement, &user(&outsider)).await.expect("the second try succeeds");
    assert_eq!(outcome(&granted), "changed");
    assert_eq!(connector.http().retries(), 1);
    assert_eq!(writes(&sim), before + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_the_api_cannot_set_are_refused_as_immutable() {
    let sim = start_sim(small_org()).await;
    let org = sim.org();
    let (team, outsider) = team_and_outsider(&org);
    let mut connector = instance(&rest(&sim)).await;
    for entitlement in [format!("team:{team}:admin"), format!("team:{team}:limited-access"), format!("workspace:{}:admin", org.workspaces[0].gid)] {
        match connector.grant_entitlement(&entitlement, &user(&outsider)).await {
            Err(CallError::Connector(ConnectorError::Unsupported(message))) => {
                assert!(message.contains("immutable"), "{message}")
            }
            other => panic!("{entitlement}: expected unsupported, got {other:?}"),
        }
    }
    let admin = org.team_memberships.iter().find(|m| m.is_admin).unwrap();
    let revoke = connector.revoke_grant(&format!("team:{}:admin:user:{}", admin.team_gid, admin.user_gid)).await;
    assert!(matches!(revoke, Err(CallError::Connector(ConnectorError::Unsupported(_)))), "{revoke:?}");
    assert_eq!(writes(&sim), 0);

    // An immutable grant is marked so in the sync file.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let engine = engine();
    sync_with(&engine, &load(&engine, &asana_wasm()), &rest(&sim), &out).await.unwrap();
    let file = SyncFile::open_existing(&out).unwrap();
    let grants = file.grants(file.last_good_run().unwrap().unwrap().id, Some("team")).unwrap();
    assert!(grants.iter().filter(|g| !g.id.contains(":member:")).all(|g| g.immutable));
    assert!(grants.iter().filter(|g| g.id.contains(":member:")).all(|g| !g.immutable));
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_membership_grant_and_revoke() {
    let sim = start_sim(small_org()).await;
    let org = sim.org();
    let small = &org.workspaces[1].gid;
    let outsider = org
        .workspace_memberships
        .iter()
        .find(|m| m.workspace_gid == org.workspaces[0].gid && m.is_active && !m.is_guest && org.workspace_membership(&m.user_gid, small).is_none())
        .unwrap()
        .user_gid
        .clone();
    let mut connector = instance(&rest(&sim)).await;
    let entitlement = format!("workspace:{small}:member");
    assert_eq!(outcome(&connector.grant_entitlement(&entitlement, &user(&outsider)).await.unwrap()), "changed");
    assert!(sim.org().workspace_membership(&outsider, small).is_some());
    assert_eq!(outcome(&connector.grant_entitlement(&entitlement, &user(&outsider)).await.unwrap()), "no-change");
    let grant_id = format!("{entitlement}:user:{outsider}");
    assert!(sync_grant_ids(&sim, &rest(&sim)).await.contains(&grant_id));
    assert_eq!(outcome(&connector.revoke_grant(&grant_id).await.unwrap()), "changed");
    assert!(sim.org().workspace_membership(&outsider, small).is_none());
    assert_eq!(outcome(&connector.revoke_grant(&grant_id).await.unwrap()), "no-change");
}

/// An ID of `.` or `..` cannot stay one path segment (URL parsers take
/// `%2E%2E` for `..`): `workspace:..:member` sent its read to
/// `/workspace_memberships` and its write to `/addUser`. Refused, and
/// nothing sent.
#[tokio::test(flavor = "multi_thread")]
async fn dot_ids_are_refused_not_sent_elsewhere() {
    let sim = start_sim(small_org()).await;
    let someone = sim.org().users[0].gid.clone();
    let mut connector = instance(&rest(&sim)).await;
    for entitlement in ["workspace:..:member", "team:.:member"] {
        let refused = connector.grant_entitlement(entitlement, &user(&someone)).await;
        assert!(matches!(&refused, Err(CallError::Connector(ConnectorError::InvalidArgument(m))) if m.contains("is not an ID")), "{refused:?}");
        connector = instance(&rest(&sim)).await;
    }
    let refused = connector.revoke_grant(&format!("workspace:..:member:user:{someone}")).await;
    assert!(matches!(&refused, Err(CallError::Connector(ConnectorError::InvalidArgument(_)))), "{refused:?}");
    assert!(
        sim.requests().iter().all(|r| r.path.starts_with("/workspaces/") || r.path.starts_with("/teams/") || r.path == "/users/me" || r.path == "/workspaces"),
        "{:?}",
        sim.requests()
    );
    assert_eq!(writes(&sim), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn license_moves_through_scim_patch() {
    let sim = start_sim(small_org()).await;
    let org = sim.org();
    let viewer = org
        .users
        .iter()
        .find(|u| u.active && u.license == License::ViewOnly && org.workspace_membership(&u.gid, &org.workspaces[0].gid).is_some_and(|m| !m.is_guest))
        .unwrap()
        .gid
        .clone();
    let organization = org.workspaces[0].gid.clone();
    let enterprise = format!("license:{organization}:enterprise:assigned");
    let enterprise_grant = format!("{enterprise}:user:{viewer}");
    let view_only_grant = format!("license:{organization}:view only:assigned:user:{viewer}");
    let mut connector = instance(&scim(&sim)).await;

    // License IDs name their organization; the old org-less ones are refused.
    let old = connector.grant_entitlement("license:enterprise:assigned", &user(&viewer)).await;
    assert!(matches!(&old, Err(CallError::Connector(ConnectorError::InvalidArgument(m))) if m.contains("ORG_GID:enterprise")), "{old:?}");
    // A license of another organization is refused, not moved in this one
    // (the answer and the audit would have named the other).
    let elsewhere = connector.grant_entitlement("license:9999:enterprise:assigned", &user(&viewer)).await;
    assert!(
        matches!(&elsewhere, Err(CallError::Connector(ConnectorError::InvalidArgument(m))) if m.contains("organization 9999 is not the one")),
        "{elsewhere:?}"
    );
    let mut connector = instance(&scim(&sim)).await;
    let elsewhere = connector.revoke_grant(&format!("license:9999:enterprise:assigned:user:{viewer}")).await;
    assert!(matches!(&elsewhere, Err(CallError::Connector(ConnectorError::InvalidArgument(_)))), "{elsewhere:?}");
    assert_eq!(writes(&sim), 0, "nothing was written");
    let mut connector = instance(&scim(&sim)).await;

    // View only -> enterprise.
    let result = connector.grant_entitlement(&enterprise, &user(&viewer)).await.unwrap();
    assert_eq!(outcome(&result), "changed");
    assert_eq!(result.grant.unwrap().id, enterprise_grant);
    assert_eq!(sim.org().user(&viewer).unwrap().license, License::Enterprise);
    let patches = sim.requests().iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 1);
    let before = writes(&sim);
    assert_eq!(outcome(&connector.grant_entitlement(&enterprise, &user(&viewer)).await.unwrap()), "no-change");
    assert_eq!(writes(&sim), before);
    let ids = sync_grant_ids(&sim, &scim(&sim)).await;
    assert!(ids.contains(&enterprise_grant));
    assert!(!ids.contains(&view_only_grant), "one license per user per organization");

    // Revoke enterprise: back to view only.
    assert_eq!(outcome(&connector.revoke_grant(&enterprise_grant).await.unwrap()), "changed");
    assert_eq!(sim.org().user(&viewer).unwrap().license, License::ViewOnly);
    assert_eq!(outcome(&connector.revoke_grant(&enterprise_grant).await.unwrap()), "no-change");
    assert!(sync_grant_ids(&sim, &scim(&sim)).await.contains(&view_only_grant));

    // Revoke view only: deactivates.
    assert_eq!(outcome(&connector.revoke_grant(&view_only_grant).await.unwrap()), "changed");
    assert!(!sim.org().user(&viewer).unwrap().active);
    let ids = sync_grant_ids(&sim, &scim(&sim)).await;
    assert!(!ids.iter().any(|id| id.starts_with("license:") && id.ends_with(&format!(":user:{viewer}"))), "a deactivated user holds no license");
    // Asana now hides the user from SCIM: revoking again is still no change.
    let before = writes(&sim);
    assert_eq!(outcome(&connector.revoke_grant(&view_only_grant).await.unwrap()), "no-change");
    assert_eq!(writes(&sim), before);

    // No reactivation.
    let again = connector.grant_entitlement(&enterprise, &user(&viewer)).await;
    assert!(matches!(&again, Err(CallError::Connector(ConnectorError::InvalidArgument(m))) if m.contains("cannot reactivate")), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn license_changes_need_scim() {
    let sim = start_sim(small_org()).await;
    let someone = sim.org().users[5].gid.clone();
    let mut connector = instance(&rest(&sim)).await;
    let result = connector.grant_entitlement(&format!("license:{}:enterprise:assigned", sim.org().workspaces[0].gid), &user(&someone)).await;
    assert!(matches!(&result, Err(CallError::Connector(ConnectorError::Unsupported(m))) if m.contains("use-scim-api")), "{result:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scim_without_a_service_account_fails_validation() {
    let sim = start_sim(small_org()).await;
    let grants = with_config(rest(&sim), &[("use-scim-api", "true")]);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let error = sync_with(&engine, &load(&engine, &asana_wasm()), &grants, &dir.path().join("s.db")).await.unwrap_err();
    assert!(format!("{error:#}").contains("use-scim-api needs use-service-account=true"), "{error:#}");
    assert_eq!(sim.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn scim_sync_adds_profiles_and_licenses_and_keeps_guests() {
    let sim = start_sim(small_org()).await;
    let org = sim.org();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let engine = engine();
    let summary = sync_with(&engine, &load(&engine, &asana_wasm()), &scim(&sim), &out).await.unwrap();
    let scim_pages = sim.requests().iter().filter(|r| r.path.starts_with("/scim/Users")).count();
    assert_eq!(scim_pages, 1, "one SCIM pass for the org, not one per workspace");
    assert_eq!(summary.http_requests, org.minimum_requests(100) + 1);

    let file = SyncFile::open_existing(&out).unwrap();
    let run = file.last_good_run().unwrap().unwrap().id;
    let users = file.resources(run, Some("user")).unwrap();
    let member = org.users.iter().find(|u| u.active && org.workspace_memberships.iter().any(|m| m.user_gid == u.gid && !m.is_guest)).unwrap();
    let synced = users.iter().find(|u| u.id == member.gid).unwrap();
    assert_eq!(synced.attributes["title"], member.title.as_str());
    assert_eq!(synced.attributes["department"], member.department.as_str());
    assert_eq!(synced.attributes["email"], member.email.as_str());
    let guest = org.workspace_memberships.iter().find(|m| m.is_guest && !m.is_admin).unwrap();
    assert!(users.iter().any(|u| u.id == guest.user_gid), "guests still come from REST");
    let grants = file.grants(run, Some("license")).unwrap();
    let license = if member.license == License::Enterprise { "enterprise" } else { "view only" };
    let mine: Vec<_> = grants.iter().filter(|g| g.principal.id == member.gid).collect();
    assert_eq!(mine.len(), 1, "one license per user per organization: {mine:?}");
    assert_eq!(mine[0].entitlement_id, format!("license:{}:{license}:assigned", org.workspaces[0].gid));
    assert!(!mine[0].immutable);
    let licenses = file.resources(run, Some("license")).unwrap();
    assert_eq!(licenses.len(), 2, "the organization's two licenses; the plain workspace has none");
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_created_through_scim_as_view_only() {
    let sim = start_sim(small_org()).await;
    let mut connector = instance(&scim(&sim)).await;
    let request = guest::AccountRequest { email: "new.person@example.com".into(), display_name: Some("New Person".into()), options: vec![] };
    let created = connector.create_account(&request).await.unwrap();
    assert_eq!(created.outcome, Some(guest::Outcome::Changed), "the contract says it was created");
    let made = sim.org().user(&created.account.id).cloned().expect("the user exists");
    assert_eq!(made.email, "new.person@example.com");
    assert_eq!(made.license, License::ViewOnly);
    let post = sim.requests().into_iter().find(|r| r.method == "POST").unwrap();
    let body: serde_json::Value = serde_json::from_str(post.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["userName"], "new.person@example.com");
    assert_eq!(body["userType"], "view only");
    assert_eq!(body["emails"][0]["value"], "new.person@example.com");

    let before = writes(&sim);
    let again = connector.create_account(&request).await.unwrap();
    assert_eq!(again.account.id, created.account.id);
    assert_eq!(again.outcome, Some(guest::Outcome::NoChange), "already there");
    assert_eq!(writes(&sim), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_created_through_rest_in_the_default_workspace() {
    let sim = start_sim(small_org()).await;
    let workspace = sim.org().workspaces[0].gid.clone();
    let request = guest::AccountRequest { email: "invitee@example.com".into(), display_name: None, options: vec![] };

    let mut without_default = instance(&rest(&sim)).await;
    let error = without_default.create_account(&request).await.unwrap_err();
    assert!(format!("{error}").contains("default-workspace-id"), "{error}");

    let mut connector = instance(&with_config(rest(&sim), &[("default-workspace-id", &workspace)])).await;
    let created = connector.create_account(&request).await.unwrap();
    let user = sim.org().user(&created.account.id).cloned().expect("user created");
    assert_eq!(user.license, License::ViewOnly, "new users get a view-only license");
    assert!(sim.org().workspace_membership(&created.account.id, &workspace).is_some());
    let again = connector.create_account(&request).await.unwrap();
    assert_eq!(again.outcome, Some(guest::Outcome::NoChange));

    // A name cannot go through REST: the answer says so instead of
    // dropping it in silence.
    let named = guest::AccountRequest { email: "named@example.com".into(), display_name: Some("Named Person".into()), options: vec![] };
    let created = connector.create_account(&named).await.unwrap();
    assert_eq!(created.outcome, Some(guest::Outcome::Changed));
    assert!(created.message.contains("not named \"Named Person\"") && created.message.contains("use-scim-api"), "{}", created.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabling_an_account_deactivates_once() {
    let sim = start_sim(small_org()).await;
    let target = sim.org().users.iter().find(|u| u.active && u.gid != sim.org().users[0].gid).unwrap().gid.clone();
    let mut connector = instance(&scim(&sim)).await;
    assert_eq!(outcome(&connector.disable_account(&user(&target)).await.unwrap()), "changed");
    assert!(!sim.org().user(&target).unwrap().active);
    let before = writes(&sim);
    assert_eq!(outcome(&connector.disable_account(&user(&target)).await.unwrap()), "no-change");
    assert_eq!(writes(&sim), before);
}

/// Issue #7, item 11: Asana hides deactivated users from SCIM, so a second
/// `disable-account` ended with `not found`. It is "already deactivated",
/// no change, when REST shows the user's membership inactive; a user who
/// never existed is still a clear not-found.
#[tokio::test(flavor = "multi_thread")]
async fn disabling_an_account_twice_is_no_change_even_though_scim_hides_the_user() {
    let sim = start_sim(small_org()).await;
    let org = sim.org();
    let organization = org.workspaces[0].gid.clone();
    let target =
        org.workspace_memberships.iter().find(|m| m.workspace_gid == organization && m.is_active && !m.is_guest && !m.is_admin).unwrap().user_gid.clone();
    let mut connector = instance(&scim(&sim)).await;
    assert_eq!(outcome(&connector.disable_account(&user(&target)).await.unwrap()), "changed");
    assert!(!sim.org().user(&target).unwrap().active);

    let before = writes(&sim);
    let seen = sim.request_count();
    let again = connector.disable_account(&user(&target)).await.expect("a second disable is not an error");
    assert_eq!(outcome(&again), "no-change");
    assert!(again.message.contains("already deactivated"), "{}", again.message);
    assert_eq!(writes(&sim), before, "nothing written the second time");
    let asked: Vec<_> = sim.requests().into_iter().skip(seen as usize).map(|r| (r.path, r.status)).collect();
    assert_eq!(asked[0], (format!("/scim/Users/{target}"), 404), "SCIM hides the deactivated user: {asked:?}");
    assert!(asked.iter().any(|(path, _)| path == &format!("/workspaces/{organization}/workspace_memberships")), "{asked:?}");

    // A user who never existed.
    let stranger = "1299999999999999";
    match connector.disable_account(&user(stranger)).await {
        Err(CallError::Connector(ConnectorError::NotFound(message))) => assert!(message.contains(stranger), "{message}"),
        other => panic!("expected not found, got {other:?}"),
    }
    assert_eq!(writes(&sim), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn scim_users_page_with_start_index_and_count() {
    let sim = start_sim(OrgSpec { users: 260, teams: 2, workspaces: 1, seed: 23 }).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let summary = sync_with(&engine, &load(&engine, &asana_wasm()), &scim(&sim), &dir.path().join("s.db")).await.unwrap();
    let scim_pages: Vec<String> = sim.requests().iter().filter(|r| r.path.starts_with("/scim/Users")).map(|r| r.query.clone()).collect();
    // SCIM lists active full members (Asana hides deactivated users).
    let scim_listed = sim.org().users.iter().filter(|u| u.active && sim.org().workspace_memberships.iter().any(|m| m.user_gid == u.gid && !m.is_guest)).count();
    let expected_pages = scim_listed.div_ceil(100);
    assert!(expected_pages >= 3, "{scim_listed} SCIM users");
    assert_eq!(scim_pages.len(), expected_pages, "{scim_pages:?}");
    assert_eq!(scim_pages[0], "startIndex=1&count=100");
    assert_eq!(scim_pages[1], "startIndex=101&count=100");
    assert_eq!(summary.http_requests, sim.org().minimum_requests(100) + expected_pages as u64);
}

/// SCIM answers for a service account's one organization: with a token
/// that sees two, its licenses could not be attributed, so the sync stops
/// and says why instead of guessing.
#[tokio::test(flavor = "multi_thread")]
async fn scim_mode_refuses_a_token_that_sees_two_organizations() {
    let mut org = Org::generate(&small_org());
    org.workspaces[1].is_organization = true;
    let sim = crate::support::start_sim_with(asana_sim::SimConfig::new(org)).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let error = sync_with(&engine, &load(&engine, &asana_wasm()), &scim(&sim), &dir.path().join("s.db")).await.unwrap_err();
    assert!(format!("{error:#}").contains("sees 2 organizations"), "{error:#}");
    assert_eq!(sim.request_count(), 1, "stopped at the workspace listing");
}
