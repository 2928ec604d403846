//! The compiled-code cache: wasmtime runs deserialized code without
//! validating it, so an entry is used only if it provably came from this
//! host compiling this module.

use std::path::Path;

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The compiled-code cache folder. Each entry is the compiled code followed
/// by an HMAC-SHA256, under a key only this host's user can read, over the
/// module's digest and the code: an entry renamed, swapped or written by
/// anyone without the key does not verify and is compiled afresh.
pub struct CompiledCache {
    key: [u8; 32],
}

const CACHE_KEY_FILE: &str = "cache.key";
const MAC_LEN: usize = 32;
/// The largest entry read: compiled code is handed back at most
/// `compile::MAX_COMPILED_BYTES`.
const MAX_ENTRY_BYTES: u64 = super::compile::MAX_COMPILED_BYTES + MAC_LEN as u64;

impl CompiledCache {
    /// Reads the folder's key, creating folder and key on first use.
    pub fn open(dir: &Path) -> Result<Self> {
        create_private_dir(dir)?;
        let path = dir.join(CACHE_KEY_FILE);
        check_private(dir, &path)?;
        let key = match std::fs::read(&path) {
            Ok(key) => key,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness for the cache key: {e}"))?;
                match write_private_file(&path, &key, true) {
                    Ok(()) => key.to_vec(),
                    // Another process created it first: use theirs.
                    Err(_) if path.is_file() => std::fs::read(&path)?,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let key: [u8; 32] = key.try_into().map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))?;
        Ok(CompiledCache { key })
    }

    fn mac(&self, digest: &str, code: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"tether compiled code v1\0");
        mac.update(digest.as_bytes());
        mac.update(b"\0");
        mac.update(code);
        mac
    }

    /// The code of an entry whose MAC verifies for the module `digest`.
    pub fn read(&self, path: &Path, digest: &str) -> Option<Vec<u8>> {
        // A plain file of bounded size: a FIFO or a link to /dev/zero put
        // in its place would hang the load or fill memory.
        let mut bytes = match crate::plain_file::read(path, MAX_ENTRY_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("ignoring cache entry {}: {e}", path.display());
                return None;
            }
        };
        if bytes.len() < MAC_LEN {
            tracing::warn!("ignoring cache entry {}: too short", path.display());
            return None;
        }
        let tag = bytes.split_off(bytes.len() - MAC_LEN);
        if self.mac(digest, &bytes).verify_slice(&tag).is_err() {
            tracing::warn!("ignoring cache entry {}: it was not compiled by this host from this module", path.display());
            return None;
        }
        Some(bytes)
    }

    pub fn write(&self, target: &Path, digest: &str, code: &[u8]) -> Result<()> {
        let tag = self.mac(digest, code).finalize().into_bytes();
        let tmp = target.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = Vec::with_capacity(code.len() + MAC_LEN);
        bytes.extend_from_slice(code);
        bytes.extend_from_slice(&tag);
        // New only: a file (or symlink) planted under the temp name is
        // not written through.
        let _ = std::fs::remove_file(&tmp);
        let written = write_private_file(&tmp, &bytes, true).and_then(|()| Ok(std::fs::rename(&tmp, target)?));
        if written.is_err() {
            // Half written (a full disk) or not moved: left, it would take
            // its space for good.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// The key is only as secret as the folder: one someone else owns, or
/// may write to, could hold a key of theirs (and code they compiled
/// under it), which would then pass as this host's.
#[cfg(unix)]
fn check_private(dir: &Path, key: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let folder = std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !folder.is_dir() || folder.uid() != me || folder.mode() & 0o022 != 0 {
        anyhow::bail!(
            "the compiled-code cache {} is not a private folder (owner uid {}, mode {:o}): use a folder only this user owns and can write (--cache-dir)",
            dir.display(),
            folder.uid(),
            folder.mode() & 0o7777
        );
    }
    match std::fs::symlink_metadata(key) {
        Ok(meta) if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 => anyhow::bail!(
            "the compiled-code cache's key {} is not a private file of this user (owner uid {}, mode {:o}): remove it to make a new one",
            key.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &Path) -> Result<()> {
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a file only its owner can read (the key; the code it protects).
/// With `new_only`, fails if the file exists.
fn write_private_file(path: &Path, bytes: &[u8], new_only: bool) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    if new_only {
        options.write(true).create_new(true);
    } else {
        options.write(true).create(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_cache_folder_or_key_others_could_have_planted_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        CompiledCache::open(&cache).expect("a new private folder");
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", CompiledCache::open(&cache).err().expect("refused"));
        assert!(err.contains("is not a private folder"), "{err}");
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(cache.join(CACHE_KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", CompiledCache::open(&cache).err().expect("refused"));
        assert!(err.contains("is not a private file of this user"), "{err}");
    }

    /// A write that cannot finish leaves no temp file to take its space
    /// for good; an entry that is no plain file (a FIFO, a link to
    /// /dev/zero) is passed over at once, not read.
    #[test]
    fn failed_writes_leave_nothing_and_odd_entries_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        let target = dir.path().join("entry.cwasm");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("in-the-way"), b"x").unwrap();
        assert!(cache.write(&target, "digest", b"code").is_err(), "a folder in the way");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!left.iter().any(|name| name.contains(".tmp")), "{left:?}");

        let fifo = dir.path().join("fifo.cwasm");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert_eq!(cache.read(&fifo, "digest"), None);
        let zero = dir.path().join("zero.cwasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert_eq!(cache.read(&zero, "digest"), None);
        let good = dir.path().join("good.cwasm");
        cache.write(&good, "digest", b"code").unwrap();
        assert_eq!(cache.read(&good, "digest").as_deref(), Some(&b"code"[..]));
    }
}
