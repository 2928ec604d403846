//! Loading an instance's module the way `serve` trusts it: verified (digest
//! pin, signature by one of the instance's keys) before anything is
//! compiled, then compiled, started with exactly what the config grants,
//! checked against what it declares, and asked to `validate` its config.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::config::InstanceConfig;
use crate::distribution::ResolvedModule;
use crate::runtime::engine::{ConnectorEngine, LoadedModule};
use crate::runtime::imports::config::ConnectorConfig;
use crate::runtime::imports::http::AllowedHost;
use crate::runtime::imports::upstream::HostThrottle;
use crate::runtime::instance::{ConnectorInstance, Permissions};
use crate::runtime::trust::{key_id, ModuleTrust};
use crate::terminal::escape as esc;
use ed25519_dalek::VerifyingKey;

/// One verified, compiled and validated version of an instance's module.
pub struct LoadedVersion {
    pub module: LoadedModule,
    /// The module as the config names it: a path or an `oci://` reference.
    pub source: String,
    /// The local file loaded (for an OCI module, its pull in the cache).
    pub path: PathBuf,
    /// The OCI manifest the reference resolved to.
    pub manifest_digest: Option<String>,
    pub name: String,
    pub version: String,
    pub digest: String,
    /// The id of the key whose signature it carries, if one was required.
    pub signer: Option<String>,
    pub api: String,
    /// Hosts the module asks for (granted or not).
    pub declared_hosts: Vec<String>,
    pub loaded_at: SystemTime,
}

/// What the instance may do, as its config grants it: its hosts are
/// exactly the granted ones, whatever the module declares.
/// `throttle`: the instance's upstream budget, shared by its syncs and
/// API writes. Both resolve the same settings from it (a sync's pool size
/// caps reads for writes too), so neither resets the other's.
pub fn permissions(config: &InstanceConfig, data_dir: &Path, dry_run: bool, throttle: Option<Arc<HostThrottle>>) -> Permissions {
    let mut limits = config.limits.clone();
    if let Some(size) = config.sync_limits.concurrency {
        limits.upstream.concurrent_reads = Some(size.max(1));
    }
    Permissions {
        config: ConnectorConfig::new(config.config.clone()),
        secrets: config.resolved_secrets.clone(),
        extra_hosts: config.allowed_hosts.clone(),
        only_extra_hosts: true,
        limits,
        storage_root: Some(data_dir.join("storage")),
        instance_name: Some(config.name.clone()),
        dry_run,
        throttle,
    }
}

/// Turns the instance's module into a local file: a path as it is; an OCI
/// reference looked up (a tag: in the registry each time; a digest pin:
/// from `cache` once pulled) and pulled into `cache`. A pull is checked
/// against the keys the instance trusts before it is written (refused, the
/// error is a `SignatureRefused`, with its digests), so a registry cannot
/// fill the cache with modules the instance would refuse and crowd out
/// the pull of its last good sync; `load` checks the file again before
/// anything is compiled.
pub async fn resolve(config: &InstanceConfig, cache: &Path) -> Result<ResolvedModule> {
    crate::distribution::resolve(&config.module, &config.registry, cache, &config.public_keys).await
}

/// Reads, verifies and compiles the module at `path`, and the key that
/// signed it (if the instance requires one). `resolved`: the sha256 the
/// module was resolved (and, if pulled, verified) as; the bytes compiled
/// must be those, not whatever replaced the cached file since.
fn verify_and_compile(engine: &ConnectorEngine, config: &InstanceConfig, path: &Path, resolved: &str) -> Result<(LoadedModule, Option<VerifyingKey>)> {
    let bytes = crate::runtime::engine::read_module(path)?;
    if hex::encode(Sha256::digest(&bytes)) != resolved {
        bail!("{} changed after it was resolved as sha256 {resolved}; it will be checked again", path.display());
    }
    // From here `bytes` hash to `resolved`.
    // One of the instance's keys must have signed it; find which before
    // compiling, so that the engine checks exactly that key again.
    let signer = if config.public_keys.is_empty() {
        None
    } else {
        let mut last = None;
        let mut found = None;
        for key in &config.public_keys {
            let trust = ModuleTrust { digest: None, signer: Some(*key), signature: config.signature.clone() };
            match trust.check(path, &bytes) {
                Ok(()) => {
                    found = Some(*key);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match found {
            Some(key) => Some(key),
            None => return Err(last.unwrap_or_else(|| anyhow!("no key"))).context("signature check failed"),
        }
    };
    // The engine reads the file again: pinned, it compiles those bytes or none.
    let trust = ModuleTrust { digest: config.digest.clone().or_else(|| Some(resolved.to_string())), signer, signature: config.signature.clone() };
    let module = engine.load_trusted(path, &trust)?;
    if module.digest != resolved {
        bail!("{} changed while it was being loaded; it will be checked again", path.display());
    }
    Ok((module, signer))
}

/// Runs `work`, which holds a core for a while (a compile: 270 ms for the
/// Asana connector, far longer for a big module), without stalling the
/// runtime: on one of its worker threads the API's answers and the syncs
/// queued there would wait, so the worker hands its queue on first.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        // A single-threaded runtime (tests) cannot hand its queue on.
        _ => work(),
    }
}

/// Hosts as the operator reads them: escaped, one after the other.
fn listed(hosts: &[&String]) -> String {
    hosts.iter().map(|host| esc(host)).collect::<Vec<_>>().join(", ")
}

/// `resolve`, then `load`.
pub async fn resolve_and_load(
    engine: &ConnectorEngine,
    config: &InstanceConfig,
    cache: &Path,
    data_dir: &Path,
    replacing: Option<&LoadedVersion>,
) -> Result<LoadedVersion> {
    let resolved = resolve(config, cache).await?;
    load(engine, config, &resolved, data_dir, replacing).await
}

/// Verifies, compiles, starts and validates `config`'s module, as resolved.
/// A host the module asks for that the config does not grant is logged (it
/// cannot reach it); a new version `replacing` a running one that asks for
/// such a host the running one did not ask for is refused, naming it: an
/// update that wants more reach waits for the operator, as it would at a
/// restart's `serve --check`, while one that asks for what the running
/// version asked for swaps in as it would load at a restart.
pub async fn load(
    engine: &ConnectorEngine,
    config: &InstanceConfig,
    resolved: &ResolvedModule,
    data_dir: &Path,
    replacing: Option<&LoadedVersion>,
) -> Result<LoadedVersion> {
    let path = &resolved.path;
    let (module, signer) = off_the_runtime(|| verify_and_compile(engine, config, path, &resolved.digest))?;
    let mut instance = ConnectorInstance::start(engine, &module, &permissions(config, data_dir, false, None)).await?;
    let metadata = instance.metadata.clone();
    let mut ungranted: Vec<&String> = vec![];
    for declared in &metadata.hosts {
        let asked = AllowedHost::declared(declared).map_err(|e| anyhow!("the module declares a bad host {:?}: {e}", esc(declared)))?;
        // A declared host is https only: no port means 443.
        let granted = config.allowed_hosts.iter().any(|g| g.host == asked.host && (g.port.is_none() || g.port == Some(asked.port.unwrap_or(443))));
        if !granted {
            ungranted.push(declared);
        }
    }
    if let Some(running) = replacing {
        let newly_asked: Vec<&String> = ungranted.iter().copied().filter(|host| !running.declared_hosts.contains(host)).collect();
        if !newly_asked.is_empty() {
            bail!(
                "{} {} asks for host(s) the config does not grant and the running version did not ask for: {} (add them to allowed_hosts to accept)",
                esc(&metadata.name),
                esc(&metadata.version),
                listed(&newly_asked)
            );
        }
    }
    if !ungranted.is_empty() {
        tracing::warn!(instance = %config.name, "the module asks for host(s) the config does not grant, so it cannot reach them: {}", listed(&ungranted));
    }
    struct Table<'a>(&'a str);
    impl crate::runtime::settings::HowToGive for Table<'_> {
        fn config(&self, key: &str) -> String {
            format!("{key} under [instances.{}.config]", self.0)
        }
        fn secret(&self, key: &str) -> String {
            format!("{key} under [instances.{}.secrets] (\"env:VAR\" or \"file:PATH\")", self.0)
        }
    }
    // A key this version does not take may be one the next takes (or the
    // last took): said, not refused.
    let unknown = crate::runtime::settings::check(&metadata.config, &config.config, &config.secrets, &Table(&config.name))?;
    if !unknown.is_empty() {
        tracing::warn!(instance = %config.name, "{}", crate::runtime::settings::unknown_keys_message(&metadata.config, &unknown));
    }
    instance.validate().await.map_err(|e| e.context("the connector refused its configuration"))?;
    // What the connector declares and what its syncs use per upstream host
    // (`limits.concurrency` is the reads cap and the pool size).
    let mut operator = permissions(config, data_dir, false, None).limits.upstream;
    operator.concurrent_reads = config.sync_limits.concurrency;
    let used = crate::runtime::upstream_limits::UpstreamSettings::resolve(&instance.declared.limits, &operator);
    tracing::info!(instance = %config.name, "upstream limits declared: {}; per host using {used}", instance.declared.limits);
    tracing::info!(
        instance = %config.name,
        "loaded {} {} (sha256 {}{}); it asks for hosts [{}], the config grants [{}]",
        esc(&metadata.name),
        esc(&metadata.version),
        module.digest,
        signer.map(|k| format!(", signed by key {}", key_id(&k))).unwrap_or_default(),
        metadata.hosts.iter().map(|h| esc(h).into_owned()).collect::<Vec<_>>().join(", "),
        instance.http().allowed_hosts().join(", ")
    );
    Ok(LoadedVersion {
        source: config.module.to_string(),
        path: path.clone(),
        manifest_digest: resolved.manifest_digest.clone(),
        name: metadata.name.clone(),
        version: metadata.version.clone(),
        digest: module.digest.clone(),
        signer: signer.map(|k| key_id(&k)),
        api: module.api.to_string(),
        declared_hosts: metadata.hosts.clone(),
        loaded_at: SystemTime::now(),
        module,
    })
}

/// A shared handle on a loaded version.
pub type Version = Arc<LoadedVersion>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes compiled are the bytes resolved (and, pulled, verified):
    /// a cached file replaced in between is refused, not compiled.
    #[test]
    fn a_module_file_changed_since_it_was_resolved_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("c.wasm");
        std::fs::write(&module, b"\0asm\x0d\0\x01\0").unwrap();
        let config = dir.path().join("serve.toml");
        std::fs::write(
            &config,
            format!("[server]\ndata_dir = \"data\"\n[instances.a]\nmodule = \"{}\"\n[instances.a.schedule]\ninterval = \"1h\"\n", module.display()),
        )
        .unwrap();
        let config = match super::super::config::load_for_sync(&config) {
            Ok(config) => config,
            Err(e) => panic!("the config loads: {e}"),
        };
        let engine = ConnectorEngine::new(None).unwrap();
        let resolved = hex::encode(Sha256::digest(b"the bytes that were verified"));
        let Err(refused) = verify_and_compile(&engine, &config.instances["a"], &module, &resolved) else { panic!("compiled other bytes") };
        assert!(format!("{refused:#}").contains("changed after it was resolved"), "{refused:#}");
    }
}
