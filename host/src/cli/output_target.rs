//! Where a command may write its output (`report --out`, `export --out`,
//! `inspect`'s and `sync`'s `--jsonl`): never over the sync file it reads
//! or any other SQLite database, and, for a page that replaces its target
//! by renaming, never over what is not a plain file (a device, a FIFO).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::sync::sync_file::{companion_base, is_sqlite};

/// How the command writes its output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Writes {
    /// Opened and written through (a FIFO or `/dev/stdout` works too).
    Through,
    /// Written beside it and renamed over it.
    ByRename,
}

/// A new file beside `out`, to be renamed over it once written whole
/// (`persist`), so that a write that fails leaves `out` as it was. Made as
/// `File::create` would make it (the umask applies), not tempfile's 0600.
pub fn staged_beside(out: &Path, prefix: &str, suffix: &str) -> Result<tempfile::NamedTempFile> {
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(dir).with_context(|| format!("cannot write in {}", dir.display()))
}

/// Refuses `out` when writing it would destroy a sync file: it is one of
/// `sync_files` (by any name: a symlink, a hard link), or any SQLite
/// database; with [`Writes::ByRename`], also when it is not a plain file.
pub fn check(out: &Path, sync_files: &[&Path], writes: Writes) -> Result<()> {
    for sync_file in sync_files {
        if same_file(out, sync_file) {
            bail!("{} is the sync file itself: write the output elsewhere", out.display());
        }
    }
    // Of a sync file read (which may not be there yet, by another
    // spelling), or of any SQLite database.
    let companion_of = companion_base(out).filter(|base| sync_files.iter().any(|db| same_file(base, db)) || is_sqlite(base));
    if let Some(database) = companion_of {
        bail!(
            "{} is named like a companion file of the SQLite database {} (its WAL, shared memory, journal or lock): SQLite would delete it; write the output elsewhere",
            out.display(),
            database.display()
        );
    }
    let Ok(meta) = std::fs::metadata(out) else { return Ok(()) };
    if meta.is_file() && is_sqlite(out) {
        bail!("{} is a SQLite database (a sync file?): refusing to write over it; remove it first or choose another path", out.display());
    }
    if writes == Writes::ByRename && !meta.is_file() {
        bail!("{} is not a plain file: the page replaces its target, so give the path of a file", out.display());
    }
    Ok(())
}

/// Whether `a` and `b` name the same file: the same inode when both exist,
/// otherwise the same real path.
fn same_file(a: &Path, b: &Path) -> bool {
    use crate::sync::writer_lock::{inode, real_path};
    if cfg!(unix) {
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return inode(&a) == inode(&b);
        }
    }
    real_path(a) == real_path(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_file_is_never_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let link = dir.path().join("link.db");
        std::fs::hard_link(&db, &link).unwrap();
        let other = dir.path().join("other.db");
        std::fs::copy(&db, &other).unwrap();
        let page = dir.path().join("page.html");
        std::fs::write(&page, "old page").unwrap();

        for writes in [Writes::Through, Writes::ByRename] {
            assert!(check(&db, &[&db], writes).unwrap_err().to_string().contains("the sync file itself"));
            assert!(check(&link, &[&db], writes).unwrap_err().to_string().contains("the sync file itself"));
            assert!(check(&other, &[&db], writes).unwrap_err().to_string().contains("SQLite database"));
            check(&page, &[&db], writes).unwrap();
            check(&dir.path().join("new.csv"), &[&db], writes).unwrap();
        }
        // Where SQLite keeps a database's companions, which it deletes.
        for companion in ["s.db-wal", "s.db-shm", "s.db-journal", "s.db.lock", "other.db-wal"] {
            let err = check(&dir.path().join(companion), &[&db], Writes::Through).unwrap_err().to_string();
            assert!(err.contains("companion file"), "{companion}: {err}");
        }
        check(&dir.path().join("page.html-wal"), &[&db], Writes::Through).unwrap();
        // Not there yet, by another spelling of the same path.
        let missing = dir.path().join("missing.db");
        let spelt = dir.path().join(".").join("missing.db");
        assert!(check(&spelt, &[&missing], Writes::Through).is_err());
    }

    #[test]
    fn a_page_is_not_renamed_over_a_device() {
        let null = Path::new("/dev/null");
        if null.exists() {
            assert!(check(null, &[], Writes::ByRename).unwrap_err().to_string().contains("not a plain file"));
            check(null, &[], Writes::Through).unwrap();
        }
    }
}
