//! Query-string handling shared by the REST endpoints: `limit`/`offset` pagination with
//! opaque offset tokens, and `opt_fields` projection.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Real Asana refuses unpaginated lists past roughly this size.
pub(crate) const MAX_UNPAGINATED: usize = 1000;

/// Parameters that shape the response rather than select the data; they are left out of
/// the key an offset token is bound to.
const PRESENTATION_PARAMS: &[&str] = &["limit", "offset", "opt_fields", "opt_pretty", "pretty", "opt_expand"];

/// The parsed query string, in request order.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let pairs =
            serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or("")).map_err(|_| ApiError::bad_request("Could not parse the query string"))?;
        Ok(Query { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `limit` must be an integer in 1..=100 when present.
    pub fn limit(&self) -> Result<Option<usize>, ApiError> {
        let Some(raw) = self.get("limit") else {
            return Ok(None);
        };
        match raw.trim().parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!("limit: Not a valid limit: {raw}. The value must be an integer between 1 and 100."))),
        }
    }

    /// The requested fields, or None for the endpoint's default (compact) form.
    pub fn opt_fields(&self) -> Option<Vec<String>> {
        let raw = self.get("opt_fields")?;
        let fields: Vec<String> = raw.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_string).collect();
        (!fields.is_empty()).then_some(fields)
    }

    pub fn pretty(&self) -> bool {
        ["opt_pretty", "pretty"].iter().any(|k| matches!(self.get(k), Some("" | "true" | "1")))
    }

    /// What an offset token is bound to: the path plus the filters (not limit/opt_fields),
    /// so a token from one listing is rejected by another.
    fn listing_key(&self, path: &str) -> String {
        let mut filters: Vec<String> = self.pairs.iter().filter(|(k, _)| !PRESENTATION_PARAMS.contains(&k.as_str())).map(|(k, v)| format!("{k}={v}")).collect();
        filters.sort();
        format!("{path}?{}", filters.join("&"))
    }
}

/// Contents of an offset token. Keyset (the last gid served) rather than a position, so
/// writes between pages neither skip nor repeat items.
#[derive(Serialize, Deserialize)]
struct OffsetToken {
    after: String,
    key: String,
}

fn encode_offset(after: &str, key: &str) -> String {
    let token = OffsetToken { after: after.to_string(), key: key.to_string() };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_offset(raw: &str, key: &str) -> Result<u64, ApiError> {
    let invalid = || ApiError::bad_request("offset: Your pagination token is invalid or has expired.");
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| invalid())?;
    let token: OffsetToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.key != key {
        return Err(invalid());
    }
    token.after.parse().map_err(|_| invalid())
}

pub(crate) fn gid_num(gid: &str) -> u64 {
    gid.parse().unwrap_or(u64::MAX)
}

/// The part of `sorted` (ascending by gid) that the query's page can come
/// from: from its offset on, at most one more than its limit (which tells
/// `paginate` whether there is a next page). Found by binary search, so a
/// page of a big list costs what is on it.
pub(crate) fn window<'s, 'g, T>(sorted: &'s [T], gid_of: impl Fn(&T) -> &'g str, query: &Query, path: &str) -> Result<&'s [T], ApiError> {
    let limit = query.limit()?;
    let start = match query.get("offset") {
        Some(raw) => {
            let after = decode_offset(raw, &query.listing_key(path))?;
            sorted.partition_point(|t| gid_num(gid_of(t)) <= after)
        }
        None => 0,
    };
    let rest = &sorted[start..];
    Ok(match limit {
        Some(limit) => &rest[..rest.len().min(limit + 1)],
        None => rest,
    })
}

/// One page of a listing.
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    /// Present when `limit` was given: `Some(None)` on the last page (`next_page: null`).
    pub next: Option<Option<Value>>,
}

/// Sorts `items` by gid and cuts the page the query asks for.
pub(crate) fn paginate<T>(mut items: Vec<T>, gid_of: impl Fn(&T) -> &str, query: &Query, path: &str, base_url: &str) -> Result<Page<T>, ApiError> {
    let limit = query.limit()?;
    let key = query.listing_key(path);
    items.sort_by_cached_key(|t| gid_num(gid_of(t)));
    if let Some(raw) = query.get("offset") {
        let after = decode_offset(raw, &key)?;
        items.retain(|t| gid_num(gid_of(t)) > after);
    }
    let Some(limit) = limit else {
        if items.len() > MAX_UNPAGINATED {
            return Err(ApiError::bad_request("The result is too large. You should use pagination (may require specifying a workspace)!"));
        }
        return Ok(Page { items, next: None });
    };
    let more = items.len() > limit;
    items.truncate(limit);
    let next = match (more, items.last()) {
        (true, Some(last)) => {
            let offset = encode_offset(gid_of(last), &key);
            let mut pairs: Vec<(&str, &str)> = query.pairs.iter().filter(|(k, _)| k != "offset").map(|(k, v)| (k.as_str(), v.as_str())).collect();
            pairs.push(("offset", &offset));
            let qs = serde_urlencoded::to_string(&pairs).unwrap_or_default();
            let rel = format!("{path}?{qs}");
            Some(json!({"offset": offset, "path": rel, "uri": format!("{base_url}{rel}")}))
        }
        _ => None,
    };
    Ok(Page { items, next: Some(next) })
}

/// Renders a resource: the requested `opt_fields`, or its compact form.
/// `full` carries every field; nested objects in it may carry more than their compact form.
pub(crate) fn render(full: &Value, fields: Option<&[String]>, compact_keys: &[&str]) -> Value {
    match fields {
        Some(fields) => project(full, &fields.iter().map(String::as_str).collect::<Vec<_>>()),
        None => compact(full, compact_keys),
    }
}

/// `keys` of `full`, with nested resources cut down to gid/resource_type/name.
pub(crate) fn compact(full: &Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    for &k in keys {
        if let Some(v) = full.get(k) {
            out.insert(k.to_string(), compact_nested(v));
        }
    }
    Value::Object(out)
}

fn compact_nested(v: &Value) -> Value {
    match v {
        Value::Object(obj) if obj.contains_key("gid") => {
            let keep = ["gid", "resource_type", "name"];
            Value::Object(obj.iter().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(compact_nested).collect()),
        other => other.clone(),
    }
}

/// Keeps `gid` plus the listed fields; `a.b` selects `b` inside `a`. A nested resource
/// asked for without sub-fields comes back as just its gid, as Asana does.
/// Unknown fields are ignored.
pub(crate) fn project(full: &Value, fields: &[&str]) -> Value {
    match full {
        Value::Array(items) => Value::Array(items.iter().map(|i| project(i, fields)).collect()),
        Value::Object(obj) => {
            let mut out = Map::new();
            if let Some(gid) = obj.get("gid") {
                out.insert("gid".into(), gid.clone());
            }
            // Group "a", "a.b", "a.c" under "a" keeping first-seen order.
            let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
            for f in fields {
                let (head, rest) = match f.split_once('.') {
                    Some((h, r)) => (h, Some(r)),
                    None => (*f, None),
                };
                let idx = match groups.iter().position(|(h, _)| *h == head) {
                    Some(i) => i,
                    None => {
                        groups.push((head, Vec::new()));
                        groups.len() - 1
                    }
                };
                if let Some(r) = rest {
                    groups[idx].1.push(r);
                }
            }
            for (head, sub) in groups {
                let Some(v) = obj.get(head) else { continue };
                let projected = if sub.is_empty() { gid_only(v) } else { project(v, &sub) };
                out.insert(head.to_string(), projected);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn gid_only(v: &Value) -> Value {
    match v {
        Value::Object(obj) if obj.contains_key("gid") => json!({"gid": obj["gid"]}),
        Value::Array(items) => Value::Array(items.iter().map(gid_only).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_selects_nested_fields() {
        let full = json!({
            "gid": "1", "resource_type": "team_membership", "is_admin": true,
            "user": {"gid": "2", "resource_type": "user", "name": "A", "email": "a@x"},
            "team": {"gid": "3", "resource_type": "team", "name": "T"},
        });
        let p = project(&full, &["user.name", "user.email", "is_admin", "team", "bogus"]);
        assert_eq!(p, json!({"gid": "1", "user": {"gid": "2", "name": "A", "email": "a@x"}, "is_admin": true, "team": {"gid": "3"}}));
        let c = compact(&full, &["gid", "resource_type", "user", "team"]);
        assert_eq!(c["user"], json!({"gid": "2", "resource_type": "user", "name": "A"}));
        assert!(c.get("is_admin").is_none());
    }

    #[test]
    fn offsets_are_bound_to_their_listing() {
        let tok = encode_offset("5", "/a?");
        assert_eq!(decode_offset(&tok, "/a?").unwrap(), 5);
        assert!(decode_offset(&tok, "/b?").is_err());
        assert!(decode_offset("garbage!", "/a?").is_err());
    }

    /// Walking a sorted list through `window` then `paginate` gives the
    /// pages a sort and filter of the whole list gave, whatever the limit.
    #[test]
    fn a_window_then_paginate_gives_the_pages_of_the_whole_list() {
        let owned: Vec<String> = (0..257).map(|i| (1_000 + i * 3).to_string()).collect();
        let gids: Vec<&str> = owned.iter().map(String::as_str).collect();
        for limit in [1, 7, 100] {
            let mut pages = Vec::new();
            let mut offset: Option<String> = None;
            loop {
                let raw = match &offset {
                    Some(o) => format!("limit={limit}&offset={o}"),
                    None => format!("limit={limit}"),
                };
                let query = Query::parse(Some(&raw)).unwrap();
                let part = window(&gids, |g| *g, &query, "/users").unwrap();
                assert!(part.len() <= limit + 1);
                assert_eq!(part.first(), gids.get(pages.len()), "the window starts at the page");
                let page = paginate(part.to_vec(), |g| *g, &query, "/users", "http://x").unwrap();
                pages.extend(page.items);
                match page.next {
                    Some(Some(next)) => offset = Some(next["offset"].as_str().unwrap().to_string()),
                    _ => break,
                }
            }
            assert_eq!(pages, gids, "limit {limit}");
        }
        let other = Query::parse(Some(&format!("limit=5&offset={}", encode_offset("1003", "/teams?")))).unwrap();
        assert!(window(&gids, |g| *g, &other, "/users").is_err(), "a token of another listing is refused");
    }
}
