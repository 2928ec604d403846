//! Access reviews from the sync file: a run's grants as rows to export
//! (`tether export`), and what changed between two runs (`tether diff`).
//!
//! Both stream: rows come from a rusqlite statement one at a time and go
//! to a callback, so memory stays flat however many grants a run holds. A
//! diff is a merge of two scans in primary-key order (an index walk, no
//! sort), one per run, which may be in the same file or in two.

use std::cmp::Ordering;

use anyhow::{bail, Context, Result};
use rusqlite::{params, Row, Rows};
use serde::Serialize;
use serde_json::{Map, Value};

use super::sync_file::{RunInfo, SyncFile, GRANT_ATTRIBUTES, KEPT_GOOD_RUNS};

/// A run to review: the last good one, or `run`, which must have
/// succeeded and still have its records.
pub fn reviewable_run(file: &SyncFile, run: Option<i64>) -> Result<RunInfo> {
    let Some(id) = run else {
        return file.last_good_run()?.context("it holds no successful sync yet");
    };
    let info = file.run(id)?.with_context(|| format!("it has no sync run {id}"))?;
    if info.status != "succeeded" {
        let why = info.error.as_deref().map(|e| format!(": {}", crate::terminal::escape(e))).unwrap_or_default();
        bail!("sync run {id} did not succeed (it {}{why})", info.status);
    }
    let has_records: bool = file.connection().query_row(
        "SELECT EXISTS (SELECT 1 FROM run_resource_types WHERE run_id = ?1) OR EXISTS (SELECT 1 FROM resource_rows WHERE run_id = ?1)",
        [id],
        |row| row.get(0),
    )?;
    let is_last = file.last_good_run()?.is_some_and(|last| last.id == id);
    if !has_records && !is_last {
        bail!("the records of sync run {id} are no longer kept (a sync keeps those of the last {KEPT_GOOD_RUNS} good runs)");
    }
    Ok(info)
}

/// The good run before `to`, for a diff that names no `--from`.
pub fn good_run_before(file: &SyncFile, to: i64) -> Result<RunInfo> {
    let id: Option<i64> = file
        .connection()
        .query_row("SELECT max(id) FROM sync_runs WHERE status = 'succeeded' AND id < ?1", [to], |row| row.get(0))
        .context("cannot read the sync runs")?;
    let id = id.with_context(|| format!("it holds no successful sync before run {to} to compare it with"))?;
    reviewable_run(file, Some(id))
}

/// One grant as an access review shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GrantRow {
    pub grant_id: String,
    pub principal_type: String,
    pub principal_id: String,
    pub principal_name: Option<String>,
    /// The principal's `email` attribute, if it has one.
    pub principal_email: Option<String>,
    pub entitlement_id: String,
    pub entitlement_name: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub immutable: bool,
    pub grantable: bool,
    /// Whether a revoke can remove it: a grantable entitlement and a grant
    /// that is not immutable.
    pub revocable: bool,
    /// When the run that found it ended.
    pub synced_at: String,
}

/// The columns of `GrantRow`, in order, for a CSV header.
pub const GRANT_COLUMNS: [&str; 14] = [
    "grant_id",
    "principal_type",
    "principal_id",
    "principal_name",
    "principal_email",
    "entitlement_id",
    "entitlement_name",
    "resource_type",
    "resource_id",
    "resource_name",
    "immutable",
    "grantable",
    "revocable",
    "synced_at",
];

impl GrantRow {
    /// The cells, in `GRANT_COLUMNS` order.
    pub fn cells(&self) -> [String; 14] {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        [
            self.grant_id.clone(),
            self.principal_type.clone(),
            self.principal_id.clone(),
            text(&self.principal_name),
            text(&self.principal_email),
            self.entitlement_id.clone(),
            text(&self.entitlement_name),
            text(&self.resource_type),
            text(&self.resource_id),
            text(&self.resource_name),
            self.immutable.to_string(),
            self.grantable.to_string(),
            self.revocable.to_string(),
            self.synced_at.clone(),
        ]
    }
}

/// The order grants are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOrder {
    /// By grant id: the primary key's order, no sort.
    Id,
    /// By the entitled resource (type, name), then entitlement and
    /// principal name, as a review page groups them. SQLite sorts, spilling
    /// to temporary files rather than memory past its cache.
    Resource,
}

/// Calls `each` with every grant of `run`, in grant id order, joined with
/// its principal, entitlement and resource; returns how many there were.
pub fn for_each_grant(file: &SyncFile, run: &RunInfo, each: impl FnMut(&GrantRow) -> Result<()>) -> Result<u64> {
    for_each_grant_in(file, run, GrantOrder::Id, each)
}

/// `for_each_grant` in a given order.
pub fn for_each_grant_in(file: &SyncFile, run: &RunInfo, order: GrantOrder, mut each: impl FnMut(&GrantRow) -> Result<()>) -> Result<u64> {
    let synced_at = run.ended_at.clone().unwrap_or_else(|| run.started_at.clone());
    let order_by = match order {
        GrantOrder::Id => "1",
        GrantOrder::Resource => "rk.resource_type, r.display_name, rk.id, e.display_name, ek.id, p.display_name, 1",
    };
    let mut stmt = file.connection().prepare(&format!(
        // The compact tables (schema 3), joined on their integer keys.
        "SELECT coalesce(g.id, ek.id || ':' || pk.resource_type || ':' || pk.id), pk.resource_type, pk.id, p.display_name,
                CASE WHEN json_valid(p.attributes) THEN CAST(json_extract(p.attributes, '$.email') AS TEXT) END,
                ek.id, e.display_name, rk.resource_type, rk.id, r.display_name,
                g.immutable, coalesce(e.grantable, 0)
         FROM grant_rows g
         JOIN entitlement_keys ek ON ek.eid = g.entitlement
         JOIN resource_keys pk ON pk.kid = g.principal
         LEFT JOIN resource_rows p ON p.run_id = g.run_id AND p.key = g.principal
         LEFT JOIN entitlement_rows e ON e.run_id = g.run_id AND e.entitlement = g.entitlement
         LEFT JOIN resource_keys rk ON rk.kid = e.resource
         LEFT JOIN resource_rows r ON r.run_id = g.run_id AND r.key = e.resource
         WHERE g.run_id = ?1 ORDER BY {order_by}"
    ))?;
    let mut rows = stmt.query([run.id])?;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        let immutable: bool = row.get(10)?;
        let grantable: bool = row.get(11)?;
        let grant = GrantRow {
            grant_id: row.get(0)?,
            principal_type: row.get(1)?,
            principal_id: row.get(2)?,
            principal_name: row.get(3)?,
            principal_email: row.get(4)?,
            entitlement_id: row.get(5)?,
            entitlement_name: row.get(6)?,
            resource_type: row.get(7)?,
            resource_id: row.get(8)?,
            resource_name: row.get(9)?,
            immutable,
            grantable,
            revocable: grantable && !immutable,
            synced_at: synced_at.clone(),
        };
        each(&grant)?;
        count += 1;
    }
    Ok(count)
}

/// A resource type of a run and how many resources of it the run found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TypeCount {
    pub id: String,
    pub display_name: String,
    pub resources: i64,
}

/// The resource types of `run`, in the order the connector declared them.
pub fn resource_types(file: &SyncFile, run: &RunInfo) -> Result<Vec<TypeCount>> {
    let mut stmt = file.connection().prepare(
        "SELECT t.id, t.display_name, (SELECT count(*) FROM resource_rows r JOIN resource_keys k ON k.kid = r.key WHERE r.run_id = t.run_id AND k.resource_type = t.id)
         FROM run_resource_types t WHERE t.run_id = ?1 ORDER BY t.rowid",
    )?;
    let rows = stmt.query_map([run.id], |row| Ok(TypeCount { id: row.get(0)?, display_name: row.get(1)?, resources: row.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a diff compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Resource,
    Entitlement,
    Grant,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Resource, Kind::Entitlement, Kind::Grant];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Resource => "resource",
            Kind::Entitlement => "entitlement",
            Kind::Grant => "grant",
        }
    }

    /// Rows of one run in key order (the primary key's, so SQLite walks
    /// the index rather than sorting). Columns: two key parts, the name
    /// and what it is on (labels, not compared), then the compared fields.
    fn query(self) -> String {
        match self {
            Kind::Resource => "SELECT resource_type, id, display_name, resource_type,
                        display_name, CASE WHEN parent_id IS NULL THEN NULL ELSE parent_type || ':' || parent_id END, attributes
                 FROM run_resources WHERE run_id = ?1 ORDER BY resource_type, id"
                .to_string(),
            Kind::Entitlement => "SELECT '', ek.id, e.display_name, coalesce(r.display_name, k.resource_type || ':' || k.id),
                        e.display_name, e.description, e.grantable, k.resource_type || ':' || k.id, e.slug
                 FROM entitlement_rows e
                 JOIN entitlement_keys ek ON ek.eid = e.entitlement
                 JOIN resource_keys k ON k.kid = e.resource
                 LEFT JOIN resource_rows r ON r.run_id = e.run_id AND r.key = e.resource
                 WHERE e.run_id = ?1 ORDER BY ek.id"
                .to_string(),
            Kind::Grant => format!(
                "SELECT '', coalesce(g.id, ek.id || ':' || pk.resource_type || ':' || pk.id),
                        coalesce(p.display_name, pk.resource_type || ':' || pk.id), coalesce(e.display_name, ek.id),
                        ek.id, pk.resource_type || ':' || pk.id, g.immutable, {GRANT_ATTRIBUTES}
                 FROM grant_rows g
                 JOIN entitlement_keys ek ON ek.eid = g.entitlement
                 JOIN resource_keys pk ON pk.kid = g.principal
                 LEFT JOIN resource_rows p ON p.run_id = g.run_id AND p.key = g.principal
                 LEFT JOIN entitlement_rows e ON e.run_id = g.run_id AND e.entitlement = g.entitlement
                 WHERE g.run_id = ?1 ORDER BY 2"
            ),
        }
    }

    /// The compared fields, after the four leading columns.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Resource => &["display_name", "parent", "attributes"],
            Kind::Entitlement => &["display_name", "description", "grantable", "resource", "slug"],
            Kind::Grant => &["entitlement", "principal", "immutable", "attributes"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

/// One field that differs; an attribute is its own field (`attributes.email`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub from: Value,
    pub to: Value,
}

/// A record added, removed or changed between two runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    pub change: Change,
    pub kind: Kind,
    /// The record's id (a resource's as `type:id`).
    pub id: String,
    /// Its name: a resource's or entitlement's display name, a grant's principal's.
    pub name: String,
    /// What it is on: a resource's type, an entitlement's resource, a grant's entitlement.
    pub on: String,
    /// For `changed`: what changed.
    pub changes: Vec<FieldChange>,
    /// The compared fields in the first run (null if added) and the second (null if removed).
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
}

/// Records added, removed and changed, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiffCounts {
    counts: [[u64; 3]; 3],
}

impl DiffCounts {
    pub fn get(&self, kind: Kind, change: Change) -> u64 {
        self.counts[kind as usize][change as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
}

/// One run's record as the merge holds it (two at a time, one per side).
struct Record {
    key: (String, String),
    name: String,
    on: String,
    fields: Map<String, Value>,
}

fn read_record(kind: Kind, row: &Row<'_>) -> rusqlite::Result<Record> {
    let key: (String, String) = (row.get(0)?, row.get(1)?);
    let mut fields = Map::new();
    for (i, field) in kind.fields().iter().enumerate() {
        let value = match (*field, row.get_ref(4 + i)?) {
            ("attributes", value) => {
                let text = value.as_str().unwrap_or("{}");
                match serde_json::from_str(text) {
                    Ok(Value::Object(map)) => Value::Object(map),
                    _ => Value::Object(Map::new()),
                }
            }
            ("grantable" | "immutable", value) => Value::Bool(value.as_i64().unwrap_or(0) != 0),
            (_, rusqlite::types::ValueRef::Null) => Value::Null,
            (_, value) => Value::String(value.as_str().unwrap_or_default().to_string()),
        };
        fields.insert(field.to_string(), value);
    }
    Ok(Record { key, name: row.get(2)?, on: row.get(3)?, fields })
}

fn next_record(kind: Kind, rows: &mut Rows<'_>) -> Result<Option<Record>> {
    Ok(match rows.next()? {
        Some(row) => Some(read_record(kind, row)?),
        None => None,
    })
}

/// The fields that differ, attributes one by one.
fn field_changes(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    for (field, from) in before {
        let to = after.get(field).unwrap_or(&Value::Null);
        match (from, to) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                    if x != y {
                        changes.push(FieldChange { field: format!("{field}.{key}"), from: x.clone(), to: y.clone() });
                    }
                }
            }
            _ if from != to => changes.push(FieldChange { field: field.clone(), from: from.clone(), to: to.clone() }),
            _ => {}
        }
    }
    changes
}

fn record_id(kind: Kind, key: &(String, String)) -> String {
    match kind {
        Kind::Resource => format!("{}:{}", key.0, key.1),
        _ => key.1.clone(),
    }
}

/// Compares run `from` of `a` with run `to` of `b` (which may be the same
/// file), kind by kind in key order, calling `each` with every difference.
pub fn diff(a: &SyncFile, from: i64, b: &SyncFile, to: i64, mut each: impl FnMut(&Difference) -> Result<()>) -> Result<DiffCounts> {
    let mut counts = DiffCounts::default();
    for kind in Kind::ALL {
        let mut before_stmt = a.connection().prepare(&kind.query())?;
        let mut after_stmt = b.connection().prepare(&kind.query())?;
        let mut before_rows = before_stmt.query(params![from])?;
        let mut after_rows = after_stmt.query(params![to])?;
        let mut before = next_record(kind, &mut before_rows)?;
        let mut after = next_record(kind, &mut after_rows)?;
        loop {
            let order = match (&before, &after) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => x.key.cmp(&y.key),
            };
            let difference = match order {
                Ordering::Less => {
                    let x = before.take().expect("a record before");
                    before = next_record(kind, &mut before_rows)?;
                    Some(Difference {
                        change: Change::Removed,
                        kind,
                        id: record_id(kind, &x.key),
                        name: x.name,
                        on: x.on,
                        changes: Vec::new(),
                        before: Some(x.fields),
                        after: None,
                    })
                }
                Ordering::Greater => {
                    let y = after.take().expect("a record after");
                    after = next_record(kind, &mut after_rows)?;
                    Some(Difference {
                        change: Change::Added,
                        kind,
                        id: record_id(kind, &y.key),
                        name: y.name,
                        on: y.on,
                        changes: Vec::new(),
                        before: None,
                        after: Some(y.fields),
                    })
                }
                Ordering::Equal => {
                    let (x, y) = (before.take().expect("a record before"), after.take().expect("a record after"));
                    before = next_record(kind, &mut before_rows)?;
                    after = next_record(kind, &mut after_rows)?;
                    let changes = field_changes(&x.fields, &y.fields);
                    (!changes.is_empty()).then(|| Difference {
                        change: Change::Changed,
                        kind,
                        id: record_id(kind, &y.key),
                        name: y.name,
                        on: y.on,
                        changes,
                        before: Some(x.fields),
                        after: Some(y.fields),
                    })
                }
            };
            if let Some(difference) = difference {
                counts.counts[kind as usize][difference.change as usize] += 1;
                each(&difference)?;
            }
        }
    }
    Ok(counts)
}

/// A CSV cell made safe for a spreadsheet: one starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return would be read as a formula (CSV
/// injection), so it gets a leading `'`, as OWASP's guidance says.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// A CSV error as the io::Error it wraps, so a reader that went away (`|
/// head`) is seen as a broken pipe; `From` would make every one of them
/// `ErrorKind::Other`.
fn io_error(error: csv::Error) -> std::io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(io) => io,
        kind => std::io::Error::other(format!("cannot write the CSV: {kind:?}")),
    }
}

/// A CSV writer as Excel reads it: UTF-8 with a byte order mark, RFC 4180
/// quoting (the `csv` crate's) and CRLF line ends; cells go through
/// `spreadsheet_safe` in `write_row`.
pub struct SpreadsheetCsv<W: std::io::Write> {
    writer: csv::Writer<W>,
}

impl<W: std::io::Write> SpreadsheetCsv<W> {
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all("\u{feff}".as_bytes())?;
        Ok(SpreadsheetCsv { writer: csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out) })
    }

    pub fn write_row<I, S>(&mut self, cells: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let record: Vec<String> = cells.into_iter().map(|c| spreadsheet_safe(c.as_ref()).into_owned()).collect();
        self.writer.write_record(&record).map_err(io_error)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        self.writer.flush()?;
        self.writer.into_inner().map_err(|e| anyhow::anyhow!("cannot flush the CSV: {}", e.error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_quoted_for_spreadsheets() {
        for cell in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(spreadsheet_safe(cell), format!("'{cell}"));
        }
        for cell in ["Ada", "", "1-2", "a=b", "'quoted"] {
            assert_eq!(spreadsheet_safe(cell), cell);
        }
        let mut csv = SpreadsheetCsv::new(Vec::new()).unwrap();
        csv.write_row(["=HYPERLINK(\"http://x\")", "a,b", "line\nbreak"]).unwrap();
        let bytes = csv.finish().unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), "\u{feff}\"'=HYPERLINK(\"\"http://x\"\")\",\"a,b\",\"line\nbreak\"\r\n");
    }

    #[test]
    fn attributes_change_one_by_one() {
        let before: Map<String, Value> = serde_json::from_str(r#"{"display_name":"Ada","attributes":{"email":"a@x","title":"Dev"}}"#).unwrap();
        let after: Map<String, Value> = serde_json::from_str(r#"{"display_name":"Ada","attributes":{"email":"b@x","team":"T"}}"#).unwrap();
        let changes: Vec<(String, Value, Value)> = field_changes(&before, &after).into_iter().map(|c| (c.field, c.from, c.to)).collect();
        assert_eq!(
            changes,
            vec![
                ("attributes.email".into(), "a@x".into(), "b@x".into()),
                ("attributes.team".into(), Value::Null, "T".into()),
                ("attributes.title".into(), "Dev".into(), Value::Null),
            ]
        );
    }
}
