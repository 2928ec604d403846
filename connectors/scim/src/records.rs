//! Tether records from SCIM resources, IDs, and the connector's metadata.
//!
//! Resource IDs are the server's `id`s as they are. Entitlement and grant
//! IDs embed them escaped (`tether_guest::ids::escape`), since SCIM ids are
//! opaque strings that may hold a colon: `group:GID:member`,
//! `group:GID:member:user:UID` (or `:group:GID2` for a nested group).

use serde_json::Value;
use tether_guest::contract::{ConnectorMetadata, Entitlement, Grant, Resource};
use tether_guest::metadata::{config_field as field, no_limits, resource_type, TypeBuilder};
use tether_guest::page::{pair, resource_ref};
use tether_guest::scim::{resource_id, ENTERPRISE_USER_SCHEMA};
use tether_guest::{http, ids, json, ConnectorError, ResourceRef};

pub const MEMBER: &str = "member";
/// The principal types a group member can be.
pub const PRINCIPAL_TYPES: &[&str] = &["user", "group"];

pub fn metadata() -> ConnectorMetadata {
    ConnectorMetadata {
        name: "scim".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Any SCIM 2.0 service provider (RFC 7643/7644): users, groups and group memberships".into(),
        // A user has no entitlements of its own; its grants are listed only
        // where memberships are read per member (group-members = filter,
        // known after /Schemas), so the type keeps that listing.
        resource_types: vec![
            resource_type("user", "User", "A SCIM User (userName, emails, active, enterprise extension attributes)").without_entitlements(),
            resource_type("group", "Group", "A SCIM Group; its `member` entitlement is granted to its members"),
        ],
        config: vec![
            field("base-url", "The SCIM root: base-url + /Users is the Users endpoint", false, true, None),
            field("token", "Bearer token for the SCIM API", true, true, None),
            field(
                "group-members",
                "auto, attribute or filter: read memberships from groups' `members`, or per user by filter (servers that never return members); auto asks /Schemas",
                false,
                false,
                Some("auto"),
            ),
            field("deactivation-irreversible", "The server cannot reactivate a deactivated user: disable-account is then irreversible", false, false, Some("false")),
            field(
                "remove-member-by-value",
                "Where the server answers 501 to removing a member by path filter, remove it with path members and the member in value; set only for a server known to remove just that member (on one that follows RFC 7644 it removes every member)",
                false,
                false,
                Some("false"),
            ),
        ],
        // The server is wherever base-url says: the operator allows it.
        hosts: vec![],
        // SCIM says nothing of rate limits, and servers differ: the host's
        // defaults (or the operator's) apply.
        limits: no_limits(),
        account_fields: vec![
            field("user-name", "The new user's userName (default: the email)", false, false, None),
            field("external-id", "The new user's externalId", false, false, None),
        ],
    }
}

fn invalid_resource(what: &str) -> ConnectorError {
    http::malformed("SCIM server", what, "a resource without an id")
}

/// A SCIM User as a `user` resource.
pub fn user(raw: &Value) -> Result<Resource, ConnectorError> {
    let id = resource_id(raw).ok_or_else(|| invalid_resource("/Users"))?;
    let user_name = json::text(raw, "userName").unwrap_or_default();
    let emails = json::list(raw, "emails");
    let email = emails.iter().find(|e| json::flag(e, "primary") == Some(true)).or(emails.first()).and_then(|e| json::text(e, "value"));
    let name = json::non_empty(raw, "displayName").or(raw.get("name").and_then(|n| json::non_empty(n, "formatted"))).or(email).unwrap_or(user_name);
    let mut attributes = vec![pair("user_name", user_name), pair("active", json::flag(raw, "active").unwrap_or(true).to_string())];
    if let Some(email) = email {
        attributes.push(pair("email", email));
    }
    for (key, name) in [("externalId", "external_id"), ("title", "title"), ("userType", "user_type")] {
        if let Some(value) = json::non_empty(raw, key) {
            attributes.push(pair(name, value));
        }
    }
    if let Some(extension) = raw.get(ENTERPRISE_USER_SCHEMA) {
        for (key, name) in [
            ("employeeNumber", "employee_number"),
            ("costCenter", "cost_center"),
            ("organization", "organization"),
            ("division", "division"),
            ("department", "department"),
        ] {
            if let Some(value) = json::non_empty(extension, key) {
                attributes.push(pair(name, value));
            }
        }
        if let Some(manager) = extension.get("manager").and_then(|m| json::non_empty(m, "value")) {
            attributes.push(pair("manager_id", manager));
        }
    }
    Ok(Resource { resource_type: "user".into(), id: id.into(), display_name: name.into(), parent: None, attributes })
}

/// A SCIM Group as a `group` resource.
pub fn group(raw: &Value) -> Result<Resource, ConnectorError> {
    let id = resource_id(raw).ok_or_else(|| invalid_resource("/Groups"))?;
    let mut attributes = vec![];
    if let Some(external) = json::non_empty(raw, "externalId") {
        attributes.push(pair("external_id", external));
    }
    let name = json::non_empty(raw, "displayName").unwrap_or(id);
    Ok(Resource { resource_type: "group".into(), id: id.into(), display_name: name.into(), parent: None, attributes })
}

pub fn member_entitlement_id(group_id: &str) -> String {
    ids::entitlement_id("group", &ids::escape(group_id), MEMBER)
}

pub fn member_entitlement(group: &ResourceRef, grantable: bool) -> Entitlement {
    Entitlement {
        id: member_entitlement_id(&group.id),
        resource: group.clone(),
        slug: MEMBER.into(),
        display_name: "Member".into(),
        description: "Member of the group".into(),
        grantable,
    }
}

pub fn member_grant(group_id: &str, principal: &ResourceRef) -> Grant {
    let entitlement_id = member_entitlement_id(group_id);
    Grant {
        id: ids::grant_id(&entitlement_id, &principal.resource_type, &ids::escape(&principal.id)),
        entitlement_id,
        principal: principal.clone(),
        immutable: false,
        attributes: vec![],
    }
}

/// A group's member: a user unless its `type` (or `$ref`) says group.
pub fn member_principal(member: &Value) -> Option<ResourceRef> {
    let id = json::non_empty(member, "value")?;
    let is_group =
        json::text(member, "type").is_some_and(|t| t.eq_ignore_ascii_case("group")) || json::text(member, "$ref").is_some_and(|r| r.contains("/Groups/"));
    Some(resource_ref(if is_group { "group" } else { "user" }, id))
}

/// `group:GID:member` taken apart: the group's id.
pub fn parse_member_entitlement(id: &str) -> Result<String, ConnectorError> {
    let bad = || ConnectorError::InvalidArgument(format!("not a SCIM group membership entitlement (group:GROUP_ID:member): {id:?}"));
    let parsed = ids::split_entitlement(id).ok_or_else(bad)?;
    if parsed.resource.resource_type != "group" || parsed.slug != MEMBER {
        return Err(bad());
    }
    ids::unescape(&parsed.resource.id).filter(|g| !g.is_empty()).ok_or_else(bad)
}

/// `group:GID:member:TYPE:ID` taken apart: the group's id and the member.
pub fn parse_member_grant(id: &str) -> Result<(String, ResourceRef), ConnectorError> {
    let bad = || ConnectorError::InvalidArgument(format!("not a SCIM group membership grant (group:GROUP_ID:member:user:USER_ID): {id:?}"));
    let (entitlement, principal) = ids::split_grant(id, PRINCIPAL_TYPES).ok_or_else(bad)?;
    let group = parse_member_entitlement(entitlement)?;
    let principal_id = ids::unescape(&principal.id).ok_or_else(bad)?;
    Ok((group, resource_ref(&principal.resource_type, &principal_id)))
}

/// A principal a group can have as a member.
pub fn check_principal(principal: &ResourceRef) -> Result<(), ConnectorError> {
    if !PRINCIPAL_TYPES.contains(&principal.resource_type.as_str()) || principal.id.is_empty() {
        return Err(ConnectorError::InvalidArgument(format!(
            "a SCIM group's member is a user or a group with an id, not {}:{:?}",
            principal.resource_type, principal.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attribute<'a>(resource: &'a Resource, name: &str) -> Option<&'a str> {
        resource.attributes.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }

    #[test]
    fn users_carry_core_and_enterprise_attributes() {
        let raw = json!({
            "id": "u1", "userName": "bjensen", "displayName": "Babs Jensen", "active": false,
            "emails": [{"value": "other@example.com"}, {"value": "bjensen@example.com", "primary": true}],
            ENTERPRISE_USER_SCHEMA: {"department": "Tour Operations", "employeeNumber": "701984", "manager": {"value": "u9"}}
        });
        let user = user(&raw).unwrap();
        assert_eq!((user.id.as_str(), user.display_name.as_str()), ("u1", "Babs Jensen"));
        assert_eq!(attribute(&user, "email"), Some("bjensen@example.com"));
        assert_eq!(attribute(&user, "active"), Some("false"));
        assert_eq!(attribute(&user, "department"), Some("Tour Operations"));
        assert_eq!(attribute(&user, "employee_number"), Some("701984"));
        assert_eq!(attribute(&user, "manager_id"), Some("u9"));
        // Sparse users: active by default, named by email or userName.
        let sparse = super::user(&json!({"id": "u2", "userName": "x"})).unwrap();
        assert_eq!((sparse.display_name.as_str(), attribute(&sparse, "active")), ("x", Some("true")));
        assert!(super::user(&json!({"userName": "no id"})).is_err());
        assert!(group(&json!({"id": ""})).is_err());
    }

    #[test]
    fn members_are_users_unless_they_say_group() {
        assert_eq!(member_principal(&json!({"value": "a"})).unwrap().resource_type, "user");
        assert_eq!(member_principal(&json!({"value": "b", "type": "Group"})).unwrap().resource_type, "group");
        assert_eq!(member_principal(&json!({"value": "c", "$ref": "https://h/scim/v2/Groups/c"})).unwrap().resource_type, "group");
        assert!(member_principal(&json!({"display": "no value"})).is_none());
    }

    #[test]
    fn ids_round_trip_even_with_colons_in_scim_ids() {
        let principal = resource_ref("user", "urn:x:42");
        let grant = member_grant("g:1", &principal);
        assert_eq!(grant.entitlement_id, "group:g%3A1:member");
        assert_eq!(grant.id, "group:g%3A1:member:user:urn%3Ax%3A42");
        let (group, member) = parse_member_grant(&grant.id).unwrap();
        assert_eq!((group.as_str(), member), ("g:1", principal));
        assert_eq!(parse_member_entitlement("group:g%3A1:member").unwrap(), "g:1");
        for bad in ["team:1:member", "group:1:admin", "group::member", "group:%zz:member"] {
            assert!(parse_member_entitlement(bad).is_err(), "{bad}");
        }
        assert!(parse_member_grant("group:1:member:robot:2").is_err());
        assert!(check_principal(&resource_ref("robot", "1")).is_err());
    }
}
