//! The identifiers this connector hands out: entitlements are
//! `TYPE:GID:SLUG` (e.g. `team:1201:member`), grants are
//! `ENTITLEMENT:user:USER_GID`. Revoke parses them back.

use crate::tether::connector::types::{ConnectorError, ResourceRef};

pub fn entitlement_id(resource_type: &str, gid: &str, slug: &str) -> String {
    format!("{resource_type}:{gid}:{slug}")
}

pub fn grant_id(entitlement_id: &str, user_gid: &str) -> String {
    format!("{entitlement_id}:user:{user_gid}")
}

/// An entitlement ID taken apart.
pub struct EntitlementId {
    pub resource: ResourceRef,
    pub slug: String,
}

pub fn parse_entitlement(id: &str) -> Result<EntitlementId, ConnectorError> {
    let parts: Vec<&str> = id.split(':').collect();
    match parts.as_slice() {
        [resource_type, gid, slug] if !gid.is_empty() && !slug.is_empty() => {
            Ok(EntitlementId { resource: ResourceRef { resource_type: resource_type.to_string(), id: gid.to_string() }, slug: slug.to_string() })
        }
        _ => Err(ConnectorError::InvalidArgument(format!("not an Asana entitlement ID (TYPE:GID:ROLE): {id:?}"))),
    }
}

/// A grant ID taken apart into its entitlement and the user it is granted to.
pub fn parse_grant(id: &str) -> Result<(EntitlementId, ResourceRef), ConnectorError> {
    let bad = || ConnectorError::InvalidArgument(format!("not an Asana grant ID (TYPE:GID:ROLE:user:GID): {id:?}"));
    let (entitlement, user_gid) = id.rsplit_once(":user:").ok_or_else(bad)?;
    if user_gid.is_empty() || user_gid.contains(':') {
        return Err(bad());
    }
    let entitlement = parse_entitlement(entitlement)?;
    Ok((entitlement, ResourceRef { resource_type: "user".into(), id: user_gid.to_string() }))
}
