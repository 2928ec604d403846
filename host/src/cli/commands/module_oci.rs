//! `tether module push | pull`: a connector through an OCI registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sha2::{Digest, Sha256};

use crate::cli::registry::RegistryArgs;
use crate::distribution::artifact::{self, *};
use crate::distribution::{file_name_for, parse_reference};
use crate::runtime::engine::ConnectorEngine;
use crate::runtime::instance::{ConnectorInstance, Permissions};
use crate::runtime::trust::{key_id, parse_verifying_key, read_signature, read_signing_key, sign_digest, signature_path_for};
use crate::terminal::escape as esc;

#[derive(Args)]
pub struct PushArgs {
    #[arg(value_name = "MODULE.wasm")]
    module: PathBuf,
    /// Where to publish: REGISTRY/REPOSITORY:TAG (an oci:// prefix is allowed).
    #[arg(value_name = "REGISTRY/REPOSITORY:TAG")]
    reference: String,
    /// Sign with this secret key (from `tether module keygen`). Without it,
    /// MODULE.wasm.sig is attached if it exists.
    #[arg(long, value_name = "NAME.key")]
    key: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST (an oci:// prefix is allowed).
    #[arg(value_name = "REF")]
    reference: String,
    /// Folder to write REPOSITORY.wasm (and its .sig) into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Refuse the module unless it carries a good signature by this key: a
    /// NAME.pub file or 64 hex digits.
    #[arg(long, value_name = "NAME.pub|HEX")]
    require_signature: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Loads the module as every command would (so nothing unloadable is
/// published), reads its metadata through the contract, signs, pushes.
pub async fn push(args: PushArgs) -> Result<()> {
    let reference = parse_reference(&args.reference)?;
    let bytes = crate::runtime::engine::read_module(&args.module)?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let engine = ConnectorEngine::new(None)?;
    let module = engine.load(&args.module, None)?;
    let instance = ConnectorInstance::start(&engine, &module, &Permissions::default()).await?;
    let metadata = &instance.metadata;
    let mut annotations = BTreeMap::from([
        (ANNOTATION_NAME.to_string(), metadata.name.clone()),
        (ANNOTATION_VERSION.to_string(), metadata.version.clone()),
        (ANNOTATION_CONTRACT.to_string(), module.api.to_string()),
        ("org.opencontainers.image.title".to_string(), metadata.name.clone()),
        ("org.opencontainers.image.version".to_string(), metadata.version.clone()),
        ("org.opencontainers.image.description".to_string(), metadata.description.clone()),
    ]);
    let signed_by = match &args.key {
        Some(key) => {
            let key = read_signing_key(key)?;
            let id = key_id(&key.verifying_key());
            annotations.insert(ANNOTATION_SIGNATURE.to_string(), hex::encode(sign_digest(&key, &digest).to_bytes()));
            annotations.insert(ANNOTATION_KEY_ID.to_string(), id.clone());
            format!("signed by key {id}")
        }
        None => {
            let sig = signature_path_for(&args.module);
            if sig.is_file() {
                annotations.insert(ANNOTATION_SIGNATURE.to_string(), hex::encode(read_signature(&sig)?.to_bytes()));
                format!("with the signature {}", sig.display())
            } else {
                eprintln!("warning: {} is pushed unsigned (no --key, no {})", args.module.display(), sig.display());
                "unsigned".to_string()
            }
        }
    };
    let registry = args.registry.to_options().connect(&reference)?;
    let manifest_digest = artifact::push(registry, &reference, bytes, annotations).await?;
    outln!(
        "pushed {} {} ({}, tether:connector@{}) to {}: manifest {manifest_digest}, module sha256 {}, {signed_by}",
        esc(&metadata.name),
        esc(&metadata.version),
        args.module.display(),
        module.api,
        reference.whole(),
        hex::encode(digest),
    )?;
    outln!("pin it with --connector oci://{}/{}@{manifest_digest}", reference.registry(), reference.repository())?;
    Ok(())
}

/// Fetches, checks the manifest digest (for a pin), the module's digest and
/// the signature, and only then writes the module into `--out`.
pub async fn pull(args: PullArgs) -> Result<()> {
    let reference = parse_reference(&args.reference)?;
    let signer = args.require_signature.as_deref().map(parse_verifying_key).transpose()?;
    let registry = args.registry.to_options().connect(&reference)?;
    let module = artifact::fetch(&registry, &reference, |_| None).await?;
    if let Some(signer) = &signer {
        module.check_signer(&reference.whole(), signer)?;
    }
    let path = module.write_to(&args.out, &file_name_for(&reference))?;
    let label = |key: &str| module.annotations.get(key).map(|v| esc(v)).unwrap_or_else(|| "?".into());
    outln!(
        "pulled {} {} (tether:connector@{}) from {}: manifest {}, module sha256 {}, {} → {}",
        label(ANNOTATION_NAME),
        label(ANNOTATION_VERSION),
        label(ANNOTATION_CONTRACT),
        reference.whole(),
        module.manifest_digest,
        module.module_digest_hex(),
        match (&signer, &module.signature) {
            (Some(key), _) => format!("good signature by key {}", key_id(key)),
            (None, Some(_)) => "signed (signature not checked: no --require-signature)".to_string(),
            (None, None) => "unsigned".to_string(),
        },
        path.display()
    )?;
    Ok(())
}
