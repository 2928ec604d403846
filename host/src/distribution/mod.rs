//! Where a connector module comes from: a file, or an OCI registry.
//!
//! - `registry`: reaching a registry (scheme policy, credentials);
//! - `artifact`: the Wasm OCI layout, pushing, pulling and checking it;
//! - here: `ModuleSource` and `resolve`, which turn either kind of source
//!   into a local file the engine loads. `tether serve` calls `resolve` on
//!   each scheduled sync: a tag is looked up again every time, a digest pin
//!   is served from the cache once pulled.
//!
//! In `tether serve`, per instance and scheduled sync:
//!
//! ```text
//! match resolve(&source, &options, &cache, trust.signer.as_ref()).await {
//!     Err(e) => log e, keep the running module (registry down, tag gone, bad signature),
//!     Ok(r) if r.digest == running.digest => nothing changed,
//!     Ok(r) => engine.load_trusted(&r.path, &trust) → validate → swap (or keep the old on error),
//! }
//! ```
//!
//! A digest pin resolves from the cache without the network once pulled;
//! `ModuleSource::is_moving_tag` says whether re-resolving can change anything.
//!
//! Pulled modules are cached by manifest digest:
//! `<cache>/sha256-<hex>/{manifest.json, NAME.wasm, NAME.wasm.sig}`. A
//! cached entry is trusted no more than a download: its manifest must hash
//! to the digest asked for and its module to the manifest's layer digest.

pub mod artifact;
pub mod registry;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ed25519_dalek::VerifyingKey;
use oci_client::Reference;
use sha2::{Digest, Sha256};

pub use artifact::{parse_reference, VerifiedModule};
pub use registry::{PasswordSource, RegistryOptions};

/// A module as the operator names it: a path, or `oci://registry/repo:tag`
/// or `oci://registry/repo@sha256:…`.
#[derive(Clone, Debug)]
pub enum ModuleSource {
    Path(PathBuf),
    Oci(Reference),
}

impl std::str::FromStr for ModuleSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.starts_with("oci://") {
            parse_reference(text).map(ModuleSource::Oci).map_err(|e| format!("{e:#}"))
        } else {
            Ok(ModuleSource::Path(PathBuf::from(text)))
        }
    }
}

impl fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleSource::Path(path) => write!(f, "{}", path.display()),
            ModuleSource::Oci(reference) => write!(f, "oci://{}", reference.whole()),
        }
    }
}

impl ModuleSource {
    /// True for a tag, which may point elsewhere next time; false for a
    /// file (watched by other means) and for a digest pin.
    pub fn is_moving_tag(&self) -> bool {
        matches!(self, ModuleSource::Oci(reference) if reference.digest().is_none())
    }
}

/// A module ready for `ConnectorEngine::load_trusted`.
#[derive(Clone, Debug)]
pub struct ResolvedModule {
    /// The local file: the path given, or the cached pull (its `.sig`, if
    /// the artifact is signed, beside it).
    pub path: PathBuf,
    /// Hex sha256 of the module's bytes: compare it with the running
    /// module's digest to know whether anything changed.
    pub digest: String,
    /// The raw 64-byte ed25519 signature the artifact carries (None for a
    /// path, which keeps its signature in its own `.sig` file).
    pub signature: Option<Vec<u8>>,
    /// `sha256:<hex>` of the OCI manifest the tag or pin resolved to.
    pub manifest_digest: Option<String>,
}

/// The module cache folder: `<cache_dir>/modules`, or
/// `$XDG_CACHE_HOME/tether/modules` (`~/.cache/tether/modules`).
pub fn module_cache_dir(cache_dir: Option<&Path>) -> Option<PathBuf> {
    match cache_dir {
        Some(dir) => Some(dir.join("modules")),
        None => crate::runtime::engine::ConnectorEngine::default_cache_dir().and_then(|compiled| compiled.parent().map(|base| base.join("modules"))),
    }
}

/// Turns a source into a local file. For an OCI reference: looks the tag
/// up (a digest pin already in the cache needs no registry), checks the
/// manifest digest, the layer digest and, with `signers`, that one of them
/// signed it, all before anything is written to `cache`. The file is named after the
/// repository's last segment, so the default instance name is the same
/// as for a file of that name.
pub async fn resolve(source: &ModuleSource, options: &RegistryOptions, cache: &Path, signers: &[VerifyingKey]) -> Result<ResolvedModule> {
    let reference = match source {
        ModuleSource::Path(path) => {
            let bytes = crate::runtime::engine::read_module(path)?;
            return Ok(ResolvedModule { path: path.clone(), digest: hex::encode(Sha256::digest(&bytes)), signature: None, manifest_digest: None });
        }
        ModuleSource::Oci(reference) => reference,
    };
    let name = file_name_for(reference);
    let pinned = match reference.digest() {
        Some(digest) => from_cache(cache, reference, digest, &name),
        None => None,
    };
    let module = match pinned {
        Some(module) => module,
        None => {
            let registry = options.connect(reference)?;
            artifact::fetch(&registry, reference, |manifest_digest| cached_module(cache, manifest_digest, &name)).await?
        }
    };
    let shown = source.to_string();
    if !signers.is_empty() {
        let mut refusals = signers.iter().map(|signer| module.check_signer(&shown, signer));
        let first = refusals.next().expect("a signer");
        if let Err(refused) = first {
            if !refusals.any(|other| other.is_ok()) {
                return Err(SignatureRefused {
                    module_digest: module.module_digest_hex(),
                    manifest_digest: module.manifest_digest.clone(),
                    reason: format!("{refused:#}"),
                }
                .into());
            }
        }
    }
    let dir = entry_dir(cache, &module.manifest_digest);
    // Written even when read from the cache: a `.sig` removed from the
    // entry comes back, so the load's own signature check agrees.
    artifact::write_atomic_in(&dir, "manifest.json", &module.manifest_bytes)?;
    let path = module.write_to(&dir, &name)?;
    prune_cache(cache, &dir);
    Ok(ResolvedModule {
        path,
        digest: module.module_digest_hex(),
        signature: module.signature.map(|s| s.to_bytes().to_vec()),
        manifest_digest: Some(module.manifest_digest),
    })
}

/// A pull that no trusted key signed, refused before anything was written
/// (its digests, for the refusal `tether serve` shows).
#[derive(Debug)]
pub struct SignatureRefused {
    pub module_digest: String,
    pub manifest_digest: String,
    pub reason: String,
}

impl std::fmt::Display for SignatureRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for SignatureRefused {}

/// For a tag whose registry cannot be reached: the pulls in `cache` of the
/// tag's repository whose module hashes to `module_digest` (the version an
/// instance last synced with), as digest pins. Loading a pin checks it as
/// a download would be (manifest, layer digest, signature); there may be
/// several (the same module under other manifests, say unsigned), so the
/// caller tries each.
pub fn cached_pins(source: &ModuleSource, cache: &Path, module_digest: &str) -> Vec<ModuleSource> {
    let ModuleSource::Oci(reference) = source else { return vec![] };
    let name = file_name_for(reference);
    let Ok(entries) = std::fs::read_dir(cache) else { return vec![] };
    let mut pins = vec![];
    for entry in entries.flatten() {
        let dir_name = entry.file_name();
        let Some(hex) = dir_name.to_str().and_then(|n| n.strip_prefix("sha256-")) else { continue };
        let Ok(module) = crate::plain_file::read(&entry.path().join(format!("{name}.wasm")), crate::runtime::engine::MAX_MODULE_BYTES as u64) else {
            continue;
        };
        if hex::encode(Sha256::digest(&module)) == module_digest {
            let pin = Reference::with_digest(reference.registry().to_string(), reference.repository().to_string(), format!("sha256:{hex}"));
            pins.push(ModuleSource::Oci(pin));
        }
    }
    pins
}

/// The cached module's file name: the repository's last segment.
pub fn file_name_for(reference: &Reference) -> String {
    let last = reference.repository().rsplit('/').next().unwrap_or("connector");
    let cleaned: String = last.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
    if cleaned.is_empty() || cleaned.starts_with('.') {
        "connector".into()
    } else {
        cleaned
    }
}

/// Pulls kept in the module cache: a registry serving a new build (signed
/// or not) at every lookup would otherwise fill the disk, up to 256 MiB a
/// pull.
const KEPT_PULLS: usize = 16;

/// Removes all but the `KEPT_PULLS` newest entries of `cache`, never
/// `keep` (the one just written). A module already loaded runs from
/// memory; a pin whose entry went is pulled again.
fn prune_cache(cache: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    let mut pulls: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("sha256-")) && e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, path)| path != keep)
        .collect();
    pulls.sort_by_key(|pull| std::cmp::Reverse(pull.0));
    for (_, old) in pulls.into_iter().skip(KEPT_PULLS - 1) {
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!("cannot remove the old module pull {}: {e}", old.display());
        }
    }
}

fn entry_dir(cache: &Path, manifest_digest: &str) -> PathBuf {
    cache.join(manifest_digest.replace(':', "-"))
}

/// A digest-pinned module from the cache, checked as a download would be.
fn from_cache(cache: &Path, reference: &Reference, digest: &str, name: &str) -> Option<VerifiedModule> {
    let dir = entry_dir(cache, digest);
    let manifest_bytes = std::fs::read(dir.join("manifest.json")).ok()?;
    if format!("sha256:{}", hex::encode(Sha256::digest(&manifest_bytes))) != digest {
        tracing::warn!("ignoring cached manifest {}: it does not hash to {digest}", dir.display());
        return None;
    }
    let (_, expected, annotations, signature, _) = artifact::check_manifest(reference, &manifest_bytes).ok()?;
    let module = cached_module(cache, digest, name)?;
    let module_digest: [u8; 32] = Sha256::digest(&module).into();
    (module_digest == expected).then_some(VerifiedModule { manifest_digest: digest.to_string(), manifest_bytes, module, module_digest, signature, annotations })
}

/// The bytes cached for a manifest digest under this name, if any (the
/// caller checks them against the manifest's layer digest).
fn cached_module(cache: &Path, manifest_digest: &str, name: &str) -> Option<Vec<u8>> {
    std::fs::read(entry_dir(cache, manifest_digest).join(format!("{name}.wasm"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_cache_keeps_the_newest_pulls() {
        let dir = tempfile::tempdir().unwrap();
        let made: Vec<PathBuf> = (0..KEPT_PULLS + 4)
            .map(|i| {
                let entry = entry_dir(dir.path(), &format!("sha256:{i:064x}"));
                std::fs::create_dir_all(&entry).unwrap();
                let at = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
                std::fs::File::open(&entry).unwrap().set_modified(at).unwrap();
                entry
            })
            .collect();
        std::fs::write(dir.path().join("not-a-pull"), b"").unwrap();
        // The oldest was just written again: it stays, with the newest.
        prune_cache(dir.path(), &made[0]);
        let left: Vec<bool> = made.iter().map(|e| e.exists()).collect();
        assert!(left[0] && left[KEPT_PULLS + 3] && left[5], "{left:?}");
        assert!(!left[1] && !left[4], "{left:?}");
        assert_eq!(left.iter().filter(|&&l| l).count(), KEPT_PULLS);
        assert!(dir.path().join("not-a-pull").exists());
    }

    #[test]
    fn a_module_source_is_a_path_unless_it_says_oci() {
        assert!(matches!("c.wasm".parse::<ModuleSource>().unwrap(), ModuleSource::Path(p) if p == Path::new("c.wasm")));
        // A file whose name merely looks like a reference stays a file.
        assert!(matches!("127.0.0.1:5000/c:1".parse::<ModuleSource>().unwrap(), ModuleSource::Path(_)));
        let tag: ModuleSource = "oci://127.0.0.1:5000/conn/asana:1.0".parse().unwrap();
        assert!(tag.is_moving_tag());
        assert_eq!(tag.to_string(), "oci://127.0.0.1:5000/conn/asana:1.0");
        let pin: ModuleSource = format!("oci://registry.example.com/conn/asana@sha256:{}", "a".repeat(64)).parse().unwrap();
        assert!(!pin.is_moving_tag());
        // The registry must be named: no silent Docker Hub.
        assert!("oci://conn/asana:1.0".parse::<ModuleSource>().is_err());
        assert!("oci://asana".parse::<ModuleSource>().is_err());
        assert!("oci://127.0.0.1:5000/Bad Name".parse::<ModuleSource>().is_err());
    }

    #[test]
    fn cached_files_are_named_after_the_repository() {
        assert_eq!(file_name_for(&parse_reference("r.example/team/asana:1").unwrap()), "asana");
        assert_eq!(file_name_for(&parse_reference("localhost:5000/x").unwrap()), "x");
    }
}
