//! The sync file: one SQLite database holding sync runs and, for each run,
//! the resource types, resources, entitlements and grants it found.
//!
//! Each page is written in its own transaction as it arrives, so memory does
//! not grow with the org. Views (`resources`, `entitlements`, `grants`,
//! `resource_types`) show the last successful run: a failed or running sync
//! never replaces it, and only a successful one prunes older runs. A failed
//! run keeps its records and checkpoint, so `sync --resume` can finish it.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::model::{Entitlement, Grant, PageRecords, Resource, ResourceKey, ResourceType};

const SCHEMA: &str = r#"
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

/// How far a run got: whether the top-level listings are done, the last
/// resource (by row) whose children, entitlements and grants are all
/// written, and how far the driver got inside the next one.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub top_level_done: bool,
    pub cursor: i64,
    pub within: Option<Within>,
}

/// A place inside one resource's listings: its row, the step (which
/// listing), and the page token to go on from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Within {
    pub row: i64,
    pub step: usize,
    pub token: Option<String>,
}

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
}

/// A resource as the sync driver walks them: its position in the run and key.
#[derive(Debug, Clone)]
pub struct QueuedResource {
    pub row: i64,
    pub key: ResourceKey,
}

impl SyncFile {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("cannot open sync file {}", path.display()))?;
        Self::init(conn).with_context(|| format!("{} is not a usable sync file", path.display()))
    }

    /// Opens an existing sync file without creating one.
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            anyhow::bail!("no sync file at {}", path.display());
        }
        Self::open(path)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        // Files written before checkpoints existed.
        let has_checkpoint: bool = conn.query_row("SELECT count(*) FROM pragma_table_info('sync_runs') WHERE name = 'checkpoint'", [], |row| row.get(0))?;
        if !has_checkpoint {
            conn.execute_batch("ALTER TABLE sync_runs ADD COLUMN checkpoint TEXT")?;
        }
        Ok(SyncFile { conn })
    }

    pub fn begin_run(&mut self, connector: &ConnectorIdentity) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO sync_runs (started_at, status, connector_name, connector_version, connector_digest)
             VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'running', ?1, ?2, ?3)",
            params![connector.name, connector.version, connector.digest],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn write_resource_types(&mut self, run: i64, types: &[ResourceType]) -> Result<()> {
        let tx = self.conn.transaction()?;
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

    /// Writes one page in one transaction. A resource reported again (a user
    /// seen in several workspaces) keeps its place and merges attributes.
    pub fn write_page(&mut self, run: i64, page: &PageRecords) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut resource = tx.prepare_cached(
                "INSERT INTO run_resources (run_id, resource_type, id, display_name, parent_type, parent_id, attributes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, resource_type, id) DO UPDATE SET
                    display_name = excluded.display_name,
                    parent_type = coalesce(excluded.parent_type, parent_type),
                    parent_id = coalesce(excluded.parent_id, parent_id),
                    attributes = json_patch(attributes, excluded.attributes)",
            )?;
            for r in &page.resources {
                resource.execute(params![
                    run,
                    r.resource_type,
                    r.id,
                    r.display_name,
                    r.parent.as_ref().map(|p| &p.resource_type),
                    r.parent.as_ref().map(|p| &p.id),
                    Value::Object(r.attributes.clone()).to_string(),
                ])?;
            }
            let mut entitlement = tx.prepare_cached(
                "INSERT OR REPLACE INTO run_entitlements (run_id, id, resource_type, resource_id, slug, display_name, description, grantable)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in &page.entitlements {
                entitlement.execute(params![run, e.id, e.resource.resource_type, e.resource.id, e.slug, e.display_name, e.description, e.grantable])?;
            }
            let mut grant = tx.prepare_cached(
                "INSERT INTO run_grants (run_id, id, entitlement_id, principal_type, principal_id, immutable, attributes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, id) DO UPDATE SET
                    immutable = excluded.immutable,
                    attributes = json_patch(attributes, excluded.attributes)",
            )?;
            for g in &page.grants {
                grant.execute(params![
                    run,
                    g.id,
                    g.entitlement_id,
                    g.principal.resource_type,
                    g.principal.id,
                    g.immutable,
                    Value::Object(g.attributes.clone()).to_string(),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The next resources of a run after `after_row`, in the order they were
    /// first written: the driver's work queue, read in batches.
    pub fn resources_after(&self, run: i64, after_row: i64, batch: usize) -> Result<Vec<QueuedResource>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT rowid, resource_type, id FROM run_resources WHERE run_id = ?1 AND rowid > ?2 ORDER BY rowid LIMIT ?3")?;
        let rows = stmt.query_map(params![run, after_row, batch as i64], |row| {
            Ok(QueuedResource { row: row.get(0)?, key: ResourceKey { resource_type: row.get(1)?, id: row.get(2)? } })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ends a run. A successful run becomes the one the views show and
    /// older runs' records (failed ones' included) are dropped; a failed run
    /// keeps its partial records for a resume, and the last good run stays
    /// what the views show. `http_requests` adds to the run's count.
    pub fn finish_run(&mut self, run: i64, error: Option<&str>, http_requests: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        let status = if error.is_some() { "failed" } else { "succeeded" };
        tx.execute(
            "UPDATE sync_runs SET status = ?2, ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), error = ?3,
                http_requests = http_requests + ?4 WHERE id = ?1",
            params![run, status, error, http_requests as i64],
        )?;
        if error.is_none() {
            for table in ["run_resource_types", "run_resources", "run_entitlements", "run_grants"] {
                tx.execute(&format!("DELETE FROM {table} WHERE run_id < ?1"), params![run])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn save_checkpoint(&self, run: i64, checkpoint: &Checkpoint) -> Result<()> {
        self.conn.execute("UPDATE sync_runs SET checkpoint = ?2 WHERE id = ?1", params![run, serde_json::to_string(checkpoint)?])?;
        Ok(())
    }

    /// The newest run, if it failed, was made by the module with `digest`,
    /// and got far enough to checkpoint: it can be resumed.
    pub fn resumable_run(&self, digest: &str) -> Result<Option<(i64, Checkpoint)>> {
        let last: Option<(i64, String, String, Option<String>)> = self
            .conn
            .query_row("SELECT id, status, connector_digest, checkpoint FROM sync_runs ORDER BY id DESC LIMIT 1", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        Ok(match last {
            Some((id, status, run_digest, Some(checkpoint))) if status == "failed" && run_digest == digest => {
                serde_json::from_str(&checkpoint).ok().map(|c| (id, c))
            }
            _ => None,
        })
    }

    /// Marks a failed run running again, to resume it.
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
        let sql = format!("SELECT count(*) FROM {} WHERE run_id = ?1", table.name());
        Ok(self.conn.query_row(&sql, [run], |row| row.get(0))?)
    }

    pub fn resources(&self, run: i64, resource_type: Option<&str>) -> Result<Vec<Resource>> {
        let mut stmt = self.conn.prepare(
            "SELECT resource_type, id, display_name, parent_type, parent_id, attributes FROM run_resources
             WHERE run_id = ?1 AND (?2 IS NULL OR resource_type = ?2) ORDER BY resource_type, display_name, id",
        )?;
        let rows = stmt.query_map(params![run, resource_type], |row| {
            let parent_type: Option<String> = row.get(3)?;
            let parent_id: Option<String> = row.get(4)?;
            Ok(Resource {
                resource_type: row.get(0)?,
                id: row.get(1)?,
                display_name: row.get(2)?,
                parent: parent_type.zip(parent_id).map(|(resource_type, id)| ResourceKey { resource_type, id }),
                attributes: json_object(row.get::<_, String>(5)?),
            })
        })?;
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
        let mut stmt = self.conn.prepare(
            "SELECT g.id, g.entitlement_id, g.principal_type, g.principal_id, g.immutable, g.attributes
             FROM run_grants g LEFT JOIN run_entitlements e ON e.run_id = g.run_id AND e.id = g.entitlement_id
             WHERE g.run_id = ?1 AND (?2 IS NULL OR e.resource_type = ?2) ORDER BY g.id",
        )?;
        let rows = stmt.query_map(params![run, resource_type], |row| {
            Ok(Grant {
                id: row.get(0)?,
                entitlement_id: row.get(1)?,
                principal: ResourceKey { resource_type: row.get(2)?, id: row.get(3)? },
                immutable: row.get(4)?,
                attributes: json_object(row.get::<_, String>(5)?),
            })
        })?;
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
            Table::Resources => "run_resources",
            Table::Entitlements => "run_entitlements",
            Table::Grants => "run_grants",
        }
    }
}

fn json_object(text: String) -> Map<String, Value> {
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}
