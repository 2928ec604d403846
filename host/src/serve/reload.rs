//! Hot reload. A module file that changes is verified, compiled, validated
//! with its instance's config and checked against the hosts the config
//! grants, then swapped in for the next sync (a running sync finishes on
//! the version it started with). A version that fails any of it is refused:
//! the old one keeps serving, and the refusal shows in `/v1/instances`, the
//! logs and the metrics. The config file reloads on SIGHUP, all or nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use tracing::Instrument;

use super::config::{self, InstanceConfig, ServerSettings};
use super::loader::{self, Version};
use super::scheduler::{rfc3339, InstanceRuntime, Refusal, SourceError};
use super::Server;
use crate::distribution::{ModuleSource, ResolvedModule};

/// What tells a changed module: its file's identity (device, inode), times
/// (modified, and changed: a release installed by rename with its times
/// kept, as `cp -p`, rsync -a or tar do, is a new inode with a new change
/// time) and length, and the same of its signature file (a signature may
/// land after its module).
pub type Fingerprint = (FileSeen, Option<FileSeen>);

/// One file as the watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSeen {
    identity: (u64, u64),
    modified: Option<SystemTime>,
    changed: (i64, i64),
    len: u64,
}

fn seen(path: &std::path::Path) -> Option<FileSeen> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let changed = {
        use std::os::unix::fs::MetadataExt;
        (metadata.ctime(), metadata.ctime_nsec())
    };
    #[cfg(not(unix))]
    let changed = (0, 0);
    Some(FileSeen { identity: crate::sync::writer_lock::inode(&metadata), modified: metadata.modified().ok(), changed, len: metadata.len() })
}

pub fn fingerprint(settings: &InstanceConfig) -> Option<Fingerprint> {
    // An OCI module has no file to watch: its tag is looked up before each sync.
    let ModuleSource::Path(path) = &settings.module else {
        return None;
    };
    let signature = settings.signature.clone().unwrap_or_else(|| crate::runtime::trust::signature_path_for(path));
    Some((seen(path)?, seen(&signature)))
}

/// Checks every instance's module file, and the config file, every
/// `watch_interval`: a changed config file reloads as on SIGHUP.
pub async fn watch_modules(server: Arc<Server>) {
    let mut quit = server.quit.subscribe();
    let config_seen = |server: &Server| std::fs::metadata(&server.config().path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    let mut config_last = config_seen(&server);
    // One load at a time per instance, each on a task of its own: a module
    // that compiles for long (up to the compile limits) holds back no other
    // instance's swap.
    let mut swapping: std::collections::HashMap<String, tokio::task::JoinHandle<()>> = std::collections::HashMap::new();
    loop {
        let interval = server.config().server.watch_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = quit.changed() => {
                swapping.values().for_each(tokio::task::JoinHandle::abort);
                return;
            }
        }
        swapping.retain(|_, task| !task.is_finished());
        let config_now = config_seen(&server);
        if config_now.is_some() && config_now != config_last {
            config_last = config_now;
            reload_config(&server).await;
        }
        let instances: Vec<Arc<InstanceRuntime>> = server.instances().values().cloned().collect();
        for instance in instances {
            if swapping.contains_key(&instance.name) {
                // Looked at again once its load ends.
                continue;
            }
            let settings = instance.settings();
            let seen = fingerprint(&settings);
            // A file gone is a change too: reported, as the next start
            // would fail on it.
            let changed = {
                let mut last = instance.module_seen.lock().expect("module_seen lock");
                let changed = *last != seen;
                if changed {
                    *last = seen;
                }
                changed
            };
            if changed {
                let (server, name) = (server.clone(), instance.name.clone());
                swapping.insert(name, tokio::spawn(async move { swap_module(&server, &instance, &settings).await }));
            }
        }
    }
}

/// Loads the module file anew and swaps it in, or records the refusal.
async fn swap_module(server: &Server, instance: &InstanceRuntime, settings: &InstanceConfig) {
    let span = tracing::info_span!("instance", instance = %instance.name);
    async {
        match loader::resolve(settings, &server.module_cache()).await {
            Ok(resolved) => swap_in(server, instance, settings, &resolved).await,
            // The file went away or cannot be read: the running version
            // stays, and says so where refusals show (the next start would
            // fail on it).
            Err(e) => {
                let reason = format!("cannot read the new module: {e:#}");
                tracing::warn!("{reason}; the running version stays");
                record_refusal(server, instance, settings, (None, None), reason);
            }
        }
    }
    .instrument(span)
    .await
}

/// Before a sync of an instance that follows a tag: looks the tag up
/// again. A new digest goes through the same verify-compile-validate-swap
/// as a changed file; a registry that cannot be reached (or a tag gone)
/// leaves the running version in place, the error shown in the API and the
/// logs until a lookup succeeds. Called from the instance's own task, so
/// it never delays another instance.
pub async fn follow_tag(server: &Server, instance: &InstanceRuntime) {
    let settings = instance.settings();
    if !settings.module.is_moving_tag() {
        return;
    }
    match loader::resolve(&settings, &server.module_cache()).await {
        Ok(resolved) => {
            instance.status.lock().expect("status lock").module_source_error = None;
            swap_in(server, instance, &settings, &resolved).await;
        }
        // The registry answered, with a version no trusted key signed: a
        // refusal like any other, shown once.
        Err(e) if e.is::<crate::distribution::SignatureRefused>() => {
            instance.status.lock().expect("status lock").module_source_error = None;
            let refused = e.downcast_ref::<crate::distribution::SignatureRefused>().expect("matched above");
            if !refused_before(instance, &settings, &refused.module_digest, Some(&refused.manifest_digest)) {
                let digests = (Some(refused.module_digest.clone()), Some(refused.manifest_digest.clone()));
                refuse_version(server, instance, &settings, digests, refused.reason.clone());
            }
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::warn!("cannot look up {}; the running version stays: {}", settings.module, crate::terminal::escape(&error));
            server.metrics.module_resolve_failures.with_label_values(&[&instance.name]).inc();
            instance.status.lock().expect("status lock").module_source_error =
                Some(SourceError { at: rfc3339(SystemTime::now()), module: settings.module.to_string(), error });
        }
    }
}

/// Verifies, compiles and validates `resolved` and swaps it in, unless it
/// is the running version (or the one last refused, in the same manifest:
/// refused once, it is not compiled again at every sync; pushed again, its
/// signature in a new manifest, it is checked again).
async fn swap_in(server: &Server, instance: &InstanceRuntime, settings: &InstanceConfig, resolved: &ResolvedModule) {
    if instance.version().is_some_and(|current| current.digest == resolved.digest) {
        return;
    }
    if matches!(settings.module, ModuleSource::Oci(_)) && refused_before(instance, settings, &resolved.digest, resolved.manifest_digest.as_deref()) {
        return;
    }
    let running = instance.version();
    let loaded = loader::load(&server.engine, settings, resolved, &server.data_dir, running.as_deref()).await.and_then(|version| match &running {
        Some(running) if !settings.allow_downgrade => refuse_downgrade(&running.version, &version.version).map(|()| version),
        _ => Ok(version),
    });
    match loaded {
        Ok(version) => {
            tracing::info!(
                "new module version {} {} (sha256 {}{}) swapped in for the next sync",
                crate::terminal::escape(&version.name),
                crate::terminal::escape(&version.version),
                version.digest,
                version.manifest_digest.as_ref().map(|m| format!(", manifest {m}")).unwrap_or_default()
            );
            server.metrics.module_loads.with_label_values(&[&instance.name, "loaded"]).inc();
            // A version loaded after a refusal (the refused one, its
            // signature arrived since, or a later one): the refusal no
            // longer describes the instance.
            instance.status.lock().expect("status lock").last_refusal = None;
            *instance.current.write().expect("current lock") = Some(Arc::new(version));
        }
        Err(e) => refuse(server, instance, settings, resolved, &e),
    }
}

/// A version older than the running one (both semver) is refused: each
/// build is signed alone, so an old signed build served again (a tag moved
/// back) would otherwise roll back whatever the new one fixed. Versions
/// that are not semver cannot be ordered and pass.
fn refuse_downgrade(running: &str, new: &str) -> anyhow::Result<()> {
    match (semver::Version::parse(running), semver::Version::parse(new)) {
        (Ok(running_version), Ok(new_version)) if new_version < running_version => anyhow::bail!(
            "version {} is older than the running {}: refused as a rollback (allow_downgrade = true accepts it)",
            crate::terminal::escape(new),
            crate::terminal::escape(running)
        ),
        _ => Ok(()),
    }
}

/// Refuses `new` as a rollback unless the instance allows downgrades: it
/// may not be older than the `running` version, or, with none running (a
/// start, an instance added again), than the one that made the instance's
/// last good sync: a restart must not be the way an old signed build comes
/// back.
pub fn refuse_rollback(
    data_dir: &std::path::Path,
    name: &str,
    settings: &InstanceConfig,
    running: Option<&loader::LoadedVersion>,
    new: &loader::LoadedVersion,
) -> anyhow::Result<()> {
    if settings.allow_downgrade {
        return Ok(());
    }
    match running {
        Some(running) => refuse_downgrade(&running.version, &new.version),
        None => match last_good_sync(data_dir, name) {
            Some(run) => {
                refuse_downgrade(&run.connector_version, &new.version).map_err(|e| anyhow::anyhow!("{e} (the version of the instance's last good sync)"))
            }
            None => Ok(()),
        },
    }
}

/// The last good sync recorded in the instance's sync file, if any.
fn last_good_sync(data_dir: &std::path::Path, name: &str) -> Option<crate::sync::sync_file::RunInfo> {
    let path = super::sync_file_in(data_dir, name);
    crate::sync::SyncFile::open_reader(&path).ok()?.last_good_run().ok().flatten()
}

/// For an instance following a tag whose lookup failed at start: its
/// last good sync's version from the module cache, pinned by digest and
/// checked as any pull (signature included), if the cache still has it.
pub async fn load_last_synced_pull(server: &Server, name: &str, settings: &InstanceConfig) -> Option<loader::LoadedVersion> {
    if !settings.module.is_moving_tag() {
        return None;
    }
    let run = last_good_sync(&server.data_dir, name)?;
    for pin in crate::distribution::cached_pins(&settings.module, &server.module_cache(), &run.connector_digest) {
        let mut pinned = settings.clone();
        pinned.module = pin;
        match loader::resolve_and_load(&server.engine, &pinned, &server.module_cache(), &server.data_dir, None).await {
            Ok(version) => return Some(version),
            Err(e) => tracing::warn!(instance = %name, "a cached pull of the last good sync does not load: {e:#}"),
        }
    }
    None
}

/// Whether the instance's standing refusal is of this module (its digest,
/// in this manifest, from this source): refused once, a version is not
/// checked and shown again at every lookup.
fn refused_before(instance: &InstanceRuntime, settings: &InstanceConfig, digest: &str, manifest_digest: Option<&str>) -> bool {
    let shown = settings.module.to_string();
    instance
        .status
        .lock()
        .expect("status lock")
        .last_refusal
        .as_ref()
        .is_some_and(|r| r.digest.as_deref() == Some(digest) && r.manifest_digest.as_deref() == manifest_digest && r.module == shown)
}

fn refuse(server: &Server, instance: &InstanceRuntime, settings: &InstanceConfig, resolved: &ResolvedModule, error: &anyhow::Error) {
    refuse_version(server, instance, settings, (Some(resolved.digest.clone()), resolved.manifest_digest.clone()), format!("{error:#}"));
}

/// A new version refused while the running one stays: logged, counted and
/// shown on the instance. `digests`: the module's and its manifest's.
fn refuse_version(server: &Server, instance: &InstanceRuntime, settings: &InstanceConfig, digests: (Option<String>, Option<String>), reason: String) {
    tracing::warn!("new module version refused; the running version stays: {}", crate::terminal::escape(&reason));
    server.metrics.module_loads.with_label_values(&[&instance.name, "refused"]).inc();
    record_refusal(server, instance, settings, digests, reason);
}

/// Shows a refused (or unloaded, or unreadable) version on the instance
/// in the API and in `tether_reload_refusals_total`. `digests`: the
/// module's and its OCI manifest's, where known.
fn record_refusal(server: &Server, instance: &InstanceRuntime, settings: &InstanceConfig, digests: (Option<String>, Option<String>), reason: String) {
    let (digest, manifest_digest) = digests;
    server.metrics.reload_refusals.with_label_values(&[&instance.name]).inc();
    instance.status.lock().expect("status lock").last_refusal =
        Some(Refusal { at: rfc3339(SystemTime::now()), module: settings.module.to_string(), digest, reason, manifest_digest });
}

/// Loads every instance of `config` whose settings are new or changed.
/// All or nothing: the first version refused refuses the whole config.
async fn load_changed(server: &Server, config: &config::ServeConfig) -> Result<BTreeMap<String, Version>, Vec<String>> {
    let current = server.instances();
    let mut loaded = BTreeMap::new();
    let mut problems = vec![];
    for (name, settings) in &config.instances {
        // The keys are compared as read, not as written: a key file given
        // new contents (a revoked key replaced) must verify the running
        // module again, which its old key alone may have signed.
        let unchanged = current.get(name).is_some_and(|i| {
            let running = i.settings();
            running.raw == settings.raw && running.public_keys == settings.public_keys && i.version().is_some()
        });
        if unchanged {
            continue;
        }
        // Any change to an instance loads its module again: the rollback
        // check holds here as in a swap, or a module the watcher refused
        // as a rollback came in with the next edit of its schedule. Nor may
        // it ask for an ungranted host the running version did not.
        let running = current.get(name).and_then(|i| i.version());
        let loaded_version = loader::resolve_and_load(&server.engine, settings, &server.module_cache(), &server.data_dir, running.as_deref())
            .await
            .and_then(|version| refuse_rollback(&server.data_dir, name, settings, running.as_deref(), &version).map(|()| version));
        match loaded_version {
            Ok(version) => {
                loaded.insert(name.clone(), Arc::new(version));
            }
            Err(e) => problems.push(format!("{}: [instances.{name}] module: {e:#}", config.path.display())),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

/// SIGHUP: reads the config file again; applies it only if all of it is
/// good (every instance's module included), else keeps the running one.
pub async fn reload_config(server: &Arc<Server>) {
    // A rotated token applies before this reload waits its turn or loads
    // a module (an earlier reload's compile can take minutes), and even if
    // a module of the new config is refused: the old one, leaked perhaps,
    // stops working now.
    if let Ok(fresh) = config::load(&server.config().path) {
        let token = fresh.server.api_token.clone().unwrap_or_default();
        let mut current = server.token.write().expect("token lock");
        if *current != token {
            *current = token;
            tracing::info!("the API token changed: the new one applies now");
        }
    }
    let _one_at_a_time = server.reloading.lock().await;
    if *server.quit.borrow() {
        // Stopping: a reload that waited its turn has nothing to start.
        return;
    }
    let path = server.config().path.clone();
    tracing::info!("reloading {}", path.display());
    let fresh = match config::load(&path) {
        Ok(fresh) => fresh,
        Err(errors) => {
            return refuse_config(server, errors.0.iter().map(ToString::to_string).collect());
        }
    };
    let loaded = match load_changed(server, &fresh).await {
        Ok(loaded) => loaded,
        Err(problems) => {
            unload_revoked(server, &fresh);
            return refuse_config(server, problems);
        }
    };
    let old = server.config();
    let (was, now) = (&old.server, &fresh.server);
    let at_next_start: Vec<&str> = [
        ("listen", was.listen != now.listen),
        ("data_dir", was.data_dir != now.data_dir),
        ("cache_dir", was.cache_dir != now.cache_dir),
        ("max_concurrent_syncs", was.max_concurrent_syncs != now.max_concurrent_syncs),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    if !at_next_start.is_empty() {
        tracing::warn!("changed [server] {} take effect at the next start; api_token, grace_period and watch_interval apply now", at_next_start.join(", "));
    }
    let mut instances = server.instances.write().expect("instances lock");
    for (name, settings) in &fresh.instances {
        match instances.get(name) {
            Some(existing) => {
                *existing.settings.write().expect("settings lock") = settings.clone();
                if let Some(version) = loaded.get(name) {
                    *existing.current.write().expect("current lock") = Some(version.clone());
                    server.metrics.module_loads.with_label_values(&[name, "loaded"]).inc();
                    // As after a swap: a version loaded since a refusal
                    // (often the refused one, its host now granted).
                    existing.status.lock().expect("status lock").last_refusal = None;
                }
            }
            None => {
                let runtime = InstanceRuntime::new(settings.clone(), loaded.get(name).cloned());
                server.metrics.module_loads.with_label_values(&[name, "loaded"]).inc();
                instances.insert(name.clone(), runtime.clone());
                server.spawn_instance(runtime);
                tracing::info!(instance = %name, "instance added");
            }
        }
    }
    instances.retain(|name, runtime| {
        let keep = fresh.instances.contains_key(name);
        if !keep {
            runtime.stop.request();
            let _ = runtime.quit.send(true);
            let mut retiring = server.retiring.lock().expect("retiring lock");
            retiring.retain(|_, gone| !*gone.done.borrow());
            retiring.insert(name.clone(), runtime.clone());
            tracing::info!(instance = %name, "instance removed from the config; its sync file stays");
        }
        keep
    });
    drop(instances);
    // What the running server was started with stays (the socket, the
    // folders); the token and the timings are read where they are used.
    let mut kept = fresh;
    kept.server = ServerSettings {
        grace_period: kept.server.grace_period,
        watch_interval: kept.server.watch_interval,
        api_token: kept.server.api_token.clone(),
        ..old.server.clone()
    };
    *server.config.write().expect("config lock") = Arc::new(kept);
    *server.config_refusal.lock().expect("refusal lock") = None;
    tracing::info!("config reloaded");
}

/// A refused config keeps the running versions, but not one signed by a
/// key the new config no longer trusts (a revoked key): that version is
/// unloaded, and the instance syncs nothing until a module signed by a
/// trusted key is loaded.
fn unload_revoked(server: &Server, fresh: &config::ServeConfig) {
    for (name, settings) in &fresh.instances {
        let Some(instance) = server.instances().get(name).cloned() else { continue };
        let Some(running) = instance.version() else { continue };
        let Some(signer) = &running.signer else { continue };
        if settings.public_keys.is_empty() || settings.public_keys.iter().any(|key| crate::runtime::trust::key_id(key) == *signer) {
            continue;
        }
        let reason =
            format!("key {signer}, which signed the running module, is no longer trusted: the module is unloaded until one signed by a trusted key loads");
        tracing::error!(instance = %name, "{reason}");
        *instance.current.write().expect("current lock") = None;
        // A sync running on it stops at its next page (saved, to start
        // over on a trusted version: a resume needs the same module).
        if instance.status.lock().expect("status lock").running {
            instance.stopped_for_revocation.store(true, std::sync::atomic::Ordering::SeqCst);
            instance.stop.request();
        }
        // Nor may a swap load another module the revoked key signed.
        let mut kept = instance.settings().as_ref().clone();
        kept.public_keys = settings.public_keys.clone();
        *instance.settings.write().expect("settings lock") = Arc::new(kept);
        record_refusal(server, &instance, settings, (Some(running.digest.clone()), running.manifest_digest.clone()), reason);
    }
}

fn refuse_config(server: &Server, problems: Vec<String>) {
    for problem in &problems {
        tracing::error!("config reload refused: {problem}");
    }
    server.metrics.reload_refusals.with_label_values(&["-"]).inc();
    *server.config_refusal.lock().expect("refusal lock") = Some(Refusal {
        at: rfc3339(SystemTime::now()),
        module: server.config().path.display().to_string(),
        digest: None,
        reason: problems.join("\n"),
        manifest_digest: None,
    });
}
