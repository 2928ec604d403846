//! `tether report`'s page: one self-contained HTML file for an access
//! review — who holds which entitlement on which resource, the counts, and
//! what changed since the previous good sync — with filters and a search
//! that run in the browser, offline.
//!
//! The page is a template (`page.html`, with `page.css`, `errors.js` and
//! `page.js` put in at build time) and one JSON data block. Everything from
//! the sync file is data: it goes into the block as JSON with `<`, `>` and
//! `&` escaped (so no string can end the block or open a tag), and the
//! script shows it as text. The page's Content-Security-Policy allows its
//! own style and scripts (by hash) and nothing else: no request leaves it.
//!
//! The data is streamed from the sync file to the output (rows of
//! `review::for_each_grant_in`, differences of `review::diff`), so memory
//! stays flat here; the browser then holds the whole page, which is what
//! limits the size of a sync a page can show (see `BIG_PAGE_BYTES`).

use std::io::{self, Write};

use anyhow::Result;
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::sync::review::{self, Change, GrantOrder, Kind};
use crate::sync::sync_file::{RunInfo, Table};
use crate::sync::SyncFile;

const TEMPLATE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const ERRORS_JS: &str = include_str!("errors.js");
const PAGE_JS: &str = include_str!("page.js");

/// Past this size a page gets slow to open (the browser parses all of it
/// and keeps every row in memory): about 650k grants, at some 150 bytes
/// each (241k grants made 36 MiB, which headless Chromium opened in 7 s).
pub const BIG_PAGE_BYTES: u64 = 100 << 20;

/// What a report holds, and how big it came out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReportStats {
    pub grants: u64,
    pub changes: u64,
    pub bytes: u64,
}

/// The run the page is about, or the run it is compared with.
#[derive(Serialize)]
struct RunMeta<'a> {
    id: i64,
    started_at: &'a str,
    ended_at: Option<&'a str>,
    connector_name: &'a str,
    connector_version: &'a str,
    connector_digest: &'a str,
    http_requests: i64,
}

impl<'a> From<&'a RunInfo> for RunMeta<'a> {
    fn from(run: &'a RunInfo) -> Self {
        RunMeta {
            id: run.id,
            started_at: &run.started_at,
            ended_at: run.ended_at.as_deref(),
            connector_name: &run.connector_name,
            connector_version: &run.connector_version,
            connector_digest: &run.connector_digest,
            http_requests: run.http_requests,
        }
    }
}

/// The file's newest run, if it is newer than `run` and did not succeed
/// (failed, interrupted, or still running).
pub fn newer_unsuccessful_run(file: &SyncFile, run: &RunInfo) -> Option<RunInfo> {
    file.last_run().ok().flatten().filter(|newest| newest.id > run.id && newest.status != "succeeded")
}

/// The run to compare with: the good run before `run`, or why there is none.
pub fn previous_run(file: &SyncFile, run: &RunInfo) -> std::result::Result<RunInfo, String> {
    review::good_run_before(file, run.id).map_err(|e| format!("Nothing to compare with: {e:#}."))
}

/// Writes the page for `run` of `file` (shown as `file_label`), with the
/// changes since `previous` (or, with none, `Err(why)`) highlighted.
pub fn write(file: &SyncFile, file_label: &str, run: &RunInfo, previous: std::result::Result<&RunInfo, &str>, out: impl Write) -> Result<ReportStats> {
    let mut out = Counting { inner: out, bytes: 0 };
    let (head, tail) = TEMPLATE.split_once("{{DATA}}").expect("the template has a {{DATA}} slot");
    let head = head.replace("{{CSP}}", &content_security_policy()).replace("{{ERRORS_JS}}", ERRORS_JS).replace("{{STYLE}}", STYLE);
    out.write_all(head.as_bytes())?;
    let mut stats = write_data(file, file_label, run, previous, &mut ScriptSafe(&mut out))?;
    out.write_all(tail.replace("{{PAGE_JS}}", PAGE_JS).as_bytes())?;
    out.flush()?;
    stats.bytes = out.bytes;
    Ok(stats)
}

/// The page's policy: its own style and scripts, by hash; nothing else,
/// and no request anywhere (`default-src 'none'`).
fn content_security_policy() -> String {
    let hash = |text: &str| format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes())));
    format!(
        "default-src 'none'; script-src {} {}; style-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        hash(ERRORS_JS),
        hash(PAGE_JS),
        hash(STYLE)
    )
}

/// The data block, as page.js reads it.
fn write_data(file: &SyncFile, file_label: &str, run: &RunInfo, previous: std::result::Result<&RunInfo, &str>, out: &mut impl Write) -> Result<ReportStats> {
    let mut stats = ReportStats::default();
    let types = review::resource_types(file, run)?;
    let resources: i64 = types.iter().map(|t| t.resources).sum();
    write!(out, "{{\"file\":")?;
    serde_json::to_writer(&mut *out, file_label)?;
    write!(out, ",\"run\":")?;
    serde_json::to_writer(&mut *out, &RunMeta::from(run))?;
    write!(out, ",\"types\":")?;
    serde_json::to_writer(&mut *out, &types)?;
    let counts = serde_json::json!({
        "resources": resources,
        "entitlements": file.count(run.id, Table::Entitlements)?,
        "grants": file.count(run.id, Table::Grants)?,
    });
    write!(out, ",\"counts\":{counts}")?;
    // The newest attempt, if it came after this run and did not succeed:
    // an auditor reading an older good run is told a newer one failed.
    write!(out, ",\"newer_attempt\":")?;
    let newer = newer_unsuccessful_run(file, run);
    let newer = newer.as_ref().map(|r| serde_json::json!({"id": r.id, "started_at": r.started_at, "status": r.status, "error": r.error}));
    serde_json::to_writer(&mut *out, &newer)?;

    write!(out, ",\"previous\":")?;
    match previous {
        Ok(before) => {
            serde_json::to_writer(&mut *out, &RunMeta::from(before))?;
            write!(out, ",\"diff_note\":null,\"changes\":[")?;
            let counts = review::diff(file, before.id, file, run.id, |d| {
                if stats.changes > 0 {
                    out.write_all(b",")?;
                }
                stats.changes += 1;
                let fields: Vec<(&str, &Value, &Value)> = d.changes.iter().map(|c| (c.field.as_str(), &c.from, &c.to)).collect();
                serde_json::to_writer(&mut *out, &(d.change, d.kind, &d.id, &d.name, &d.on, fields, highlight_key(d)))?;
                Ok(())
            })?;
            let per_kind = |kind| [Change::Added, Change::Removed, Change::Changed].map(|change| counts.get(kind, change));
            let diff_counts = serde_json::json!({
                "resource": per_kind(Kind::Resource),
                "entitlement": per_kind(Kind::Entitlement),
                "grant": per_kind(Kind::Grant),
            });
            write!(out, "],\"diff_counts\":{diff_counts}")?;
        }
        Err(why) => {
            write!(out, "null,\"diff_note\":")?;
            serde_json::to_writer(&mut *out, why)?;
            write!(out, ",\"changes\":[],\"diff_counts\":null")?;
        }
    }

    write!(out, ",\"grants\":[")?;
    stats.grants = review::for_each_grant_in(file, run, GrantOrder::Resource, |g| {
        if stats.grants > 0 {
            out.write_all(b",")?;
        }
        stats.grants += 1;
        let row = (
            &g.resource_type,
            &g.resource_id,
            &g.resource_name,
            &g.entitlement_id,
            &g.entitlement_name,
            &g.principal_type,
            &g.principal_id,
            &g.principal_name,
            &g.principal_email,
            u8::from(g.revocable),
        );
        serde_json::to_writer(&mut *out, &row)?;
        Ok(())
    })?;
    write!(out, "]}}")?;
    Ok(stats)
}

/// What page.js matches a difference with in the table: a grant's
/// entitlement and principal (`ENTITLEMENT\nTYPE:ID`), a resource's `TYPE:ID`.
fn highlight_key(d: &review::Difference) -> String {
    match d.kind {
        Kind::Grant => {
            let fields = d.after.as_ref().or(d.before.as_ref());
            let field = |name: &str| fields.and_then(|f| f.get(name)).and_then(Value::as_str).unwrap_or_default().to_string();
            format!("{}\n{}", field("entitlement"), field("principal"))
        }
        _ => d.id.clone(),
    }
}

/// JSON made safe inside `<script type="application/json">`: `<`, `>` and
/// `&` become `\u003c`, `\u003e`, `\u0026`, so no string in it can close
/// the element (`</script>`) or open a comment. JSON has these characters
/// only inside strings, where the escapes mean the same; and a UTF-8
/// multi-byte character never contains an ASCII byte, so bytes are safe
/// to scan one by one.
struct ScriptSafe<W>(W);

impl<W: Write> Write for ScriptSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for (i, byte) in buf.iter().enumerate() {
            let escaped: &[u8] = match byte {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.write_all(&buf[start..i])?;
            self.0.write_all(escaped)?;
            start = i + 1;
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Counts the bytes written, to tell the operator how big the page is.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_in_the_data_can_close_the_script_element() {
        let mut out = Vec::new();
        let hostile = "</script><script>alert(1)</script><!-- & </SCRIPT >";
        serde_json::to_writer(ScriptSafe(&mut out), &serde_json::json!({ "name": hostile })).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'), "{text}");
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["name"], hostile, "the escapes mean the same string");
    }

    #[test]
    fn the_template_has_every_slot_and_the_policy_hashes_what_runs() {
        for slot in ["{{CSP}}", "{{ERRORS_JS}}", "{{STYLE}}", "{{DATA}}", "{{PAGE_JS}}"] {
            assert_eq!(TEMPLATE.matches(slot).count(), 1, "{slot}");
        }
        for part in [STYLE, ERRORS_JS, PAGE_JS] {
            assert!(!part.contains("</script") && !part.contains("</style") && !part.contains("{{"), "a part would break the page");
        }
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none';") && csp.matches("'sha256-").count() == 3, "{csp}");
        assert!(!PAGE_JS.contains("innerHTML") && !PAGE_JS.contains("insertAdjacentHTML") && !PAGE_JS.contains("document.write"));
    }
}
