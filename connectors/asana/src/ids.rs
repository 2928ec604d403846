//! The identifiers this connector hands out: entitlements are
//! `TYPE:ID:SLUG` (e.g. `team:1201:member`), grants are
//! `ENTITLEMENT:user:USER_GID`. Revoke parses them back.
//!
//! Most resource IDs are Asana gids. A license belongs to one organization,
//! so its resource ID is `ORG_GID:LICENSE` (`1201:enterprise`,
//! `1201:view only`), its entitlement `license:1201:enterprise:assigned`.

use crate::records::LICENSES;
use tether_guest::types::{ConnectorError, ResourceRef};

pub use tether_guest::ids::{entitlement_id, EntitlementId};

pub fn grant_id(entitlement_id: &str, user_gid: &str) -> String {
    tether_guest::ids::grant_id(entitlement_id, "user", user_gid)
}

/// The resource ID of `license` in organization `org`.
pub fn license_resource_id(org: &str, license: &str) -> String {
    format!("{org}:{license}")
}

/// A license resource ID taken apart: (organization gid, license).
pub fn parse_license(id: &str) -> Result<(&str, &'static str), ConnectorError> {
    let bad = || {
        ConnectorError::InvalidArgument(format!("not an Asana license (ORG_GID:enterprise or ORG_GID:view only; licenses belong to one organization): {id:?}"))
    };
    let (org, name) = id.split_once(':').ok_or_else(bad)?;
    if org.is_empty() || !org.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let license = LICENSES.iter().map(|(l, _)| *l).find(|l| *l == name).ok_or_else(bad)?;
    Ok((org, license))
}

/// `TYPE:ID:SLUG`: the type runs to the first colon, the slug from the
/// last; the ID between them may hold colons (licenses' does).
pub fn parse_entitlement(id: &str) -> Result<EntitlementId, ConnectorError> {
    let bad = || ConnectorError::InvalidArgument(format!("not an Asana entitlement ID (TYPE:ID:ROLE): {id:?}"));
    let parsed = tether_guest::ids::split_entitlement(id).ok_or_else(bad)?;
    if parsed.resource.resource_type == "license" {
        parse_license(&parsed.resource.id)?;
    } else if parsed.resource.id.contains(':') {
        return Err(bad());
    }
    Ok(parsed)
}

/// A grant ID taken apart into its entitlement and the user it is granted to.
pub fn parse_grant(id: &str) -> Result<(EntitlementId, ResourceRef), ConnectorError> {
    let bad = || ConnectorError::InvalidArgument(format!("not an Asana grant ID (TYPE:ID:ROLE:user:GID): {id:?}"));
    let (entitlement, user) = tether_guest::ids::split_grant(id, &["user"]).ok_or_else(bad)?;
    Ok((parse_entitlement(entitlement)?, user))
}
