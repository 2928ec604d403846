//! A connector as an OCI artifact, in the CNCF Wasm layout (`wkg oci`
//! follows it): config `application/vnd.wasm.config.v0+json`, exactly one
//! `application/wasm` layer holding the component.
//!
//! The ed25519 signature travels as an annotation on the manifest. Debian's
//! registry (distribution 2.8) has no referrers API, so a signature pushed as
//! a referrer artifact could only be found through a tag naming convention;
//! an annotation needs no registry support, is covered by the manifest
//! digest (a digest pin pins the signature too), and is copied with the
//! manifest by every registry-to-registry copy. It signs the layer's sha256
//! exactly as a `.sig` file does, so `tether module sign` and push agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::{Signature, VerifyingKey};
use oci_client::manifest::{OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use sha2::{Digest, Sha256};

use super::registry::Registry;
use crate::runtime::trust::{key_id, verify_digest};

/// Hex of the 64-byte ed25519 signature over the module's sha256.
pub const ANNOTATION_SIGNATURE: &str = "dev.tether.module.signature.ed25519";
/// The signing key's id (as `tether module keygen` prints it), for messages.
pub const ANNOTATION_KEY_ID: &str = "dev.tether.module.signature.key-id";
pub const ANNOTATION_NAME: &str = "dev.tether.connector.name";
pub const ANNOTATION_VERSION: &str = "dev.tether.connector.version";
pub const ANNOTATION_CONTRACT: &str = "dev.tether.connector.contract";

pub use crate::runtime::engine::MAX_MODULE_BYTES;

/// `oci://registry/repository:tag` or `…@sha256:…` (the `oci://` prefix is
/// optional where only a reference can be meant). The registry must be
/// named: a bare `conn/asana` would silently mean Docker Hub.
pub fn parse_reference(text: &str) -> Result<Reference> {
    let bare = text.strip_prefix("oci://").unwrap_or(text);
    let first = bare.split('/').next().unwrap_or("");
    if !bare.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost") {
        bail!("{text:?}: an OCI reference names its registry, e.g. oci://127.0.0.1:5000/connectors/asana:1.0 or registry.example.com/team/conn@sha256:…");
    }
    bare.parse::<Reference>().map_err(|e| anyhow::anyhow!("{text:?} is not an OCI reference: {e}"))
}

/// A module pulled and checked: the manifest's digest is the one pinned
/// (if any) and the module's bytes are the layer the manifest names.
pub struct VerifiedModule {
    /// `sha256:<hex>` of the manifest as the registry served it.
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub module: Vec<u8>,
    /// The module's sha256 (what a signature covers and `--digest` pins).
    pub module_digest: [u8; 32],
    pub signature: Option<Signature>,
    pub annotations: BTreeMap<String, String>,
}

impl VerifiedModule {
    pub fn module_digest_hex(&self) -> String {
        hex::encode(self.module_digest)
    }

    /// Ok when the module carries a good signature by `signer`.
    pub fn check_signer(&self, reference: &str, signer: &VerifyingKey) -> Result<()> {
        let Some(signature) = &self.signature else {
            bail!("{reference} ({}) is not signed, but a signature by key {} is required; nothing was written", self.manifest_digest, key_id(signer));
        };
        verify_digest(signer, &self.module_digest, signature).with_context(|| {
            format!(
                "{reference} ({}, module sha256 {}) is refused: its signature is not a good signature by key {}; nothing was written",
                self.manifest_digest,
                self.module_digest_hex(),
                key_id(signer)
            )
        })
    }

    /// Writes `<dir>/<name>.wasm` and, if signed, `<name>.wasm.sig` (the
    /// format `tether module sign` writes), each whole or not at all.
    ///
    /// The module is written first: a write that fails (a full disk) leaves
    /// the previous pull and its signature as they were, still verifying,
    /// where writing the signature first left the old module beside the new
    /// one's signature. Between the two renames a reader may see the new
    /// module with the old signature: it is refused then, never wrongly
    /// trusted.
    pub fn write_to(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let module = dir.join(format!("{name}.wasm"));
        let sig = crate::runtime::trust::signature_path_for(&module);
        write_atomic(&module, &self.module)?;
        match &self.signature {
            Some(signature) => {
                let key = self.annotations.get(ANNOTATION_KEY_ID).map(|id| crate::terminal::escape(id).into_owned());
                let text = crate::runtime::trust::signature_file_text(&self.module_digest_hex(), key.as_deref(), signature);
                write_atomic(&sig, text.as_bytes())?;
            }
            // A signature left from another version would only mislead.
            None => {
                let removed = std::fs::remove_file(&sig).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) });
                removed.with_context(|| format!("cannot remove {}", sig.display()))?;
            }
        }
        Ok(module)
    }
}

/// `write_atomic` of `dir/name`, creating `dir`.
pub fn write_atomic_in(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join(name), bytes)
}

/// Writes through a temporary file in the same folder and a rename, so a
/// reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    // A module is no secret (temp files start 0600): readable like any file.
    #[cfg(unix)]
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Says which registry could not be reached, not only what reqwest says;
/// the registry's own words (error bodies) are escaped for the terminal.
fn registry_error(reference: &Reference, what: &str, e: impl Into<anyhow::Error>) -> anyhow::Error {
    let cause = format!("{:#}", e.into());
    anyhow::anyhow!("cannot {what} {} (registry {}): {}", reference.whole(), reference.resolve_registry(), crate::terminal::escape(&cause))
}

/// Fetches the manifest `reference` names and its module, checking every
/// digest on the way. `cached` may supply the module's bytes for a manifest
/// digest (they are checked like downloaded ones).
pub async fn fetch(registry: &Registry, reference: &Reference, cached: impl Fn(&str) -> Option<Vec<u8>>) -> Result<VerifiedModule> {
    let auth = registry
        .authenticate(reference, oci_client::RegistryOperation::Pull)
        .await
        .map_err(|e| registry_error(reference, "fetch the manifest of", e.context("cannot authenticate")))?;
    let manifest_bytes =
        registry.pull_manifest(reference, OCI_IMAGE_MEDIA_TYPE, &auth).await.map_err(|e| registry_error(reference, "fetch the manifest of", e))?;
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest_bytes)));
    if let Some(pinned) = reference.digest() {
        if pinned != manifest_digest {
            bail!("{} served a manifest with digest {manifest_digest}, not the pinned {pinned}; nothing was written", reference.whole());
        }
    }
    let (layer_digest, expected, annotations, signature, layer_size) = check_manifest(reference, &manifest_bytes)?;
    let module = match cached(&manifest_digest).filter(|bytes| Sha256::digest(bytes).as_slice() == expected) {
        Some(bytes) => bytes,
        None => pull_layer(registry, reference, &auth, &layer_digest, layer_size).await?,
    };
    let module_digest: [u8; 32] = Sha256::digest(&module).into();
    if module_digest != expected {
        bail!(
            "{}: the module's bytes have sha256 {}, not the manifest's layer digest {layer_digest}; nothing was written",
            reference.whole(),
            hex::encode(module_digest)
        );
    }
    Ok(VerifiedModule { manifest_digest, manifest_bytes, module, module_digest, signature, annotations })
}

type ManifestParts = (String, [u8; 32], BTreeMap<String, String>, Option<Signature>, u64);

/// The layer's digest, its annotations, signature and size, once the manifest is
/// known to be a Wasm component artifact.
pub(crate) fn check_manifest(reference: &Reference, bytes: &[u8]) -> Result<ManifestParts> {
    let whole = reference.whole();
    let manifest: OciImageManifest = serde_json::from_slice(bytes).with_context(|| format!("{whole}: the registry's answer is not an OCI image manifest"))?;
    if manifest.config.media_type != oci_wasm::WASM_MANIFEST_CONFIG_MEDIA_TYPE {
        bail!(
            "{whole} is not a Wasm component artifact: its config is {:?}, not {}",
            crate::terminal::escape(&manifest.config.media_type),
            oci_wasm::WASM_MANIFEST_CONFIG_MEDIA_TYPE
        );
    }
    let [layer] = manifest.layers.as_slice() else {
        bail!("{whole} has {} layers; a Wasm component artifact has exactly one", manifest.layers.len());
    };
    if layer.media_type != oci_wasm::WASM_LAYER_MEDIA_TYPE {
        bail!("{whole}: its layer is {:?}, not {}", crate::terminal::escape(&layer.media_type), oci_wasm::WASM_LAYER_MEDIA_TYPE);
    }
    if layer.size <= 0 || layer.size as u64 > MAX_MODULE_BYTES as u64 {
        bail!("{whole}: its module is {} bytes (at most {MAX_MODULE_BYTES})", layer.size);
    }
    let expected: [u8; 32] = layer
        .digest
        .strip_prefix("sha256:")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{whole}: its layer digest {:?} is not a sha256", crate::terminal::escape(&layer.digest)))?;
    let annotations = manifest.annotations.clone().unwrap_or_default();
    let signature = match annotations.get(ANNOTATION_SIGNATURE) {
        None => None,
        Some(text) => {
            let bytes: [u8; 64] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("{whole}: its {ANNOTATION_SIGNATURE} annotation is not 64 bytes in hex"))?;
            Some(Signature::from_bytes(&bytes))
        }
    };
    Ok((layer.digest.clone(), expected, annotations, signature, layer.size as u64))
}

/// How long a module's download may take: a minute, and a second more for
/// each 256 KiB it has. A registry that sends a byte now and then would
/// otherwise hold a pull (and a served instance's next sync) for days.
fn layer_deadline(size: u64) -> std::time::Duration {
    std::time::Duration::from_secs(60 + size / (256 << 10))
}

/// Downloads a layer of `size` bytes (as the manifest says, at most
/// `MAX_MODULE_BYTES`), never holding more than that, within
/// [`layer_deadline`]: a blob that runs past its declared size is refused
/// there, not at the global cap.
async fn pull_layer(registry: &Registry, reference: &Reference, auth: &RegistryAuth, digest: &str, size: u64) -> Result<Vec<u8>> {
    let deadline = layer_deadline(size);
    let cap = usize::try_from(size).unwrap_or(MAX_MODULE_BYTES).min(MAX_MODULE_BYTES);
    tokio::time::timeout(deadline, registry.pull_blob(reference, digest, auth, cap))
        .await
        .map_err(|_| anyhow::anyhow!("not downloaded within {deadline:?}"))
        .and_then(|pulled| pulled)
        .map_err(|e| registry_error(reference, "fetch the module of", e))
}

/// Publishes `module` at `reference` in the Wasm layout with `annotations`
/// on the manifest; returns the manifest's digest as the registry has it.
pub async fn push(registry: Registry, reference: &Reference, module: Vec<u8>, annotations: BTreeMap<String, String>) -> Result<String> {
    let (config, layer) = oci_wasm::WasmConfig::from_raw_component(module, None).context("the module is not a WebAssembly component")?;
    let auth = registry.authenticate(reference, oci_client::RegistryOperation::Push).await.map_err(|e| registry_error(reference, "push", e))?;
    let client = oci_wasm::WasmClient::new(registry.client);
    client.push(reference, &auth, layer, config, Some(annotations)).await.map_err(|e| registry_error(reference, "push", e))?;
    client.fetch_manifest_digest(reference, &auth).await.map_err(|e| registry_error(reference, "read back the digest of", e))
}
