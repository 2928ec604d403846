//! The IDs a connector hands out and takes back: entitlements are
//! `TYPE:ID:SLUG` (`team:1201:member`), grants `ENTITLEMENT:TYPE:ID`
//! (`team:1201:member:user:42`). The host treats them as opaque; the
//! connector parses them back on revoke, so the split must be unambiguous.
//!
//! The type runs to the first colon and the slug from the last, so a
//! resource ID may hold colons; a principal ID may not. Upstream IDs that
//! are opaque strings (SCIM's) go through [`escape`] first, which leaves
//! IDs without `:` and `%` (Asana's digits) as they are.

use crate::types::ResourceRef;

// Built with one allocation of the right size (`concat`), not through
// `format!`: a big sync builds two of these for every grant.
pub fn entitlement_id(resource_type: &str, id: &str, slug: &str) -> String {
    [resource_type, ":", id, ":", slug].concat()
}

pub fn grant_id(entitlement_id: &str, principal_type: &str, principal_id: &str) -> String {
    [entitlement_id, ":", principal_type, ":", principal_id].concat()
}

/// An entitlement ID taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementId {
    pub resource: ResourceRef,
    pub slug: String,
}

/// `TYPE:ID:SLUG` taken apart; none when a part is missing or empty.
pub fn split_entitlement(id: &str) -> Option<EntitlementId> {
    let (resource_type, rest) = id.split_once(':')?;
    let (resource_id, slug) = rest.rsplit_once(':')?;
    if resource_type.is_empty() || resource_id.is_empty() || slug.is_empty() {
        return None;
    }
    Some(EntitlementId { resource: ResourceRef { resource_type: resource_type.into(), id: resource_id.into() }, slug: slug.into() })
}

/// `ENTITLEMENT:TYPE:ID` taken apart for a principal of one of
/// `principal_types`: (the entitlement ID, the principal). None when no
/// type fits or the principal ID is empty or holds a colon.
pub fn split_grant<'a>(id: &'a str, principal_types: &[&str]) -> Option<(&'a str, ResourceRef)> {
    // The marker nearest the end wins: an entitlement may name a type too.
    let (entitlement, principal_type, principal_id) =
        principal_types.iter().filter_map(|t| id.rsplit_once(&format!(":{t}:")).map(|(e, p)| (e, *t, p))).max_by_key(|(e, _, _)| e.len())?;
    if entitlement.is_empty() || principal_id.is_empty() || principal_id.contains(':') {
        return None;
    }
    Some((entitlement, ResourceRef { resource_type: principal_type.into(), id: principal_id.into() }))
}

/// An upstream ID made safe to embed: `%` and `:` percent-encoded.
pub fn escape(id: &str) -> String {
    id.replace('%', "%25").replace(':', "%3A")
}

/// [`escape`] undone; none for a malformed escape (`%` not followed by
/// `25` or `3A`), which no ID this connector handed out has.
pub fn unescape(id: &str) -> Option<String> {
    let mut out = String::with_capacity(id.len());
    let mut rest = id;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code.to_ascii_uppercase().as_str() {
            "25" => '%',
            "3A" => ':',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_round_trip_with_colons_in_the_resource_id() {
        let id = entitlement_id("license", "1201:view only", "assigned");
        assert_eq!(id, "license:1201:view only:assigned");
        let parsed = split_entitlement(&id).unwrap();
        assert_eq!(parsed.resource.resource_type, "license");
        assert_eq!(parsed.resource.id, "1201:view only");
        assert_eq!(parsed.slug, "assigned");
        for bad in ["", "team", "team:1", "team::member", ":1:member", "team:1:"] {
            assert_eq!(split_entitlement(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grants_split_at_the_last_principal_marker() {
        let id = grant_id("group:g1:member", "user", "u1");
        assert_eq!(id, "group:g1:member:user:u1");
        let (entitlement, principal) = split_grant(&id, &["user", "group"]).unwrap();
        assert_eq!(entitlement, "group:g1:member");
        assert_eq!((principal.resource_type.as_str(), principal.id.as_str()), ("user", "u1"));
        // A group principal of a group entitlement: the last marker wins.
        let (entitlement, principal) = split_grant("group:g1:member:group:g2", &["user", "group"]).unwrap();
        assert_eq!(entitlement, "group:g1:member");
        assert_eq!(principal.resource_type, "group");
        assert_eq!(split_grant("group:g1:member:user:", &["user"]), None);
        assert_eq!(split_grant("group:g1:member:robot:r", &["user"]), None);
        assert_eq!(split_grant("group:g1:member:user:a:b", &["user"]).map(|(e, _)| e), None);
    }

    #[test]
    fn escaping_round_trips_and_leaves_plain_ids_alone() {
        assert_eq!(escape("1201"), "1201");
        assert_eq!(escape("a:b%c"), "a%3Ab%25c");
        for id in ["", "1201", "a:b%c", "%3A", "::", "é:ü"] {
            assert_eq!(unescape(&escape(id)).as_deref(), Some(id));
        }
        assert_eq!(unescape("a%3ab").as_deref(), Some("a:b"));
        assert_eq!(unescape("a%zz"), None);
        assert_eq!(unescape("a%2"), None);
    }
}
