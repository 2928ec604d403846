//! Access reviews from the sync file (issue 12, items 1 and 2), on real
//! syncs of the simulator through the compiled connector: `tether diff`
//! between two syncs (one file or two) and `tether export` as CSV and JSON
//! Lines, run as an operator runs them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;
use asana_sim::{Org, OrgSpec, SimConfig, SimHandle};
use tether_host::runtime::bindings::ResourceRef;
use tether_host::runtime::instance::ConnectorInstance;
use tether_host::sync::sync_file::Table;
use tether_host::sync::SyncFile;

pub(super) fn tether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether")).args(args).env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache")).output().expect("tether runs")
}

pub(super) fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(super) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(super) fn org_spec() -> OrgSpec {
    OrgSpec { users: 40, teams: 3, workspaces: 1, seed: 12 }
}

/// A team membership to grant (a team and an active org member not on it)
/// and one to revoke (a plain member, not the token's owner), as grant ids.
fn grant_to_add_and_grant_to_revoke(org: &Org) -> ((String, String), String) {
    let owner = &org.token_owner().unwrap().gid;
    let (team, user) = team_and_outsider(org);
    let revoke = org
        .team_memberships
        .iter()
        .find(|m| !m.is_admin && !m.is_guest && &m.user_gid != owner && m.user_gid != user && org.user(&m.user_gid).is_some_and(|u| u.active))
        .expect("a plain team member");
    ((team, user), format!("team:{}:member:user:{}", revoke.team_gid, revoke.user_gid))
}

async fn connector(sim: &SimHandle) -> ConnectorInstance {
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    ConnectorInstance::start(&engine, &module, &permissions_for(&sim.base_url(), sim.addr(), "sim-token")).await.expect("connector starts")
}

/// Grants one team membership and revokes another through the connector;
/// returns the ids of the grant added and the grant removed.
pub(super) async fn change_the_org(sim: &SimHandle) -> (String, String) {
    let ((team, user), revoke) = grant_to_add_and_grant_to_revoke(&sim.org());
    let mut connector = connector(sim).await;
    let granted = connector.grant_entitlement(&format!("team:{team}:member"), &ResourceRef { resource_type: "user".into(), id: user.clone() }).await.unwrap();
    let added = granted.grant.expect("the new grant").id;
    assert_eq!(added, format!("team:{team}:member:user:{user}"));
    connector.revoke_grant(&revoke).await.unwrap();
    (added, revoke)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

fn grants_in(file: &Path) -> i64 {
    let file = SyncFile::open_existing(file).unwrap();
    let run = file.last_good_run().unwrap().unwrap();
    file.count(run.id, Table::Grants).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_of_two_syncs_in_one_file_shows_exactly_the_grant_added_and_the_grant_revoked() {
    let sim = start_sim(org_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("asana.db");
    sync_sim(&sim, "sim-token", &db).await.unwrap();

    // Nothing changed upstream: exit 0, counts all zero.
    sync_sim(&sim, "sim-token", &db).await.unwrap();
    let same = tether(&["diff", path(&db)]);
    assert_eq!(same.status.code(), Some(0), "{}{}", stdout(&same), stderr(&same));
    assert!(stdout(&same).contains("no differences"), "{}", stdout(&same));

    let (added, removed) = change_the_org(&sim).await;
    let summary = sync_sim(&sim, "sim-token", &db).await.unwrap();

    // JSON Lines: exactly the two grants.
    let diff = tether(&["diff", path(&db), "--format", "jsonl"]);
    assert_eq!(diff.status.code(), Some(1), "{}", stderr(&diff));
    let lines = json_lines(&stdout(&diff));
    let seen: BTreeSet<(String, String, String)> =
        lines.iter().map(|l| (l["change"].as_str().unwrap().into(), l["kind"].as_str().unwrap().into(), l["id"].as_str().unwrap().into())).collect();
    let expected: BTreeSet<(String, String, String)> =
        [("added".into(), "grant".into(), added.clone()), ("removed".into(), "grant".into(), removed.clone())].into();
    assert_eq!(seen, expected);
    let added_line = lines.iter().find(|l| l["change"] == "added").unwrap();
    assert!(added_line["before"].is_null() && added_line["after"]["entitlement"].as_str().unwrap().ends_with(":member"), "{added_line}");

    // The table names them and counts them.
    let table = tether(&["diff", path(&db)]);
    assert_eq!(table.status.code(), Some(1), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.contains(&added) && text.contains(&removed), "{text}");
    let grants_line = text.lines().find(|l| l.starts_with("grants ")).unwrap();
    assert_eq!(grants_line.split_whitespace().collect::<Vec<_>>(), ["grants", "1", "1", "0"], "{text}");

    // The same with the runs named; the other way round, added and removed swap.
    let runs = format!("{}", summary.run_id);
    let earlier = format!("{}", summary.run_id - 1);
    let named = tether(&["diff", path(&db), "--from", &earlier, "--to", &runs, "--format", "jsonl"]);
    assert_eq!((named.status.code(), stdout(&named)), (Some(1), stdout(&diff)));
    let reversed = tether(&["diff", path(&db), "--from", &runs, "--to", &earlier, "--format", "jsonl"]);
    let reversed = json_lines(&stdout(&reversed));
    assert!(reversed.iter().any(|l| l["change"] == "removed" && l["id"] == added.as_str()), "{reversed:?}");

    // CSV: one row per difference, under a header.
    let csv = tether(&["diff", path(&db), "--format", "csv"]);
    assert_eq!(csv.status.code(), Some(1));
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(&csv.stdout[3..]).records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);

    // The views still show the last good run only.
    let file = SyncFile::open_existing(&db).unwrap();
    let kept = file.grants(summary.run_id, None).unwrap().len() as i64;
    assert_eq!(kept, summary.grants as i64);
    let inspect = tether(&["inspect", path(&db), "grants", "--format", "json"]);
    let shown: BTreeSet<String> = json_lines(&stdout(&inspect)).iter().map(|g| g["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(shown.len() as i64, kept);
    assert!(shown.contains(&added) && !shown.contains(&removed));

    // The first sync's records are gone (only the last two good runs keep
    // theirs), which diff says rather than reporting everything added.
    let first = format!("{}", summary.run_id - 2);
    let pruned = tether(&["diff", path(&db), "--from", &first]);
    assert_eq!(pruned.status.code(), Some(2));
    assert!(stderr(&pruned).contains(&format!("the records of sync run {first} are no longer kept")), "{}", stderr(&pruned));
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_of_two_files_compares_their_last_good_syncs() {
    let sim = start_sim(org_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("before.db"), dir.path().join("after.db"));
    sync_sim(&sim, "sim-token", &before).await.unwrap();
    let same = tether(&["diff", path(&before), path(&before)]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));

    let (added, removed) = change_the_org(&sim).await;
    sync_sim(&sim, "sim-token", &after).await.unwrap();
    let diff = tether(&["diff", path(&before), path(&after), "--format", "jsonl"]);
    assert_eq!(diff.status.code(), Some(1), "{}", stderr(&diff));
    let changes: BTreeSet<(String, String)> =
        json_lines(&stdout(&diff)).iter().map(|l| (l["change"].as_str().unwrap().into(), l["id"].as_str().unwrap().into())).collect();
    assert_eq!(changes, [("added".into(), added), ("removed".into(), removed)].into());

    let refused = tether(&["diff", path(&before), path(&after), "--from", "1"]);
    assert_eq!(refused.status.code(), Some(2), "a usage error is an error too");
}

/// An export that fails part way (a damaged sync file) leaves the file
/// it would have replaced as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_export_leaves_the_last_export_whole() {
    let sim = start_sim_with(SimConfig::new(Org::generate(&org_spec()))).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("asana.db");
    sync_sim(&sim, "sim-token", &db).await.unwrap();
    let out = dir.path().join("review.csv");
    assert!(tether(&["export", path(&db), "--out", path(&out)]).status.success());
    let before = std::fs::read(&out).unwrap();
    // Readable up to its grants, which then fail to read.
    rusqlite::Connection::open(&db).unwrap().execute_batch("ALTER TABLE entitlement_keys RENAME TO gone").unwrap();
    let run = tether(&["export", path(&db), "--out", path(&out)]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert_eq!(std::fs::read(&out).unwrap(), before, "the last export is untouched");
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("tether-export")).collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_every_grant_as_csv_excel_opens_safely_and_as_json_lines() {
    let mut org = Org::generate(&org_spec());
    // A display name a spreadsheet would run as a formula, on a user with grants.
    let member = org.team_memberships[0].user_gid.clone();
    let hostile = "=HYPERLINK(\"http://evil.example\",\"click\")";
    org.users.iter_mut().find(|u| u.gid == member).unwrap().name = hostile.into();
    let sim = start_sim_with(SimConfig::new(org)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("asana.db");
    sync_sim(&sim, "sim-token", &db).await.unwrap();
    let grants = grants_in(&db);
    assert!(grants > 0);

    let out = dir.path().join("review.csv");
    let run = tether(&["export", path(&db), "--out", path(&out)]);
    assert!(run.status.success(), "{}", stderr(&run));
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"\xef\xbb\xbf"), "UTF-8 with a byte order mark");
    let mut reader = csv::Reader::from_reader(&bytes[3..]);
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "grant_id");
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len() as i64, grants, "one row per grant");
    // `--out -` is standard output, the same bytes, and no file named "-".
    let piped = std::process::Command::new(env!("CARGO_BIN_EXE_tether")).args(["export", path(&db), "--out", "-"]).current_dir(dir.path()).output().unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert_eq!(piped.stdout, bytes);
    assert!(!dir.path().join("-").exists());
    let guarded: Vec<&csv::StringRecord> = rows.iter().filter(|r| r[column("principal_id")] == *member).collect();
    assert!(!guarded.is_empty());
    for row in &guarded {
        assert_eq!(&row[column("principal_name")], format!("'{hostile}"), "a formula is prefixed with '");
    }
    assert!(rows.iter().all(|r| !r.iter().any(|cell| cell.starts_with(['=', '+', '-', '@']))));
    assert!(rows.iter().any(|r| r[column("principal_email")].contains('@')), "emails are there");
    assert!(rows.iter().any(|r| &r[column("revocable")] == "true"));
    assert!(rows.iter().all(|r| !r[column("synced_at")].is_empty() && !r[column("resource_type")].is_empty()));
    let file = SyncFile::open_existing(&db).unwrap();
    let run_info = file.last_good_run().unwrap().unwrap();
    drop(file);

    // JSON Lines on stdout, the same run named.
    let jsonl = tether(&["export", path(&db), "--format", "jsonl", "--run", &run_info.id.to_string()]);
    assert!(jsonl.status.success(), "{}", stderr(&jsonl));
    let lines = json_lines(&stdout(&jsonl));
    assert_eq!(lines.len() as i64, grants);
    let line = lines.iter().find(|l| l["principal_id"] == member.as_str()).unwrap();
    assert_eq!(line["principal_name"], hostile, "JSON is data: unchanged");
    assert!(line["revocable"].is_boolean() && line["synced_at"].is_string(), "{line}");
    let ids: BTreeSet<&str> = lines.iter().map(|l| l["grant_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len() as i64, grants);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_files_and_runs_that_do_not_exist_or_failed_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let diff = tether(&["diff", path(&missing)]);
    assert_eq!(diff.status.code(), Some(2));
    assert!(stderr(&diff).contains("no sync file at"), "{}", stderr(&diff));
    let export = tether(&["export", path(&missing)]);
    assert_eq!(export.status.code(), Some(1));
    assert!(stderr(&export).contains("no sync file at"), "{}", stderr(&export));

    let sim = start_sim(org_spec()).await;
    let db = dir.path().join("asana.db");
    sync_sim(&sim, "sim-token", &db).await.unwrap();
    // One good sync: nothing to compare it with yet.
    let alone = tether(&["diff", path(&db)]);
    assert_eq!(alone.status.code(), Some(2));
    assert!(stderr(&alone).contains("no successful sync before run"), "{}", stderr(&alone));

    let failed = sync_sim(&sim, "wrong-token", &db).await;
    assert!(failed.is_err());
    let failed_run = SyncFile::open_existing(&db).unwrap().last_run().unwrap().unwrap();
    assert_eq!(failed_run.status, "failed");
    let id = failed_run.id.to_string();
    for args in [vec!["diff", path(&db), "--to", &id], vec!["export", path(&db), "--run", &id]] {
        let run = tether(&args);
        assert_eq!(run.status.code(), Some(if args[0] == "diff" { 2 } else { 1 }));
        assert!(stderr(&run).contains(&format!("sync run {id} did not succeed (it failed")), "{}", stderr(&run));
    }
    for args in [vec!["diff", path(&db), "--from", "99"], vec!["export", path(&db), "--run", "99"]] {
        let run = tether(&args);
        assert_eq!(run.status.code(), Some(if args[0] == "diff" { 2 } else { 1 }));
        assert!(stderr(&run).contains("has no sync run 99"), "{}", stderr(&run));
    }
    // The failed run left the last good one what export shows.
    let export = tether(&["export", path(&db), "--format", "jsonl"]);
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(json_lines(&stdout(&export)).len() as i64, grants_in(&db));
}
