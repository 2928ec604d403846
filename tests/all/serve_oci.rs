//! `tether serve` with `oci://` modules in a real registry (Debian's
//! docker-registry on 127.0.0.1): a tag moved to a new signed version is
//! picked up at the next scheduled sync, a tag moved to an unsigned or
//! tampered module is refused while the old version keeps syncing, a
//! registry that goes down leaves the last good module syncing (the error
//! shown), and a digest pin is never looked up again.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use asana_sim::OrgSpec;
use sha2::{Digest, Sha256};

use crate::serve::{asana_instance, metric, server_section, sign, variant, Served};
use crate::support::registry::Registry;
use crate::support::{asana_wasm, start_sim};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Pushes `bytes` (with `signature` as `asana.wasm.sig` beside it, which
/// `module push` attaches) to `reference` with the tether binary, as a
/// connector author would; returns the manifest digest.
fn push(dir: &Path, version: &str, bytes: &[u8], signature: Option<String>, reference: &str) -> String {
    let folder = dir.join(version);
    std::fs::create_dir_all(&folder).unwrap();
    let module = folder.join("asana.wasm");
    std::fs::write(&module, bytes).unwrap();
    if let Some(signature) = signature {
        std::fs::write(tether_host::runtime::trust::signature_path_for(&module), signature).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["module", "push", module.to_str().unwrap(), reference])
        .env("HOME", dir)
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("tether-test-cache"))
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("tether runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "push failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let digest = stdout.split("manifest ").nth(1).and_then(|rest| rest.split(',').next()).unwrap_or_else(|| panic!("no manifest digest in {stdout}"));
    assert!(digest.starts_with("sha256:"), "{stdout}");
    digest.to_string()
}

fn write_key(dir: &Path) -> ed25519_dalek::SigningKey {
    let key = tether_host::runtime::trust::generate_signing_key().unwrap();
    std::fs::write(dir.join("release.pub"), hex::encode(key.verifying_key().as_bytes())).unwrap();
    key
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_follows_a_moved_tag_to_a_signed_version_and_refuses_unsigned_or_tampered_ones() {
    let registry = Registry::start();
    let sim = start_sim(OrgSpec { users: 12, teams: 2, workspaces: 1, seed: 5 }).await;
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path());
    let tag = format!("{}/conn/asana:stable", registry.host());
    let v1 = variant(&asana_wasm(), "oci-v1");
    let m1 = push(dir.path(), "v1", &v1, Some(sign(&key, &v1)), &tag);

    let config = dir.path().join("serve.toml");
    let mut text = server_section(dir.path());
    text += &asana_instance("asana", Path::new(&format!("oci://{tag}")), &sim, "interval = \"1s\"", "public_keys = [\"release.pub\"]");
    std::fs::write(&config, text).unwrap();
    let served = Served::start(&config, dir.path()).await;

    let first = served.until("asana", "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
    assert_eq!(first["module"]["digest"], sha256(&v1).as_str(), "{first}");
    assert_eq!(first["module"]["manifest_digest"], m1.as_str(), "{first}");
    assert_eq!(first["module"]["source"], format!("oci://{tag}").as_str(), "{first}");
    assert!(first["module"]["signer"].is_string(), "{first}");

    // (a) The tag moves to a new signed version: the next scheduled sync
    // runs it, without a restart or a trigger.
    let v2 = variant(&asana_wasm(), "oci-v2");
    let d2 = sha256(&v2);
    let m2 = push(dir.path(), "v2", &v2, Some(sign(&key, &v2)), &tag);
    let moved = served
        .until("asana", "a scheduled sync on the new version", Duration::from_secs(60), |i| {
            i["last_sync"]["module_digest"] == d2.as_str() && i["last_sync"]["outcome"] == "succeeded"
        })
        .await;
    assert_eq!(moved["module"]["manifest_digest"], m2.as_str(), "{moved}");
    assert!(moved["last_refusal"].is_null(), "{moved}");

    // (b) Moved to an unsigned module: refused, v2 stays.
    let v3 = variant(&asana_wasm(), "oci-v3");
    push(dir.path(), "v3", &v3, None, &tag);
    let refused = served.until("asana", "the unsigned refusal", Duration::from_secs(60), |i| i["last_refusal"]["digest"] == sha256(&v3).as_str()).await;
    assert!(refused["last_refusal"]["reason"].as_str().unwrap().contains("not signed"), "{refused}");
    assert_eq!(refused["module"]["digest"], d2.as_str(), "{refused}");

    // Moved to a tampered module (new bytes, v2's signature): refused too.
    let v4 = variant(&asana_wasm(), "oci-v4");
    push(dir.path(), "v4", &v4, Some(sign(&key, &v2)), &tag);
    let refused = served.until("asana", "the tampered refusal", Duration::from_secs(60), |i| i["last_refusal"]["digest"] == sha256(&v4).as_str()).await;
    assert!(refused["last_refusal"]["reason"].as_str().unwrap().contains("not a good signature"), "{refused}");
    assert_eq!(refused["module"]["digest"], d2.as_str(), "{refused}");

    // The old version keeps syncing on schedule.
    let run = refused["last_sync"]["run_id"].as_i64().unwrap();
    let later = served
        .until("asana", "two more scheduled syncs", Duration::from_secs(60), |i| {
            i["last_sync"]["run_id"].as_i64() > Some(run + 1) && i["last_sync"]["outcome"] == "succeeded"
        })
        .await;
    assert_eq!(later["last_sync"]["module_digest"], d2.as_str(), "{later}");
    assert_eq!(later["module"]["manifest_digest"], m2.as_str(), "{later}");

    // Refused before anything was written: the cache holds v1 and v2 only,
    // so no registry can crowd the last good pull out with refused ones.
    let cached = std::fs::read_dir(dir.path().join("data/modules"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("sha256-"))
        .count();
    assert_eq!(cached, 2, "the refused pulls were cached");

    // Each bad version is refused once, not again at every sync.
    let m = served.metrics().await;
    assert_eq!(metric(&m, "tether_reload_refusals_total", &[("instance", "asana")]), 2.0, "{m}");
    assert_eq!(metric(&m, "tether_module_loads_total", &[("instance", "asana"), ("outcome", "loaded")]), 2.0, "{m}");
    let logs = served.logs();
    assert!(logs.contains("swapped in") && logs.contains("new module version refused"), "{logs}");

    // The tampered module pushed again, now with its own good signature:
    // the same bytes in a new manifest are checked again, and swapped in.
    push(dir.path(), "v4-signed", &v4, Some(sign(&key, &v4)), &tag);
    let fixed = served.until("asana", "the re-signed push", Duration::from_secs(60), |i| i["module"]["digest"] == sha256(&v4).as_str()).await;
    assert!(fixed["last_refusal"].is_null(), "{fixed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_keeps_syncing_the_last_good_module_while_the_registry_is_down_and_never_looks_up_a_pin() {
    let mut registry = Registry::start();
    let sim = start_sim(OrgSpec { users: 8, teams: 2, workspaces: 1, seed: 6 }).await;
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path());
    let tag = format!("{}/conn/asana:stable", registry.host());
    let v1 = variant(&asana_wasm(), "oci-down-v1");
    let d1 = sha256(&v1);
    let m1 = push(dir.path(), "v1", &v1, Some(sign(&key, &v1)), &tag);
    let pin = format!("oci://{}/conn/asana@{m1}", registry.host());

    let config = dir.path().join("serve.toml");
    let mut text = server_section(dir.path());
    text += &asana_instance("follows", Path::new(&format!("oci://{tag}")), &sim, "interval = \"1s\"", "public_keys = [\"release.pub\"]");
    text += &asana_instance("pinned", Path::new(&pin), &sim, "interval = \"1s\"", "public_keys = [\"release.pub\"]");
    std::fs::write(&config, text).unwrap();
    let served = Served::start(&config, dir.path()).await;
    for name in ["follows", "pinned"] {
        let first = served.until(name, "the first sync", Duration::from_secs(60), |i| i["last_sync"]["outcome"] == "succeeded").await;
        assert_eq!(first["module"]["digest"], d1.as_str(), "{first}");
        assert_eq!(first["module"]["manifest_digest"], m1.as_str(), "{first}");
    }

    registry.stop();
    let down = served.until("follows", "the lookup failure", Duration::from_secs(60), |i| i["module_source_error"].is_object()).await;
    assert!(!down["module_source_error"]["error"].as_str().unwrap().is_empty(), "{down}");
    assert_eq!(down["module_source_error"]["module"], format!("oci://{tag}").as_str(), "{down}");
    assert_eq!(down["module"]["digest"], d1.as_str(), "{down}");
    assert!(down["last_refusal"].is_null(), "an outage is not a refused version: {down}");

    // Syncs go on, on the last good module, for both instances.
    let run = down["last_sync"]["run_id"].as_i64().unwrap();
    let after = served
        .until("follows", "syncs during the outage", Duration::from_secs(60), |i| {
            i["last_sync"]["run_id"].as_i64() > Some(run + 1) && i["last_sync"]["outcome"] == "succeeded"
        })
        .await;
    assert_eq!(after["last_sync"]["module_digest"], d1.as_str(), "{after}");
    assert!(after["module_source_error"].is_object(), "the error stays visible while the registry is down: {after}");
    let pinned_run = served.instance("pinned").await["last_sync"]["run_id"].as_i64().unwrap();
    let pinned = served
        .until("pinned", "pinned syncs during the outage", Duration::from_secs(60), |i| {
            i["last_sync"]["run_id"].as_i64() > Some(pinned_run) && i["last_sync"]["outcome"] == "succeeded"
        })
        .await;
    assert!(pinned["module_source_error"].is_null(), "a pin is never looked up again: {pinned}");

    let m = served.metrics().await;
    assert!(metric(&m, "tether_module_resolve_failures_total", &[("instance", "follows")]) >= 1.0, "{m}");
    assert_eq!(metric(&m, "tether_module_resolve_failures_total", &[("instance", "pinned")]), 0.0, "{m}");
    assert_eq!(metric(&m, "tether_reload_refusals_total", &[]), 0.0, "{m}");
    assert!(served.logs().contains("cannot look up"), "{}", served.logs());

    // A restart while the registry is still down starts every instance: the
    // tag's on the cached pull of its last good sync (checked as a pull),
    // the lookup failure shown; it used to stop the whole start.
    let mut served = served;
    assert!(served.terminate(Duration::from_secs(30)).success());
    let restarted = Served::start(&config, dir.path()).await;
    let follows = restarted.instance("follows").await;
    assert_eq!(follows["module"]["digest"], d1.as_str(), "{follows}");
    assert!(follows["module_source_error"].is_object(), "{follows}");
    let run = follows["last_sync"]["run_id"].as_i64();
    restarted
        .until("follows", "a sync after the restart", Duration::from_secs(60), |i| {
            i["last_sync"]["run_id"].as_i64() > run && i["last_sync"]["outcome"] == "succeeded"
        })
        .await;
}

#[test]
fn oci_settings_in_the_config_are_checked_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(dir.path().join("c.wasm"), b"not read").unwrap();
    std::fs::write(
        &config,
        r#"
[server]
data_dir = "data"
api_token = "env:TETHER_API_TOKEN"

[instances.a]
module = "oci://no-registry-named"
[instances.a.schedule]
interval = "1h"

[instances.b]
module = "oci://127.0.0.1:5000/conn/asana:1.0"
signature = "asana.wasm.sig"
registry_user = "robot"
registry_password = "an-inline-password"
insecure_registry = "yes"
[instances.b.schedule]
interval = "1h"

[instances.c]
module = "c.wasm"
insecure_registry = true
[instances.c.schedule]
interval = "1h"

[instances.d]
module = "oci://127.0.0.1:5000/conn/asana:1.0"
registry_user = "robot"
registry_password = "env:TETHER_TEST_UNSET_REGISTRY_PASSWORD"
[instances.d.schedule]
interval = "1h"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--check", "--config", config.to_str().unwrap()])
        .env("TETHER_API_TOKEN", "a-long-enough-token")
        .env_remove("TETHER_TEST_UNSET_REGISTRY_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = config.display().to_string();
    for expected in [
        "[instances.a] module:",
        "[instances.b] signature: an oci:// module carries its signature in the registry",
        "[instances.b] registry_password: expected env:VAR or file:PATH",
        "[instances.b] insecure_registry: expected true or false",
        "[instances.c] module: insecure_registry, registry_user, registry_password and docker_config are for an oci:// module",
        "[instances.d] registry_password: environment variable TETHER_TEST_UNSET_REGISTRY_PASSWORD is not set",
    ] {
        assert!(err.contains(&format!("{file}: {expected}")), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("an-inline-password"), "an inline password is never echoed: {err}");
}
