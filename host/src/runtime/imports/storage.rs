//! The `storage` import: a small key/value namespace per connector, kept as
//! files in a capability directory (cap-std), so no key can reach outside it.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use wasmtime::component::HasData;

use crate::runtime::bindings::tether::connector::storage::{self, StorageError};

const MAX_KEY_LEN: usize = 128;

/// What a key costs against the quota at least: its name and its file. A
/// quota of bytes alone let a connector make any number of empty files
/// (a 1 KiB quota held 1,500), and every `set` lists them all; at 256
/// bytes a key, the default 1 MiB quota holds 4,096 keys.
const MIN_KEY_COST: u64 = 256;

/// A value's cost against the quota.
fn cost(len: u64) -> u64 {
    len.max(MIN_KEY_COST)
}

pub struct ConnectorStorage {
    dir: Dir,
    quota_bytes: u64,
    /// In a dry run, what the connector set (Some) or deleted (None): it
    /// reads its own changes back, and they go when the instance does. A
    /// dry run writes nothing, in storage no more than upstream.
    dry_run: Option<Mutex<BTreeMap<String, Option<Vec<u8>>>>>,
}

impl ConnectorStorage {
    /// Opens (creating it) the namespace `name` under `root`; with
    /// `dry_run`, changes are kept in memory only.
    pub fn open(root: &Path, name: &str, quota_bytes: u64, dry_run: bool) -> Result<Self> {
        validate_key(name).map_err(|e| anyhow::anyhow!("bad storage namespace {name:?}: {e:?}"))?;
        let path = root.join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create storage folder {}", path.display()))?;
        let dir = Dir::open_ambient_dir(&path, ambient_authority()).with_context(|| format!("cannot open storage folder {}", path.display()))?;
        Ok(ConnectorStorage { dir, quota_bytes, dry_run: dry_run.then(Mutex::default) })
    }

    /// The dry run's changes, if this is one.
    fn overlay(&self) -> Option<std::sync::MutexGuard<'_, BTreeMap<String, Option<Vec<u8>>>>> {
        self.dry_run.as_ref().map(|changes| changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// What the namespace holds against the quota, leaving out `except`
    /// (the key about to be set). In a dry run that is what the connector
    /// sees: the files, as its own changes leave them. The changes are held
    /// in memory, so the quota bounds them as it bounds the folder.
    fn used_bytes(&self, except: &str) -> Result<u64, StorageError> {
        let changes = self.overlay();
        let changed = |name: &str| changes.as_ref().is_some_and(|changes| changes.contains_key(name));
        let mut total = 0;
        for entry in self.dir.entries().map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let name = entry.file_name();
            let name = name.to_str();
            if name == Some(except) || name.is_some_and(changed) {
                continue;
            }
            total += cost(entry.metadata().map_err(io_error)?.len());
        }
        if let Some(changes) = &changes {
            total +=
                changes.iter().filter(|(key, _)| key.as_str() != except).filter_map(|(_, value)| value.as_ref()).map(|v| cost(v.len() as u64)).sum::<u64>();
        }
        Ok(total)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        validate_key(key)?;
        if let Some(changed) = self.overlay().and_then(|changes| changes.get(key).cloned()) {
            return Ok(changed);
        }
        match self.dir.read(key) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        validate_key(key)?;
        let used = self.used_bytes(key)?;
        if used + cost(value.len() as u64) > self.quota_bytes {
            return Err(StorageError::QuotaExceeded(format!(
                "storing {} bytes under {key:?} would exceed the {}-byte quota ({used} used; a key costs at least {MIN_KEY_COST})",
                value.len(),
                self.quota_bytes
            )));
        }
        if let Some(mut changes) = self.overlay() {
            changes.insert(key.to_string(), Some(value.to_vec()));
            return Ok(());
        }
        self.dir.write(key, value).map_err(io_error)
    }

    pub fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        if let Some(mut changes) = self.overlay() {
            changes.insert(key.to_string(), None);
            return Ok(());
        }
        match self.dir.remove_file(key) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = vec![];
        for entry in self.dir.entries().map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            if let Some(name) = entry.file_name().to_str() {
                if name.starts_with(prefix) && validate_key(name).is_ok() {
                    keys.push(name.to_string());
                }
            }
        }
        if let Some(changes) = self.overlay() {
            keys.retain(|key| !matches!(changes.get(key), Some(None)));
            keys.extend(changes.iter().filter(|(key, value)| value.is_some() && key.starts_with(prefix)).map(|(key, _)| key.clone()));
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// Keys are plain file names: letters, digits, `-`, `_`, `.`, not starting
/// with a dot (so never `.` or `..`), at most 128 bytes.
fn validate_key(key: &str) -> Result<(), StorageError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && !key.starts_with('.')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(format!("{key:?}: keys are 1-{MAX_KEY_LEN} letters, digits, '-', '_' or '.', not starting with '.'")))
    }
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

fn disabled() -> StorageError {
    StorageError::Io("storage is not enabled for this connector".into())
}

/// What the `storage` import serves: the instance's namespace, if the
/// operator gave it one.
pub struct StorageCtx {
    pub storage: Option<ConnectorStorage>,
}

impl StorageCtx {
    pub fn new(storage: Option<ConnectorStorage>) -> Self {
        StorageCtx { storage }
    }
}

/// Links `storage` with a projection onto a [`StorageCtx`].
pub struct Storage;

impl HasData for Storage {
    type Data<'a> = &'a mut StorageCtx;
}

impl storage::Host for StorageCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, StorageError>> {
        Ok(self.storage.as_ref().ok_or_else(disabled).and_then(|s| s.get(&key)))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self.storage.as_ref().ok_or_else(disabled).and_then(|s| s.set(&key, &value)))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self.storage.as_ref().ok_or_else(disabled).and_then(|s| s.delete(&key)))
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, StorageError>> {
        Ok(self.storage.as_ref().ok_or_else(disabled).and_then(|s| s.list_keys(&prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_still_count_against_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ConnectorStorage::open(dir.path(), "ns", 1024, false).unwrap();
        for i in 0..4 {
            storage.set(&format!("k{i}"), b"").unwrap();
        }
        assert!(matches!(storage.set("k4", b""), Err(StorageError::QuotaExceeded(_))), "a 1 KiB quota holds 4 keys");
        storage.set("k0", b"replaced in place").unwrap();
        assert_eq!(storage.list_keys("").unwrap().len(), 4);
    }

    #[test]
    fn a_dry_run_reads_its_own_changes_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        ConnectorStorage::open(dir.path(), "ns", 4096, false).unwrap().set("kept", b"before").unwrap();
        let dry = ConnectorStorage::open(dir.path(), "ns", 4096, true).unwrap();
        dry.set("new", b"x").unwrap();
        dry.set("kept", b"changed").unwrap();
        assert_eq!(dry.get("kept").unwrap().as_deref(), Some(&b"changed"[..]));
        assert_eq!(dry.list_keys("").unwrap(), ["kept", "new"]);
        dry.delete("kept").unwrap();
        assert_eq!(dry.get("kept").unwrap(), None);
        assert_eq!(dry.list_keys("").unwrap(), ["new"]);
        drop(dry);
        let real = ConnectorStorage::open(dir.path(), "ns", 4096, false).unwrap();
        assert_eq!(real.list_keys("").unwrap(), ["kept"]);
        assert_eq!(real.get("kept").unwrap().as_deref(), Some(&b"before"[..]));
    }

    /// The dry run's changes live in the host's memory: the quota holds
    /// them as it holds the folder, counting what the connector sees.
    #[test]
    fn a_dry_run_is_held_to_the_quota_it_would_have() {
        let dir = tempfile::tempdir().unwrap();
        ConnectorStorage::open(dir.path(), "ns", 1024, false).unwrap().set("on-disk", b"").unwrap();
        let dry = ConnectorStorage::open(dir.path(), "ns", 1024, true).unwrap();
        for key in ["k1", "k2", "k3"] {
            dry.set(key, b"").unwrap();
        }
        assert!(matches!(dry.set("k4", b""), Err(StorageError::QuotaExceeded(_))), "the file and three changes fill 1 KiB");
        // Setting a key again replaces its cost; deleting one frees it.
        dry.set("k3", b"x").unwrap();
        dry.delete("on-disk").unwrap();
        dry.set("k4", b"").unwrap();
        assert!(matches!(dry.set("k5", vec![0; 2048].as_slice()), Err(StorageError::QuotaExceeded(_))));
    }
}
