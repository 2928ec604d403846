//! `tether describe`: what a connector declares, and the storage namespace
//! a run of it would use.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cli::args::{parse_key_value, InstanceArgs, TrustArgs};
use crate::cli::registry::{local_module, RegistryArgs};
use crate::distribution::ModuleSource;
use crate::runtime::engine::ConnectorEngine;
use crate::runtime::imports::config::ConnectorConfig;
use crate::runtime::instance::{ConnectorInstance, Permissions};
use crate::terminal::escape as esc;

#[derive(Args)]
pub struct DescribeArgs {
    /// The connector component: a .wasm file or an oci:// reference.
    #[arg(long, value_name = "FILE.wasm|oci://REF")]
    connector: ModuleSource,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Where compiled code is cached (default: ~/.cache/tether/compiled).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    instance: InstanceArgs,
    /// A config value, as a sync would give it (repeatable): a connector's
    /// metadata may depend on its config (the hosts of a base URL, say).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
}

pub async fn run(args: DescribeArgs) -> Result<()> {
    let engine = ConnectorEngine::new(args.cache_dir.clone().or_else(ConnectorEngine::default_cache_dir))?;
    let trust = args.trust.to_trust()?;
    let local = local_module(&args.connector, &args.registry, &trust, args.cache_dir.as_deref(), false).await?;
    let module = engine.load_trusted(&local.resolved.path, &trust)?;
    let permissions = Permissions { config: ConnectorConfig::new(args.config.clone()), ..Permissions::default() };
    let instance = ConnectorInstance::start(&engine, &module, &permissions).await?;
    let m = &instance.metadata;
    // As a sync refuses them: a key the connector does not take (a typo)
    // would otherwise describe it as if unset.
    if let Some(key) = crate::runtime::settings::unknown_keys(&m.config, args.config.iter().map(|(key, _)| key.as_str())).first() {
        anyhow::bail!("--config {key}: not a key this connector takes (its keys are listed by describe without it)");
    }
    outln!("{} {} — {}", esc(&m.name), esc(&m.version), esc(&m.description))?;
    outln!("sha256 {}", module.digest)?;
    outln!("\nresource types:")?;
    for (i, t) in m.resource_types.iter().enumerate() {
        let listed = t.listed_under.as_deref().map(|p| format!(" (listed per {})", esc(p))).unwrap_or_default();
        let listings = instance.declared.listings_of(i);
        let lists = match (listings.entitlements, listings.grants) {
            (true, true) => String::new(),
            (true, false) => " [entitlements, no grants]".into(),
            (false, true) => " [grants, no entitlements]".into(),
            (false, false) => " [no entitlements, no grants]".into(),
        };
        outln!("  {:<12} {}{listed}{lists}", esc(&t.id), esc(&t.description))?;
    }
    let fields = |title: &str, fields: &[crate::runtime::bindings::guest::ConfigField]| {
        outln!("\n{title}:")?;
        for f in fields {
            let mut notes = vec![];
            if f.secret {
                notes.push("secret: give with --secret".to_string());
            }
            if f.required {
                notes.push("required".to_string());
            }
            if let Some(default) = &f.default_value {
                notes.push(format!("default {}", esc(default)));
            }
            let notes = if notes.is_empty() { String::new() } else { format!(" [{}]", notes.join(", ")) };
            outln!("  {:<22} {}{notes}", esc(&f.key), esc(&f.description))?;
        }
        std::io::Result::Ok(())
    };
    fields("config", &m.config)?;
    fields("create-account fields", &m.account_fields)?;
    let instance_name = args.instance.instance_name.clone().unwrap_or_else(|| crate::runtime::instance::default_instance_name(&local.resolved.path));
    outln!(
        "\ninstance {instance_name}: storage namespace {} (under --storage-dir; set by --instance, never by the module)",
        crate::runtime::instance::storage_namespace(&instance_name)
    )?;
    outln!("\nhosts it asks for: {}", esc(&m.hosts.join(", ")))?;
    outln!("upstream limits it declares, per host: {}", instance.declared.limits)?;
    outln!("  used without flags: {}", instance.upstream_settings())?;
    outln!("  (--max-requests-per-minute, --concurrency and --max-concurrent-writes override them)")?;
    Ok(())
}
