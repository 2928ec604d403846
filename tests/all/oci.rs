//! Connectors through a real OCI registry (Debian's docker-registry on
//! 127.0.0.1): `tether module push | pull`, `--connector oci://…`, and the
//! resolver `tether serve` calls on each scheduled sync.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use asana_sim::OrgSpec;
use sha2::{Digest, Sha256};
use tether_host::distribution::{resolve, ModuleSource, RegistryOptions};

use crate::support::registry::Registry;
use crate::support::{asana_wasm, start_sim, wasm};

/// The tether binary with its own cache and home (no Docker config of the
/// machine's user leaks in).
fn tether(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("DOCKER_CONFIG")
        .env("SIM_TOKEN", "sim-token")
        .output()
        .expect("tether runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A key pair NAME.key / NAME.pub in `dir`.
fn keygen(home: &Path, name: &str) -> (PathBuf, PathBuf) {
    let base = home.join(name);
    ok(tether(home, &["module", "keygen", "--out", base.to_str().unwrap()]));
    (base.with_extension("key"), base.with_extension("pub"))
}

/// Pushes and returns the manifest digest the push printed.
fn push(home: &Path, module: &Path, reference: &str, key: Option<&Path>) -> String {
    let mut args = vec!["module", "push", module.to_str().unwrap(), reference];
    if let Some(key) = key {
        args.extend(["--key", key.to_str().unwrap()]);
    }
    let out = ok(tether(home, &args));
    let digest = out.split("manifest ").nth(1).and_then(|rest| rest.split(',').next()).unwrap_or_else(|| panic!("no manifest digest in {out}"));
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{out}");
    digest.to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

#[test]
fn push_then_pull_round_trips_bytes_digest_signature_and_metadata() {
    let registry = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let (key, public) = keygen(home.path(), "author");
    let reference = format!("{}/connectors/asana:1.0", registry.host());
    let digest = push(home.path(), &asana_wasm(), &reference, Some(&key));

    let out = home.path().join("by-tag");
    let text = ok(tether(home.path(), &["module", "pull", &reference, "--out", out.to_str().unwrap(), "--require-signature", public.to_str().unwrap()]));
    let pulled = out.join("asana.wasm");
    assert_eq!(std::fs::read(&pulled).unwrap(), std::fs::read(asana_wasm()).unwrap(), "the same bytes");
    assert!(text.contains(&digest) && text.contains(&sha256_file(&asana_wasm())) && text.contains("good signature"), "{text}");
    assert!(text.contains("tether:connector@0.5.0"), "the contract version travels as an annotation: {text}");
    // The signature travels too, in the format `module verify` reads.
    ok(tether(home.path(), &["module", "verify", "--key", public.to_str().unwrap(), pulled.to_str().unwrap()]));

    // By digest (oci:// prefix allowed): the same module.
    let by_digest = home.path().join("by-digest");
    let pin = format!("oci://{}/connectors/asana@{digest}", registry.host());
    let text = ok(tether(home.path(), &["module", "pull", &pin, "--out", by_digest.to_str().unwrap()]));
    assert!(text.contains(&digest), "{text}");
    assert_eq!(sha256_file(&by_digest.join("asana.wasm")), sha256_file(&asana_wasm()));

    // A digest the registry does not have is refused, and nothing is written.
    let missing = format!("{}/connectors/asana@sha256:{}", registry.host(), "0".repeat(64));
    let nowhere = home.path().join("missing");
    failed(tether(home.path(), &["module", "pull", &missing, "--out", nowhere.to_str().unwrap()]));
    assert!(!nowhere.exists());

    // `describe` takes the reference too.
    let text = ok(tether(home.path(), &["describe", "--connector", &format!("oci://{reference}"), "--require-signature", public.to_str().unwrap()]));
    assert!(text.contains(&sha256_file(&asana_wasm())) && text.contains("instance asana"), "{text}");
}

#[test]
fn pull_refuses_unsigned_and_foreign_signed_modules_and_writes_nothing() {
    let registry = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let (_, public) = keygen(home.path(), "operator-trusts");
    let (other_key, _) = keygen(home.path(), "someone-else");
    let unsigned = format!("{}/connectors/asana:unsigned", registry.host());
    let foreign = format!("{}/connectors/asana:foreign", registry.host());
    push(home.path(), &asana_wasm(), &unsigned, None);
    push(home.path(), &asana_wasm(), &foreign, Some(&other_key));

    let out = home.path().join("out");
    let err = failed(tether(home.path(), &["module", "pull", &unsigned, "--out", out.to_str().unwrap(), "--require-signature", public.to_str().unwrap()]));
    assert!(err.contains("is not signed") && err.contains("nothing was written"), "{err}");
    let err = failed(tether(home.path(), &["module", "pull", &foreign, "--out", out.to_str().unwrap(), "--require-signature", public.to_str().unwrap()]));
    assert!(err.contains("not a good signature"), "{err}");
    assert!(files_in(&out).is_empty(), "nothing written: {:?}", files_in(&out));

    // The same refusal where the module would run, and nothing cached.
    let sim_dir = tempfile::tempdir().unwrap();
    let err = failed(tether(
        home.path(),
        &[
            "describe",
            "--connector",
            &format!("oci://{foreign}"),
            "--require-signature",
            public.to_str().unwrap(),
            "--cache-dir",
            sim_dir.path().to_str().unwrap(),
        ],
    ));
    assert!(err.contains("not a good signature"), "{err}");
    assert!(files_in(&sim_dir.path().join("modules")).is_empty());
}

#[test]
fn a_blob_tampered_with_in_the_registry_is_refused() {
    let registry = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/connectors/asana:1.0", registry.host());
    push(home.path(), &asana_wasm(), &reference, None);
    let module_hex = sha256_file(&asana_wasm());
    let blob = registry.storage().join("docker/registry/v2/blobs/sha256").join(&module_hex[..2]).join(&module_hex).join("data");
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&blob, bytes).unwrap();

    let out = home.path().join("out");
    let err = failed(tether(home.path(), &["module", "pull", &reference, "--out", out.to_str().unwrap()]));
    // `artifact::fetch` hashes the bytes against the layer digest.
    assert!(err.contains(&module_hex) && err.to_lowercase().contains("digest"), "{err}");
    assert!(files_in(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_runs_straight_from_an_oci_reference() {
    let registry = Registry::start();
    let sim = start_sim(OrgSpec { users: 20, teams: 2, workspaces: 1, seed: 11 }).await;
    let home = tempfile::tempdir().unwrap();
    let (key, public) = keygen(home.path(), "author");
    let reference = format!("oci://{}/connectors/asana:1.0", registry.host());
    push(home.path(), &asana_wasm(), reference.trim_start_matches("oci://"), Some(&key));
    let db = home.path().join("s.db");
    let args: Vec<String> = [
        "sync",
        "--out",
        db.to_str().unwrap(),
        "--connector",
        &reference,
        "--require-signature",
        public.to_str().unwrap(),
        "--config",
        &format!("asana-api-url={}", sim.base_url()),
        "--secret",
        "token=env:SIM_TOKEN",
        "--allow-host",
        &sim.addr().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let home_path = home.path().to_path_buf();
    let first_args = args.clone();
    let run = tokio::task::spawn_blocking(move || tether(&home_path, &first_args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    ok(run);
    assert!(stderr.contains("resolved oci://") && stderr.contains(&sha256_file(&asana_wasm())), "{stderr}");
    // Cached by manifest digest, named after the repository.
    let cache = home.path().join("cache/tether/modules");
    let entries = files_in(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].starts_with("sha256-"));
    assert_eq!(sha256_file(&cache.join(&entries[0]).join("asana.wasm")), sha256_file(&asana_wasm()));
    let file = tether_host::sync::SyncFile::open(&db).unwrap();
    assert!(file.last_good_run().unwrap().is_some(), "the sync from the registry was good");
    drop(file);

    // A cache that cannot be made (here its parent is a file; a read-only
    // home does the same) costs a scratch pull, not the run.
    let blocked = home.path().join("not-a-folder");
    std::fs::write(&blocked, b"").unwrap();
    let mut args = args;
    args.extend(["--cache-dir".to_string(), blocked.join("cache").to_str().unwrap().to_string()]);
    let home_path = home.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || tether(&home_path, &args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    ok(run);
    assert!(stderr.contains("cannot use the module cache") && stderr.contains("scratch folder"), "{stderr}");
}

#[test]
fn a_registry_that_is_down_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let port = crate::support::process::free_port();
    let reference = format!("127.0.0.1:{port}/connectors/asana:1.0");
    let out = home.path().join("out");
    let err = failed(tether(home.path(), &["module", "pull", &reference, "--out", out.to_str().unwrap()]));
    assert!(err.contains(&format!("registry 127.0.0.1:{port}")) && err.contains("cannot fetch the manifest"), "{err}");
    assert!(!out.exists());
    let err = failed(tether(home.path(), &["describe", "--connector", &format!("oci://{reference}")]));
    assert!(err.contains(&format!("registry 127.0.0.1:{port}")), "{err}");
    let err = failed(tether(home.path(), &["module", "push", asana_wasm().to_str().unwrap(), &reference]));
    assert!(err.contains(&format!("registry 127.0.0.1:{port}")), "{err}");
    // A registry that is not loopback is https unless named insecure.
    let err = failed(tether(home.path(), &["module", "pull", "conn/asana:1.0", "--out", out.to_str().unwrap()]));
    assert!(err.contains("names its registry"), "{err}");
}

/// Serves the router `app(port)` makes on a free loopback port of
/// `runtime`, for registries that lie; returns the port.
fn lying_registry(runtime: &tokio::runtime::Runtime, app: impl FnOnce(u16) -> axum::Router) -> u16 {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = app(port);
    runtime.spawn(async move { axum::serve(listener, app).await });
    port
}

/// A manifest comes from the registry asked, not from wherever it points:
/// a redirect to another server (here another port, say an internal
/// service) is refused, and that server never hears from the host.
#[test]
fn a_manifest_redirected_to_another_server_is_refused_unfetched() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let elsewhere = lying_registry(&runtime, |_| {
        let asked = asked.clone();
        axum::Router::new().fallback(move || {
            asked.store(true, std::sync::atomic::Ordering::SeqCst);
            async { "{}" }
        })
    });
    let port = lying_registry(&runtime, move |_| {
        axum::Router::new().route("/v2/", axum::routing::get(|| async { "{}" })).route(
            "/v2/connectors/asana/manifests/{tag}",
            axum::routing::get(move || async move {
                (axum::http::StatusCode::TEMPORARY_REDIRECT, [("location", format!("http://127.0.0.1:{elsewhere}/internal"))], "")
            }),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let err = failed(tether(home.path(), &["module", "pull", &format!("127.0.0.1:{port}/connectors/asana:1.0"), "--out", out.to_str().unwrap()]));
    assert!(err.contains("outside the registry, is not followed"), "{err}");
    assert!(!asked.load(std::sync::atomic::Ordering::SeqCst), "the other server was asked");
}

/// A registry that answers a manifest request with more than a manifest
/// can be (here 64 MiB, endless would do the same) is cut off at 4 MiB.
#[test]
fn a_manifest_bigger_than_any_manifest_is_refused_unread() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let port = lying_registry(&runtime, |_| {
        axum::Router::new().route("/v2/", axum::routing::get(|| async { "{}" })).route(
            "/v2/connectors/asana/manifests/{tag}",
            axum::routing::get(|| async {
                let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
                let body = futures::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
                ([("content-type", "application/vnd.oci.image.manifest.v1+json")], axum::body::Body::from_stream(body))
            }),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let err = failed(tether(home.path(), &["module", "pull", &format!("127.0.0.1:{port}/connectors/asana:1.0"), "--out", out.to_str().unwrap()]));
    assert!(err.contains("cannot fetch the manifest") && err.contains("larger than 4194304 bytes"), "{err}");
    assert!(!out.exists());
}

/// A module's blob is read only as far as its manifest says it is long:
/// a blob that runs on is refused there, not at the 256 MiB every module
/// is held to (which a served instance paid before every sync).
#[test]
fn a_blob_longer_than_its_manifest_says_is_refused_there() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let port = lying_registry(&runtime, |_| {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": format!("sha256:{}", "1".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/wasm", "digest": format!("sha256:{}", "2".repeat(64)), "size": 1000}],
        });
        axum::Router::new()
            .route("/v2/", axum::routing::get(|| async { "{}" }))
            .route(
                "/v2/connectors/asana/manifests/{tag}",
                axum::routing::get(move || {
                    let manifest = manifest.to_string();
                    async move { ([("content-type", "application/vnd.oci.image.manifest.v1+json")], manifest) }
                }),
            )
            .route(
                "/v2/connectors/asana/blobs/{digest}",
                axum::routing::get(|| async {
                    let chunk = axum::body::Bytes::from(vec![0u8; 1 << 20]);
                    axum::body::Body::from_stream(futures::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone()))))
                }),
            )
    });
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let err = failed(tether(home.path(), &["module", "pull", &format!("127.0.0.1:{port}/connectors/asana:1.0"), "--out", out.to_str().unwrap()]));
    assert!(err.contains("larger than 1000 bytes"), "{err}");
    assert!(!out.join("asana.wasm").exists());
}

/// A registry's token endpoint is read only as far as a token can be, and
/// only over https (or from the plain-http registry itself): an endless
/// answer once took the process to 3.8 GB, and a realm elsewhere over
/// plain http would get the credentials in the clear.
#[test]
fn a_token_endpoint_that_never_ends_or_is_plain_http_elsewhere_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let port = lying_registry(&runtime, |port| {
        axum::Router::new()
            .route(
                "/v2/",
                axum::routing::get(move || async move {
                    let challenge = format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"registry\"");
                    (axum::http::StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)], "{}")
                }),
            )
            .route(
                "/token",
                axum::routing::get(|| async {
                    let chunk = axum::body::Bytes::from(vec![b' '; 1 << 16]);
                    axum::body::Body::from_stream(futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone())))
                }),
            )
    });
    let elsewhere_port = lying_registry(&runtime, |_| {
        axum::Router::new().route(
            "/v2/",
            axum::routing::get(|| async {
                (axum::http::StatusCode::UNAUTHORIZED, [("www-authenticate", "Bearer realm=\"http://registry.invalid/token\"")], "")
            }),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let err = failed(tether(home.path(), &["module", "pull", &format!("127.0.0.1:{port}/connectors/asana:1.0"), "--out", out.to_str().unwrap()]));
    assert!(err.contains("cannot authenticate") && err.contains("the token is larger than 65536 bytes"), "{err}");
    assert!(!out.exists());
    let err = failed(tether(home.path(), &["module", "push", asana_wasm().to_str().unwrap(), &format!("127.0.0.1:{port}/connectors/asana:1.0")]));
    assert!(err.contains("the token is larger than 65536 bytes"), "{err}");
    let err = failed(tether(home.path(), &["module", "pull", &format!("127.0.0.1:{elsewhere_port}/connectors/asana:1.0"), "--out", out.to_str().unwrap()]));
    assert!(err.contains("token realm http://registry.invalid/token is not https"), "{err}");
    // Another port of the registry's host is another server: no clear text.
    let other_port = lying_registry(&runtime, move |_| {
        axum::Router::new().route(
            "/v2/",
            axum::routing::get(move || async move {
                let challenge = format!("Bearer realm=\"http://127.0.0.1:{port}/token\"");
                (axum::http::StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)], "")
            }),
        )
    });
    let err = failed(tether(home.path(), &["module", "pull", &format!("127.0.0.1:{other_port}/connectors/asana:1.0"), "--out", out.to_str().unwrap()]));
    assert!(err.contains(&format!("token realm http://127.0.0.1:{port}/token is not https")), "{err}");
}

/// Basic auth: refused without credentials, accepted with a password given
/// by reference or from the Docker config file's `auths`.
#[test]
fn registry_credentials_come_from_flags_or_the_docker_config() {
    // bcrypt of "registry-pass-1" (cost 5), as `htpasswd -B` writes it.
    let registry = Registry::start_with_htpasswd("alice:$2b$05$hHnbNUEiO2egLnZ9CLcuH.29IzI4.rzcKj5Gpd0v2oUReFPay9d8W");
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/connectors/asana:1.0", registry.host());
    let module = asana_wasm();
    let err = failed(tether(home.path(), &["module", "push", module.to_str().unwrap(), &reference]));
    assert!(err.contains("401") || err.contains("UNAUTHORIZED"), "{err}");
    let push = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["module", "push", module.to_str().unwrap(), &reference, "--registry-user", "alice", "--registry-password", "env:REG_PASSWORD"])
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .env("REG_PASSWORD", "registry-pass-1")
        .output()
        .unwrap();
    ok(push);
    // A password on the command line itself is refused.
    let usage = tether(home.path(), &["module", "pull", &reference, "--out", "x", "--registry-user", "alice", "--registry-password", "registry-pass-1"]);
    assert_eq!(usage.status.code(), Some(2));

    let out = home.path().join("out");
    failed(tether(home.path(), &["module", "pull", &reference, "--out", out.to_str().unwrap()]));
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::write(home.path().join(".docker/config.json"), format!(r#"{{"auths": {{"{}": {{"auth": "YWxpY2U6cmVnaXN0cnktcGFzcy0x"}}}}}}"#, registry.host()))
        .unwrap();
    ok(tether(home.path(), &["module", "pull", &reference, "--out", out.to_str().unwrap()]));
    assert_eq!(sha256_file(&out.join("asana.wasm")), sha256_file(&module));
}

/// What `tether serve` relies on: a tag is looked up again on each resolve
/// and follows a push; a digest pin keeps its module, even with the
/// registry gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_resolves_to_the_new_digest_while_a_digest_pin_stays() {
    let registry = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/connectors/asana:stable", registry.host());
    let first = push(home.path(), &asana_wasm(), &reference, None);
    let cache = home.path().join("modules");
    let options = RegistryOptions::default();
    let tag: ModuleSource = format!("oci://{reference}").parse().unwrap();
    let pin: ModuleSource = format!("oci://{}/connectors/asana@{first}", registry.host()).parse().unwrap();
    assert!(tag.is_moving_tag() && !pin.is_moving_tag());

    let before = resolve(&tag, &options, &cache, &[]).await.unwrap();
    assert_eq!(before.manifest_digest.as_deref(), Some(first.as_str()));
    assert_eq!(before.digest, sha256_file(&asana_wasm()));
    let pinned = resolve(&pin, &options, &cache, &[]).await.unwrap();
    assert_eq!(pinned.digest, before.digest);

    // A new version is pushed to the same tag.
    let second_module = wasm("connector-v0-2");
    let second = push(home.path(), &second_module, &reference, None);
    assert_ne!(first, second);
    let after = resolve(&tag, &options, &cache, &[]).await.unwrap();
    assert_eq!(after.manifest_digest.as_deref(), Some(second.as_str()));
    assert_eq!(after.digest, sha256_file(&second_module));
    assert_eq!(std::fs::read(&after.path).unwrap(), std::fs::read(&second_module).unwrap());
    let still = resolve(&pin, &options, &cache, &[]).await.unwrap();
    assert_eq!(still.digest, sha256_file(&asana_wasm()), "the pin does not follow the tag");
    assert_eq!(std::fs::read(&still.path).unwrap(), std::fs::read(asana_wasm()).unwrap());

    // The registry goes away: the pin resolves from the cache, the tag is a clear error.
    drop(registry);
    let offline = resolve(&pin, &options, &cache, &[]).await.unwrap();
    assert_eq!(offline.digest, sha256_file(&asana_wasm()));
    let err = format!("{:#}", resolve(&tag, &options, &cache, &[]).await.unwrap_err());
    assert!(err.contains("cannot fetch the manifest"), "{err}");
    // A cached module altered on disk is not served for the pin.
    std::fs::write(&offline.path, b"tampered").unwrap();
    assert!(resolve(&pin, &options, &cache, &[]).await.is_err(), "a bad cache entry is refetched (and here the registry is gone)");
}
