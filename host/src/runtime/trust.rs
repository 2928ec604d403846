//! Module trust: digest pins and detached ed25519 signatures, checked on the
//! module's bytes before anything is compiled; and `tether module
//! keygen|sign|verify`.
//!
//! A signature covers the module's sha256 behind a fixed context string, so
//! it can never be mistaken for a signature over anything else. Keys and
//! signatures are one-line hex text files (lines starting with `#` are
//! comments); a signature sits beside its module as `<module>.wasm.sig`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// What is signed: this context, then the module's 32-byte sha256.
const SIGNED_CONTEXT: &[u8] = b"tether module signature v1\0";

/// What the operator requires of a module before it is compiled.
#[derive(Debug, Clone, Default)]
pub struct ModuleTrust {
    /// The module's sha256 (hex, optionally `sha256:`-prefixed) must be this.
    pub digest: Option<String>,
    /// The module must carry a good signature by this key.
    pub signer: Option<VerifyingKey>,
    /// Where the signature is; default `<module>.sig` beside the module.
    pub signature: Option<PathBuf>,
}

/// A sha256 pin as given (`HEX` or `sha256:HEX`, any case), as 64 lower
/// case hex digits; None if it is not one.
pub fn parse_sha256(text: &str) -> Option<String> {
    let hex = text.trim_start_matches("sha256:").to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

impl ModuleTrust {
    /// Ok when `bytes` (read from `path`) meet every requirement.
    pub fn check(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let digest_hex = hex::encode(digest);
        if let Some(expected) = &self.digest {
            let expected = parse_sha256(expected.trim()).unwrap_or_else(|| expected.clone());
            if expected != digest_hex {
                bail!("connector {} has sha256 {digest_hex}, but {expected} was pinned", path.display());
            }
        }
        if let Some(signer) = &self.signer {
            let signature_path = self.signature.clone().unwrap_or_else(|| signature_path_for(path));
            if !signature_path.is_file() {
                bail!(
                    "connector {} is not signed: no signature at {} (a signature by key {} is required)",
                    path.display(),
                    signature_path.display(),
                    key_id(signer)
                );
            }
            let signature = read_signature(&signature_path)?;
            verify_digest(signer, &digest, &signature).with_context(|| {
                format!(
                    "connector {} (sha256 {digest_hex}) is refused: its signature {} is not a good signature by key {}",
                    path.display(),
                    signature_path.display(),
                    key_id(signer)
                )
            })?;
        }
        Ok(())
    }
}

/// `<module>.wasm` → `<module>.wasm.sig`.
pub fn signature_path_for(module: &Path) -> PathBuf {
    let mut name = module.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".sig");
    module.with_file_name(name)
}

/// A short name for a key, to tell keys apart in messages.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

pub fn generate_signing_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("cannot get random bytes for a key: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn sign_digest(key: &SigningKey, digest: &[u8; 32]) -> Signature {
    key.sign(&signed_message(digest))
}

pub fn verify_digest(key: &VerifyingKey, digest: &[u8; 32], signature: &Signature) -> Result<()> {
    // Strict verification refuses the malleable and weak-key forms.
    key.verify_strict(&signed_message(digest), signature).map_err(|_| anyhow::anyhow!("the signature does not match"))
}

fn signed_message(digest: &[u8; 32]) -> Vec<u8> {
    [SIGNED_CONTEXT, digest.as_slice()].concat()
}

/// What the first comment line `module keygen` writes in each half of a
/// key pair says (after "tether module "): how a file given for the other
/// half is told apart.
pub const PUBLIC_KEY_HEADER: &str = "signing public key";
pub const SECRET_KEY_HEADER: &str = "signing SECRET key";

/// The hex payload of a key or signature file: its non-comment lines.
/// `other_half`: the header of the key pair's other half, and what to say
/// of a file that carries it. Signing with the public key, or publishing
/// the secret one as a public key, would only show when nothing verifies.
fn read_hex_file<const N: usize>(path: &Path, what: &str, other_half: Option<(&str, &str)>) -> Result<[u8; N]> {
    // A plain file of at most 64 KiB: a FIFO or a device would hang or fill memory.
    let text = crate::plain_file::read_text(path, 64 << 10).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if let Some((header, said)) = other_half {
        if text.lines().any(|line| line.trim().strip_prefix('#').is_some_and(|comment| comment.contains(header))) {
            anyhow::bail!("{} is {said}", path.display());
        }
    }
    parse_hex(&text).with_context(|| format!("{} is not a {what} file", path.display()))
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N]> {
    let payload: String = text.lines().map(str::trim).filter(|line| !line.starts_with('#')).collect();
    let bytes = hex::decode(&payload).map_err(|_| anyhow::anyhow!("expected {N} bytes in hex"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("expected {N} bytes in hex"))
}

pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_hex_file::<32>(path, "signing key", Some((PUBLIC_KEY_HEADER, "a public key: sign with the NAME.key file")))?))
}

/// A public key given as 64 hex digits or as the path of a `.pub` file.
pub fn parse_verifying_key(spec: &str) -> Result<VerifyingKey> {
    let bytes = match parse_hex::<32>(spec) {
        Ok(bytes) => bytes,
        Err(_) => read_hex_file::<32>(
            Path::new(spec),
            "public key",
            Some((SECRET_KEY_HEADER, "a secret signing key: give its NAME.pub file, and keep the .key private")),
        )?,
    };
    VerifyingKey::from_bytes(&bytes).map_err(|_| anyhow::anyhow!("{spec} is not a valid ed25519 public key"))
}

/// A signature file's text, as `tether module sign` and a pull write it:
/// a comment naming the module's digest (and the key, if known), then the
/// signature in hex.
pub fn signature_file_text(digest_hex: &str, key_id: Option<&str>, signature: &Signature) -> String {
    let by = key_id.map(|id| format!(" by key {id}")).unwrap_or_default();
    format!("# signature of sha256 {digest_hex}{by}\n{}\n", hex::encode(signature.to_bytes()))
}

pub fn read_signature(path: &Path) -> Result<Signature> {
    Ok(Signature::from_bytes(&read_hex_file::<64>(path, "signature", None)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_exactly_the_signed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"module bytes").unwrap();
        let key = generate_signing_key().unwrap();
        let digest: [u8; 32] = Sha256::digest(b"module bytes").into();
        std::fs::write(signature_path_for(&module), hex::encode(sign_digest(&key, &digest).to_bytes())).unwrap();
        let trust = ModuleTrust { signer: Some(key.verifying_key()), ..ModuleTrust::default() };
        trust.check(&module, b"module bytes").unwrap();
        let err = format!("{:#}", trust.check(&module, b"module bytez").unwrap_err());
        assert!(err.contains("not a good signature"), "{err}");
        let other = ModuleTrust { signer: Some(generate_signing_key().unwrap().verifying_key()), ..ModuleTrust::default() };
        assert!(other.check(&module, b"module bytes").is_err());
    }

    #[test]
    fn keys_parse_from_hex_or_files_with_comments() {
        let key = generate_signing_key().unwrap().verifying_key();
        let hex_key = hex::encode(key.as_bytes());
        assert_eq!(parse_verifying_key(&hex_key).unwrap(), key);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.pub");
        std::fs::write(&file, format!("# a comment\n{hex_key}\n")).unwrap();
        assert_eq!(parse_verifying_key(file.to_str().unwrap()).unwrap(), key);
        assert!(parse_verifying_key("not-a-key").is_err());
        // Each half of a pair as the tether writes them, given for the other.
        let secret = dir.path().join("k.key");
        std::fs::write(&secret, format!("# tether module {SECRET_KEY_HEADER} x: keep it private\n{hex_key}\n")).unwrap();
        let err = format!("{:#}", parse_verifying_key(secret.to_str().unwrap()).unwrap_err());
        assert!(err.contains("is a secret signing key"), "{err}");
        std::fs::write(&file, format!("# tether module {PUBLIC_KEY_HEADER} x\n{hex_key}\n")).unwrap();
        let err = format!("{:#}", read_signing_key(&file).unwrap_err());
        assert!(err.contains("is a public key"), "{err}");
        assert_eq!(signature_path_for(Path::new("/x/c.wasm")), Path::new("/x/c.wasm.sig"));
    }
}
