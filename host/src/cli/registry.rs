//! The registry flags of commands that take a module (`--connector
//! oci://…`) or talk to a registry (`tether module push|pull`), and the
//! step that turns `--connector` into a local file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::distribution::{module_cache_dir, resolve, ModuleSource, PasswordSource, RegistryOptions, ResolvedModule};
use crate::runtime::trust::ModuleTrust;

#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Speak plain http to this registry (HOST[:PORT], repeatable). Loopback registries always may.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Registry user (default: the registry's entry in ~/.docker/config.json, or anonymous).
    #[arg(long, value_name = "NAME", requires = "registry_password")]
    pub registry_user: Option<String>,
    /// Registry password, by reference: env:VAR or file:PATH.
    #[arg(long, value_name = "env:VAR|file:PATH", requires = "registry_user")]
    pub registry_password: Option<PasswordSource>,
}

impl RegistryArgs {
    pub fn to_options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure_registry.clone(),
            credentials: self.registry_user.clone().zip(self.registry_password.clone()),
            ..RegistryOptions::default()
        }
    }
}

/// A `--connector` made a local file. `_scratch` holds a pull made with
/// `--no-cache` until the module is compiled.
pub struct LocalModule {
    pub resolved: ResolvedModule,
    pub _scratch: Option<tempfile::TempDir>,
}

/// Resolves `--connector`: a path as it is, an OCI reference pulled (its
/// signature checked against `--require-signature` before anything is
/// written) into the module cache, or into a scratch folder with `no_cache`.
pub async fn local_module(
    source: &ModuleSource,
    registry: &RegistryArgs,
    trust: &ModuleTrust,
    cache_dir: Option<&Path>,
    no_cache: bool,
) -> Result<LocalModule> {
    let (cache, scratch) = match (source, no_cache, module_cache_dir(cache_dir)) {
        (ModuleSource::Path(_), ..) => (PathBuf::new(), None),
        // A cache that cannot be made (a read-only home) costs a pull
        // kept only for this run, as with --no-cache, not the run.
        (_, false, Some(dir)) if std::fs::create_dir_all(&dir).is_ok() => (dir, None),
        (_, false, Some(dir)) => {
            eprintln!("warning: cannot use the module cache {}: pulling into a scratch folder for this run", dir.display());
            let scratch = tempfile::tempdir()?;
            (scratch.path().to_path_buf(), Some(scratch))
        }
        _ => {
            let scratch = tempfile::tempdir()?;
            (scratch.path().to_path_buf(), Some(scratch))
        }
    };
    let resolved = resolve(source, &registry.to_options(), &cache, trust.signer.as_slice()).await?;
    if let Some(manifest) = &resolved.manifest_digest {
        eprintln!("resolved {source} to {manifest}");
    }
    Ok(LocalModule { resolved, _scratch: scratch })
}
