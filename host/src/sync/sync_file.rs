//! The sync file: one SQLite database holding sync runs and, for each run,
//! the resource types, resources, entitlements and grants it found.
//!
//! Each page is written in its own transaction as it arrives, so memory does
//! not grow with the org. Views (`resources`, `entitlements`, `grants`,
//! `resource_types`) show the last successful run: a failed or running sync
//! never replaces it, and only a successful one prunes older runs (it keeps
//! the previous good run's records, for `tether diff`). A failed
//! run keeps its records and checkpoint, so `sync --resume` can finish it.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::{Map, Value};

use super::checkpoint::Checkpoint;
use super::key_table::KeyTable;
use super::model::{Entitlement, Grant, PageRecords, Resource, ResourceKey, ResourceType};
use super::writer_lock::WriterLock;

/// The schema this host writes, kept in `PRAGMA user_version`. Files of an
/// older version are migrated when opened (see `migrate`); a newer one is
/// refused rather than misread.
pub const SCHEMA_VERSION: i64 = 6;

/// The schema at `SCHEMA_VERSION`. Statements are idempotent, so it also
/// (re)creates the views after a migration.
///
/// Compact: resource keys (type and id) and entitlement ids are stored
/// once each, in `resource_keys` and `entitlement_keys`, and the records
/// refer to them by integer; a grant's id is stored only when it is not
/// `ENTITLEMENT_ID:PRINCIPAL_TYPE:PRINCIPAL_ID`, and attributes that many
/// grants share (a role's flags) are stored once, in `attribute_sets`. The
/// views `run_resources`, `run_entitlements` and `run_grants` show the
/// records with the column names of schema 2 (`resources`, `entitlements`
/// and `grants` those of the last good run), for readers and for queries
/// by hand.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sync_runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    connector_name TEXT NOT NULL,
    connector_version TEXT NOT NULL,
    connector_digest TEXT NOT NULL,
    error TEXT,
    http_requests INTEGER NOT NULL DEFAULT 0,
    -- Where the driver is (JSON of sync::checkpoint::Checkpoint), for sync --resume.
    checkpoint TEXT
);
CREATE TABLE IF NOT EXISTS run_resource_types (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    listed_under TEXT,
    PRIMARY KEY (run_id, id)
);
-- Every resource key any run mentions (a resource, a parent, an
-- entitlement's resource, a grant's principal), once.
CREATE TABLE IF NOT EXISTS resource_keys (
    kid INTEGER PRIMARY KEY,
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    UNIQUE (resource_type, id)
);
CREATE TABLE IF NOT EXISTS entitlement_keys (
    eid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE
);
-- rid is the order resources were first written in: the driver's queue.
CREATE TABLE IF NOT EXISTS resource_rows (
    rid INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    key INTEGER NOT NULL REFERENCES resource_keys(kid),
    display_name TEXT NOT NULL,
    parent INTEGER REFERENCES resource_keys(kid),
    attributes TEXT NOT NULL DEFAULT '{}',
    -- Listings between a top-level listing and this resource (0: top level).
    depth INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, key)
);
CREATE TABLE IF NOT EXISTS entitlement_rows (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    entitlement INTEGER NOT NULL REFERENCES entitlement_keys(eid),
    resource INTEGER NOT NULL REFERENCES resource_keys(kid),
    slug TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    grantable INTEGER NOT NULL,
    PRIMARY KEY (run_id, entitlement)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grant_rows (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    entitlement INTEGER NOT NULL REFERENCES entitlement_keys(eid),
    principal INTEGER NOT NULL REFERENCES resource_keys(kid),
    -- NULL: the id is ENTITLEMENT_ID:PRINCIPAL_TYPE:PRINCIPAL_ID.
    id TEXT,
    immutable INTEGER NOT NULL,
    -- The attributes as JSON, or '' when they are attrs' (none if NULL).
    attributes TEXT NOT NULL DEFAULT '{}',
    attrs INTEGER REFERENCES attribute_sets(aid),
    PRIMARY KEY (run_id, entitlement, principal)
) WITHOUT ROWID;
-- Grants of a run still syncing, in the order they came: appended without
-- an index, so a page costs about a page of writes, where grant_rows'
-- two orders would each take a page of the file per grant. When the run
-- succeeds they move into grant_rows in one statement (see finish_run).
CREATE TABLE IF NOT EXISTS grant_stage (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    entitlement INTEGER NOT NULL REFERENCES entitlement_keys(eid),
    principal INTEGER NOT NULL REFERENCES resource_keys(kid),
    id TEXT,
    immutable INTEGER NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    attrs INTEGER REFERENCES attribute_sets(aid)
);
-- Resources of a run still syncing whose types list nothing (users,
-- mostly), in the order they came, appended without an index (schema 6).
-- A principal's key is made when a grant first names it, so these come in
-- no order of key: written into resource_rows at once, each took a page of
-- its (run_id, key) index, with every commit. When the run succeeds they
-- merge into resource_rows in one statement (see finish_run).
CREATE TABLE IF NOT EXISTS resource_stage (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    key INTEGER NOT NULL REFERENCES resource_keys(kid),
    display_name TEXT NOT NULL,
    parent INTEGER REFERENCES resource_keys(kid),
    attributes TEXT NOT NULL DEFAULT '{}',
    depth INTEGER NOT NULL DEFAULT 0
);
-- Grant attributes seen more than once, once each (schema 5).
CREATE TABLE IF NOT EXISTS attribute_sets (
    aid INTEGER PRIMARY KEY,
    json TEXT NOT NULL UNIQUE
);

CREATE VIEW IF NOT EXISTS run_resources AS
    SELECT r.run_id, k.resource_type, k.id, r.display_name, pk.resource_type AS parent_type, pk.id AS parent_id, r.attributes, r.depth
    FROM resource_rows r JOIN resource_keys k ON k.kid = r.key LEFT JOIN resource_keys pk ON pk.kid = r.parent
    UNION ALL
    SELECT r.run_id, k.resource_type, k.id, r.display_name, pk.resource_type AS parent_type, pk.id AS parent_id, r.attributes, r.depth
    FROM resource_stage r JOIN resource_keys k ON k.kid = r.key LEFT JOIN resource_keys pk ON pk.kid = r.parent;
CREATE VIEW IF NOT EXISTS run_entitlements AS
    SELECT e.run_id, ek.id, k.resource_type, k.id AS resource_id, e.slug, e.display_name, e.description, e.grantable
    FROM entitlement_rows e JOIN entitlement_keys ek ON ek.eid = e.entitlement JOIN resource_keys k ON k.kid = e.resource;
CREATE VIEW IF NOT EXISTS run_grants AS
    SELECT g.run_id, coalesce(g.id, ek.id || ':' || k.resource_type || ':' || k.id) AS id, ek.id AS entitlement_id,
        k.resource_type AS principal_type, k.id AS principal_id, g.immutable,
        CASE WHEN g.attributes = '' THEN coalesce((SELECT a.json FROM attribute_sets a WHERE a.aid = g.attrs), '{}') ELSE g.attributes END AS attributes
    FROM grant_rows g JOIN entitlement_keys ek ON ek.eid = g.entitlement JOIN resource_keys k ON k.kid = g.principal
    UNION ALL
    SELECT g.run_id, coalesce(g.id, ek.id || ':' || k.resource_type || ':' || k.id) AS id, ek.id AS entitlement_id,
        k.resource_type AS principal_type, k.id AS principal_id, g.immutable,
        CASE WHEN g.attributes = '' THEN coalesce((SELECT a.json FROM attribute_sets a WHERE a.aid = g.attrs), '{}') ELSE g.attributes END AS attributes
    FROM grant_stage g JOIN entitlement_keys ek ON ek.eid = g.entitlement JOIN resource_keys k ON k.kid = g.principal;

CREATE VIEW IF NOT EXISTS last_good_run AS
    SELECT * FROM sync_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1;
CREATE VIEW IF NOT EXISTS resource_types AS
    SELECT id, display_name, description, listed_under FROM run_resource_types
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS resources AS
    SELECT resource_type, id, display_name, parent_type, parent_id, attributes FROM run_resources
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS entitlements AS
    SELECT id, resource_type, resource_id, slug, display_name, description, grantable FROM run_entitlements
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS grants AS
    SELECT id, entitlement_id, principal_type, principal_id, immutable, attributes FROM run_grants
    WHERE run_id = (SELECT id FROM last_good_run);
"#;

/// Schema 2 to 3: the records move into the compact tables, keeping each
/// resource's row number (a checkpoint names rows), and the tables of
/// schema 2 give way to views of the same names.
const MIGRATE_2_TO_3: &str = r#"
DROP VIEW IF EXISTS resource_types;
DROP VIEW IF EXISTS resources;
DROP VIEW IF EXISTS entitlements;
DROP VIEW IF EXISTS grants;
DROP VIEW IF EXISTS last_good_run;
DROP INDEX IF EXISTS run_grants_by_entitlement;
DROP INDEX IF EXISTS run_grants_by_principal;
ALTER TABLE run_resources RENAME TO v2_resources;
ALTER TABLE run_entitlements RENAME TO v2_entitlements;
ALTER TABLE run_grants RENAME TO v2_grants;
CREATE TABLE resource_keys (
    kid INTEGER PRIMARY KEY,
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    UNIQUE (resource_type, id)
);
CREATE TABLE entitlement_keys (
    eid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE
);
INSERT OR IGNORE INTO resource_keys (resource_type, id)
    SELECT resource_type, id FROM v2_resources
    UNION SELECT parent_type, parent_id FROM v2_resources WHERE parent_type IS NOT NULL AND parent_id IS NOT NULL
    UNION SELECT resource_type, resource_id FROM v2_entitlements
    UNION SELECT principal_type, principal_id FROM v2_grants;
INSERT OR IGNORE INTO entitlement_keys (id) SELECT id FROM v2_entitlements UNION SELECT entitlement_id FROM v2_grants;
"#;

/// The rest of 2 to 3, once `SCHEMA` made the new tables.
const MIGRATE_2_TO_3_RECORDS: &str = r#"
INSERT INTO resource_rows (rid, run_id, key, display_name, parent, attributes, depth)
    SELECT v.rowid, v.run_id, k.kid, v.display_name, pk.kid, v.attributes, v.depth
    FROM v2_resources v JOIN resource_keys k ON k.resource_type = v.resource_type AND k.id = v.id
    LEFT JOIN resource_keys pk ON pk.resource_type = v.parent_type AND pk.id = v.parent_id
    ORDER BY v.rowid;
INSERT OR IGNORE INTO entitlement_rows (run_id, entitlement, resource, slug, display_name, description, grantable)
    SELECT v.run_id, ek.eid, k.kid, v.slug, v.display_name, v.description, v.grantable
    FROM v2_entitlements v JOIN entitlement_keys ek ON ek.id = v.id JOIN resource_keys k ON k.resource_type = v.resource_type AND k.id = v.resource_id;
INSERT OR IGNORE INTO grant_rows (run_id, entitlement, principal, id, immutable, attributes)
    SELECT v.run_id, ek.eid, k.kid, CASE WHEN v.id = v.entitlement_id || ':' || v.principal_type || ':' || v.principal_id THEN NULL ELSE v.id END,
        v.immutable, v.attributes
    FROM v2_grants v JOIN entitlement_keys ek ON ek.id = v.entitlement_id JOIN resource_keys k ON k.resource_type = v.principal_type AND k.id = v.principal_id;
DROP TABLE v2_resources;
DROP TABLE v2_entitlements;
DROP TABLE v2_grants;
"#;

/// Schema 2, in full: a file of schema 1 is brought to it before it
/// becomes schema 3.
const SCHEMA_V2: &str = r#"
CREATE TABLE IF NOT EXISTS sync_runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    connector_name TEXT NOT NULL,
    connector_version TEXT NOT NULL,
    connector_digest TEXT NOT NULL,
    error TEXT,
    http_requests INTEGER NOT NULL DEFAULT 0,
    -- Where the driver is (JSON of sync::checkpoint::Checkpoint), for sync --resume.
    checkpoint TEXT
);
CREATE TABLE IF NOT EXISTS run_resource_types (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    listed_under TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE IF NOT EXISTS run_resources (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    parent_type TEXT,
    parent_id TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    -- Listings between a top-level listing and this resource (0: top level).
    depth INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, resource_type, id)
);
CREATE TABLE IF NOT EXISTS run_entitlements (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    grantable INTEGER NOT NULL,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE IF NOT EXISTS run_grants (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    id TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    principal_type TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    immutable INTEGER NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, id)
);
CREATE INDEX IF NOT EXISTS run_grants_by_entitlement ON run_grants (run_id, entitlement_id);
CREATE INDEX IF NOT EXISTS run_grants_by_principal ON run_grants (run_id, principal_type, principal_id);

CREATE VIEW IF NOT EXISTS last_good_run AS
    SELECT * FROM sync_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1;
CREATE VIEW IF NOT EXISTS resource_types AS
    SELECT id, display_name, description, listed_under FROM run_resource_types
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS resources AS
    SELECT resource_type, id, display_name, parent_type, parent_id, attributes FROM run_resources
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS entitlements AS
    SELECT id, resource_type, resource_id, slug, display_name, description, grantable FROM run_entitlements
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS grants AS
    SELECT id, entitlement_id, principal_type, principal_id, immutable, attributes FROM run_grants
    WHERE run_id = (SELECT id FROM last_good_run);
"#;

/// Schema 1 (files from before `user_version` was set) to 2: runs can be
/// `interrupted` (a CHECK constraint, so `sync_runs` is rebuilt), resources
/// know their depth, and every run has a checkpoint column (the very first
/// files lacked it).
const MIGRATE_1_TO_2: &str = r#"
DROP VIEW IF EXISTS resource_types;
DROP VIEW IF EXISTS resources;
DROP VIEW IF EXISTS entitlements;
DROP VIEW IF EXISTS grants;
DROP VIEW IF EXISTS last_good_run;
CREATE TABLE sync_runs_v2 (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    connector_name TEXT NOT NULL,
    connector_version TEXT NOT NULL,
    connector_digest TEXT NOT NULL,
    error TEXT,
    http_requests INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT
);
INSERT INTO sync_runs_v2
    SELECT id, started_at, ended_at, status, connector_name, connector_version, connector_digest, error, http_requests, checkpoint
    FROM sync_runs;
DROP TABLE sync_runs;
ALTER TABLE sync_runs_v2 RENAME TO sync_runs;
ALTER TABLE run_resources ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
"#;

/// Good runs whose records a successful sync keeps (itself included): the
/// views show the last one, `tether diff` compares the last two.
pub const KEPT_GOOD_RUNS: i64 = 2;

/// Who produced a run.
#[derive(Debug, Clone)]
pub struct ConnectorIdentity {
    pub name: String,
    pub version: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub id: i64,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub connector_name: String,
    pub connector_version: String,
    pub connector_digest: String,
    pub error: Option<String>,
    pub http_requests: i64,
}

pub struct SyncFile {
    conn: Connection,
    /// Held while this process syncs into the file (see `open_for_sync`);
    /// the OS lets go of it when the process dies, however it dies.
    _writer_lock: Option<WriterLock>,
    /// Keys of ids written before (see [`KeyCache`]).
    keys: KeyCache,
    /// The batch of pages being written (see [`SyncFile::begin_batch`]).
    batch: Option<Batch>,
    /// Types whose resources wait in `resource_stage` until their run
    /// succeeds (see [`SyncFile::stage_resources_of`]).
    staged_types: std::collections::HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    Open,
    /// A page failed to write: the batch is rolled back at its end.
    Failed,
}

/// A resource as the sync driver walks them: its position in the run, its
/// depth, and the resource as stored (display name, parent, attributes
/// merged over its reports so far), which its listings are given.
#[derive(Debug, Clone)]
pub struct QueuedResource {
    pub row: i64,
    pub depth: u32,
    pub resource: Resource,
}

/// The integer key of a resource id, and of an entitlement id, if the
/// file holds it: one text for the writer's lookups and the API's.
const FIND_RESOURCE_KEY: &str = "SELECT kid FROM resource_keys WHERE resource_type = ?1 AND id = ?2";
const FIND_ENTITLEMENT_KEY: &str = "SELECT eid FROM entitlement_keys WHERE id = ?1";
/// Grants by principal ("what does this user hold"), for the API and the
/// review page. Made with the schema, and again by each good run (see
/// `finish_run`).
const GRANTS_BY_PRINCIPAL: &str = "CREATE INDEX IF NOT EXISTS grant_rows_by_principal ON grant_rows (run_id, principal)";
/// How a report of a resource already in the run merges into its row: it
/// keeps its place (its rid), the newest name, a parent once it has one,
/// attributes merged, and its smallest depth.
const MERGE_RESOURCE: &str = "ON CONFLICT (run_id, key) DO UPDATE SET
    display_name = excluded.display_name,
    parent = coalesce(excluded.parent, parent),
    attributes = json_patch(attributes, excluded.attributes),
    depth = min(depth, excluded.depth)";
const SAVE_CHECKPOINT: &str = "UPDATE sync_runs SET checkpoint = ?2 WHERE id = ?1";

/// The attributes of grant row `g` as JSON, for queries of `grant_rows`
/// (see `attribute_sets`).
pub(crate) const GRANT_ATTRIBUTES: &str =
    "CASE WHEN g.attributes = '' THEN coalesce((SELECT a.json FROM attribute_sets a WHERE a.aid = g.attrs), '{}') ELSE g.attributes END";

/// How `SyncFile::open_reader` connects.
#[derive(Clone, Copy)]
enum Reader {
    /// Opened as it is, never created.
    Plain,
    /// Read as it stands, without the WAL's shared memory.
    Immutable,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunEnd<'a> {
    Succeeded,
    Failed(&'a str),
    /// Stopped on request (SIGINT/SIGTERM) at a page boundary.
    Interrupted(&'a str),
}

impl SyncFile {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("cannot open sync file {}", path.display()))?;
        Self::init(conn).with_context(|| format!("{} is not a usable sync file", path.display()))
    }

    /// Opens an existing sync file without creating one, to write it.
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            anyhow::bail!("no sync file at {}", path.display());
        }
        Self::open(path)
    }

    /// Opens an existing sync file to read it, without creating, changing
    /// or migrating anything: readers (`inspect`, `diff`, `export`,
    /// `report`, the API) need no write access, leave no files of theirs
    /// behind when they can write, and never contend with each other or a
    /// sync for a write lock. A file of an older schema is opened to be
    /// migrated instead (that needs write access, once).
    pub fn open_reader(path: &Path) -> Result<Self> {
        if !path.is_file() {
            anyhow::bail!("no sync file at {}", path.display());
        }
        let not_usable = || format!("{} is not a usable sync file", path.display());
        // Read-write where the user may write (SQLite itself falls back to
        // read-only for a file this user cannot write): the last connection
        // to close removes the -wal and -shm files, where a read-only one
        // leaves them behind, owned by whoever read. Nothing is written.
        let conn = match Self::connect_reader(path, Reader::Plain) {
            Ok(conn) => conn,
            // A WAL file in a folder this user cannot write, with no -shm
            // beside it: nobody is writing it, so read it as it stands.
            Err(_) => Self::connect_reader(path, Reader::Immutable).with_context(not_usable)?,
        };
        if !has_sync_runs(&conn).with_context(not_usable)? {
            anyhow::bail!("{} is not a sync file (it has no sync runs)", path.display());
        }
        let version = readable_version(&conn).with_context(not_usable)?;
        if version < SCHEMA_VERSION {
            drop(conn);
            return Self::open(path);
        }
        conn.pragma_update(None, "foreign_keys", false)?;
        Ok(SyncFile { conn, _writer_lock: None, keys: KeyCache::default(), batch: None, staged_types: Default::default() })
    }

    fn connect_reader(path: &Path, how: Reader) -> rusqlite::Result<Connection> {
        use rusqlite::OpenFlags;
        let conn = match how {
            Reader::Plain => Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?,
            Reader::Immutable => {
                let mut uri = url::Url::from_file_path(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
                    .map_err(|()| rusqlite::Error::InvalidPath(path.to_path_buf()))?;
                uri.set_query(Some("immutable=1"));
                Connection::open_with_flags(uri.as_str(), OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI)?
            }
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Reading the schema is what fails on a file that cannot be read.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get::<_, i64>(0))?;
        Ok(conn)
    }

    /// Opens the file to sync into: takes the writer's lock (a second sync
    /// into the same file is refused), and marks any run still `running` —
    /// its process died, since nobody held the lock — as interrupted, so
    /// that `--resume` can go on from its checkpoint.
    pub fn open_for_sync(path: &Path) -> Result<Self> {
        if let Some(database) = sqlite_companion(path) {
            anyhow::bail!(
                "{} is named like a companion file of the SQLite database {} (its WAL, shared memory, journal or lock): SQLite would delete it; give another name",
                path.display(),
                database.display()
            );
        }
        // The lock comes first: opening may migrate, which must not race a
        // running sync.
        let (mut lock, lock_existed) = WriterLock::take(path)?;
        // A file that is there is locked before SQLite opens it: through a
        // hard link SQLite would keep a second WAL for it, and corrupt it.
        let existed = path.exists();
        if existed {
            if let Err(e) = lock.lock_database(path) {
                // A folder or a FIFO, say: refused, and no lock file left
                // behind for it.
                if !lock_existed {
                    lock.abandon(path);
                }
                return Err(e);
            }
        }
        let mut file = match Self::open(path) {
            Ok(file) => file,
            Err(e) => {
                // A file that is no sync file leaves no lock file behind.
                if !lock_existed {
                    lock.abandon(path);
                }
                return Err(e);
            }
        };
        if !existed {
            lock.lock_database(path)?;
        }
        file._writer_lock = Some(lock);
        let orphaned = file.conn.execute(
            "UPDATE sync_runs SET status = 'interrupted', ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                error = 'the process running this sync ended without finishing it (killed or crashed)'
             WHERE status = 'running'",
            [],
        )?;
        if orphaned > 0 {
            tracing::warn!("{orphaned} sync run(s) in {} were left running by a process that died; marked interrupted", path.display());
        }
        Ok(file)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // A new file can give pages back (see finish_run); SQLite allows
        // this only before the first table.
        let new_file: bool = conn.query_row("SELECT count(*) = 0 FROM sqlite_master", [], |row| row.get(0))?;
        if !new_file && !has_sync_runs(&conn)? {
            // Another program's database: adding our tables to it (and views
            // named like its own), or even making it WAL, would be taking
            // it over.
            anyhow::bail!("it is a SQLite database of something else (it has tables but no sync runs); give a new file or an existing sync file");
        }
        if new_file {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 16 MiB of pages (SQLite's default is 2 MiB): a sync touches the
        // same index pages with every page it writes; bounded, so memory
        // stays flat.
        conn.pragma_update(None, "cache_size", -16384)?;
        // The bundled SQLite enforces foreign keys by default. Every key the
        // host writes it has just looked up or made (see `Keys`); checking
        // it again took three lookups per grant, twice (staged, then moved),
        // a third of a large sync's time. Tests run `foreign_key_check`.
        conn.pragma_update(None, "foreign_keys", false)?;
        migrate(&mut conn)?;
        Ok(SyncFile { conn, _writer_lock: None, keys: KeyCache::default(), batch: None, staged_types: Default::default() })
    }

    /// The schema version the file is at.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
    }

    /// Starts a new run. The records of earlier runs that did not succeed
    /// go: only the newest run can be resumed, so once this one starts they
    /// never will be, and kept they would grow the file by a run's records
    /// with every failed sync. Their rows in `sync_runs` stay, as history.
    pub fn begin_run(&mut self, connector: &ConnectorIdentity) -> Result<i64> {
        // Another connector's run would become the last good one: diff and
        // report would show every record of the file's own as removed, and
        // a second one would drop them.
        if let Some(last) = self.last_good_run()? {
            if last.connector_name != connector.name {
                anyhow::bail!(
                    "this sync file holds syncs of connector {:?}, not {:?}: sync {:?} into a file of its own",
                    crate::terminal::escape(&last.connector_name),
                    crate::terminal::escape(&connector.name),
                    crate::terminal::escape(&connector.name)
                );
            }
        }
        let tx = write_transaction(&mut self.conn)?;
        let mut dropped = 0;
        for table in ["run_resource_types", "resource_rows", "resource_stage", "entitlement_rows", "grant_rows", "grant_stage"] {
            dropped += tx.execute(&format!("DELETE FROM {table} WHERE run_id IN (SELECT id FROM sync_runs WHERE status <> 'succeeded')"), [])?;
        }
        tx.execute("UPDATE sync_runs SET checkpoint = NULL WHERE status <> 'succeeded' AND checkpoint IS NOT NULL", [])?;
        tx.execute(
            "INSERT INTO sync_runs (started_at, status, connector_name, connector_version, connector_digest)
             VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'running', ?1, ?2, ?3)",
            params![connector.name, connector.version, connector.digest],
        )?;
        let run = tx.last_insert_rowid();
        tx.commit()?;
        if dropped > 0 {
            if let Err(e) = self.give_pages_back() {
                tracing::warn!("cannot free the sync file's unused pages: {e}");
            }
        }
        Ok(run)
    }

    pub fn write_resource_types(&mut self, run: i64, types: &[ResourceType]) -> Result<()> {
        let tx = write_transaction(&mut self.conn)?;
        {
            let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO run_resource_types (run_id, id, display_name, description, listed_under)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for t in types {
                insert.execute(params![run, t.id, t.display_name, t.description, t.listed_under])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes one page and where the run goes on from after it, in one
    /// transaction: a run stopped at any moment resumes after the last page
    /// written, never before it. A resource reported again (a user seen in
    /// several workspaces) keeps its place, its smallest depth, and merges
    /// attributes. `depth`: the depth of the resources this page lists.
    /// `next` is the checkpoint as saved (its JSON, see
    /// `Work::checkpoint_json`); it may be left out only inside a batch,
    /// whose end saves it (see [`SyncFile::save_checkpoint`]): the batch
    /// commits as one.
    pub fn write_page(&mut self, run: i64, page: &PageRecords, depth: u32, next: Option<&str>) -> Result<()> {
        let written = if self.batch.is_some() {
            // Part of the batch's transaction, without a savepoint of its
            // own (its journal cost more than the page): a page that fails
            // fails the batch.
            Self::write_page_with(&self.conn, &mut self.keys, &self.staged_types, run, page, depth, next)
        } else {
            write_transaction(&mut self.conn).map_err(anyhow::Error::from).and_then(|tx| {
                Self::write_page_with(&tx, &mut self.keys, &self.staged_types, run, page, depth, next)?;
                Ok(tx.commit()?)
            })
        };
        if written.is_err() {
            // Rolled back: keys it added to the cache may not be in the file.
            self.keys = KeyCache::default();
            if let Some(batch) = &mut self.batch {
                *batch = Batch::Failed;
            }
        }
        written
    }

    fn write_page_with(
        tx: &Connection,
        keys: &mut KeyCache,
        staged_types: &std::collections::HashSet<String>,
        run: i64,
        page: &PageRecords,
        depth: u32,
        next: Option<&str>,
    ) -> Result<()> {
        {
            let mut key_of = Keys::new(tx, keys)?;
            let mut resource = tx.prepare_cached(&format!(
                "INSERT INTO resource_rows (run_id, key, display_name, parent, attributes, depth)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) {MERGE_RESOURCE}"
            ))?;
            let mut staged_resource =
                tx.prepare_cached("INSERT INTO resource_stage (run_id, key, display_name, parent, attributes, depth) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for r in &page.resources {
                let key = key_of.resource(&r.resource_type, &r.id)?;
                let parent = match &r.parent {
                    Some(p) => Some(key_of.resource(&p.resource_type, &p.id)?),
                    None => None,
                };
                let attributes = attributes_text(&r.attributes)?;
                // A principal reported again with each of its memberships
                // would otherwise rewrite its row (a random page) every time.
                let report = key_of.cache.report_of(&r.display_name, parent, &attributes);
                if key_of.cache.already_written(run, key, report, depth) {
                    continue;
                }
                let into = if staged_types.contains(&r.resource_type) { &mut staged_resource } else { &mut resource };
                into.execute(params![run, key, r.display_name, parent, attributes, depth])?;
                key_of.cache.remember_written(run, key, report, depth);
            }
            let mut entitlement = tx.prepare_cached(
                "INSERT OR REPLACE INTO entitlement_rows (run_id, entitlement, resource, slug, display_name, description, grantable)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in &page.entitlements {
                let id = key_of.entitlement(&e.id)?;
                let resource = key_of.resource(&e.resource.resource_type, &e.resource.id)?;
                entitlement.execute(params![run, id, resource, e.slug, e.display_name, e.description, e.grantable])?;
            }
            let mut rows = Vec::with_capacity(page.grant_count());
            // A page of grants is mostly one entitlement's (its members).
            let mut last_entitlement: Option<(&str, i64)> = None;
            for grants in page.grants.chunks(PREFETCHED) {
                key_of.prefetch(grants.iter().map(|g| (g.principal.resource_type.as_str(), g.principal.id.as_str())));
                for g in grants {
                    let entitlement = match last_entitlement {
                        Some((id, key)) if id == g.entitlement_id => key,
                        _ => key_of.entitlement(&g.entitlement_id)?,
                    };
                    last_entitlement = Some((&g.entitlement_id, entitlement));
                    let principal = key_of.resource(&g.principal.resource_type, &g.principal.id)?;
                    // Most connectors name a grant after its entitlement and
                    // principal: then the id need not be stored.
                    let derived =
                        g.id.strip_prefix(g.entitlement_id.as_str())
                            .and_then(|rest| rest.strip_prefix(':'))
                            .and_then(|rest| rest.strip_prefix(g.principal.resource_type.as_str()))
                            .and_then(|rest| rest.strip_prefix(':'))
                            == Some(g.principal.id.as_str());
                    let id = (!derived).then_some(g.id.as_str());
                    let (attributes, attrs) = key_of.attributes(&g.attributes)?;
                    rows.push((entitlement, principal, id, g.immutable, attributes, attrs));
                }
            }
            // A set's grants are as the same grants one by one: derived
            // ids, no attributes.
            for set in &page.grant_sets {
                // A set without members grants nothing, and counts as no
                // record: it must not make an entitlement key either.
                if set.principal_ids.is_empty() {
                    continue;
                }
                let entitlement = key_of.entitlement(&set.entitlement_id)?;
                for ids in set.principal_ids.chunks(PREFETCHED) {
                    key_of.prefetch(ids.iter().map(|id| (set.principal_type.as_str(), id.as_str())));
                    for id in ids {
                        let principal = key_of.resource(&set.principal_type, id)?;
                        rows.push((entitlement, principal, None, set.immutable, String::new(), None));
                    }
                }
            }
            stage_grants(tx, run, &rows)?;
            if let Some(next) = next {
                tx.prepare_cached(SAVE_CHECKPOINT)?.execute(params![run, next])?;
            }
        }
        Ok(())
    }

    /// Starts a batch: the pages written until [`SyncFile::end_batch`] are
    /// committed together (one commit, and one write of the index pages
    /// they share, instead of one per page).
    pub fn begin_batch(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE").context("cannot start a batch of pages")?;
        self.batch = Some(Batch::Open);
        Ok(())
    }

    /// Commits the batch. If a page of it failed to write, or the commit
    /// fails, none of its pages are kept.
    pub fn end_batch(&mut self) -> Result<()> {
        let committed = match self.batch.take() {
            Some(Batch::Failed) => Err(anyhow!("a page of the batch could not be written, so none of the batch was kept")),
            _ => self.conn.execute_batch("COMMIT").context("cannot commit a batch of pages"),
        };
        if committed.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.keys = KeyCache::default();
        }
        committed
    }

    /// Whether pages are being written in a batch (see [`SyncFile::begin_batch`]).
    pub fn in_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// Resources of `types` wait in a stage, unindexed, until their run
    /// succeeds: for types whose resources list nothing, so the work queue
    /// (a walk of `resource_rows`) never needs them. Until then they are
    /// in `run_resources` and the counts, but not in `resource_rows`.
    pub fn stage_resources_of(&mut self, types: impl IntoIterator<Item = String>) {
        self.staged_types = types.into_iter().collect();
    }

    /// The key of resource `id` of `resource_type`, if the file holds it.
    pub fn resource_key(&self, resource_type: &str, id: &str) -> Result<Option<i64>> {
        Ok(self.conn.prepare_cached(FIND_RESOURCE_KEY)?.query_row(params![resource_type, id], |row| row.get(0)).optional()?)
    }

    /// The key of entitlement `id`, if the file holds it.
    pub fn entitlement_key(&self, id: &str) -> Result<Option<i64>> {
        Ok(self.conn.prepare_cached(FIND_ENTITLEMENT_KEY)?.query_row([id], |row| row.get(0)).optional()?)
    }

    /// The next resources of a run after `after_row`, in the order they were
    /// first written: the driver's work queue, read in batches. A walk of
    /// the row numbers after `after_row` (`+` keeps SQLite off the run's
    /// index, which would read and sort every row of the run, each time).
    pub fn resources_after(&self, run: i64, after_row: i64, batch: usize) -> Result<Vec<QueuedResource>> {
        // The limit is written into the statement, not bound: SQLite reads a
        // bound LIMIT while planning, so binding it again (even the same
        // value) made it parse and plan the statement anew on every call.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT r.rid, r.depth, k.resource_type, k.id, r.display_name, pk.resource_type, pk.id, r.attributes
             FROM resource_rows r JOIN resource_keys k ON k.kid = r.key LEFT JOIN resource_keys pk ON pk.kid = r.parent
             WHERE +r.run_id = ?1 AND r.rid > ?2 ORDER BY r.rid LIMIT {batch}"
        ))?;
        let rows =
            stmt.query_map(params![run, after_row], |row| Ok(QueuedResource { row: row.get(0)?, depth: row.get(1)?, resource: resource_from_row(row, 2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The resource at `row` of a run, if any (a resumed listing's owner).
    pub fn resource_at(&self, run: i64, row: i64) -> Result<Option<QueuedResource>> {
        Ok(self.resources_after(run, row - 1, 1)?.into_iter().find(|r| r.row == row))
    }

    /// Resources of a run after `after_row`, per type: the queue still to
    /// walk, for the progress line's estimate.
    pub fn resources_left_by_type(&self, run: i64, after_row: i64) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT k.resource_type, count(*) FROM resource_rows r JOIN resource_keys k ON k.kid = r.key WHERE +r.run_id = ?1 AND r.rid > ?2 GROUP BY 1",
        )?;
        let rows = stmt.query_map(params![run, after_row], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ends a run. A successful run becomes the one the views show; the
    /// records of all but the last `KEPT_GOOD_RUNS` good runs (failed ones'
    /// included) are dropped, so `tether diff` can compare the last two
    /// syncs in one file; a failed or
    /// interrupted run keeps its partial records for a resume, and the last
    /// good run stays what the views show. `http_requests` adds to the
    /// run's count.
    pub fn finish_run(&mut self, run: i64, end: RunEnd<'_>, http_requests: u64) -> Result<()> {
        let tx = write_transaction(&mut self.conn)?;
        let (status, error) = match end {
            RunEnd::Succeeded => ("succeeded", None),
            RunEnd::Failed(error) => ("failed", Some(error)),
            RunEnd::Interrupted(why) => ("interrupted", Some(why)),
        };
        tx.execute(
            "UPDATE sync_runs SET status = ?2, ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), error = ?3,
                http_requests = http_requests + ?4 WHERE id = ?1",
            params![run, status, error, http_requests as i64],
        )?;
        if end == RunEnd::Succeeded {
            // The principal index is built again below, from sorted keys:
            // kept, it took a random page of itself per grant moved and per
            // grant of a dropped run deleted.
            tx.execute_batch("DROP INDEX IF EXISTS grant_rows_by_principal")?;
            // In the order they came, so reports of one resource merge as
            // they would have on arrival.
            tx.execute(
                &format!(
                    "INSERT INTO resource_rows (run_id, key, display_name, parent, attributes, depth)
                     SELECT run_id, key, display_name, parent, attributes, depth FROM resource_stage WHERE run_id = ?1 ORDER BY rowid
                     {MERGE_RESOURCE}"
                ),
                [run],
            )?;
            // In the order they came (a walk of the stage's rows), so a
            // grant reported twice merges as it would have on arrival.
            tx.execute(
                &format!(
                    "INSERT INTO grant_rows (run_id, entitlement, principal, id, immutable, attributes, attrs)
                     SELECT run_id, entitlement, principal, id, immutable, attributes, attrs FROM grant_stage WHERE run_id = ?1
                     ON CONFLICT (run_id, entitlement, principal) DO UPDATE SET
                        id = excluded.id,
                        immutable = excluded.immutable,
                        attributes = json_patch({}, {}),
                        attrs = NULL",
                    GRANT_ATTRIBUTES.replace("g.", "grant_rows."),
                    GRANT_ATTRIBUTES.replace("g.", "excluded."),
                ),
                [run],
            )?;
            // All of it, which SQLite frees at once: this run is the
            // newest, so no other run's staged grants will be resumed.
            tx.execute("DELETE FROM grant_stage", [])?;
            tx.execute("DELETE FROM resource_stage", [])?;
            for table in ["run_resource_types", "resource_rows", "entitlement_rows", "grant_rows"] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE run_id < ?1 AND run_id NOT IN
                            (SELECT id FROM sync_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT ?2)"
                    ),
                    params![run, KEPT_GOOD_RUNS],
                )?;
            }
            tx.execute_batch(GRANTS_BY_PRINCIPAL).context(
                "cannot build the grants-by-principal index (SQLite sorts it through temporary files: is SQLITE_TMPDIR, TMPDIR, /var/tmp or /tmp writable?)",
            )?;
        }
        tx.commit()?;
        if end == RunEnd::Succeeded {
            // The stage's pages, and those of the runs dropped, go back to
            // the file system (files made since schema 4; older ones keep
            // them for the next run).
            if let Err(e) = self.give_pages_back() {
                tracing::warn!("cannot free the sync file's unused pages: {e}");
            }
        }
        Ok(())
    }

    /// Frees the file's unused pages: SQLite frees one per step.
    fn give_pages_back(&self) -> rusqlite::Result<()> {
        let mut vacuum = self.conn.prepare("PRAGMA incremental_vacuum")?;
        let mut steps = vacuum.query([])?;
        while steps.next()?.is_some() {}
        Ok(())
    }

    /// Saves where the run goes on from. Inside a batch it is part of the
    /// batch: if it fails, so does the batch.
    pub fn save_checkpoint(&mut self, run: i64, checkpoint: &str) -> Result<()> {
        let saved = self.conn.prepare_cached(SAVE_CHECKPOINT).and_then(|mut save| save.execute(params![run, checkpoint]));
        if saved.is_err() {
            if let Some(batch) = &mut self.batch {
                *batch = Batch::Failed;
            }
        }
        saved.map(|_| ()).map_err(Into::into)
    }

    /// Records (resources, entitlements, grants) a run holds so far.
    pub fn records(&self, run: i64) -> Result<u64> {
        let mut total = 0;
        for table in [Table::Resources, Table::Entitlements, Table::Grants] {
            total += self.count(run, table)? as u64;
        }
        Ok(total)
    }

    /// The newest run, if it failed or was interrupted, was made by the
    /// module with `digest`, and got far enough to checkpoint: it can be
    /// resumed. A checkpoint this host cannot read is an error.
    pub fn resumable_run(&self, digest: &str) -> Result<Option<(i64, Checkpoint)>> {
        let last: Option<(i64, String, String, Option<String>)> = self
            .conn
            .query_row("SELECT id, status, connector_digest, checkpoint FROM sync_runs ORDER BY id DESC LIMIT 1", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        Ok(match last {
            Some((id, status, run_digest, Some(checkpoint))) if (status == "failed" || status == "interrupted") && run_digest == digest => {
                let checkpoint = Checkpoint::parse(&checkpoint).with_context(|| format!("cannot resume sync run {id}"))?;
                Some((id, checkpoint))
            }
            Some((id, status, run_digest, Some(_))) if status == "failed" || status == "interrupted" => {
                // Said as a changed config is: a module swapped in since
                // (another build, even of the same version) would list
                // with other steps and ids.
                tracing::warn!(
                    "sync run {id} was made by another module (sha256 {}, this one is {digest}): starting over rather than mixing two in one run",
                    crate::terminal::escape(&run_digest)
                );
                None
            }
            _ => None,
        })
    }

    /// Marks a failed or interrupted run running again, to resume it.
    pub fn reopen_run(&mut self, run: i64) -> Result<()> {
        self.conn.execute("UPDATE sync_runs SET status = 'running', ended_at = NULL, error = NULL WHERE id = ?1", [run])?;
        Ok(())
    }

    pub fn last_good_run(&self) -> Result<Option<RunInfo>> {
        self.run_where("status = 'succeeded'")
    }

    pub fn last_run(&self) -> Result<Option<RunInfo>> {
        self.run_where("1 = 1")
    }

    /// The run with this id.
    pub fn run(&self, id: i64) -> Result<Option<RunInfo>> {
        self.run_where(&format!("id = {id}"))
    }

    /// The connection, for the review queries (`sync::review`), which
    /// stream rows rather than collect them.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    fn run_where(&self, condition: &str) -> Result<Option<RunInfo>> {
        let sql = format!(
            "SELECT id, status, started_at, ended_at, connector_name, connector_version, connector_digest, error, http_requests
             FROM sync_runs WHERE {condition} ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .query_row(&sql, [], |row| {
                Ok(RunInfo {
                    id: row.get(0)?,
                    status: row.get(1)?,
                    started_at: row.get(2)?,
                    ended_at: row.get(3)?,
                    connector_name: row.get(4)?,
                    connector_version: row.get(5)?,
                    connector_digest: row.get(6)?,
                    error: row.get(7)?,
                    http_requests: row.get(8)?,
                })
            })
            .optional()?)
    }

    /// Resources of one run, by type, for a summary.
    pub fn count_resources_by_type(&self, run: i64) -> Result<Vec<(String, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT t.id, (SELECT count(*) FROM run_resources r WHERE r.run_id = t.run_id AND r.resource_type = t.id)
             FROM run_resource_types t WHERE t.run_id = ?1 ORDER BY t.rowid",
        )?;
        let rows = stmt.query_map([run], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn count(&self, run: i64, table: Table) -> Result<i64> {
        let sql = match table {
            // A run still syncing holds its grants in the stage.
            Table::Grants => "SELECT (SELECT count(*) FROM grant_rows WHERE run_id = ?1) + (SELECT count(*) FROM grant_stage WHERE run_id = ?1)".to_string(),
            Table::Resources => {
                "SELECT (SELECT count(*) FROM resource_rows WHERE run_id = ?1) + (SELECT count(*) FROM resource_stage WHERE run_id = ?1)".to_string()
            }
            _ => format!("SELECT count(*) FROM {} WHERE run_id = ?1", table.name()),
        };
        Ok(self.conn.query_row(&sql, [run], |row| row.get(0))?)
    }

    pub fn resources(&self, run: i64, resource_type: Option<&str>) -> Result<Vec<Resource>> {
        let mut stmt = self.conn.prepare(
            "SELECT resource_type, id, display_name, parent_type, parent_id, attributes FROM run_resources
             WHERE run_id = ?1 AND (?2 IS NULL OR resource_type = ?2) ORDER BY resource_type, display_name, id",
        )?;
        let rows = stmt.query_map(params![run, resource_type], |row| resource_from_row(row, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn entitlements(&self, run: i64, resource_type: Option<&str>) -> Result<Vec<Entitlement>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, resource_type, resource_id, slug, display_name, description, grantable FROM run_entitlements
             WHERE run_id = ?1 AND (?2 IS NULL OR resource_type = ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![run, resource_type], |row| {
            Ok(Entitlement {
                id: row.get(0)?,
                resource: ResourceKey { resource_type: row.get(1)?, id: row.get(2)? },
                slug: row.get(3)?,
                display_name: row.get(4)?,
                description: row.get(5)?,
                grantable: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Grants of one run; `resource_type` filters on the entitled resource's type.
    pub fn grants(&self, run: i64, resource_type: Option<&str>) -> Result<Vec<Grant>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT coalesce(g.id, ek.id || ':' || pk.resource_type || ':' || pk.id), ek.id, pk.resource_type, pk.id, g.immutable, {GRANT_ATTRIBUTES}
                 FROM grant_rows g
                 JOIN entitlement_keys ek ON ek.eid = g.entitlement
                 JOIN resource_keys pk ON pk.kid = g.principal
                 LEFT JOIN entitlement_rows e ON e.run_id = g.run_id AND e.entitlement = g.entitlement
                 LEFT JOIN resource_keys rk ON rk.kid = e.resource
                 WHERE g.run_id = ?1 AND (?2 IS NULL OR rk.resource_type = ?2) ORDER BY 1"
        ))?;
        let rows = stmt.query_map(params![run, resource_type], |row| grant_from_row(row, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Table {
    Resources,
    Entitlements,
    Grants,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Resources => "resource_rows",
            Table::Entitlements => "entitlement_rows",
            Table::Grants => "grant_rows",
        }
    }
}

/// Integer keys of ids the file holds, remembered so that a grant's
/// principal and entitlement usually cost a hash lookup instead of a
/// query, and the last report written to each resource row of the run.
/// Keys are never deleted, so a remembered key stays right (a page that
/// fails clears the cache: its new keys and rows were rolled back).
/// Bounded: it starts over when full, so memory stays flat whatever the
/// org's size.
#[derive(Default)]
struct KeyCache {
    /// Type -> id -> key.
    resources: FastMap<String, KeyTable>,
    entitlements: FastMap<String, i64>,
    /// Entries of `resources`, `entitlements` and `attribute_sets`, and
    /// the bytes of text they hold: the bounds of the cache.
    held_entries: usize,
    held_bytes: usize,
    /// The run whose resource rows `written` describes.
    written_run: i64,
    /// Resource key -> the last report written to its row in `written_run`
    /// (a hash of it) and the depth it was written with.
    written: FastMap<i64, (u64, u32)>,
    /// Seeded per process, so a connector cannot aim reports at a collision.
    hasher: std::hash::RandomState,
    /// Grant attributes (JSON) seen before -> their set's key, once a second
    /// grant has them (see `Keys::attributes`).
    attribute_sets: FastMap<String, Option<i64>>,
}

/// The key cache's maps: looked up several times per grant, where SipHash
/// took a twentieth of a big sync's writer. foldhash is seeded per process
/// too (from addresses the connector cannot see), so a connector still
/// cannot aim its ids at one bucket.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A transaction that takes the write lock at its start, waiting for it up
/// to the busy timeout. A deferred one that has read first cannot wait
/// (SQLite answers BUSY at once rather than risk a deadlock), so a
/// checkpointer or another tool holding the lock for a moment failed a page.
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Attributes as stored: most records have none.
fn attributes_text(attributes: &Map<String, Value>) -> serde_json::Result<std::borrow::Cow<'static, str>> {
    if attributes.is_empty() {
        Ok("{}".into())
    } else {
        serde_json::to_string(attributes).map(Into::into)
    }
}

impl KeyCache {
    /// A hash of what a resource report writes besides its key and depth.
    fn report_of(&self, display_name: &str, parent: Option<i64>, attributes: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((display_name, parent, attributes))
    }

    /// Whether writing `report` to resource `key`'s row of `run` again would
    /// change nothing: merging the same attributes twice gives the same
    /// row, and its depth is already at most `depth`.
    fn already_written(&self, run: i64, key: i64, report: u64, depth: u32) -> bool {
        self.written_run == run && self.written.get(&key).is_some_and(|&(last, at)| last == report && at <= depth)
    }

    fn remember_written(&mut self, run: i64, key: i64, report: u64, depth: u32) {
        if self.written_run != run || self.written.len() >= KEY_CACHE_ENTRIES {
            self.written.clear();
            self.written_run = run;
        }
        self.written.insert(key, (report, depth));
    }
}

/// Entries the key cache holds at most (about 10 MB of ids of 20 bytes).
const KEY_CACHE_ENTRIES: usize = 1 << 17;
/// Bytes of text it holds at most: ids may be 64 KiB each, and 2^17 of
/// those took a sync past a gigabyte.
const KEY_CACHE_BYTES: usize = 16 << 20;

impl KeyCache {
    /// Makes room for an entry of `bytes` of text: a full cache starts over
    /// (what it forgets is looked up in the file again).
    fn make_room(&mut self, bytes: usize) {
        if self.held_entries >= KEY_CACHE_ENTRIES || self.held_bytes + bytes > KEY_CACHE_BYTES {
            self.resources.clear();
            self.entitlements.clear();
            self.attribute_sets.clear();
            self.held_entries = 0;
            self.held_bytes = 0;
        }
        self.held_entries += 1;
        self.held_bytes += bytes;
    }
}

struct Keys<'t, 'c> {
    cache: &'c mut KeyCache,
    find_attributes: rusqlite::CachedStatement<'t>,
    add_attributes: rusqlite::CachedStatement<'t>,
    find_resource: rusqlite::CachedStatement<'t>,
    add_resource: rusqlite::CachedStatement<'t>,
    find_entitlement: rusqlite::CachedStatement<'t>,
    add_entitlement: rusqlite::CachedStatement<'t>,
}

impl<'t, 'c> Keys<'t, 'c> {
    fn new(tx: &'t Connection, cache: &'c mut KeyCache) -> Result<Self> {
        // Looked up before inserted: an upsert would rewrite the row (and
        // its page) for every key already there.
        Ok(Keys {
            cache,
            find_attributes: tx.prepare_cached("SELECT aid FROM attribute_sets WHERE json = ?1")?,
            add_attributes: tx.prepare_cached("INSERT INTO attribute_sets (json) VALUES (?1)")?,
            find_resource: tx.prepare_cached(FIND_RESOURCE_KEY)?,
            add_resource: tx.prepare_cached("INSERT INTO resource_keys (resource_type, id) VALUES (?1, ?2)")?,
            find_entitlement: tx.prepare_cached(FIND_ENTITLEMENT_KEY)?,
            add_entitlement: tx.prepare_cached("INSERT INTO entitlement_keys (id) VALUES (?1)")?,
        })
    }

    fn resource(&mut self, resource_type: &str, id: &str) -> Result<i64> {
        if let Some(key) = self.cache.resources.get(resource_type).and_then(|ids| ids.get(id)) {
            return Ok(key);
        }
        let key = match self.find_resource.query_row(params![resource_type, id], |row| row.get(0)).optional()? {
            Some(key) => key,
            // The new row's rowid is its key (RETURNING would build a
            // result table per key).
            None => self.add_resource.insert(params![resource_type, id])?,
        };
        self.cache.make_room(resource_type.len() + id.len());
        self.cache.resources.entry(resource_type.to_string()).or_default().insert(id, key);
        Ok(key)
    }

    /// Starts reading where the keys of these principals are cached: the
    /// lookups that follow then miss the CPU's cache together (see
    /// `KeyTable::touch`).
    fn prefetch<'a>(&self, principals: impl Iterator<Item = (&'a str, &'a str)>) {
        let tags = principals.fold(0u8, |tags, (resource_type, id)| tags ^ self.cache.resources.get(resource_type).map_or(0, |ids| ids.touch(id)));
        std::hint::black_box(tags);
    }

    /// How a grant's attributes are stored: none as `''`; a set seen for
    /// the first time as its JSON; a set seen before as `''` and its key in
    /// `attribute_sets`, so the flags of a role that thousands of grants
    /// share are stored once, while attributes of one grant alone (a date)
    /// do not fill the table.
    fn attributes(&mut self, attributes: &Map<String, Value>) -> Result<(String, Option<i64>)> {
        if attributes.is_empty() {
            return Ok((String::new(), None));
        }
        let json = serde_json::to_string(attributes)?;
        match self.cache.attribute_sets.get(&json) {
            Some(Some(aid)) => return Ok((String::new(), Some(*aid))),
            Some(None) => {}
            None => {
                self.cache.make_room(json.len());
                self.cache.attribute_sets.insert(json.clone(), None);
                return Ok((json, None));
            }
        }
        let aid = match self.find_attributes.query_row([&json], |row| row.get(0)).optional()? {
            Some(aid) => aid,
            None => self.add_attributes.insert([&json])?,
        };
        // In the cache already (seen once): replaced, it takes no more room.
        self.cache.attribute_sets.insert(json, Some(aid));
        Ok((String::new(), Some(aid)))
    }

    fn entitlement(&mut self, id: &str) -> Result<i64> {
        if let Some(&key) = self.cache.entitlements.get(id) {
            return Ok(key);
        }
        let key = match self.find_entitlement.query_row(params![id], |row| row.get(0)).optional()? {
            Some(key) => key,
            None => self.add_entitlement.insert(params![id])?,
        };
        self.cache.make_room(id.len());
        self.cache.entitlements.insert(id.to_string(), key);
        Ok(key)
    }
}

/// Grants whose principals' keys are prefetched together: as many cache
/// misses as a core overlaps, about.
const PREFETCHED: usize = 32;

/// A grant as staged: entitlement and principal keys, id (none when
/// derived), immutable, attributes as stored and their set's key.
type StagedGrant<'a> = (i64, i64, Option<&'a str>, bool, String, Option<i64>);

/// Grants staged per INSERT statement: a statement's own cost (step, halt,
/// reset, binding the run) was about as much as a row's.
const GRANTS_PER_INSERT: usize = 32;

/// `INSERT INTO grant_stage … VALUES (…), (…), …` for `rows` rows.
fn stage_insert(rows: usize) -> String {
    let values: Vec<String> =
        (0..rows).map(|r| format!("(?1, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})", 2 + r * 6, 3 + r * 6, 4 + r * 6, 5 + r * 6, 6 + r * 6, 7 + r * 6)).collect();
    format!("INSERT INTO grant_stage (run_id, entitlement, principal, id, immutable, attributes, attrs) VALUES {}", values.join(", "))
}

/// The two statements that stage grants, built once.
static STAGE_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| stage_insert(GRANTS_PER_INSERT));
static STAGE_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| stage_insert(1));

/// Appends a page's grants to the stage, in order, `GRANTS_PER_INSERT`
/// to a statement.
fn stage_grants(tx: &Connection, run: i64, rows: &[StagedGrant<'_>]) -> Result<()> {
    let mut chunks = rows.chunks_exact(GRANTS_PER_INSERT);
    if chunks.len() > 0 {
        let mut insert = tx.prepare_cached(&STAGE_MANY)?;
        for chunk in &mut chunks {
            bind_staged(&mut insert, run, chunk)?;
            insert.raw_execute()?;
        }
    }
    if !chunks.remainder().is_empty() {
        let mut insert = tx.prepare_cached(&STAGE_ONE)?;
        for row in chunks.remainder() {
            bind_staged(&mut insert, run, std::slice::from_ref(row))?;
            insert.raw_execute()?;
        }
    }
    Ok(())
}

fn bind_staged(insert: &mut rusqlite::Statement<'_>, run: i64, rows: &[StagedGrant<'_>]) -> rusqlite::Result<()> {
    insert.raw_bind_parameter(1, run)?;
    for (r, (entitlement, principal, id, immutable, attributes, attrs)) in rows.iter().enumerate() {
        let at = 2 + r * 6;
        insert.raw_bind_parameter(at, entitlement)?;
        insert.raw_bind_parameter(at + 1, principal)?;
        insert.raw_bind_parameter(at + 2, id)?;
        insert.raw_bind_parameter(at + 3, immutable)?;
        insert.raw_bind_parameter(at + 4, attributes)?;
        insert.raw_bind_parameter(at + 5, attrs)?;
    }
    Ok(())
}

/// The database `path` would be a companion file of (`DB-wal`, `DB-shm`,
/// `DB-journal`, or the sync's `DB.lock`), by its name alone: SQLite
/// deletes or rewrites such files when it opens or closes the database,
/// so an output written there is lost without a word.
pub fn companion_base(path: &Path) -> Option<std::path::PathBuf> {
    let name = path.file_name()?.to_str()?;
    let database = ["-wal", "-shm", "-journal", ".lock"].iter().find_map(|suffix| name.strip_suffix(suffix)).filter(|db| !db.is_empty())?;
    Some(path.with_file_name(database))
}

/// The SQLite database `path` is a companion file of, if it exists.
pub fn sqlite_companion(path: &Path) -> Option<std::path::PathBuf> {
    companion_base(path).filter(|database| is_sqlite(database))
}

/// Whether `path` starts with SQLite's file header.
pub fn is_sqlite(path: &Path) -> bool {
    let mut header = [0u8; 16];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header)).is_ok() && &header == b"SQLite format 3\0"
}

/// Whether the file has the table of runs every sync file has.
fn has_sync_runs(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sync_runs'", [], |row| row.get(0))
}

/// The schema version the file is at, refused when a newer tether wrote it.
fn readable_version(conn: &Connection) -> Result<i64> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        anyhow::bail!("it has schema version {version}, written by a newer tether; this one reads up to {SCHEMA_VERSION}");
    }
    Ok(version)
}

/// Brings the file to `SCHEMA_VERSION`, each step in one transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let version = readable_version(conn)?;
    let has_runs = has_sync_runs(conn)?;
    // Rebuilding a table that others reference needs foreign keys off (as
    // SQLite's ALTER TABLE guide says); they cannot change inside a
    // transaction, so off here, on again below.
    let foreign_keys: bool = conn.query_row("PRAGMA foreign_keys", [], |row| row.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let migrated = migrate_in_transaction(conn, version, has_runs);
    conn.pragma_update(None, "foreign_keys", foreign_keys)?;
    migrated
}

fn migrate_in_transaction(conn: &mut Connection, version: i64, has_runs: bool) -> Result<()> {
    let tx = conn.transaction()?;
    if version < 2 && has_runs {
        // Version 1: the very first files had no checkpoint column.
        let has_checkpoint: bool = tx.query_row("SELECT count(*) FROM pragma_table_info('sync_runs') WHERE name = 'checkpoint'", [], |row| row.get(0))?;
        if !has_checkpoint {
            tx.execute_batch("ALTER TABLE sync_runs ADD COLUMN checkpoint TEXT")?;
        }
        tx.execute_batch(MIGRATE_1_TO_2).context("cannot migrate the sync file from schema 1 to 2")?;
    }
    let to_3 = version < 3 && has_runs;
    if to_3 {
        tx.execute_batch(SCHEMA_V2)?;
        tx.execute_batch(MIGRATE_2_TO_3).context("cannot migrate the sync file from schema 2 to 3")?;
    }
    if version < 5 && has_runs {
        // Schema 4 adds grant_stage, which run_grants shows as well; schema
        // 5 the attribute sets, which it reads.
        tx.execute_batch("DROP VIEW IF EXISTS run_grants")?;
        for table in ["grant_rows", "grant_stage"] {
            let (exists, has_attrs): (bool, bool) =
                tx.query_row(&format!("SELECT count(*) > 0, coalesce(sum(name = 'attrs'), 0) > 0 FROM pragma_table_info('{table}')"), [], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            if exists && !has_attrs {
                tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN attrs INTEGER REFERENCES attribute_sets(aid)"))?;
            }
        }
    }
    if version < 6 && has_runs {
        // Schema 6 adds resource_stage, which run_resources shows as well.
        tx.execute_batch("DROP VIEW IF EXISTS run_resources")?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(GRANTS_BY_PRINCIPAL)?;
    if to_3 {
        tx.execute_batch(MIGRATE_2_TO_3_RECORDS).context("cannot migrate the sync file from schema 2 to 3")?;
    }
    let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| row.get(0))?;
    if broken > 0 {
        anyhow::bail!("{broken} records point at runs that do not exist");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// A resource from six columns starting at `first`: type, id, display
/// name, parent type, parent id, attributes.
pub(crate) fn resource_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Resource> {
    let parent_type: Option<String> = row.get(first + 3)?;
    let parent_id: Option<String> = row.get(first + 4)?;
    Ok(Resource {
        resource_type: row.get(first)?,
        id: row.get(first + 1)?,
        display_name: row.get(first + 2)?,
        parent: parent_type.zip(parent_id).map(|(resource_type, id)| ResourceKey { resource_type, id }),
        attributes: json_object(row.get::<_, String>(first + 5)?),
    })
}

/// A grant from six columns starting at `first`: id, entitlement id,
/// principal type and id, immutable, attributes (JSON).
pub(crate) fn grant_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: row.get(first)?,
        entitlement_id: row.get(first + 1)?,
        principal: ResourceKey { resource_type: row.get(first + 2)?, id: row.get(first + 3)? },
        immutable: row.get(first + 4)?,
        attributes: json_object(row.get::<_, String>(first + 5)?),
    })
}

pub(crate) fn json_object(text: String) -> Map<String, Value> {
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::checkpoint::{Position, Within};

    /// The schema of files written before versions were recorded (schema 1),
    /// as the host wrote it then.
    const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS sync_runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    connector_name TEXT NOT NULL,
    connector_version TEXT NOT NULL,
    connector_digest TEXT NOT NULL,
    error TEXT,
    http_requests INTEGER NOT NULL DEFAULT 0,
    -- Where the driver is (JSON of store::Checkpoint), for sync --resume.
    checkpoint TEXT
);
CREATE TABLE IF NOT EXISTS run_resource_types (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    listed_under TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE IF NOT EXISTS run_resources (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    parent_type TEXT,
    parent_id TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, resource_type, id)
);
CREATE TABLE IF NOT EXISTS run_entitlements (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    grantable INTEGER NOT NULL,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE IF NOT EXISTS run_grants (
    run_id INTEGER NOT NULL REFERENCES sync_runs(id),
    id TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    principal_type TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    immutable INTEGER NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, id)
);
CREATE INDEX IF NOT EXISTS run_grants_by_entitlement ON run_grants (run_id, entitlement_id);
CREATE INDEX IF NOT EXISTS run_grants_by_principal ON run_grants (run_id, principal_type, principal_id);

CREATE VIEW IF NOT EXISTS last_good_run AS
    SELECT * FROM sync_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1;
CREATE VIEW IF NOT EXISTS resource_types AS
    SELECT id, display_name, description, listed_under FROM run_resource_types
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS resources AS
    SELECT resource_type, id, display_name, parent_type, parent_id, attributes FROM run_resources
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS entitlements AS
    SELECT id, resource_type, resource_id, slug, display_name, description, grantable FROM run_entitlements
    WHERE run_id = (SELECT id FROM last_good_run);
CREATE VIEW IF NOT EXISTS grants AS
    SELECT id, entitlement_id, principal_type, principal_id, immutable, attributes FROM run_grants
    WHERE run_id = (SELECT id FROM last_good_run);
"#;

    /// Schema 1 as the very first files had it: no checkpoint column.
    fn schema_v1_first() -> String {
        let without = SCHEMA_V1.replace(",\n    -- Where the driver is (JSON of store::Checkpoint), for sync --resume.\n    checkpoint TEXT", "");
        assert_ne!(without, SCHEMA_V1);
        without
    }

    fn v1_file(dir: &Path, schema: &str, checkpoint_column: bool) -> std::path::PathBuf {
        let path = dir.join("old.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema).unwrap();
        conn.execute_batch(
            "INSERT INTO sync_runs (id, started_at, ended_at, status, connector_name, connector_version, connector_digest, http_requests)
                VALUES (1, '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', 'succeeded', 'asana', '0.1.0', 'abc', 3);
             INSERT INTO run_resource_types VALUES (1, 'user', 'User', 'a user', NULL);
             INSERT INTO run_resources (run_id, resource_type, id, display_name) VALUES (1, 'user', 'u1', 'Ada');
             INSERT INTO run_grants VALUES (1, 'team:t1:member:user:u1', 'team:t1:member', 'user', 'u1', 0, '{}');
             INSERT INTO sync_runs (id, started_at, status, connector_name, connector_version, connector_digest, http_requests)
                VALUES (2, '2026-01-02T00:00:00Z', 'failed', 'asana', '0.1.0', 'abc', 5);",
        )
        .unwrap();
        if checkpoint_column {
            conn.execute(
                "UPDATE sync_runs SET checkpoint = ?1 WHERE id = 2",
                [r#"{"top_level_done":true,"cursor":7,"within":{"row":8,"step":1,"token":"t9"}}"#],
            )
            .unwrap();
        }
        path
    }

    #[test]
    fn a_schema_2_file_becomes_compact_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V2).unwrap();
            conn.execute_batch(
                r#"INSERT INTO sync_runs (id, started_at, status, connector_name, connector_version, connector_digest, http_requests, checkpoint)
                   VALUES (1, 't', 'succeeded', 'c', '1', 'abc', 3, NULL),
                          (2, 't', 'failed', 'c', '1', 'abc', 1, '{"version":2,"position":{"phase":"queue","cursor":5,"within":null}}');
                   INSERT INTO run_resources (rowid, run_id, resource_type, id, display_name, parent_type, parent_id, attributes, depth) VALUES
                       (4, 1, 'team', 't1', 'Team', 'workspace', 'w1', '{}', 1),
                       (5, 1, 'user', 'u1', 'Ada', NULL, NULL, '{"email":"a@x"}', 0),
                       (9, 2, 'user', 'u1', 'Ada', NULL, NULL, '{}', 0);
                   INSERT INTO run_entitlements VALUES (1, 'team:t1:member', 'team', 't1', 'member', 'Member', '', 1);
                   INSERT INTO run_grants VALUES (1, 'team:t1:member:user:u1', 'team:t1:member', 'user', 'u1', 0, '{"a":"b"}'),
                                                 (1, 'odd-id', 'team:t1:member', 'user', 'u2', 1, '{}');
                   PRAGMA user_version = 2;"#,
            )
            .unwrap();
        }
        let file = SyncFile::open(&path).unwrap();
        assert_eq!(file.schema_version().unwrap(), SCHEMA_VERSION);
        let resources = file.resources(1, None).unwrap();
        assert_eq!(resources.len(), 2);
        let team = resources.iter().find(|r| r.id == "t1").unwrap();
        assert_eq!(team.parent, Some(ResourceKey { resource_type: "workspace".into(), id: "w1".into() }));
        assert_eq!(resources.iter().find(|r| r.id == "u1").unwrap().attributes["email"], "a@x");
        let grants = file.grants(1, None).unwrap();
        let ids: Vec<&str> = grants.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["odd-id", "team:t1:member:user:u1"], "a derived id reads back, an odd one is kept");
        assert_eq!(grants[1].attributes["a"], "b");
        assert!(grants[0].immutable);
        assert_eq!(file.entitlements(1, None).unwrap()[0].resource.id, "t1");
        // Row numbers are kept: a checkpoint names them.
        let queue = file.resources_after(1, 4, 10).unwrap();
        assert_eq!((queue[0].row, queue[0].resource.id.as_str()), (5, "u1"));
        assert_eq!(file.resource_at(2, 9).unwrap().unwrap().resource.id, "u1");
        let stored_ids: i64 = file.conn.query_row("SELECT count(*) FROM grant_rows WHERE id IS NOT NULL", [], |row| row.get(0)).unwrap();
        assert_eq!(stored_ids, 1, "only the id that is not derived is stored");
        let by_hand: String = file.conn.query_row("SELECT principal_id FROM grants WHERE id = 'odd-id'", [], |row| row.get(0)).unwrap();
        assert_eq!(by_hand, "u2", "the views answer queries by hand with the old column names");
        assert!(file.resumable_run("abc").unwrap().is_some(), "the version-2 checkpoint still resumes");
    }

    #[test]
    fn files_of_every_earlier_schema_are_migrated_and_keep_their_runs() {
        for (schema, checkpoint_column) in [(schema_v1_first(), false), (SCHEMA_V1.to_string(), true)] {
            let dir = tempfile::tempdir().unwrap();
            let path = v1_file(dir.path(), &schema, checkpoint_column);
            let mut file = SyncFile::open(&path).unwrap();
            assert_eq!(file.schema_version().unwrap(), SCHEMA_VERSION);
            let good = file.last_good_run().unwrap().unwrap();
            assert_eq!((good.id, good.http_requests), (1, 3));
            assert_eq!(file.resources(1, None).unwrap()[0].display_name, "Ada");
            assert_eq!(file.grants(1, None).unwrap().len(), 1);
            let view: i64 = file.conn.query_row("SELECT count(*) FROM grants", [], |row| row.get(0)).unwrap();
            assert_eq!(view, 1, "the views are back");
            let resumable = file.resumable_run("abc").unwrap();
            if checkpoint_column {
                let within = Within { row: 8, step: 1, token: Some("t9".into()) };
                assert_eq!(resumable, Some((2, Position::Queue { cursor: 7, within: Some(within) }.into())), "a version-1 checkpoint still resumes");
            } else {
                assert_eq!(resumable, None);
            }
            // What schema 2 adds works on the migrated file.
            file.finish_run(2, RunEnd::Interrupted("stopped"), 0).unwrap();
            assert_eq!(file.last_run().unwrap().unwrap().status, "interrupted");
            let depth: i64 = file.conn.query_row("SELECT depth FROM run_resources", [], |row| row.get(0)).unwrap();
            assert_eq!(depth, 0);
            drop(file);
            // Opening again is a no-op.
            assert_eq!(SyncFile::open(&path).unwrap().schema_version().unwrap(), SCHEMA_VERSION);
        }
    }

    /// Ids as long as a record allows (64 KiB) fill the key cache by bytes
    /// long before its count of entries: it starts over at its byte bound.
    #[test]
    fn the_key_cache_is_bounded_in_bytes_as_well_as_entries() {
        let (_dir, mut file, run, next) = fresh_run();
        let long = |i: usize| format!("{i:05}{}", "x".repeat(60_000));
        let mut most_held = 0;
        for chunk in (0..600).collect::<Vec<_>>().chunks(50) {
            let grants = chunk.iter().map(|&i| member_of("t1", &long(i), &[])).collect();
            file.write_page(run, &PageRecords { grants, ..PageRecords::default() }, 0, Some(next.as_str())).unwrap();
            most_held = most_held.max(file.keys.held_bytes);
            let ids_held: usize = file.keys.resources.values().map(KeyTable::id_bytes).sum();
            assert!(ids_held <= KEY_CACHE_BYTES, "{ids_held} bytes of ids held");
        }
        assert!(most_held > KEY_CACHE_BYTES / 2 && most_held <= KEY_CACHE_BYTES, "{most_held}");
        // What it forgot is found in the file again: one key per id.
        let grants = (0..600).map(|i| member_of("t2", &long(i), &[])).collect();
        file.write_page(run, &PageRecords { grants, ..PageRecords::default() }, 0, Some(next.as_str())).unwrap();
        let keys: i64 = file.conn.query_row("SELECT count(*) FROM resource_keys", [], |row| row.get(0)).unwrap();
        assert_eq!(keys, 600);
    }

    /// An output refused (a folder) leaves no lock file of its own.
    #[test]
    fn a_refused_output_leaves_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("adir");
        std::fs::create_dir(&folder).unwrap();
        assert!(SyncFile::open_for_sync(&folder).is_err());
        assert!(!dir.path().join("adir.lock").exists(), "no adir.lock left");
    }

    /// A sync into `DB-wal` (or `-shm`, `-journal`, `.lock`) of an existing
    /// database would be deleted by SQLite the next time DB is opened.
    #[test]
    fn a_sync_into_a_companion_of_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        drop(SyncFile::open(&db).unwrap());
        for companion in ["s.db-wal", "s.db-shm", "s.db-journal", "s.db.lock"] {
            let err = SyncFile::open_for_sync(&dir.path().join(companion)).err().expect("refused").to_string();
            assert!(err.contains("companion file"), "{companion}: {err}");
        }
        assert!(SyncFile::open_for_sync(&dir.path().join("t.db-wal")).is_ok(), "no database t.db: an ordinary name");
    }

    #[test]
    fn a_file_from_a_newer_tether_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        let error = format!("{:#}", SyncFile::open(&path).err().unwrap());
        assert!(error.contains("written by a newer tether"), "{error}");
    }

    #[test]
    fn a_reader_changes_nothing_and_leaves_no_files_behind() {
        let (dir, mut file, run, next) = fresh_run();
        file.write_page(run, &member_page(member(&[])), 0, Some(next.as_str())).unwrap();
        file.finish_run(run, RunEnd::Succeeded, 0).unwrap();
        drop(file);
        let path = dir.path().join("s.db");
        let before = std::fs::read(&path).unwrap();
        let readers: Vec<SyncFile> = (0..3).map(|_| SyncFile::open_reader(&path).unwrap()).collect();
        assert!(readers.iter().all(|r| r.grants(run, None).unwrap().len() == 1));
        drop(readers);
        assert!(std::fs::read(&path).unwrap() == before, "readers wrote nothing");
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["s.db"], "no -wal or -shm left by readers");
    }

    #[test]
    fn what_is_no_sync_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(format!("{:#}", SyncFile::open_reader(&empty).err().unwrap()).contains("not a sync file"));
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "no schema written into it");

        let app = dir.path().join("app.db");
        Connection::open(&app).unwrap().execute_batch("CREATE TABLE resources (x); INSERT INTO resources VALUES (1)").unwrap();
        let before = std::fs::read(&app).unwrap();
        assert!(format!("{:#}", SyncFile::open_reader(&app).err().unwrap()).contains("not a sync file"));
        assert!(format!("{:#}", SyncFile::open_for_sync(&app).err().unwrap()).contains("of something else"));
        assert!(std::fs::read(&app).unwrap() == before, "another program's database is not taken over");
    }

    #[test]
    fn an_unreadable_checkpoint_is_an_error_not_a_fresh_start() {
        assert!(Checkpoint::parse(r#"{"version":9,"position":{}}"#).unwrap_err().to_string().contains("version 9"));
        assert!(Checkpoint::parse("not json").is_err());
        assert!(Checkpoint::parse(r#"{"cursor":"x"}"#).is_err());
        let current = Checkpoint::from(Position::TopLevel { index: 1, token: Some("p2".into()) });
        assert_eq!(Checkpoint::parse(&serde_json::to_string(&current).unwrap()).unwrap(), current);

        let dir = tempfile::tempdir().unwrap();
        let mut file = SyncFile::open(&dir.path().join("s.db")).unwrap();
        let run = file.begin_run(&ConnectorIdentity { name: "c".into(), version: "1".into(), digest: "d".into() }).unwrap();
        file.conn.execute("UPDATE sync_runs SET checkpoint = '{\"version\":9}' WHERE id = ?1", [run]).unwrap();
        file.finish_run(run, RunEnd::Failed("boom"), 0).unwrap();
        let error = format!("{:#}", file.resumable_run("d").unwrap_err());
        assert!(error.contains("cannot resume sync run") && error.contains("version 9"), "{error}");
    }

    fn user(attributes: &[(&str, &str)]) -> Resource {
        let attributes = attributes.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        Resource { resource_type: "user".into(), id: "u1".into(), display_name: "Ada".into(), parent: None, attributes }
    }

    fn member(attributes: &[(&str, &str)]) -> Grant {
        let attributes = attributes.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        Grant {
            id: "team:t1:member:user:u1".into(),
            entitlement_id: "team:t1:member".into(),
            principal: ResourceKey { resource_type: "user".into(), id: "u1".into() },
            immutable: false,
            attributes,
        }
    }

    impl SyncFile {
        /// Grants of `run` through the `run_grants` view, as a query by hand sees them.
        fn grants_by_hand(&self, run: i64) -> Vec<Grant> {
            let mut stmt = self
                .conn
                .prepare("SELECT id, entitlement_id, principal_type, principal_id, immutable, attributes FROM run_grants WHERE run_id = ?1 ORDER BY id")
                .unwrap();
            stmt.query_map([run], |row| grant_from_row(row, 0)).unwrap().map(Result::unwrap).collect()
        }
    }

    /// A new file with one run begun, and a checkpoint to write pages with.
    fn fresh_run() -> (tempfile::TempDir, SyncFile, i64, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = SyncFile::open(&dir.path().join("s.db")).unwrap();
        let run = file.begin_run(&ConnectorIdentity { name: "c".into(), version: "1".into(), digest: "d".into() }).unwrap();
        (dir, file, run, serde_json::to_string(&Checkpoint::from(Position::TopLevel { index: 0, token: None })).unwrap())
    }

    /// Another connector's sync into the file is refused before it changes
    /// anything: it would have become the last good run.
    #[test]
    fn a_sync_of_another_connector_is_refused() {
        let (_dir, mut file, run, _) = fresh_run();
        file.finish_run(run, RunEnd::Succeeded, 1).unwrap();
        let other = ConnectorIdentity { name: "other".into(), version: "1".into(), digest: "e".into() };
        let err = file.begin_run(&other).unwrap_err().to_string();
        assert!(err.contains("holds syncs of connector \"c\", not \"other\""), "{err}");
        assert_eq!(file.last_run().unwrap().unwrap().id, run, "no run was begun");
        let same = ConnectorIdentity { name: "c".into(), version: "2".into(), digest: "f".into() };
        assert!(file.begin_run(&same).is_ok(), "a new version of the same connector");
    }

    /// A page with user u1 and one grant to it.
    fn member_page(grant: Grant) -> PageRecords {
        PageRecords { resources: vec![user(&[])], grants: vec![grant], ..PageRecords::default() }
    }

    /// A resource reported again is written only when that changes its
    /// row, and the row ends as every report merged in order would leave it.
    #[test]
    fn a_resource_reported_again_merges_as_every_report_in_order_would() {
        let (_dir, mut file, run, next) = fresh_run();
        let reports = [(user(&[("a", "1")]), 2), (user(&[("a", "2")]), 2), (user(&[("a", "1")]), 3), (user(&[("a", "1")]), 1), (user(&[("b", "3")]), 4)];
        for (resource, depth) in reports {
            file.write_page(run, &PageRecords { resources: vec![resource], ..PageRecords::default() }, depth, Some(next.as_str())).unwrap();
        }
        let (attributes, depth): (String, i64) =
            file.conn.query_row("SELECT attributes, depth FROM run_resources WHERE run_id = ?1", [run], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
        assert_eq!(json_object(attributes), user(&[("a", "1"), ("b", "3")]).attributes, "the third report is written though the first was");
        assert_eq!(depth, 1, "a report at a smaller depth is written though it says the same");
    }

    /// A grant with `attributes` to user `u`.
    fn member_of(team: &str, u: &str, attributes: &[(&str, &str)]) -> Grant {
        let entitlement_id = format!("team:{team}:member");
        Grant {
            id: format!("{entitlement_id}:user:{u}"),
            principal: ResourceKey { resource_type: "user".into(), id: u.into() },
            entitlement_id,
            ..member(attributes)
        }
    }

    /// Attributes that many grants share are stored once; attributes of one
    /// grant alone stay in its row; every reader sees each grant's own, and
    /// a grant reported twice merges whichever form each report took.
    #[test]
    fn shared_grant_attributes_are_stored_once_and_read_back_per_grant() {
        let (_dir, mut file, run, next) = fresh_run();
        let flags = [("is_active", "true"), ("is_view_only", "false")];
        let mut grants: Vec<Grant> = (0..50).map(|i| member_of("t1", &format!("u{i}"), &flags)).collect();
        grants.push(member_of("t1", "u50", &[("since", "2026-01-01")]));
        grants.push(member_of("t1", "u51", &[]));
        // u0 again, with a flag of its own: merged over the shared set.
        grants.push(member_of("t1", "u0", &[("note", "x")]));
        file.write_page(run, &PageRecords { grants: grants.clone(), ..PageRecords::default() }, 0, Some(next.as_str())).unwrap();
        let staged = file.grants_by_hand(run);
        file.finish_run(run, RunEnd::Succeeded, 0).unwrap();

        let sets: Vec<String> =
            file.conn.prepare("SELECT json FROM attribute_sets").unwrap().query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(sets, [r#"{"is_active":"true","is_view_only":"false"}"#], "only the set seen twice is shared");
        let inline: i64 = file.conn.query_row("SELECT count(*) FROM grant_rows WHERE attributes NOT IN ('', '{}')", [], |row| row.get(0)).unwrap();
        assert_eq!(inline, 2, "the one-off date and u0's two reports merged stay in their rows");

        let mut expected: Vec<Grant> = grants[1..52].to_vec();
        expected.push(member_of("t1", "u0", &[("is_active", "true"), ("is_view_only", "false"), ("note", "x")]));
        expected.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(file.grants(run, None).unwrap(), expected, "grants() reads each grant's own attributes");
        assert_eq!(file.grants_by_hand(run), expected, "so does the grants view");
        assert_eq!(staged.len(), 53, "and run_grants while they wait in the stage, both reports of u0");
        let filter = super::super::query::Filter::default();
        let page = super::super::query::grants(&file, run, &filter, None, 100).unwrap();
        let mut api: Vec<Grant> = page.items;
        api.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(api, expected, "so does the API's query");
    }

    /// Grant sets (contract 0.5.0) are written as the same grants one by
    /// one: derived ids, no attributes, each set's mutability, merged with
    /// the page's other grants in order (a set's grants after them).
    #[test]
    fn a_grant_set_writes_what_its_grants_one_by_one_would() {
        use crate::runtime::page::GrantSet;
        let set = |team: &str, ids: &[&str], immutable: bool| GrantSet {
            entitlement_id: format!("team:{team}:member"),
            principal_type: "user".into(),
            principal_ids: ids.iter().map(|id| id.to_string()).collect(),
            immutable,
        };
        let one_by_one =
            |team: &str, ids: &[&str], immutable: bool| ids.iter().map(move |u| Grant { immutable, ..member_of(team, u, &[]) }).collect::<Vec<_>>();
        // u1 is also a plain grant, with an attribute: the set's report of
        // it comes second and merges over it.
        let plain = vec![member_of("t1", "u1", &[("since", "2026")])];
        // t3's set has no members: it makes no grant, and no entitlement key.
        let sets = vec![set("t1", &["u1", "u2"], false), set("t2", &["u2", "u3"], true), set("t3", &[], false)];
        let as_grants: Vec<Grant> = plain.iter().cloned().chain(one_by_one("t1", &["u1", "u2"], false)).chain(one_by_one("t2", &["u2", "u3"], true)).collect();

        let (_dir, mut by_set, run, next) = fresh_run();
        let page = PageRecords { grants: plain, grant_sets: sets, ..PageRecords::default() };
        assert_eq!((page.len(), page.grant_count()), (5, 5));
        by_set.write_page(run, &page, 0, Some(next.as_str())).unwrap();
        let (_dir2, mut by_grant, run2, next2) = fresh_run();
        by_grant.write_page(run2, &PageRecords { grants: as_grants, ..PageRecords::default() }, 0, Some(next2.as_str())).unwrap();

        assert_eq!(by_set.grants_by_hand(run), by_grant.grants_by_hand(run2), "staged");
        by_set.finish_run(run, RunEnd::Succeeded, 0).unwrap();
        by_grant.finish_run(run2, RunEnd::Succeeded, 0).unwrap();
        let written = by_set.grants(run, None).unwrap();
        assert_eq!(written, by_grant.grants(run2, None).unwrap(), "moved into place");
        assert_eq!(written.len(), 4);
        let u1 = written.iter().find(|g| g.id == "team:t1:member:user:u1").unwrap();
        assert_eq!(u1.attributes, member_of("t1", "u1", &[("since", "2026")]).attributes, "merged with the plain report");
        assert!(written.iter().filter(|g| g.entitlement_id == "team:t2:member").all(|g| g.immutable));
        let ids_stored: i64 = by_set.conn.query_row("SELECT count(*) FROM grant_rows WHERE id IS NOT NULL", [], |row| row.get(0)).unwrap();
        assert_eq!(ids_stored, 0, "every id is derived");
        let entitlement_keys = |file: &SyncFile| -> i64 { file.conn.query_row("SELECT count(*) FROM entitlement_keys", [], |row| row.get(0)).unwrap() };
        assert_eq!((entitlement_keys(&by_set), entitlement_keys(&by_grant)), (2, 2), "none for the empty set");
    }

    /// Schema 4 stored every grant's attributes in its row: such a file
    /// gains the attribute sets and reads as before.
    #[test]
    fn a_schema_4_file_gains_attribute_sets_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        let flags = [("is_active", "true")];
        {
            // Schema 4: no attrs columns, no attribute_sets, views of the rows' own attributes.
            let mut v4 = SCHEMA.to_string();
            for (from, to) in [
                (",\n    attrs INTEGER REFERENCES attribute_sets(aid)", ""),
                ("CREATE TABLE IF NOT EXISTS attribute_sets (\n    aid INTEGER PRIMARY KEY,\n    json TEXT NOT NULL UNIQUE\n);", ""),
                (GRANT_ATTRIBUTES, "g.attributes"),
            ] {
                assert!(v4.contains(from), "{from}");
                v4 = v4.replace(from, to);
            }
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&v4).unwrap();
            conn.execute_batch(
                r#"INSERT INTO sync_runs (id, started_at, status, connector_name, connector_version, connector_digest) VALUES (1, 't', 'succeeded', 'c', '1', 'd');
                   INSERT INTO resource_keys VALUES (1, 'user', 'u1');
                   INSERT INTO entitlement_keys VALUES (1, 'team:t1:member');
                   INSERT INTO grant_rows VALUES (1, 1, 1, NULL, 0, '{"is_active":"true"}');
                   PRAGMA user_version = 4;"#,
            )
            .unwrap();
        }
        let mut file = SyncFile::open(&path).unwrap();
        assert_eq!(file.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(file.grants_by_hand(1), vec![member_of("t1", "u1", &flags)]);
        // The next run shares sets as a new file would.
        let run = file.begin_run(&ConnectorIdentity { name: "c".into(), version: "1".into(), digest: "d".into() }).unwrap();
        let next = serde_json::to_string(&Checkpoint::from(Position::TopLevel { index: 0, token: None })).unwrap();
        let page = PageRecords { grants: vec![member_of("t1", "u1", &flags), member_of("t2", "u1", &flags)], ..PageRecords::default() };
        file.write_page(run, &page, 0, Some(next.as_str())).unwrap();
        file.finish_run(run, RunEnd::Succeeded, 0).unwrap();
        assert_eq!(file.grants(run, None).unwrap(), vec![member_of("t1", "u1", &flags), member_of("t2", "u1", &flags)]);
        assert_eq!(file.grants(1, None).unwrap(), vec![member_of("t1", "u1", &flags)], "the schema-4 run is kept as it was");
        let broken: i64 = file.conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| row.get(0)).unwrap();
        assert_eq!(broken, 0);
    }

    /// Grants wait in the stage until their run succeeds (a failed run
    /// keeps them for its resume), then move into grant_rows, merged.
    #[test]
    fn grants_wait_in_the_stage_until_their_run_succeeds() {
        let (_dir, mut file, run, next) = fresh_run();
        file.write_page(run, &member_page(member(&[("role", "member")])), 0, Some(next.as_str())).unwrap();
        file.finish_run(run, RunEnd::Failed("boom"), 0).unwrap();
        assert_eq!(file.count(run, Table::Grants).unwrap(), 1, "a failed run's grants are counted where they wait");
        let by_hand: i64 = file.conn.query_row("SELECT count(*) FROM run_grants WHERE run_id = ?1", [run], |row| row.get(0)).unwrap();
        assert_eq!(by_hand, 1, "run_grants shows a run still in the stage");

        file.reopen_run(run).unwrap();
        file.write_page(run, &member_page(member(&[("since", "2026")])), 0, Some(next.as_str())).unwrap();
        file.finish_run(run, RunEnd::Succeeded, 0).unwrap();
        let grants = file.grants(run, None).unwrap();
        assert_eq!(grants, vec![member(&[("role", "member"), ("since", "2026")])], "one grant, both reports merged");
        let staged: i64 = file.conn.query_row("SELECT count(*) FROM grant_stage", [], |row| row.get(0)).unwrap();
        assert_eq!(staged, 0);
        assert_eq!(file.count(run, Table::Grants).unwrap(), 1);
        // The principal index, built again by the good run, is there and used.
        let plan: String =
            file.conn.query_row("EXPLAIN QUERY PLAN SELECT entitlement FROM grant_rows WHERE run_id = ?1 AND principal = 1", [run], |row| row.get(3)).unwrap();
        assert!(plan.contains("grant_rows_by_principal"), "{plan}");
    }

    /// Resources of a type that lists nothing wait in the stage, where the
    /// work queue (resource_rows) does not see them, but readers and counts
    /// do; when the run succeeds, every report of one merges as it would
    /// have on arrival: newest name, attributes merged, smallest depth.
    #[test]
    fn resources_of_staged_types_wait_until_their_run_succeeds() {
        let (_dir, mut file, run, next) = fresh_run();
        file.stage_resources_of(["user".to_string()]);
        let team = Resource { resource_type: "team".into(), id: "t1".into(), display_name: "Team".into(), parent: None, attributes: Map::new() };
        let page = |user: Resource| PageRecords { resources: vec![team.clone(), user], ..PageRecords::default() };
        file.write_page(run, &page(user(&[("email", "a@x")])), 2, Some(next.as_str())).unwrap();
        assert_eq!(file.resources_after(run, 0, 10).unwrap().iter().map(|q| q.resource.id.as_str()).collect::<Vec<_>>(), ["t1"], "only the team is queued");
        file.finish_run(run, RunEnd::Failed("boom"), 0).unwrap();
        assert_eq!(file.count(run, Table::Resources).unwrap(), 2, "a failed run's resources are counted where they wait");
        let by_hand: i64 = file.conn.query_row("SELECT count(*) FROM run_resources WHERE run_id = ?1 AND id = 'u1'", [run], |row| row.get(0)).unwrap();
        assert_eq!(by_hand, 1, "run_resources shows a resource still in the stage");

        file.reopen_run(run).unwrap();
        let renamed = Resource { display_name: "Ada L.".into(), ..user(&[("title", "Countess")]) };
        file.write_page(run, &page(renamed.clone()), 1, Some(next.as_str())).unwrap();
        file.finish_run(run, RunEnd::Succeeded, 0).unwrap();
        let read = file.resources(run, Some("user")).unwrap();
        assert_eq!(read, vec![Resource { attributes: user(&[("email", "a@x"), ("title", "Countess")]).attributes, ..renamed }], "both reports merged");
        let (depth, staged): (i64, i64) = file
            .conn
            .query_row(
                "SELECT depth, (SELECT count(*) FROM resource_stage) FROM resource_rows r JOIN resource_keys k ON k.kid = r.key WHERE k.id = 'u1'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((depth, staged), (1, 0), "the smallest depth, and the stage emptied");
        assert_eq!(file.count(run, Table::Resources).unwrap(), 2);
        // A failed run's staged resources are dropped by the next run.
        let next_run = file.begin_run(&ConnectorIdentity { name: "c".into(), version: "1".into(), digest: "d".into() }).unwrap();
        file.write_page(next_run, &page(user(&[])), 0, Some(next.as_str())).unwrap();
        file.finish_run(next_run, RunEnd::Failed("boom"), 0).unwrap();
        file.begin_run(&ConnectorIdentity { name: "c".into(), version: "1".into(), digest: "d".into() }).unwrap();
        let staged: i64 = file.conn.query_row("SELECT count(*) FROM resource_stage", [], |row| row.get(0)).unwrap();
        assert_eq!(staged, 0);
    }

    /// A page's grants are staged many to a statement and the rest one by
    /// one: every field of every grant comes back, and a grant reported
    /// twice (once in a full statement, once in the rest) merges in order.
    #[test]
    fn grants_staged_many_to_a_statement_come_back_whole_and_in_order() {
        let (_dir, mut file, run, next) = fresh_run();
        let count = GRANTS_PER_INSERT * 2 + 6;
        let mut grants: Vec<Grant> = (0..count)
            .map(|n| Grant {
                immutable: n % 3 == 0,
                id: if n % 5 == 0 { format!("own-id-{n}") } else { format!("team:t{}:member:user:u{n}", n % 4) },
                ..member_of(&format!("t{}", n % 4), &format!("u{n}"), &[("n", &n.to_string()), ("shared", "yes")])
            })
            .collect();
        // u7's grant again, last, in the rest: its attributes merge over the first report's.
        grants.push(Grant { attributes: [("n".to_string(), Value::from("again"))].into_iter().collect(), ..grants[7].clone() });
        file.write_page(run, &PageRecords { grants: grants.clone(), ..PageRecords::default() }, 0, Some(next.as_str())).unwrap();
        file.finish_run(run, RunEnd::Succeeded, 0).unwrap();
        let mut expected: Vec<Grant> = grants[..count].to_vec();
        expected[7].attributes.insert("n".into(), Value::from("again"));
        expected.sort_by(|a, b| a.id.cmp(&b.id));
        let mut read = file.grants(run, None).unwrap();
        read.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(read, expected);
    }

    /// `count` users' memberships of team t1: many pages of the file.
    fn team_members(count: usize) -> Vec<Grant> {
        (0..count)
            .map(|n| Grant {
                principal: ResourceKey { resource_type: "user".into(), id: format!("u{n}") },
                id: format!("team:t1:member:user:u{n}"),
                ..member(&[])
            })
            .collect()
    }

    /// Only the newest run can be resumed: a new run drops the records of
    /// earlier runs that did not succeed (failed syncs would otherwise
    /// each leave a run's records in the file), and keeps the good ones'.
    #[test]
    fn a_new_run_drops_the_records_of_runs_that_failed() {
        let (_dir, mut file, good, next) = fresh_run();
        file.write_page(good, &member_page(member(&[])), 0, Some(next.as_str())).unwrap();
        file.finish_run(good, RunEnd::Succeeded, 0).unwrap();
        let identity = ConnectorIdentity { name: "c".into(), version: "1".into(), digest: "d".into() };
        let failed = file.begin_run(&identity).unwrap();
        let grants = team_members(3000);
        file.write_page(failed, &PageRecords { grants, resources: vec![user(&[])], ..PageRecords::default() }, 0, Some(next.as_str())).unwrap();
        file.finish_run(failed, RunEnd::Failed("boom"), 0).unwrap();
        assert_eq!(file.count(failed, Table::Grants).unwrap(), 3000);
        assert_eq!(file.count(failed, Table::Resources).unwrap(), 1);

        let next_run = file.begin_run(&identity).unwrap();
        assert_eq!(file.count(failed, Table::Grants).unwrap(), 0);
        assert_eq!(file.count(failed, Table::Resources).unwrap(), 0);
        assert!(file.resumable_run("d").unwrap().is_none(), "the new run is the newest");
        assert_eq!(file.count(good, Table::Grants).unwrap(), 1, "the good run's records stay");
        let free = file.conn.query_row("PRAGMA freelist_count", [], |row| row.get::<_, i64>(0)).unwrap();
        assert_eq!(free, 0, "the failed run's pages went back to the file system");
        assert_ne!(next_run, failed);
    }

    #[test]
    fn a_good_run_gives_the_pages_of_its_stage_back() {
        let (_dir, mut file, run, next) = fresh_run();
        let grants = team_members(3000);
        file.write_page(run, &PageRecords { grants, ..PageRecords::default() }, 0, Some(next.as_str())).unwrap();
        let free = |file: &SyncFile| file.conn.query_row("PRAGMA freelist_count", [], |row| row.get::<_, i64>(0)).unwrap();
        assert_eq!(free(&file), 0);
        file.finish_run(run, RunEnd::Succeeded, 0).unwrap();
        assert_eq!(file.count(run, Table::Grants).unwrap(), 3000);
        assert_eq!(free(&file), 0, "the stage's pages went back to the file system");
    }

    /// Pages of a batch share its transaction, without a savepoint each: a
    /// page that fails to write fails the batch, and none of it is kept.
    #[test]
    fn a_page_that_fails_to_write_fails_its_batch() {
        let (_dir, mut file, run, next) = fresh_run();
        file.begin_batch().unwrap();
        file.write_page(run, &member_page(member(&[])), 0, Some(next.as_str())).unwrap();
        // The next page's grants have nowhere to go.
        file.conn.execute_batch("ALTER TABLE grant_stage RENAME TO elsewhere").unwrap();
        assert!(file.write_page(run, &member_page(member(&[("a", "b")])), 0, Some(next.as_str())).is_err());
        let error = file.end_batch().expect_err("the batch fails with its page");
        assert!(format!("{error:#}").contains("none of the batch was kept"), "{error:#}");
        let resources: i64 = file.conn.query_row("SELECT count(*) FROM resource_rows", [], |row| row.get(0)).unwrap();
        assert_eq!(resources, 0, "the first page was rolled back too");
        assert!(file.conn.query_row("SELECT count(*) FROM grant_stage", [], |row| row.get::<_, i64>(0)).is_ok(), "the rename was rolled back");
        // The file takes pages again, keys included (the key cache was cleared).
        file.write_page(run, &member_page(member(&[])), 0, Some(next.as_str())).unwrap();
        assert_eq!(file.count(run, Table::Grants).unwrap(), 1);
        let broken: i64 = file.conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| row.get(0)).unwrap();
        assert_eq!(broken, 0);
    }

    #[test]
    fn a_good_sync_keeps_the_previous_good_runs_records_and_the_views_show_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = SyncFile::open(&dir.path().join("s.db")).unwrap();
        let connector = ConnectorIdentity { name: "c".into(), version: "1".into(), digest: "d".into() };
        let next = serde_json::to_string(&Checkpoint::from(Position::TopLevel { index: 0, token: None })).unwrap();
        let mut runs = Vec::new();
        for (n, end) in [(1, RunEnd::Succeeded), (2, RunEnd::Failed("boom")), (3, RunEnd::Succeeded), (4, RunEnd::Succeeded), (5, RunEnd::Failed("x"))] {
            let run = file.begin_run(&connector).unwrap();
            let page = PageRecords {
                resources: vec![Resource {
                    resource_type: "user".into(),
                    id: format!("u{n}"),
                    display_name: format!("User {n}"),
                    parent: None,
                    attributes: Map::new(),
                }],
                ..PageRecords::default()
            };
            file.write_page(run, &page, 0, Some(next.as_str())).unwrap();
            file.finish_run(run, end, 0).unwrap();
            runs.push(run);
        }
        let kept: Vec<i64> = file
            .conn
            .prepare("SELECT DISTINCT run_id FROM run_resources ORDER BY run_id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kept, vec![runs[2], runs[3], runs[4]], "the last two good runs, and the failed run after them (for --resume)");
        let view: Vec<String> = file.conn.prepare("SELECT id FROM resources").unwrap().query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(view, vec!["u4"], "the views show the last good run only");
    }
}
