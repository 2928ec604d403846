//! `tether module keygen | sign | verify`: the operator's side of module
//! signatures (checking them on load is `trust`); `push | pull` publish
//! and fetch modules through OCI registries (`module_oci`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use crate::runtime::trust::*;

/// Writes `path` only if it does not exist yet; `secret` files are made
/// readable by their owner only.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    let mut file = options.open(path).with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A half-written key (a full disk) would make the next keygen
        // refuse "must not exist yet": made here, it goes here.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[derive(Args)]
pub struct ModuleArgs {
    #[command(subcommand)]
    command: ModuleCommand,
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Creates a signing key pair: NAME.key (secret) and NAME.pub.
    Keygen {
        /// Path and base name of the two files.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Signs a module with a secret key: writes MODULE.wasm.sig beside it.
    Sign {
        #[arg(long, value_name = "NAME.key")]
        key: PathBuf,
        #[arg(value_name = "MODULE.wasm")]
        module: PathBuf,
        /// Where to write the signature (default: MODULE.wasm.sig).
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
    },
    /// Checks a module's signature against a public key.
    Verify {
        /// The public key: a NAME.pub file or 64 hex digits.
        #[arg(long, value_name = "NAME.pub|HEX")]
        key: String,
        #[arg(value_name = "MODULE.wasm")]
        module: PathBuf,
        /// The signature (default: MODULE.wasm.sig).
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
    },
    /// Publishes a module to an OCI registry (CNCF Wasm layout), its
    /// signature and metadata as manifest annotations.
    Push(super::module_oci::PushArgs),
    /// Fetches a module from an OCI registry by tag or digest into a folder,
    /// checking digests (and the signature) before writing anything.
    Pull(super::module_oci::PullArgs),
}

/// `tether module …`.
pub async fn run(args: ModuleArgs) -> Result<()> {
    let read_module = |module: &Path| -> Result<[u8; 32]> {
        let bytes = crate::runtime::engine::read_module(module)?;
        Ok(Sha256::digest(&bytes).into())
    };
    match args.command {
        ModuleCommand::Push(args) => return super::module_oci::push(args).await,
        ModuleCommand::Pull(args) => return super::module_oci::pull(args).await,
        ModuleCommand::Keygen { out } => {
            // NAME.key and NAME.pub: a folder (`keys/`) or no name would
            // give hidden `.key` files, or `/dev/null.key`.
            if out.as_os_str().to_string_lossy().ends_with('/') || out.is_dir() || out.file_name().is_none() || (out.exists() && !out.is_file()) {
                anyhow::bail!("--out {}: give the keys' name, such as ops or keys/ops (writes NAME.key and NAME.pub)", out.display());
            }
            let key = generate_signing_key()?;
            let public = key.verifying_key();
            let id = key_id(&public);
            let secret_path = PathBuf::from(format!("{}.key", out.display()));
            let public_path = PathBuf::from(format!("{}.pub", out.display()));
            // The public half first: if it cannot be written, no secret is left behind.
            write_new(&public_path, &format!("# tether module {PUBLIC_KEY_HEADER} {id}\n{}\n", hex::encode(public.as_bytes())), false)?;
            if let Err(e) =
                write_new(&secret_path, &format!("# tether module {SECRET_KEY_HEADER} {id}: keep it private\n{}\n", hex::encode(key.to_bytes())), true)
            {
                // No half pair: a public key without its secret is no use.
                let _ = std::fs::remove_file(&public_path);
                return Err(e);
            }
            outln!("wrote {} (secret) and {} (key id {id})", secret_path.display(), public_path.display())?;
        }
        ModuleCommand::Sign { key, module, signature } => {
            let key = read_signing_key(&key)?;
            let digest = read_module(&module)?;
            let target = signature.unwrap_or_else(|| signature_path_for(&module));
            let id = key_id(&key.verifying_key());
            let text = signature_file_text(&hex::encode(digest), Some(&id), &sign_digest(&key, &digest));
            refuse_to_overwrite_other_than_a_signature(&target)?;
            crate::distribution::artifact::write_atomic(&target, text.as_bytes())?;
            outln!("signed {} (sha256 {}) with key {id}: {}", module.display(), hex::encode(digest), target.display())?;
        }
        ModuleCommand::Verify { key, module, signature } => {
            let signer = parse_verifying_key(&key)?;
            let bytes = crate::runtime::engine::read_module(&module)?;
            ModuleTrust { digest: None, signer: Some(signer), signature }.check(&module, &bytes)?;
            outln!("{} (sha256 {}): good signature by key {}", module.display(), hex::encode(Sha256::digest(&bytes)), key_id(&signer))?;
        }
    }
    Ok(())
}

/// `--signature` may replace a signature, never anything else (a sync
/// file named by mistake, a module): what is there must read as one, as
/// `verify` and the loaders read it.
fn refuse_to_overwrite_other_than_a_signature(target: &Path) -> Result<()> {
    if std::fs::symlink_metadata(target).is_err() {
        return Ok(());
    }
    if read_signature(target).is_err() {
        anyhow::bail!("{} exists and is not a signature: refusing to write over it", target.display());
    }
    Ok(())
}
