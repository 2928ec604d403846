//! Building Tether records from Asana's JSON, and the connector's metadata.

use serde::Deserialize;
use serde_json::Value;
use tether_guest::json::{Flag, Text};

use crate::ids;
use tether_guest::contract::{ConnectorMetadata, Entitlement, Grant, Resource};
use tether_guest::metadata::{config_field as field, limits, resource_type, TypeBuilder};
use tether_guest::types::{ConnectorError, Pair, ResourceRef};

/// The two Asana licenses, as (name, display name). A license resource is
/// one of them in one organization: ID `ORG_GID:NAME` (see `ids`).
pub const LICENSES: &[(&str, &str)] = &[("enterprise", "Enterprise"), ("view only", "View only")];

pub fn metadata() -> ConnectorMetadata {
    ConnectorMetadata {
        name: "asana".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Asana workspaces, teams, users, licenses and their memberships".into(),
        // Workspaces, teams and licenses have roles and members; a user is
        // only ever granted things (its grants come with the memberships).
        resource_types: vec![
            resource_type("workspace", "Workspace", "An Asana workspace or organization"),
            resource_type("team", "Team", "A team inside a workspace").listed_under("workspace"),
            resource_type("user", "User", "An Asana user, one resource however many workspaces they are in")
                .listed_under("workspace")
                .without_entitlements()
                .without_grants(),
            resource_type(
                "license",
                "License",
                "An Asana license of one organization (ID ORG_GID:enterprise or ORG_GID:view only); plain workspaces have none",
            )
            .listed_under("workspace"),
        ],
        config: vec![
            field("token", "Asana personal access token or service account token", true, true, None),
            field("use-service-account", "The token is an Asana service account's (Enterprise); needed for SCIM", false, false, Some("false")),
            field(
                "use-scim-api",
                "Read users and licenses from Asana's SCIM API and change licenses and accounts through it; needs use-service-account",
                false,
                false,
                Some("false"),
            ),
            field("default-workspace-id", "Workspace gid that new accounts join when the request names none", false, false, None),
            field("asana-api-url", "Base URL of Asana's REST API (override for test servers)", false, false, Some(crate::settings::DEFAULT_API_URL)),
            field("scim-url", "Base URL of Asana's SCIM API (default: asana-api-url + /scim)", false, false, None),
        ],
        hosts: vec!["app.asana.com".into()],
        // Asana's limits per token: 1,500 requests a minute (paid plans),
        // 50 concurrent GETs and 15 concurrent writes.
        limits: limits(1_500, 50, 15),
        account_fields: vec![
            field("workspace", "Workspace gid to add the user to (REST; default: default-workspace-id)", false, false, None),
            field("license", "\"enterprise\" or \"view only\" (SCIM only; default \"view only\")", false, false, Some("view only")),
        ],
    }
}

pub fn entitlement(resource: &ResourceRef, slug: &str, name: &str, description: &str, grantable: bool) -> Entitlement {
    Entitlement {
        id: ids::entitlement_id(&resource.resource_type, &resource.id, slug),
        resource: resource.clone(),
        slug: slug.into(),
        display_name: name.into(),
        description: description.into(),
        grantable,
    }
}

pub fn grant(resource: &ResourceRef, slug: &str, user_gid: &str, immutable: bool, attributes: Vec<Pair>) -> Grant {
    let entitlement_id = ids::entitlement_id(&resource.resource_type, &resource.id, slug);
    Grant { id: ids::grant_id(&entitlement_id, user_gid), entitlement_id, principal: user_ref(user_gid), immutable, attributes }
}

/// `user_gid` holds `license` in organization `org`.
pub fn license_grant(org: &str, license: &str, user_gid: &str, immutable: bool) -> Grant {
    grant(&license_ref(org, license), "assigned", user_gid, immutable, vec![])
}

pub fn license_ref(org: &str, license: &str) -> ResourceRef {
    ResourceRef { resource_type: "license".into(), id: ids::license_resource_id(org, license) }
}

/// The licenses of an organization, as resources under it.
pub fn license_resources(organization: &ResourceRef) -> Vec<Resource> {
    LICENSES
        .iter()
        .map(|(license, name)| Resource {
            resource_type: "license".into(),
            id: ids::license_resource_id(&organization.id, license),
            display_name: name.to_string(),
            parent: Some(organization.clone()),
            attributes: vec![pair("license", license.to_string()), pair("organization", organization.id.clone())],
        })
        .collect()
}

pub fn user_ref(gid: &str) -> ResourceRef {
    ResourceRef { resource_type: "user".into(), id: gid.into() }
}

pub fn workspace_resource(item: &Value) -> Result<Resource, ConnectorError> {
    let gid = gid(item)?;
    Ok(Resource {
        resource_type: "workspace".into(),
        id: gid.clone(),
        display_name: text(item, "name").unwrap_or(&gid).to_string(),
        parent: None,
        attributes: vec![pair("is_organization", flag(item, "is_organization").to_string())],
    })
}

pub fn team_resource(item: &Value, workspace: &ResourceRef) -> Result<Resource, ConnectorError> {
    let gid = gid(item)?;
    let mut attributes = vec![];
    if let Some(description) = text(item, "description").filter(|d| !d.is_empty()) {
        attributes.push(pair("description", description.to_string()));
    }
    Ok(Resource {
        resource_type: "team".into(),
        id: gid.clone(),
        display_name: text(item, "name").unwrap_or(&gid).to_string(),
        parent: Some(workspace.clone()),
        attributes,
    })
}

/// A workspace or team membership, as the listings and writes read it:
/// only these fields are parsed (the big listings are pages of these), and
/// a flag of another type reads as unset, as `flag` reads one.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Membership {
    pub user: Option<User>,
    pub is_admin: Flag,
    pub is_guest: Flag,
    pub is_limited_access: Flag,
    pub is_active: Flag,
    pub is_view_only: Flag,
}

impl Membership {
    pub fn into_user(self) -> Result<User, ConnectorError> {
        self.user.ok_or_else(no_user)
    }

    /// Whether the membership is active (Asana omits the flag on teams).
    pub fn is_active(&self) -> bool {
        self.is_active.or(true)
    }
}

fn no_user() -> ConnectorError {
    ConnectorError::Upstream("membership without a user".into())
}

pub fn no_gid() -> ConnectorError {
    ConnectorError::Upstream("an Asana user without a gid, or whose gid is not a string".into())
}

/// A REST user object: a membership's `user` or an item of `/users`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct User {
    pub gid: Text,
    pub name: Text,
    pub email: Text,
}

/// A REST user as a resource (memberships name users without email; the
/// host merges the attributes of every report of the same user).
pub fn user_resource(user: User) -> Result<Resource, ConnectorError> {
    let id = user.gid.non_empty().ok_or_else(no_gid)?;
    let mut attributes = vec![];
    let email = user.email.0;
    let display_name = match (user.name.0, &email) {
        (Some(name), _) => name,
        (None, Some(email)) => email.clone(),
        (None, None) => id.clone(),
    };
    if let Some(email) = email {
        attributes.push(pair("email", email));
    }
    Ok(Resource { resource_type: "user".into(), display_name, id, parent: None, attributes })
}

pub fn gid(item: &Value) -> Result<String, ConnectorError> {
    text(item, "gid")
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ConnectorError::Upstream(format!("Asana object without a gid, or whose gid is not a string: {}", truncate(&item.to_string()))))
}

pub use tether_guest::json::text;

pub fn flag(item: &Value, key: &str) -> bool {
    item.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub fn pair(name: &str, value: String) -> Pair {
    Pair { name: name.into(), value }
}

pub use tether_guest::page::empty as empty_page;

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(120) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}
