//! `tether report` (issue 12, item 3): the review page of a real sync of
//! the simulator, opened in a real headless Chromium (support::browser). It
//! loads without errors, shows the sync file's counts and the changes since
//! the previous sync, its search and filters narrow the rows to exactly the
//! expected ones, and a hostile display name stays text.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::review::{change_the_org, org_spec, path, stderr, tether};
use crate::support::browser::Browser;
use crate::support::*;
use asana_sim::{Org, SimConfig};
use fantoccini::Locator;
use serde_json::Value;
use tether_host::sync::review::{self, GrantRow};
use tether_host::sync::sync_file::Table;
use tether_host::sync::SyncFile;

/// A display name that would run a script if the page ever parsed data as markup.
const HOSTILE: &str = "</script><img src=x onerror=\"window.__pwned=1\"><b>Mallory</b>";

/// What the page's search looks at in a row (page.js `haystacks`).
fn matches(row: &GrantRow, type_names: &BTreeMap<String, String>, term: &str) -> bool {
    let rt = row.resource_type.clone().unwrap_or_default();
    let fields = [
        row.resource_name.clone(),
        row.resource_id.clone(),
        row.entitlement_name.clone(),
        Some(row.entitlement_id.clone()),
        row.principal_name.clone(),
        Some(row.principal_id.clone()),
        row.principal_email.clone(),
        Some(type_names.get(&rt).cloned().unwrap_or(rt)),
    ];
    fields.iter().flatten().any(|f| f.to_lowercase().contains(&term.to_lowercase()))
}

fn digits(value: &Value) -> i64 {
    value.as_str().unwrap().chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

const VISIBLE_GRANTS: &str = "return document.querySelectorAll('#grants tbody tr.grant').length";

#[tokio::test(flavor = "multi_thread")]
async fn report_page_shows_the_sync_in_a_real_browser_with_counts_changes_search_and_filters() {
    let mut org = Org::generate(&org_spec());
    let hostile_gid = org.team_memberships[0].user_gid.clone();
    org.users.iter_mut().find(|u| u.gid == hostile_gid).unwrap().name = HOSTILE.into();
    let sim = start_sim_with(SimConfig::new(org)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("asana.db");
    sync_sim(&sim, "sim-token", &db).await.unwrap();
    let (added, removed) = change_the_org(&sim).await;
    sync_sim(&sim, "sim-token", &db).await.unwrap();

    let page = dir.path().join("review.html");
    let run = tether(&["report", path(&db), "--out", path(&page)]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("2 changes since sync run"), "{}", stderr(&run));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<b>Mallory") && !html.contains("http://") && !html.contains("https://"), "data is escaped, nothing is fetched");

    // What the sync file holds, to compare the page with.
    let file = SyncFile::open_existing(&db).unwrap();
    let last = file.last_good_run().unwrap().unwrap();
    let types = review::resource_types(&file, &last).unwrap();
    let type_names: BTreeMap<String, String> = types.iter().map(|t| (t.id.clone(), t.display_name.clone())).collect();
    let mut rows = Vec::new();
    review::for_each_grant(&file, &last, |g| {
        rows.push(g.clone());
        Ok(())
    })
    .unwrap();
    let entitlements = file.count(last.id, Table::Entitlements).unwrap();
    let grants = file.count(last.id, Table::Grants).unwrap();
    assert_eq!(rows.len() as i64, grants);
    drop(file);

    let browser = Browser::start().await;
    browser.open(&page).await;
    browser.wait_for("return document.body.dataset.ready === '1'", Duration::from_secs(20)).await;
    assert_eq!(browser.eval("return window.__errors").await, serde_json::json!([]), "the page loads without errors");
    assert_eq!(browser.eval("return window.__pwned === undefined && document.querySelectorAll('img, b').length === 0").await, Value::Bool(true));
    let text = browser.eval("return document.body.innerText").await;
    assert!(text.as_str().unwrap().contains(HOSTILE), "the hostile name is shown as text");
    assert_eq!(browser.eval("return document.getElementById('connector-digest').textContent").await, last.connector_digest.as_str());

    // The counts shown are the sync file's.
    let cards = browser
        .eval("return Array.from(document.querySelectorAll('[data-count]')).map(c => [c.dataset.count, c.dataset.type || '', c.querySelector('.value').textContent])")
        .await;
    let shown: BTreeMap<(String, String), i64> =
        cards.as_array().unwrap().iter().map(|c| ((c[0].as_str().unwrap().into(), c[1].as_str().unwrap().into()), digits(&c[2]))).collect();
    for t in &types {
        assert_eq!(shown[&("type".into(), t.id.clone())], t.resources, "{}", t.id);
    }
    assert_eq!(shown[&("resources".into(), String::new())], types.iter().map(|t| t.resources).sum::<i64>());
    assert_eq!(shown[&("entitlements".into(), String::new())], entitlements);
    assert_eq!(shown[&("grants".into(), String::new())], grants);
    assert_eq!(browser.eval(VISIBLE_GRANTS).await, serde_json::json!(grants), "every grant is a row");

    // The changes: one grant added (highlighted in the table), one removed.
    let grant_changes =
        browser.eval("return Array.from(document.querySelectorAll('#diff-counts tr[data-kind=grant] td')).slice(1).map(td => td.textContent)").await;
    assert_eq!(grant_changes, serde_json::json!(["1", "1", "0"]));
    let listed = browser.eval("return Array.from(document.querySelectorAll('#diff-list tbody tr')).map(tr => tr.className + ' ' + tr.textContent)").await;
    let listed: Vec<&str> = listed.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2, "{listed:?}"); // (inside a closed <details>: textContent, not innerText)
    assert!(listed.iter().any(|l| l.starts_with("added") && l.contains(&added)) && listed.iter().any(|l| l.starts_with("removed") && l.contains(&removed)));
    let new_row = rows.iter().find(|r| r.grant_id == added).unwrap();
    let highlighted = browser.eval("return Array.from(document.querySelectorAll('#grants tr.grant.added')).map(tr => tr.innerText)").await;
    let highlighted = highlighted.as_array().unwrap();
    assert_eq!(highlighted.len(), 1, "{highlighted:?}");
    assert!(highlighted[0].as_str().unwrap().contains(&new_row.principal_id));

    // The search: one person's email leaves exactly the rows that mention it.
    let person =
        rows.iter().filter_map(|r| r.principal_email.clone()).max_by_key(|e| rows.iter().filter(|r| r.principal_email.as_ref() == Some(e)).count()).unwrap();
    let expected = rows.iter().filter(|r| matches(r, &type_names, &person)).count();
    assert!(expected > 1 && (expected as i64) < grants, "{expected} of {grants}");
    let search = browser.client.find(Locator::Css("#search")).await.unwrap();
    search.send_keys(&person).await.unwrap();
    browser.wait_for(&format!("return document.body.dataset.query === {}", Value::from(person.clone())), Duration::from_secs(10)).await;
    assert_eq!(browser.eval(VISIBLE_GRANTS).await, serde_json::json!(expected), "rows for {person}");
    assert_eq!(browser.eval("return document.getElementById('shown-count').dataset.matching").await, expected.to_string());
    browser.screenshot("report-search").await;

    // A resource type filter, with the search cleared.
    search.clear().await.unwrap();
    search.send_keys(" ").await.unwrap();
    browser.wait_for("return document.body.dataset.query === ' '", Duration::from_secs(10)).await;
    let select = browser.client.find(Locator::Css("#filter-type")).await.unwrap();
    select.select_by_value("team").await.unwrap();
    let on_teams = rows.iter().filter(|r| r.resource_type.as_deref() == Some("team")).count();
    assert!(on_teams > 0 && (on_teams as i64) < grants);
    browser.wait_for(&format!("return document.getElementById('shown-count').dataset.matching === '{on_teams}'"), Duration::from_secs(10)).await;
    assert_eq!(browser.eval(VISIBLE_GRANTS).await, serde_json::json!(on_teams));
    let per_team = browser.eval("return Array.from(document.querySelectorAll('#grants tr.group .n')).map(n => n.textContent.replace(/\\D/g, ''))").await;
    let per_team: usize = per_team.as_array().unwrap().iter().map(|n| n.as_str().unwrap().parse::<usize>().unwrap()).sum();
    assert_eq!(per_team, on_teams, "each resource's header counts its grants");
    // and an entitlement of that type: exactly its grants.
    let entitlement = rows.iter().find(|r| r.resource_type.as_deref() == Some("team")).unwrap().entitlement_id.clone();
    let on_entitlement = rows.iter().filter(|r| r.entitlement_id == entitlement).count();
    browser.client.find(Locator::Css("#filter-entitlement")).await.unwrap().select_by_value(&entitlement).await.unwrap();
    browser.wait_for(&format!("return document.getElementById('shown-count').dataset.matching === '{on_entitlement}'"), Duration::from_secs(10)).await;
    assert_eq!(browser.eval(VISIBLE_GRANTS).await, serde_json::json!(on_entitlement));

    // The whole page, for a human to look at (TETHER_SCREENSHOT_DIR).
    browser.client.find(Locator::Css("#filter-entitlement")).await.unwrap().select_by_value("").await.unwrap();
    browser.client.find(Locator::Css("#filter-type")).await.unwrap().select_by_value("").await.unwrap();
    browser.wait_for(&format!("return document.getElementById('shown-count').dataset.matching === '{grants}'"), Duration::from_secs(10)).await;
    browser.client.find(Locator::Css("#only-changes")).await.unwrap().click().await.unwrap();
    browser.wait_for("return document.getElementById('shown-count').dataset.matching === '1'", Duration::from_secs(10)).await;
    browser.eval("window.scrollTo(0, 0); return null").await;
    let png = browser.screenshot("report").await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real screenshot");
    assert_eq!(browser.eval("return window.__errors").await, serde_json::json!([]));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn report_of_a_first_sync_says_there_is_nothing_to_compare_and_errors_keep_the_old_page() {
    let sim = start_sim(org_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("asana.db");
    let page = dir.path().join("review.html");
    let missing = tether(&["report", path(&dir.path().join("none.db")), "--out", path(&page)]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no sync file at"), "{}", stderr(&missing));

    sync_sim(&sim, "sim-token", &db).await.unwrap();
    let run = tether(&["report", path(&db), "--out", path(&page)]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("no earlier good sync to compare with"), "{}", stderr(&run));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("\"previous\":null,\"diff_note\":\"Nothing to compare with:"), "the page says why there is no diff");

    // A failed sync cannot be reported on, and the page already there stays.
    assert!(sync_sim(&sim, "wrong-token", &db).await.is_err());
    let failed = SyncFile::open_existing(&db).unwrap().last_run().unwrap().unwrap();
    let refused = tether(&["report", path(&db), "--run", &failed.id.to_string(), "--out", path(&page)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains(&format!("sync run {} did not succeed", failed.id)), "{}", stderr(&refused));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), html, "the earlier page is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A page of the last good run says a newer sync failed: an auditor
    // must not take it for the state of today.
    let again = tether(&["report", path(&db), "--out", path(&page)]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains(&format!("a newer sync did not succeed (run {}", failed.id)), "{}", stderr(&again));
    let html = std::fs::read_to_string(&page).unwrap();
    let newer = html.split("\"newer_attempt\":").nth(1).expect("the page's data has a newer attempt");
    let newer = &newer[..newer.find('}').expect("an object")];
    assert!(newer.starts_with('{') && newer.contains(&format!("\"id\":{},", failed.id)) && newer.contains("\"status\":\"failed\""), "{newer}");
}
