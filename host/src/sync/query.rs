//! Paged listings of one run's records, for `tether serve`'s API.
//!
//! Keyset paging: each page is one query that walks the compact tables'
//! primary keys from just after the last key of the page before (the
//! cursor), so a page costs the same at the start of a million grants as at
//! the end, and nothing but the page is held in memory. Filters are
//! equality conditions on integer keys, looked up once per page. Records
//! come in key order (the order their keys were first written), not by name.

use anyhow::Result;
use rusqlite::types::Value as Sql;
use rusqlite::Row;

use super::model::{Entitlement, Grant, Resource, ResourceKey};
use super::sync_file::{grant_from_row, resource_from_row, SyncFile, GRANT_ATTRIBUTES};

/// What a listing keeps. Empty: everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    /// The resource's type; for entitlements and grants, the entitled resource's.
    pub resource_type: Option<&'a str>,
    /// Entitlements on this resource.
    pub resource: Option<(&'a str, &'a str)>,
    /// Grants to this principal.
    pub principal: Option<(&'a str, &'a str)>,
    /// Grants of this entitlement.
    pub entitlement: Option<&'a str>,
}

/// Where a page starts: after this key (one integer for resources and
/// entitlements, two for grants), in a given run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub run: i64,
    after: Vec<i64>,
}

impl Cursor {
    /// The cursor as the API gives it. Opaque to clients: `r{run}k{key}[.{key}]`.
    pub fn encode(&self) -> String {
        let keys: Vec<String> = self.after.iter().map(i64::to_string).collect();
        format!("r{}k{}", self.run, keys.join("."))
    }

    /// A cursor this module gave for a listing with keys of `arity` parts;
    /// `None` for anything else.
    pub fn decode(text: &str, arity: usize) -> Option<Cursor> {
        let (run, keys) = text.strip_prefix('r')?.split_once('k')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let parts: Vec<&str> = keys.split('.').collect();
        if !digits(run) || parts.len() != arity || !parts.iter().all(|p| digits(p)) {
            return None;
        }
        Some(Cursor { run: run.parse().ok()?, after: parts.iter().map(|p| p.parse().ok()).collect::<Option<_>>()? })
    }
}

/// One page and, when more may follow, the cursor of the next.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Runs `sql` (ending in `LIMIT ?`) with `args` and `limit + 1`: the extra
/// row says whether there is a next page, whose cursor is the key
/// (`arity` leading columns) of the last row kept.
fn page<T>(
    file: &SyncFile,
    run: i64,
    sql: &str,
    mut args: Vec<Sql>,
    arity: usize,
    limit: usize,
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Page<T>> {
    args.push(Sql::Integer(limit as i64 + 1));
    let mut stmt = file.connection().prepare(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut items = Vec::with_capacity(limit.min(1024));
    let mut last = Vec::new();
    let mut more = false;
    while let Some(row) = rows.next()? {
        if items.len() == limit {
            more = true;
            break;
        }
        last = (0..arity).map(|i| row.get(i)).collect::<rusqlite::Result<_>>()?;
        items.push(read(row)?);
    }
    Ok(Page { items, next: more.then_some(Cursor { run, after: last }) })
}

fn empty<T>() -> Page<T> {
    Page { items: Vec::new(), next: None }
}

/// Resources of `run` after `after`. Filter: `resource_type`.
pub fn resources(file: &SyncFile, run: i64, filter: &Filter<'_>, after: Option<&Cursor>, limit: usize) -> Result<Page<Resource>> {
    let start = after.map_or(0, |c| c.after[0]);
    // CROSS JOIN keeps resource_rows the outer loop: a walk of its
    // (run_id, key) index in order, never a sort of the whole run.
    let mut sql = String::from(
        "SELECT r.key, k.resource_type, k.id, r.display_name, pk.resource_type, pk.id, r.attributes
         FROM resource_rows r CROSS JOIN resource_keys k LEFT JOIN resource_keys pk ON pk.kid = r.parent
         WHERE k.kid = r.key AND r.run_id = ?1 AND r.key > ?2",
    );
    let mut args = vec![Sql::Integer(run), Sql::Integer(start)];
    if let Some(t) = filter.resource_type {
        args.push(Sql::Text(t.to_string()));
        sql += &format!(" AND k.resource_type = ?{}", args.len());
    }
    sql += &format!(" ORDER BY r.key LIMIT ?{}", args.len() + 1);
    page(file, run, &sql, args, 1, limit, |row| resource_from_row(row, 1))
}

/// Entitlements of `run` after `after`. Filters: `resource_type`, `resource`.
pub fn entitlements(file: &SyncFile, run: i64, filter: &Filter<'_>, after: Option<&Cursor>, limit: usize) -> Result<Page<Entitlement>> {
    let start = after.map_or(0, |c| c.after[0]);
    let mut sql = String::from(
        "SELECT e.entitlement, ek.id, k.resource_type, k.id, e.slug, e.display_name, e.description, e.grantable
         FROM entitlement_rows e CROSS JOIN entitlement_keys ek CROSS JOIN resource_keys k
         WHERE ek.eid = e.entitlement AND k.kid = e.resource AND e.run_id = ?1 AND e.entitlement > ?2",
    );
    let mut args = vec![Sql::Integer(run), Sql::Integer(start)];
    if let Some(t) = filter.resource_type {
        args.push(Sql::Text(t.to_string()));
        sql += &format!(" AND k.resource_type = ?{}", args.len());
    }
    if let Some(resource) = filter.resource {
        let Some(kid) = file.resource_key(resource.0, resource.1)? else { return Ok(empty()) };
        args.push(Sql::Integer(kid));
        sql += &format!(" AND e.resource = ?{}", args.len());
    }
    sql += &format!(" ORDER BY e.entitlement LIMIT ?{}", args.len() + 1);
    page(file, run, &sql, args, 1, limit, |row| {
        Ok(Entitlement {
            id: row.get(1)?,
            resource: ResourceKey { resource_type: row.get(2)?, id: row.get(3)? },
            slug: row.get(4)?,
            display_name: row.get(5)?,
            description: row.get(6)?,
            grantable: row.get(7)?,
        })
    })
}

/// Grants of `run` after `after`, in (entitlement, principal) key order.
/// Filters: `resource_type` (of the entitled resource), `principal`,
/// `entitlement`; the last two narrow the walk to a range of an index.
pub fn grants(file: &SyncFile, run: i64, filter: &Filter<'_>, after: Option<&Cursor>, limit: usize) -> Result<Page<Grant>> {
    let (start_e, start_p) = after.map_or((0, 0), |c| (c.after[0], c.after[1]));
    let mut from = String::from("grant_rows g CROSS JOIN entitlement_keys ek CROSS JOIN resource_keys pk");
    let mut sql = String::from("ek.eid = g.entitlement AND pk.kid = g.principal AND g.run_id = ?1");
    let mut args = vec![Sql::Integer(run)];
    match filter.entitlement {
        // One entitlement: a range of the primary key after (eid, start_p).
        // Spelled out, as SQLite would walk the principal index for the
        // row-value form.
        Some(entitlement) => {
            let Some(eid) = file.entitlement_key(entitlement)? else { return Ok(empty()) };
            let after_principal = match start_e.cmp(&eid) {
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => start_p,
                std::cmp::Ordering::Greater => return Ok(empty()),
            };
            args.extend([Sql::Integer(eid), Sql::Integer(after_principal)]);
            sql += " AND g.entitlement = ?2 AND g.principal > ?3";
        }
        None => {
            args.extend([Sql::Integer(start_e), Sql::Integer(start_p)]);
            sql += " AND (g.entitlement, g.principal) > (?2, ?3)";
        }
    }
    if let Some(t) = filter.resource_type {
        from += " CROSS JOIN entitlement_rows e CROSS JOIN resource_keys rk";
        args.push(Sql::Text(t.to_string()));
        sql += &format!(" AND e.run_id = g.run_id AND e.entitlement = g.entitlement AND rk.kid = e.resource AND rk.resource_type = ?{}", args.len());
    }
    if let Some(principal) = filter.principal {
        let Some(kid) = file.resource_key(principal.0, principal.1)? else { return Ok(empty()) };
        args.push(Sql::Integer(kid));
        sql += &format!(" AND g.principal = ?{}", args.len());
    }
    let sql = format!(
        "SELECT g.entitlement, g.principal, coalesce(g.id, ek.id || ':' || pk.resource_type || ':' || pk.id), ek.id, pk.resource_type, pk.id, g.immutable, {GRANT_ATTRIBUTES}
         FROM {from} WHERE {sql} ORDER BY g.entitlement, g.principal LIMIT ?{}",
        args.len() + 1
    );
    page(file, run, &sql, args, 2, limit, |row| grant_from_row(row, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        let c = Cursor { run: 3, after: vec![17, 4] };
        assert_eq!(c.encode(), "r3k17.4");
        assert_eq!(Cursor::decode("r3k17.4", 2), Some(c));
        assert_eq!(Cursor::decode("r3k17", 1), Some(Cursor { run: 3, after: vec![17] }));
        for bad in ["", "nonsense", "r3k17", "r3k17.4.5", "r3k", "rk1.2", "r-1k1.2", "r3k1.-2", "r3k1.+2", "r99999999999999999999k1.2", "r3o17"] {
            assert_eq!(Cursor::decode(bad, 2), None, "{bad}");
        }
    }
}
