//! The audit table: every write asked of the API (who, when, what, the
//! outcome and the upstream's answer), in its own SQLite file beside the
//! instances' sync files, listed by `GET /v1/audit`.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{params, Connection};
use serde::Serialize;

pub struct Audit {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub instance: String,
    pub action: String,
    pub target: serde_json::Value,
    pub dry_run: bool,
    pub outcome: String,
    pub upstream: String,
}

/// One entry to record.
pub struct NewEntry<'a> {
    pub actor: &'a str,
    pub instance: &'a str,
    pub action: &'a str,
    pub target: &'a serde_json::Value,
    pub dry_run: bool,
    pub outcome: &'a str,
    pub upstream: &'a str,
}

impl Audit {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("cannot open the audit log {}", path.display()))?;
        Self::with(conn, &path.display().to_string())
    }

    /// An audit log kept in memory only (`serve --check`, which writes nothing).
    pub fn in_memory() -> Result<Self> {
        Self::with(Connection::open_in_memory()?, "the in-memory audit log")
    }

    fn with(conn: Connection, name: &str) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY,
                at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                actor TEXT NOT NULL, instance TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
                dry_run INTEGER NOT NULL, outcome TEXT NOT NULL, upstream TEXT NOT NULL);",
        )
        .with_context(|| format!("{name} is not a usable audit log"))?;
        Ok(Audit { conn: Mutex::new(conn) })
    }

    pub fn record(&self, entry: &NewEntry<'_>) -> Result<i64> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("the audit log is unavailable"))?;
        conn.execute(
            "INSERT INTO audit (actor, instance, action, target, dry_run, outcome, upstream) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![entry.actor, entry.instance, entry.action, entry.target.to_string(), entry.dry_run, entry.outcome, entry.upstream],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Sets the outcome of entry `id`, recorded as `started` before its
    /// write went out: a write the process did not live to finish stays
    /// in the table as started.
    pub fn finish(&self, id: i64, outcome: &str, upstream: &str) -> Result<()> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("the audit log is unavailable"))?;
        conn.execute("UPDATE audit SET outcome = ?2, upstream = ?3 WHERE id = ?1", params![id, outcome, upstream])?;
        Ok(())
    }

    /// Newest first: up to `limit` entries older than `before` (an id).
    pub fn list(&self, instance: Option<&str>, before: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("the audit log is unavailable"))?;
        let mut statement = conn.prepare(
            "SELECT id, at, actor, instance, action, target, dry_run, outcome, upstream FROM audit
             WHERE (?1 IS NULL OR instance = ?1) AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(params![instance, before, limit as i64], |row| {
            let target: String = row.get(5)?;
            Ok(AuditEntry {
                id: row.get(0)?,
                at: row.get(1)?,
                actor: row.get(2)?,
                instance: row.get(3)?,
                action: row.get(4)?,
                target: serde_json::from_str(&target).unwrap_or(serde_json::Value::String(target)),
                dry_run: row.get(6)?,
                outcome: row.get(7)?,
                upstream: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
