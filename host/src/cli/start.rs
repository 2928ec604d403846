//! A connector loaded, checked and started as the command-line flags say.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::args::ConnectorArgs;
use crate::runtime::engine::{ConnectorEngine, LoadedModule};
use crate::runtime::imports::config::{ConnectorConfig, Secrets};
use crate::runtime::imports::http::AllowedHost;
use crate::runtime::instance::{ConnectorInstance, Permissions};
use crate::runtime::trust::ModuleTrust;
use crate::terminal::escape as esc;

/// A connector loaded and started as the flags say.
pub struct Prepared {
    pub engine: ConnectorEngine,
    pub module: LoadedModule,
    pub instance: ConnectorInstance,
    /// What the instance was started with, for more of the same (a pool).
    pub permissions: Permissions,
}

pub async fn prepare(args: &ConnectorArgs, dry_run: bool) -> Result<Prepared> {
    prepare_with_reads(args, dry_run, None).await
}

/// As [`prepare`], with the operator's cap on reads in flight per upstream
/// host (`sync --concurrency`, which also sizes the pool).
pub async fn prepare_with_reads(args: &ConnectorArgs, dry_run: bool, concurrent_reads: Option<usize>) -> Result<Prepared> {
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(ConnectorEngine::default_cache_dir) };
    let engine = ConnectorEngine::new(cache_dir)?;
    let trust = args.trust.to_trust()?;
    let local = super::registry::local_module(&args.connector, &args.registry, &trust, args.cache_dir.as_deref(), args.no_cache).await?;
    // The engine reads the file again: pinned to the digest it was resolved
    // (and, if pulled, verified) as, it compiles those bytes or none, not a
    // cached file replaced in between.
    let pinned = ModuleTrust { digest: trust.digest.clone().or_else(|| Some(local.resolved.digest.clone())), ..trust.clone() };
    let module = engine.load_trusted(&local.resolved.path, &pinned)?;
    eprintln!(
        "loaded {} (sha256 {}{}, tether:connector@{}) in {:.0} ms{}",
        module.path.display(),
        module.digest,
        trust.signer.map(|key| format!(", signed by key {}", crate::runtime::trust::key_id(&key))).unwrap_or_default(),
        module.api,
        module.load_time.as_secs_f64() * 1000.0,
        if module.from_cache { ", compiled code from cache" } else { "" }
    );
    let hosts = args.allow_host.iter().map(|h| AllowedHost::parse(h).with_context(|| format!("--allow-host {h}"))).collect::<Result<Vec<_>>>()?;
    if args.only_allowed_hosts && hosts.is_empty() {
        anyhow::bail!("--only-allowed-hosts without --allow-host leaves the connector no host to reach: list them with --allow-host");
    }
    let mut permissions = Permissions {
        config: ConnectorConfig::new(args.config.clone()),
        secrets: Arc::new(Secrets::resolve(&args.secret)?),
        extra_hosts: hosts,
        only_extra_hosts: args.only_allowed_hosts,
        limits: args.limits.to_limits()?,
        storage_root: args.storage_dir.clone(),
        instance_name: args.instance.instance_name.clone(),
        dry_run,
        throttle: None,
    };
    permissions.limits.upstream.concurrent_reads = concurrent_reads;
    let instance = ConnectorInstance::start(&engine, &module, &permissions).await?;
    check_config_against_metadata(&instance, args)?;
    // Secrets are attached for these hosts: the operator should see them.
    eprintln!("{} {} may reach: {}", esc(&instance.metadata.name), esc(&instance.metadata.version), instance.http().allowed_hosts().join(", "));
    // What the connector asked for and what it gets, per upstream host.
    eprintln!("upstream limits declared: {}; per host using {}", instance.declared.limits, instance.upstream_settings());
    Ok(Prepared { engine, module, instance, permissions })
}

/// The flags' config and secrets, checked against the connector's keys.
fn check_config_against_metadata(instance: &ConnectorInstance, args: &ConnectorArgs) -> Result<()> {
    struct Flags;
    impl crate::runtime::settings::HowToGive for Flags {
        fn config(&self, key: &str) -> String {
            format!("--config {key}=…")
        }
        fn secret(&self, key: &str) -> String {
            format!("--secret {key}=env:VAR (or file:PATH)")
        }
    }
    let unknown = crate::runtime::settings::check(&instance.metadata.config, &args.config, &args.secret, &Flags)?;
    if !unknown.is_empty() {
        anyhow::bail!("{}", crate::runtime::settings::unknown_keys_message(&instance.metadata.config, &unknown));
    }
    Ok(())
}
