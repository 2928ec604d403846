//! The lock a sync holds on its sync file, so that a second sync into the
//! same file, by whatever name, is refused.
//!
//! Two locks, both released by the OS when the process dies:
//! - `FILE.lock` beside the file's real path (symlinks resolved), taken
//!   before the file is opened, since opening may create or migrate it;
//! - the database file itself, by inode, taken once it is open: a hard link
//!   is another path, and so another lock file, but the same inode.
//!
//! The database file's descriptor is never closed, only unlocked: closing
//! any descriptor of a file drops every POSIX lock this process holds on
//! it, SQLite's included.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use anyhow::{Context, Result};

/// Held while this process syncs into a file.
pub struct WriterLock {
    _lock_file: File,
    database: Option<Arc<File>>,
}

impl WriterLock {
    /// Takes `FILE.lock`; `lock_existed` says whether the lock file was
    /// there before (one made for a file that proves no sync file is
    /// removed again, see [`WriterLock::abandon`]).
    pub fn take(path: &Path) -> Result<(WriterLock, bool)> {
        let lock_path = lock_path(path);
        let lock_existed = lock_path.exists();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot create the lock file {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                anyhow::bail!("another tether process is syncing into {} (it holds {})", path.display(), lock_path.display())
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        Ok((WriterLock { _lock_file: lock, database: None }, lock_existed))
    }

    /// Removes a lock file this process made, for a file that turned out
    /// to be no sync file.
    pub fn abandon(self, path: &Path) {
        drop(self);
        let _ = std::fs::remove_file(lock_path(path));
    }

    /// Locks the database file itself, now that it exists.
    pub fn lock_database(&mut self, path: &Path) -> Result<()> {
        let database = open_once(path)?;
        match database.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                anyhow::bail!("another tether process is syncing into {} (under another name: a link to the same file)", path.display())
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
        self.database = Some(database);
        Ok(())
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        if let Some(database) = &self.database {
            let _ = database.unlock();
        }
    }
}

/// The lock file beside a sync file's real path: `asana.db` → `asana.db.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = real_path(path).into_os_string();
    name.push(".lock");
    name.into()
}

/// `path` with every symlink resolved; for a file not there yet, its
/// folder's real path and its name.
pub fn real_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match (std::fs::canonicalize(parent), path.file_name()) {
            (Ok(dir), Some(name)) => dir.join(name),
            _ => path.to_path_buf(),
        }
    })
}

/// Descriptors of database files, by (device, inode).
type OpenByInode = HashMap<(u64, u64), Arc<File>>;

/// The one descriptor of the database file at `path` this process keeps
/// (see the module's note on why it is never closed).
fn open_once(path: &Path) -> Result<Arc<File>> {
    static OPEN: LazyLock<Mutex<OpenByInode>> = LazyLock::new(Default::default);
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Opening a FIFO (or a device) would wait for a writer, for ever.
    if !metadata.is_file() {
        anyhow::bail!("{} is not a plain file, so it is no sync file", path.display());
    }
    let key = inode(&metadata);
    let mut open = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(file) = open.get(&key) {
        return Ok(file.clone());
    }
    let file = Arc::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
    open.insert(key, file.clone());
    Ok(file)
}

/// A file's (device, inode): the same for every name it has.
#[cfg(unix)]
pub fn inode(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
pub fn inode(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

#[cfg(test)]
mod tests {
    use crate::sync::SyncFile;

    #[cfg(unix)]
    #[test]
    fn a_second_sync_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let link = dir.path().join("link.db");
        let first = SyncFile::open_for_sync(&path).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let refused = format!("{:#}", SyncFile::open_for_sync(&link).err().expect("refused"));
        assert!(refused.contains("another tether process is syncing into"), "{refused}");
        drop(first);
        SyncFile::open_for_sync(&link).expect("free again once the first lets go");
    }
}
