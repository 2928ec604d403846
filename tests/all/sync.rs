//! Syncs of the simulated Asana org through the compiled connector
//! component running in the host.

use std::collections::HashSet;

use crate::support::*;
use asana_sim::{OrgSpec, SimConfig};
use tether_host::sync::SyncFile;

fn spec(users: usize, teams: usize, workspaces: usize, seed: u64) -> OrgSpec {
    OrgSpec { users, teams, workspaces, seed }
}

/// Grants a REST-only sync reports: every workspace and team membership,
/// plus one license per user with an active, non-guest membership in an
/// organization (from `is_view_only`); plain workspaces carry no license.
fn expected_grants(org: &asana_sim::Org) -> i64 {
    let licenses: HashSet<(&str, &str)> = org
        .workspace_memberships
        .iter()
        .filter(|m| org.workspace(&m.workspace_gid).unwrap().is_organization)
        // The license follows the role: an admin counts even if flagged guest.
        .filter(|m| m.is_active && (m.is_admin || !m.is_guest))
        .map(|m| (m.workspace_gid.as_str(), m.user_gid.as_str()))
        .collect();
    (org.workspace_memberships.len() + org.team_memberships.len() + licenses.len()) as i64
}

fn organizations(org: &asana_sim::Org) -> usize {
    org.workspaces.iter().filter(|w| w.is_organization).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_org_syncs_exactly_with_the_fewest_requests() {
    let sim = start_sim(spec(150, 9, 3, 7)).await;
    let org = sim.org();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");

    let summary = sync_sim(&sim, "sim-token", &out).await.expect("sync succeeds");

    let members: HashSet<&str> = org.workspace_memberships.iter().map(|m| m.user_gid.as_str()).collect();
    let count = |t: &str| summary.resources.iter().find(|(name, _)| name == t).map(|(_, n)| *n).unwrap_or(-1);
    assert_eq!(count("workspace"), org.workspaces.len() as i64);
    assert_eq!(count("team"), org.teams.len() as i64);
    assert_eq!(count("user"), members.len() as i64);
    assert_eq!(organizations(&org), 1);
    assert_eq!(count("license"), 2, "enterprise and view only, of the one organization");
    assert_eq!(summary.entitlements, (3 * org.workspaces.len() + 4 * org.teams.len() + 2) as i64);
    assert_eq!(summary.grants, expected_grants(&org));
    assert_eq!(summary.http_requests, org.minimum_requests(100), "one request per page, pages of 100");
    assert_eq!(sim.request_count(), summary.http_requests);

    let file = SyncFile::open_existing(&out).unwrap();
    let run = file.last_good_run().unwrap().unwrap();
    let grants = file.grants(run.id, None).unwrap();
    let grant = |id: String| grants.iter().find(|g| g.id == id).unwrap_or_else(|| panic!("grant {id} missing")).clone();

    // An active admin is an admin, not also a member.
    let admin = org.workspace_memberships.iter().find(|m| m.is_admin).expect("the org has an admin");
    let admin_grant = grant(format!("workspace:{}:admin:user:{}", admin.workspace_gid, admin.user_gid));
    assert!(admin_grant.immutable);
    assert!(!grants.iter().any(|g| g.id == format!("workspace:{}:member:user:{}", admin.workspace_gid, admin.user_gid)));

    let guest = org.workspace_memberships.iter().find(|m| m.is_guest && !m.is_admin).expect("the org has a guest");
    grant(format!("workspace:{}:guest:user:{}", guest.workspace_gid, guest.user_gid));

    let view_only = org.workspace_memberships.iter().find(|m| m.is_view_only && !m.is_admin && !m.is_guest).expect("a view-only member");
    let g = grant(format!("workspace:{}:member:user:{}", view_only.workspace_gid, view_only.user_gid));
    assert_eq!(g.attributes["is_view_only"], "true");
    // Without SCIM the license comes from REST and is read only.
    assert!(grant(format!("license:{}:view only:assigned:user:{}", view_only.workspace_gid, view_only.user_gid)).immutable);

    let inactive = org.workspace_memberships.iter().find(|m| !m.is_active).expect("a deactivated user");
    let role = if inactive.is_admin {
        "admin"
    } else if inactive.is_guest {
        "guest"
    } else {
        "member"
    };
    let g = grant(format!("workspace:{}:{role}:user:{}", inactive.workspace_gid, inactive.user_gid));
    assert_eq!(g.attributes["is_active"], "false");

    let limited = org.team_memberships.iter().find(|m| m.is_limited_access && !m.is_admin).expect("a limited-access member");
    assert!(grant(format!("team:{}:limited-access:user:{}", limited.team_gid, limited.user_gid)).immutable);
    let team_admin = org.team_memberships.iter().find(|m| m.is_admin).expect("a team admin");
    grant(format!("team:{}:admin:user:{}", team_admin.team_gid, team_admin.user_gid));
    let plain = org.team_memberships.iter().find(|m| !m.is_admin && !m.is_limited_access && !m.is_guest).expect("a team member");
    assert!(!grant(format!("team:{}:member:user:{}", plain.team_gid, plain.user_gid)).immutable);

    // Users carry name and email; teams hang under their workspace.
    let users = file.resources(run.id, Some("user")).unwrap();
    let someone = &org.users[3];
    let user = users.iter().find(|u| u.id == someone.gid).expect("user synced");
    assert_eq!(user.display_name, someone.name);
    assert_eq!(user.attributes["email"], someone.email.as_str());
    let teams = file.resources(run.id, Some("team")).unwrap();
    let team = teams.iter().find(|t| t.id == org.teams[0].gid).unwrap();
    assert_eq!(team.parent.as_ref().unwrap().id, org.teams[0].workspace_gid);
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_crosses_page_boundaries() {
    let sim = start_sim(spec(250, 2, 1, 11)).await;
    let dir = tempfile::tempdir().unwrap();
    let summary = sync_sim(&sim, "sim-token", &dir.path().join("sync.db")).await.unwrap();

    let count = |t: &str| summary.resources.iter().find(|(name, _)| name == t).unwrap().1;
    let members = sim.org().workspace_memberships.len() as i64;
    assert!(members >= 240, "the org is big enough to page: {members}");
    assert_eq!(count("user"), members);
    let requests = sim.requests();
    let user_pages: Vec<_> = requests.iter().filter(|r| r.path == "/users").collect();
    assert_eq!(user_pages.len(), 3, "250 users take 3 pages of 100");
    assert_eq!(user_pages.iter().filter(|r| r.query.contains("offset=")).count(), 2);
    assert!(requests.iter().all(|r| r.query.contains("limit=100") && r.query.contains("opt_fields=")), "every list asks for 100 and opt_fields");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_is_waited_out_and_retried() {
    let sim = start_sim(spec(40, 2, 1, 5)).await;
    sim.force_429_next(1);
    let dir = tempfile::tempdir().unwrap();
    let summary = sync_sim(&sim, "sim-token", &dir.path().join("sync.db")).await.expect("sync succeeds after the 429");
    assert_eq!(summary.rate_limited, 1);
    assert_eq!(summary.http_requests, sim.org().minimum_requests(100) + 1);
    let requests = sim.requests();
    assert_eq!(requests[0].status, 429);
    assert_eq!((requests[1].path.as_str(), requests[1].status), (requests[0].path.as_str(), 200), "the same page is asked again");
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_429s_at_random_still_sync_everything() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(60, 3, 2, 9)));
    config.inject_429_rate = 0.15;
    config.retry_after_secs = 0;
    let sim = start_sim_with(config).await;
    let dir = tempfile::tempdir().unwrap();
    let summary = sync_sim(&sim, "sim-token", &dir.path().join("sync.db")).await.expect("sync succeeds");
    assert_eq!(summary.http_requests, sim.org().minimum_requests(100) + summary.rate_limited);
    assert_eq!(summary.grants, expected_grants(&sim.org()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_fails_with_unauthorized_and_keeps_the_last_good_sync() {
    let sim = start_sim(spec(30, 2, 1, 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let good = sync_sim(&sim, "sim-token", &out).await.unwrap();

    let error = sync_sim(&sim, "wrong-token", &out).await.expect_err("a wrong token fails");
    let text = format!("{error:#}");
    assert!(text.contains("unauthorized"), "{text}");
    assert!(!text.contains("wrong-token"), "the secret never shows in errors: {text}");

    let file = SyncFile::open_existing(&out).unwrap();
    let last_good = file.last_good_run().unwrap().unwrap();
    assert_eq!(last_good.id, good.run_id);
    assert_eq!(file.grants(last_good.id, None).unwrap().len() as i64, good.grants);
    let last = file.last_run().unwrap().unwrap();
    assert_eq!(last.status, "failed");
    assert!(last.error.unwrap().contains("unauthorized"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_component_imports_only_our_package_and_startup_wasi() {
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let imports = tether_host::runtime::engine::import_names(engine.engine(), &module.component);
    assert!(imports.iter().any(|i| i.starts_with("tether:connector/http@0.1.0")), "{imports:?}");
    for import in &imports {
        let allowed = ["tether:connector/", "wasi:cli/", "wasi:io/", "wasi:filesystem/", "wasi:clocks/", "wasi:random/"];
        assert!(allowed.iter().any(|p| import.starts_with(p)), "unexpected import {import}");
    }
    assert!(!imports.iter().any(|i| i.starts_with("wasi:sockets") || i.starts_with("wasi:http")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_that_refuses_to_list_teams_does_not_stop_the_sync() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(50, 4, 3, 13)));
    config.teams_only_in_organizations = true;
    let sim = start_sim_with(config).await;
    let org = sim.org();
    let dir = tempfile::tempdir().unwrap();
    let summary = sync_sim(&sim, "sim-token", &dir.path().join("s.db")).await.expect("sync succeeds");
    let organizations: HashSet<&str> = org.workspaces.iter().filter(|w| w.is_organization).map(|w| w.gid.as_str()).collect();
    let org_teams = org.teams.iter().filter(|t| organizations.contains(t.workspace_gid.as_str())).count() as i64;
    assert!(org_teams < org.teams.len() as i64, "some teams sit in plain workspaces");
    let teams = summary.resources.iter().find(|(t, _)| t == "team").unwrap().1;
    assert_eq!(teams, org_teams);
    assert!(sim.requests().iter().any(|r| r.path.ends_with("/teams") && r.status == 400));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sync_resumes_from_its_checkpoint() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(700, 12, 2, 31)));
    config.retry_after_secs = 0;
    let sim = start_sim_with(config).await;
    let org = sim.org();
    let minimum = org.minimum_requests(100);
    // An outage halfway through that outlasts the host's retries.
    let retries = tether_host::runtime::instance::RATE_LIMIT_RETRIES;
    sim.force_429_from(minimum / 2, retries + 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");

    let error = sync_sim(&sim, "sim-token", &out).await.expect_err("the outage fails the sync");
    assert!(format!("{error:#}").contains("rate limited"), "{error:#}");
    let sent_before = sim.request_count();

    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    let mut file = SyncFile::open(&out).unwrap();
    let failed_run = file.last_run().unwrap().unwrap().id;
    let mut instance = tether_host::runtime::instance::ConnectorInstance::start(&engine, &module, &grants).await.unwrap();
    let summary = tether_host::sync::run_with(
        &mut instance,
        &mut file,
        &module.digest,
        &indicatif::ProgressBar::hidden(),
        &tether_host::sync::SyncOptions { resume: true, ..Default::default() },
    )
    .await
    .expect("the resume finishes");

    assert_eq!(summary.run_id, failed_run, "the failed run is the one finished");
    assert_eq!(summary.grants, expected_grants(&org), "nothing lost, nothing doubled");
    let users = summary.resources.iter().find(|(t, _)| t == "user").unwrap().1;
    assert_eq!(users, org.workspace_memberships.iter().map(|m| &m.user_gid).collect::<HashSet<_>>().len() as i64);
    let resumed = sim.request_count() - sent_before;
    assert!(resumed < minimum - minimum / 4, "the resume did not start over: {resumed} of {minimum}");
    // Every page is written with the checkpoint after it, so the resume
    // goes on from exactly the page that was refused: nothing is asked twice.
    let outage_at = minimum / 2;
    assert_eq!(sent_before, outage_at - 1 + retries as u64 + 1);
    assert_eq!(workspace_rereads(&sim), 0, "the resumed instance gets each workspace as reported");
    assert_eq!(resumed, minimum - (outage_at - 1), "{sent_before} + {resumed} vs {minimum}");
    let run = file.last_run().unwrap().unwrap();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.http_requests as u64, sent_before + resumed, "the run counts both parts");
}

/// Issue #7, item 8: a user view only in an organization and also in a
/// plain workspace got both `enterprise` and `view only`. Licenses belong
/// to organizations: one license resource pair per organization, at most
/// one license grant per user per organization, none from plain
/// workspaces, and a user's licenses in two organizations told apart.
#[tokio::test(flavor = "multi_thread")]
async fn licenses_are_per_organization_and_plain_workspaces_carry_none() {
    let mut org = asana_sim::Org::generate(&spec(60, 3, 3, 19));
    let first = org.workspaces[0].gid.clone();
    let plain = org.workspaces[1].gid.clone();
    // A second organization, with licenses of its own.
    let second = org.workspaces[2].gid.clone();
    org.workspaces[2].is_organization = true;
    org.workspaces[2].email_domains = vec!["second.example".into()];
    let viewer = org
        .workspace_memberships
        .iter()
        .find(|m| m.workspace_gid == first && m.is_active && m.is_view_only && !m.is_admin && !m.is_guest)
        .expect("a view-only member of the organization")
        .user_gid
        .clone();
    // The viewer is also in the plain workspace (where Asana says
    // is_view_only: false) and a full (enterprise) member of the second organization.
    let mut next_gid = 1_299_999_999_999_000u64;
    for workspace in [&plain, &second] {
        match org.workspace_memberships.iter_mut().find(|m| &m.workspace_gid == workspace && m.user_gid == viewer) {
            Some(m) => m.is_view_only = false,
            None => {
                next_gid += 1;
                org.workspace_memberships.push(asana_sim::WorkspaceMembership {
                    gid: next_gid.to_string(),
                    user_gid: viewer.clone(),
                    workspace_gid: workspace.clone(),
                    is_admin: false,
                    is_guest: false,
                    is_active: true,
                    is_view_only: false,
                });
            }
        }
    }
    let sim = start_sim_with(SimConfig::new(org.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");

    let summary = sync_sim(&sim, "sim-token", &out).await.expect("sync succeeds");
    assert_eq!(summary.http_requests, org.minimum_requests(100), "licenses cost no request");
    assert_eq!(summary.grants, expected_grants(&org));

    let file = SyncFile::open_existing(&out).unwrap();
    let run = file.last_good_run().unwrap().unwrap().id;
    let mut licenses: Vec<(String, String)> =
        file.resources(run, Some("license")).unwrap().into_iter().map(|r| (r.id, r.parent.expect("a license hangs under its organization").id)).collect();
    licenses.sort();
    let mut expected: Vec<(String, String)> =
        [&first, &second].iter().flat_map(|o| [(format!("{o}:enterprise"), o.to_string()), (format!("{o}:view only"), o.to_string())]).collect();
    expected.sort();
    assert_eq!(licenses, expected, "two licenses per organization, none for the plain workspace");

    let grants = file.grants(run, Some("license")).unwrap();
    let mut held: Vec<&str> = grants.iter().filter(|g| g.principal.id == viewer).map(|g| g.id.as_str()).collect();
    held.sort();
    let mut want = vec![format!("license:{first}:view only:assigned:user:{viewer}"), format!("license:{second}:enterprise:assigned:user:{viewer}")];
    want.sort();
    assert_eq!(held, want);
    assert!(!grants.iter().any(|g| g.entitlement_id.contains(&plain)), "a plain workspace carries no license");
    let mut per_org = HashSet::new();
    for g in &grants {
        let org_gid = g.entitlement_id.split(':').nth(1).unwrap();
        assert!(per_org.insert((org_gid.to_string(), g.principal.id.clone())), "{} holds two licenses in {org_gid}", g.principal.id);
    }
}

/// The simulator's grants as a sync of it records them, by id.
fn grant_ids(out: &std::path::Path) -> std::collections::BTreeSet<String> {
    let file = SyncFile::open_existing(out).unwrap();
    let run = file.last_good_run().unwrap().unwrap();
    file.grants(run.id, None).unwrap().into_iter().map(|g| g.id).collect()
}

/// Permissions for `sim` whose host retries wait a millisecond or so, not the
/// default quarter second and up, so tests do not wait.
fn quick_retry_grants(sim: &asana_sim::SimHandle) -> tether_host::runtime::instance::Permissions {
    let mut grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    grants.limits.http_retry_base = std::time::Duration::from_millis(1);
    grants.limits.http_retry_max_delay = std::time::Duration::from_millis(5);
    grants
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_5xx_and_429s_sync_exactly_the_grants_of_a_clean_run() {
    let org_spec = spec(600, 30, 3, 21);
    let clean_sim = start_sim(org_spec.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clean_out = dir.path().join("clean.db");
    sync_sim(&clean_sim, "sim-token", &clean_out).await.expect("the clean sync succeeds");

    let mut config = SimConfig::new(asana_sim::Org::generate(&org_spec));
    config.inject_5xx_rate = 0.03;
    config.inject_429_rate = 0.10;
    config.retry_after_secs = 0;
    let sim = start_sim_with(config).await;
    let out = dir.path().join("faulty.db");
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let summary = sync_with(&engine, &module, &quick_retry_grants(&sim), &out).await.expect("the sync outlasts the faults");

    let requests = sim.requests();
    let failed = requests.iter().filter(|r| r.status >= 500).count() as u64;
    assert!(failed >= 2, "the simulator answered 5xx: {failed}");
    assert!(summary.rate_limited > 0);
    assert_eq!(summary.retries, failed, "every 5xx was sent again");
    assert_eq!(summary.grants, expected_grants(&sim.org()));
    assert_eq!(grant_ids(&out), grant_ids(&clean_out), "the same grants as a clean run");
    let minimum = sim.org().minimum_requests(100);
    assert_eq!(summary.http_requests, minimum + summary.rate_limited + summary.retries);
    assert_eq!(sim.request_count(), summary.http_requests, "the host counts every attempt");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connections_are_sent_again() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(300, 12, 2, 17)));
    config.inject_reset_rate = 0.05;
    let sim = start_sim_with(config).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let summary = sync_with(&engine, &module, &quick_retry_grants(&sim), &dir.path().join("s.db")).await.expect("the sync outlasts the resets");
    let dropped = sim.requests().iter().filter(|r| r.status == 0).count() as u64;
    assert!(dropped >= 1, "the simulator dropped connections");
    assert_eq!(summary.retries, dropped);
    assert_eq!(summary.grants, expected_grants(&sim.org()));
    assert_eq!(summary.http_requests, sim.org().minimum_requests(100) + dropped);
    assert_eq!(sim.request_count(), summary.http_requests);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_retry_budget_ends_the_sync_with_a_clear_error() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(300, 12, 2, 23)));
    config.inject_5xx_rate = 0.3;
    let sim = start_sim_with(config).await;
    let mut grants = quick_retry_grants(&sim);
    grants.limits.http_retry_budget = 3;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let error = sync_with(&engine, &module, &grants, &out).await.expect_err("the budget runs out");
    let text = format!("{error:#}");
    assert!(text.starts_with("the HTTP retry budget is spent (3 retries for this connector instance, --retry-budget): "), "{text}");
    assert!(text.contains("(HTTP 500)") || text.contains("(HTTP 503)"), "the upstream's answer follows: {text}");

    // Three retries, spread over the sync's requests, then the fourth
    // failure went to the connector.
    let requests = sim.requests();
    let failed: Vec<_> = requests.iter().filter(|r| r.status >= 500).collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(requests.last().unwrap().status >= 500);
    let pages: HashSet<(&str, &str)> = failed.iter().map(|r| (r.path.as_str(), r.query.as_str())).collect();
    assert!(pages.len() > 1, "the budget is shared by every call: {pages:?}");
    let run = SyncFile::open_existing(&out).unwrap().last_run().unwrap().unwrap();
    assert_eq!(run.status, "failed");
    assert!(run.error.unwrap().contains("retry budget is spent"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backoff_waits_count_toward_the_call_wall_clock() {
    let sim = start_sim(spec(20, 1, 1, 3)).await;
    sim.force_503_next(u32::MAX);
    let mut grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    grants.limits.http_retries = 1_000;
    grants.limits.http_retry_budget = 1_000;
    grants.limits.http_retry_base = std::time::Duration::from_millis(40);
    grants.limits.http_retry_max_delay = std::time::Duration::from_millis(40);
    grants.limits.wall_per_call = std::time::Duration::from_millis(400);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let error = sync_with(&engine, &module, &grants, &dir.path().join("s.db")).await.expect_err("the call runs out of time");
    assert!(format!("{error:#}").contains("limit exceeded: wall-clock"), "{error:#}");
    assert!(sim.request_count() < 12, "backoff waited between attempts: {}", sim.request_count());
}

/// Syncs `sim` on a pool of `size` instances of the Asana component.
async fn sync_pool(
    grants: &tether_host::runtime::instance::Permissions,
    out: &std::path::Path,
    size: usize,
    resume: bool,
) -> anyhow::Result<tether_host::sync::SyncSummary> {
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let mut pool = tether_host::runtime::instance::ConnectorInstance::start_pool(&engine, &module, grants, Some(size)).await?;
    let mut file = SyncFile::open(out)?;
    let options = tether_host::sync::SyncOptions { resume, ..Default::default() };
    tether_host::sync::run_pool(&mut pool, &mut file, &module.digest, &indicatif::ProgressBar::hidden(), &options).await
}

/// Every row of the last good run, as text, sorted: resources (with parent,
/// name and attributes), entitlements and grants.
fn all_rows(out: &std::path::Path) -> Vec<String> {
    {
        // Every key a row refers to exists (SQLite's check is off while
        // syncing), and the last run's grants all moved out of the stage.
        let conn = rusqlite::Connection::open(out).unwrap();
        let broken: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| row.get(0)).unwrap();
        assert_eq!(broken, 0, "rows refer to keys the file does not hold");
        let staged: i64 = conn.query_row("SELECT count(*) FROM grant_stage", [], |row| row.get(0)).unwrap();
        assert_eq!(staged, 0, "grants left in the stage after a good run");
    }
    let file = SyncFile::open_existing(out).unwrap();
    let run = file.last_good_run().unwrap().unwrap().id;
    let mut rows: Vec<String> = file.resources(run, None).unwrap().iter().map(|r| format!("{r:?}")).collect();
    rows.extend(file.entitlements(run, None).unwrap().iter().map(|e| format!("{e:?}")));
    rows.extend(file.grants(run, None).unwrap().iter().map(|g| format!("{g:?}")));
    rows.sort();
    rows
}

/// Issue 9, item 1: the rows do not depend on how many listings run at
/// once, and neither do the requests (exactly the minimum: no fresh
/// instance reads the workspaces again), while the wall time does.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_org_gives_the_same_rows_at_any_concurrency() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(900, 40, 3, 29)));
    config.latency = std::time::Duration::from_millis(40);
    let sim = start_sim_with(config).await;
    let org = sim.org();
    let minimum = org.minimum_requests(100);
    let grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    let dir = tempfile::tempdir().unwrap();

    let one = sync_pool(&grants, &dir.path().join("one.db"), 1, false).await.expect("sequential sync");
    assert_eq!(one.http_requests, minimum);
    let many = sync_pool(&grants, &dir.path().join("many.db"), 50, false).await.expect("concurrent sync");
    // Each workspace's listings get it as reported, `is_organization`
    // included: no instance of the 50 asks /workspaces again.
    assert_eq!(many.http_requests, minimum);
    assert_eq!(sim.requests().iter().filter(|r| r.path == "/workspaces").count(), 2, "one listing of /workspaces per sync");
    assert_eq!(sim.request_count(), one.http_requests + many.http_requests);

    assert_eq!(many.grants, expected_grants(&org));
    assert_eq!((many.resources.clone(), many.entitlements, many.grants), (one.resources.clone(), one.entitlements, one.grants));
    assert_eq!(all_rows(&dir.path().join("many.db")), all_rows(&dir.path().join("one.db")), "the same rows, attributes included");
    // One at a time waits out every request's 40 ms; 50 at once overlap
    // them. (Loose: tests run side by side on a busy machine.)
    assert!(one.elapsed >= std::time::Duration::from_millis(40) * minimum as u32);
    assert!(many.elapsed < one.elapsed, "{:?} with 50 vs {:?} with 1", many.elapsed, one.elapsed);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_listings_outlast_5xx_429s_and_resets_with_the_rows_of_a_clean_run() {
    let org_spec = spec(600, 30, 3, 21);
    let clean_sim = start_sim(org_spec.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clean_out = dir.path().join("clean.db");
    sync_sim(&clean_sim, "sim-token", &clean_out).await.expect("the clean sync succeeds");

    let mut config = SimConfig::new(asana_sim::Org::generate(&org_spec));
    config.inject_5xx_rate = 0.03;
    config.inject_429_rate = 0.10;
    config.inject_reset_rate = 0.02;
    config.retry_after_secs = 0;
    let sim = start_sim_with(config).await;
    let out = dir.path().join("faulty.db");
    let summary = sync_pool(&quick_retry_grants(&sim), &out, 8, false).await.expect("the sync outlasts the faults");
    assert!(summary.rate_limited > 0 && summary.retries > 0);
    assert_eq!(all_rows(&out), all_rows(&clean_out), "the same rows as a clean sequential run");
    assert_eq!(sim.request_count(), summary.http_requests, "the pool counts every attempt once");
}

/// Issue 9, item 2: a concurrent sync that fails with listings in flight
/// resumes (concurrently) asking every page not yet written once.
#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_sync_that_failed_resumes_asking_no_page_twice() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(1200, 30, 2, 37)));
    config.retry_after_secs = 0;
    config.latency = std::time::Duration::from_millis(3);
    let sim = start_sim_with(config).await;
    let org = sim.org();
    let minimum = org.minimum_requests(100);
    let retries = tether_host::runtime::instance::RATE_LIMIT_RETRIES;
    // An outage halfway through that outlasts the retries of every
    // listing in flight.
    sim.force_429_from(minimum / 2, 8 * (retries + 1));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let mut grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    // A budget the sync never reaches, so all 8 listings are in flight
    // (under a budget the host keeps no more in flight than it needs).
    grants.limits.upstream.requests_per_minute = Some(60_000);

    let error = sync_pool(&grants, &out, 8, false).await.expect_err("the outage fails the sync");
    assert!(format!("{error:#}").contains("rate limited"), "{error:#}");
    let failed = SyncFile::open_existing(&out).unwrap().last_run().unwrap().unwrap();
    assert_eq!(failed.status, "failed");
    let answered_before = sim.requests().iter().filter(|r| r.status == 200).count() as u64;
    assert!(answered_before < minimum, "it failed part way: {answered_before} of {minimum}");

    let summary = sync_pool(&grants, &out, 8, true).await.expect("the resume finishes");
    assert_eq!(summary.run_id, failed.id, "the failed run is the one finished");
    assert_eq!(pages_asked_twice(&sim, &["/workspaces"]), Vec::<String>::new(), "every page answered once over both runs");
    let answered = sim.requests().iter().filter(|r| r.status == 200 && r.path != "/workspaces").count() as u64;
    assert_eq!(answered + 1, minimum, "each page but the one of /workspaces, once");
    assert_eq!(summary.grants, expected_grants(&org), "nothing lost, nothing doubled");
}

/// A page the file refuses (a full disk, a lock held past the busy
/// timeout; here a trigger) fails the run, and no checkpoint saved after
/// it counts it as done: the resume asks for it again. Before, the failed
/// run's last checkpoint did, and the resume ended "succeeded" without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_the_file_refuses_is_asked_again_on_resume() {
    let sim = start_sim(spec(200, 8, 2, 47)).await;
    let dir = tempfile::tempdir().unwrap();
    let grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    let clean = sync_pool(&grants, &dir.path().join("clean.db"), 1, false).await.expect("a clean sync");

    let out = dir.path().join("s.db");
    drop(SyncFile::open(&out).unwrap());
    let sql = |sql: &str| rusqlite::Connection::open(&out).unwrap().execute_batch(sql).unwrap();
    // The entitlements of the first team: the first page asked for once
    // the queue has handed the teams out.
    sql("CREATE TRIGGER refuse_a_page BEFORE INSERT ON entitlement_rows
         WHEN NEW.resource IN (SELECT kid FROM resource_keys WHERE resource_type = 'team')
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;");
    // One listing at a time: pages are written one by one, not in batches.
    let error = sync_pool(&grants, &out, 1, false).await.expect_err("the refused page fails the sync");
    assert!(format!("{error:#}").contains("database or disk is full"), "{error:#}");
    sql("DROP TRIGGER refuse_a_page;");
    let resumed = sync_pool(&grants, &out, 1, true).await.expect("the resume finishes");
    assert_eq!(resumed.entitlements, clean.entitlements, "the refused page's entitlements too");
    assert_eq!((&resumed.resources, resumed.grants), (&clean.resources, clean.grants));
}

/// Another connection holding the file's write lock for a moment (a
/// checkpointer, a backup tool) makes a page wait, within the busy
/// timeout, instead of failing the sync.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_waits_for_a_write_lock_held_for_a_moment() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(2000, 40, 2, 53)));
    config.latency = std::time::Duration::from_millis(5);
    let sim = start_sim_with(config).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.db");
    let holder = std::thread::spawn({
        let out = out.clone();
        move || loop {
            // Once the sync has written some pages, its file's lock for 2 s.
            let written =
                rusqlite::Connection::open(&out).and_then(|c| c.query_row("SELECT count(*) FROM run_resources", [], |r| r.get::<_, i64>(0)).map(|n| (c, n)));
            if let Ok((c, n)) = written {
                if n > 100 {
                    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                    c.execute_batch("BEGIN IMMEDIATE").unwrap();
                    let status: String = c.query_row("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1", [], |r| r.get(0)).unwrap();
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    c.execute_batch("COMMIT").unwrap();
                    return status;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    let summary = sync_pool(&grants, &out, 1, false).await.expect("the sync waits for the lock");
    assert_eq!(holder.join().unwrap(), "running", "the lock was held while the sync ran");
    assert_eq!(summary.grants, expected_grants(&sim.org()));
}

/// Under a rate budget the driver keeps only the listings in flight that
/// the rate needs (rate × answer time × 1.5 + 2), not the whole pool: here
/// 5 a second at about 50 ms is 3, so an upstream that takes 4 reads at
/// once never refuses one, though the pool has 16 instances.
#[tokio::test(flavor = "multi_thread")]
async fn under_a_budget_only_the_listings_the_rate_needs_are_in_flight() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(400, 24, 1, 43)));
    config.latency = std::time::Duration::from_millis(50);
    config.max_concurrent_reads = 4;
    config.retry_after_secs = 0;
    let sim = start_sim_with(config).await;
    let minimum = sim.org().minimum_requests(100);
    assert!(minimum < 300, "within one minute's budget: {minimum}");
    let mut grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    grants.limits.upstream.requests_per_minute = Some(300);
    let dir = tempfile::tempdir().unwrap();
    let summary = sync_pool(&grants, &dir.path().join("s.db"), 16, false).await.expect("the sync");
    assert_eq!(summary.rate_limited, 0, "more than 4 reads were in flight at once");
    assert_eq!(summary.http_requests, minimum);
}

/// Issue 9, item 1: a 429's Retry-After holds back every worker of the
/// pool, not only the one refused: while it lasts the simulator hears from
/// none of them, beyond the pages already in flight.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_pauses_every_worker_until_its_retry_after_passes() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(1500, 60, 2, 41)));
    config.retry_after_secs = 2;
    let sim = start_sim_with(config).await;
    let minimum = sim.org().minimum_requests(100);
    // Refuse one request once the sync is well under way.
    sim.force_429_from(minimum / 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    let summary = sync_pool(&grants, &dir.path().join("s.db"), 8, false).await.expect("the sync waits the 429 out");
    assert_eq!(summary.rate_limited, 1);
    assert!(summary.elapsed >= std::time::Duration::from_secs(2));
    let requests = sim.requests();
    let refused = requests.iter().position(|r| r.status == 429).expect("one 429");
    let retried = requests[refused + 1..]
        .iter()
        .position(|r| r.path == requests[refused].path && r.query == requests[refused].query)
        .expect("the refused page is asked again");
    // Without the shared pause the other 7 workers would go on for the
    // whole 2 s; with it only the pages already in flight (at most 7), and
    // the few sent as the pause ends with the retry, come in between.
    assert!(retried <= 7 + 8, "{retried} requests between the 429 and its retry");
    assert_eq!(summary.grants, expected_grants(&sim.org()));
}

/// The pause is the host's doing, not the connector's: a call held back by
/// it is not charged for the wait. With a Retry-After longer than the
/// call's wall-clock limit, the other workers' calls wait it out and the
/// sync succeeds (they used to fail on "limit exceeded: wall-clock").
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_longer_than_the_call_limit_is_waited_out_not_charged() {
    let mut config = SimConfig::new(asana_sim::Org::generate(&spec(600, 24, 2, 47)));
    config.retry_after_secs = 3;
    let sim = start_sim_with(config).await;
    let minimum = sim.org().minimum_requests(100);
    sim.force_429_from(minimum / 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    grants.limits.wall_per_call = std::time::Duration::from_secs(2);
    let summary = sync_pool(&grants, &dir.path().join("s.db"), 8, false).await.expect("the calls held back wait the pause out");
    assert_eq!(summary.rate_limited, 1);
    assert!(summary.elapsed >= std::time::Duration::from_secs(3));
    assert_eq!(summary.grants, expected_grants(&sim.org()));
}

/// A run interrupted by an older tether (a version-2 checkpoint: one
/// resource part way through its listings) resumes on a pool: that
/// resource's listings from the step named, then the rest of the queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_checkpoint_resumes_on_a_pool() {
    let sim = start_sim(spec(300, 12, 2, 43)).await;
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.db");
    let out = dir.path().join("s.db");
    let grants = permissions_for(&sim.base_url(), sim.addr(), "sim-token");
    sync_pool(&grants, &clean, 4, false).await.expect("a clean sync");
    let good = sync_pool(&grants, &out, 4, false).await.expect("a sync to take apart");
    // As an older tether would have left it: the run failed inside the
    // grants (step 1) of a team, whose memberships and everything queued
    // after it are not in the file yet.
    {
        let conn = rusqlite::Connection::open(&out).unwrap();
        let team_row: i64 = conn
            .query_row(
                "SELECT r.rid FROM resource_rows r JOIN resource_keys k ON k.kid = r.key WHERE r.run_id = ?1 AND k.resource_type = 'team' ORDER BY r.rid LIMIT 1",
                [good.run_id],
                |row| row.get(0),
            )
            .unwrap();
        conn.execute_batch(&format!(
            "DELETE FROM grant_rows WHERE run_id = {run} AND entitlement IN
                 (SELECT entitlement FROM entitlement_rows WHERE run_id = {run} AND resource IN (SELECT key FROM resource_rows WHERE run_id = {run} AND rid >= {team_row}));
             DELETE FROM entitlement_rows WHERE run_id = {run} AND resource IN (SELECT key FROM resource_rows WHERE run_id = {run} AND rid > {team_row});
             UPDATE sync_runs SET status = 'failed', checkpoint = '{{\"version\":2,\"position\":{{\"phase\":\"queue\",\"cursor\":{cursor},\"within\":{{\"row\":{team_row},\"step\":1,\"token\":null}}}}}}' WHERE id = {run};",
            run = good.run_id,
            cursor = team_row - 1,
        ))
        .unwrap();
    }
    let resumed = sync_pool(&grants, &out, 4, true).await.expect("the version-2 checkpoint resumes");
    assert_eq!(resumed.run_id, good.run_id);
    assert_eq!(all_rows(&out), all_rows(&clean), "every record is back, none doubled");
}

/// Only organizations have teams: a plain workspace that answers 400 to its
/// teams listing has none, and the sync goes on; an organization that does
/// is failing, and the sync fails with it rather than record every team as
/// gone (the last good sync stays the last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_that_refuses_its_teams_fails_the_sync() {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use serde_json::json;
    let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refusing = refuse.clone();
    let bad_request = || (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [{"message": "teams are not available"}]})));
    let app = axum::Router::new()
        .route(
            "/workspaces",
            get(|| async {
                axum::Json(json!({"data": [{"gid": "101", "name": "Org", "is_organization": true}, {"gid": "102", "name": "Plain", "is_organization": false}]}))
            }),
        )
        .route(
            "/workspaces/101/teams",
            get(move || {
                let refused = refusing.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if refused {
                        bad_request().into_response()
                    } else {
                        axum::Json(json!({"data": [{"gid": "201", "name": "Team"}]})).into_response()
                    }
                }
            }),
        )
        .route("/workspaces/102/teams", get(move || async move { bad_request() }))
        .route("/users", get(|| async { axum::Json(json!({"data": [{"gid": "301", "name": "Ann"}]})) }))
        .route("/workspaces/{gid}/workspace_memberships", get(|| async { axum::Json(json!({"data": [{"user": {"gid": "301", "name": "Ann"}}]})) }))
        .route("/teams/201/team_memberships", get(|| async { axum::Json(json!({"data": [{"user": {"gid": "301"}}]})) }));
    let addr = serve_stub(app).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let grants = permissions_for(&format!("http://{addr}"), addr, "teams-token");
    let good = sync_with(&engine, &module, &grants, &out).await.expect("the plain workspace's 400 means no teams");
    let file = SyncFile::open_existing(&out).unwrap();
    let teams: Vec<String> = file.resources(good.run_id, Some("team")).unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(teams, ["201"]);
    drop(file);

    refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let error = sync_with(&engine, &module, &grants, &out).await.expect_err("an organization's 400 fails the sync");
    assert!(format!("{error:#}").contains("organization 101 refused to list its teams"), "{error:#}");
    let file = SyncFile::open_existing(&out).unwrap();
    assert_eq!(file.last_good_run().unwrap().unwrap().id, good.run_id, "the good sync stays the last good one");
}

/// An Asana that answers in shapes its spec does not promise: flags as
/// strings or numbers, users without names or with an email that is not a
/// string, fields nobody asked for. The connector reads pages straight into
/// its own records, leniently: each oddity reads as absent, and the sync
/// keeps every grant. Then a team membership without a user, or whose user's
/// gid is a number: the sync fails with an error that says so, and the good
/// sync before it stays the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_shapes_read_leniently_and_a_membership_without_a_user_fails_clearly() {
    use axum::routing::get;
    use serde_json::json;
    let team_members = std::sync::Arc::new(std::sync::Mutex::new(json!([
        {"gid": "m1", "is_admin": "true", "user": {"gid": "301", "name": "Ann", "extra": {"deep": [1, 2]}}},
        {"gid": "m2", "is_admin": 1, "is_guest": null, "is_limited_access": true, "user": {"gid": "302"}},
    ])));
    let members = team_members.clone();
    let app = axum::Router::new()
        .route("/workspaces", get(|| async { axum::Json(json!({"data": [{"gid": "101", "name": "Org", "is_organization": true}], "next_page": null})) }))
        .route("/workspaces/101/teams", get(|| async { axum::Json(json!({"data": [{"gid": "201", "name": 5}], "unexpected": true})) }))
        .route("/users", get(|| async { axum::Json(json!({"data": [{"gid": "301", "name": "Ann", "email": 42}, {"gid": "302", "email": "bo@example.com"}]})) }))
        .route(
            "/workspaces/101/workspace_memberships",
            get(|| async {
                axum::Json(json!({"data": [
                    {"user": {"gid": "301", "name": "Ann"}, "is_admin": false, "is_guest": "false", "is_active": "yes", "is_view_only": 0},
                    {"user": {"gid": "302", "name": null}, "is_guest": true, "is_active": false},
                ], "next_page": {"offset": null}}))
            }),
        )
        .route(
            "/teams/201/team_memberships",
            get(move || {
                let members = members.lock().unwrap().clone();
                async move { axum::Json(json!({"data": members})) }
            }),
        );
    let addr = serve_stub(app).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sync.db");
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    let grants = permissions_for(&format!("http://{addr}"), addr, "odd-shapes-token");
    let good = sync_with(&engine, &module, &grants, &out).await.expect("odd shapes read leniently");

    let file = SyncFile::open_existing(&out).unwrap();
    let run = file.last_good_run().unwrap().unwrap().id;
    let mut ids: Vec<String> = file.grants(run, None).unwrap().into_iter().map(|g| g.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            // "true" is true; 1 is no flag; "yes" is not a flag, so the default (active).
            "license:101:enterprise:assigned:user:301",
            "team:201:admin:user:301",
            "team:201:limited-access:user:302",
            "workspace:101:guest:user:302",
            "workspace:101:member:user:301",
        ]
    );
    let users = file.resources(run, Some("user")).unwrap();
    let email = |id: &str| users.iter().find(|u| u.id == id).and_then(|u| u.attributes.get("email").cloned());
    assert_eq!(email("301"), None, "an email that is not a string is no email");
    assert_eq!(email("302"), Some(json!("bo@example.com")));
    assert_eq!(users.iter().find(|u| u.id == "301").unwrap().display_name, "Ann");
    drop(file);

    team_members.lock().unwrap().as_array_mut().unwrap().push(json!({"gid": "m3", "is_admin": false}));
    let error = sync_with(&engine, &module, &grants, &out).await.expect_err("a membership without a user fails the sync");
    assert!(format!("{error:#}").contains("membership without a user"), "{error:#}");
    let file = SyncFile::open_existing(&out).unwrap();
    assert_eq!(file.last_good_run().unwrap().unwrap().id, good.run_id, "the good sync stays the last good one");
    drop(file);

    // A gid as a number is no gid: said so, not "missing".
    let last = team_members.lock().unwrap().as_array_mut().unwrap().len() - 1;
    team_members.lock().unwrap()[last] = json!({"gid": "m3", "user": {"gid": 303, "name": "Cy"}});
    let error = sync_with(&engine, &module, &grants, &out).await.expect_err("a user whose gid is a number fails the sync");
    assert!(format!("{error:#}").contains("whose gid is not a string"), "{error:#}");
}
