//! How Asana's objects become Tether's model: workspaces and teams are
//! resources, their roles are entitlements, memberships are grants.

use serde_json::{json, Value};

use crate::client::Client;
use crate::exports::tether::connector::connector::{
    AccountRequest, ConfigField, Entitlement, Grant, ConnectorMetadata, Outcome, Page, Resource, ResourceType,
    WriteResult,
};
use crate::ids;
use crate::tether::connector::config;
use crate::tether::connector::types::{ConnectorError, Pair, ResourceRef};

const WORKSPACE_FIELDS: &str = "name,is_organization,email_domains";
const TEAM_FIELDS: &str = "name,description";
const USER_FIELDS: &str = "name,email";
// Asana's spec allows only `user.name` of the user inside a membership, so
// emails come from one paged pass over `/users?workspace=` (never
// `/workspaces/{gid}/users`, which stops at 2000 users).
const WORKSPACE_MEMBERSHIP_FIELDS: &str = "user.name,is_admin,is_guest,is_active,is_view_only";
const TEAM_MEMBERSHIP_FIELDS: &str = "user.name,is_admin,is_guest,is_limited_access";

/// Workspace roles: (slug, display name, description, grantable through the API).
const WORKSPACE_ROLES: &[(&str, &str, &str, bool)] = &[
    ("admin", "Admin", "Administers the workspace or organization", false),
    ("member", "Member", "A full member of the workspace", true),
    ("guest", "Guest", "A guest with access to what is shared with them", false),
];

/// Team roles, same shape. Only plain membership can be changed through
/// Asana's API (addUser / removeUser).
const TEAM_ROLES: &[(&str, &str, &str, bool)] = &[
    ("member", "Member", "A member of the team", true),
    ("admin", "Admin", "Administers the team", false),
    ("limited-access", "Limited access", "A member who sees only what is shared with them", false),
    ("guest", "Guest", "A guest member of the team", false),
];

pub fn metadata() -> ConnectorMetadata {
    let field = |key: &str, description: &str, secret: bool, required: bool, default: Option<&str>| ConfigField {
        key: key.into(),
        description: description.into(),
        secret,
        required,
        default_value: default.map(str::to_string),
    };
    let resource_type = |id: &str, name: &str, description: &str, listed_under: Option<&str>| ResourceType {
        id: id.into(),
        display_name: name.into(),
        description: description.into(),
        listed_under: listed_under.map(str::to_string),
    };
    ConnectorMetadata {
        name: "asana".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Asana workspaces, teams, users and their memberships".into(),
        resource_types: vec![
            resource_type("workspace", "Workspace", "An Asana workspace or organization", None),
            resource_type("team", "Team", "A team inside a workspace", Some("workspace")),
            resource_type("user", "User", "An Asana user (listed per workspace, one resource per user)", Some("workspace")),
        ],
        config: vec![
            field("token", "Asana personal access token or service account token", true, true, None),
            field("asana-api-url", "Base URL of Asana's REST API (override for test servers)", false, false, Some(crate::client::DEFAULT_API_URL)),
            field("default-workspace-id", "Workspace new accounts are added to when the request names none", false, false, None),
        ],
        hosts: vec!["app.asana.com".into()],
        account_fields: vec![field("workspace", "GID of the workspace to add the user to", false, false, None)],
    }
}

pub fn list_resources(client: &Client, resource_type: &str, scope: Option<&ResourceRef>, token: Option<&str>) -> Result<Page, ConnectorError> {
    match (resource_type, scope) {
        ("workspace", None) => {
            let page = client.list("/workspaces", &[], WORKSPACE_FIELDS, token)?;
            let resources = page.items.iter().map(workspace_resource).collect::<Result<_, _>>()?;
            Ok(Page { resources, entitlements: vec![], grants: vec![], next_token: page.next_offset })
        }
        ("team", Some(workspace)) if workspace.resource_type == "workspace" => {
            let path = format!("/workspaces/{}/teams", workspace.id);
            let page = client.list(&path, &[], TEAM_FIELDS, token)?;
            let resources = page.items.iter().map(|team| team_resource(team, workspace)).collect::<Result<_, _>>()?;
            Ok(Page { resources, entitlements: vec![], grants: vec![], next_token: page.next_offset })
        }
        ("user", Some(workspace)) if workspace.resource_type == "workspace" => {
            let page = client.list("/users", &[("workspace", &workspace.id)], USER_FIELDS, token)?;
            let resources = page.items.iter().map(user_resource).collect::<Result<_, _>>()?;
            Ok(Page { resources, entitlements: vec![], grants: vec![], next_token: page.next_offset })
        }
        _ => Err(ConnectorError::InvalidArgument(format!(
            "no resources of type {resource_type:?} under {:?}",
            scope.map(|p| format!("{}:{}", p.resource_type, p.id))
        ))),
    }
}

pub fn list_entitlements(resource: &ResourceRef) -> Result<Page, ConnectorError> {
    let roles = match resource.resource_type.as_str() {
        "workspace" => WORKSPACE_ROLES,
        "team" => TEAM_ROLES,
        "user" => &[],
        other => return Err(ConnectorError::InvalidArgument(format!("unknown resource type {other:?}"))),
    };
    let entitlements = roles
        .iter()
        .map(|(slug, name, description, grantable)| Entitlement {
            id: ids::entitlement_id(&resource.resource_type, &resource.id, slug),
            resource: resource.clone(),
            slug: slug.to_string(),
            display_name: name.to_string(),
            description: description.to_string(),
            grantable: *grantable,
        })
        .collect();
    Ok(Page { entitlements, ..empty_page() })
}

pub fn list_grants(client: &Client, resource: &ResourceRef, token: Option<&str>) -> Result<Page, ConnectorError> {
    match resource.resource_type.as_str() {
        "workspace" => {
            let path = format!("/workspaces/{}/workspace_memberships", resource.id);
            let page = client.list(&path, &[], WORKSPACE_MEMBERSHIP_FIELDS, token)?;
            let mut out = Page { next_token: page.next_offset, ..empty_page() };
            for membership in &page.items {
                let user = user_resource(membership_user(membership)?)?;
                let role = if flag(membership, "is_admin") {
                    "admin"
                } else if flag(membership, "is_guest") {
                    "guest"
                } else {
                    "member"
                };
                let attributes = vec![
                    pair("is_active", bool_text(flag_or(membership, "is_active", true))),
                    pair("is_view_only", bool_text(flag(membership, "is_view_only"))),
                ];
                out.grants.push(grant_record(resource, role, &user.id, role != "member", attributes));
                out.resources.push(user);
            }
            Ok(out)
        }
        "team" => {
            let path = format!("/teams/{}/team_memberships", resource.id);
            let page = client.list(&path, &[], TEAM_MEMBERSHIP_FIELDS, token)?;
            let mut out = Page { next_token: page.next_offset, ..empty_page() };
            for membership in &page.items {
                let user = user_resource(membership_user(membership)?)?;
                let role = if flag(membership, "is_admin") {
                    "admin"
                } else if flag(membership, "is_limited_access") {
                    "limited-access"
                } else if flag(membership, "is_guest") {
                    "guest"
                } else {
                    "member"
                };
                out.grants.push(grant_record(resource, role, &user.id, role != "member", vec![]));
                out.resources.push(user);
            }
            Ok(out)
        }
        "user" => Ok(empty_page()),
        other => Err(ConnectorError::InvalidArgument(format!("unknown resource type {other:?}"))),
    }
}

pub fn grant(client: &Client, entitlement_id: &str, principal: &ResourceRef) -> Result<WriteResult, ConnectorError> {
    let entitlement = ids::parse_entitlement(entitlement_id)?;
    require_user(principal)?;
    let path = membership_path(&entitlement, "addUser")?;
    client.post(&path, json!({ "user": principal.id }))?;
    Ok(WriteResult {
        outcome: Outcome::Changed,
        grant: Some(grant_record(&entitlement.resource, &entitlement.slug, &principal.id, false, vec![])),
        message: format!("added user {} to {} {}", principal.id, entitlement.resource.resource_type, entitlement.resource.id),
    })
}

pub fn revoke(client: &Client, grant_id: &str) -> Result<WriteResult, ConnectorError> {
    let (entitlement, principal) = ids::parse_grant(grant_id)?;
    let path = membership_path(&entitlement, "removeUser")?;
    client.post(&path, json!({ "user": principal.id }))?;
    Ok(WriteResult {
        outcome: Outcome::Changed,
        grant: None,
        message: format!("removed user {} from {} {}", principal.id, entitlement.resource.resource_type, entitlement.resource.id),
    })
}

pub fn create_account(client: &Client, request: &AccountRequest) -> Result<Resource, ConnectorError> {
    let workspace = request
        .options
        .iter()
        .find(|p| p.name == "workspace")
        .map(|p| p.value.clone())
        .or_else(|| config::get("default-workspace-id"))
        .ok_or_else(|| ConnectorError::InvalidArgument("no workspace given and no default-workspace-id configured".into()))?;
    let user = client.post(&format!("/workspaces/{workspace}/addUser"), json!({ "user": request.email }))?;
    let gid = text(&user, "gid").ok_or_else(|| ConnectorError::Upstream("addUser answered without a user gid".into()))?;
    Ok(Resource {
        resource_type: "user".into(),
        id: gid.to_string(),
        display_name: text(&user, "name").unwrap_or(&request.email).to_string(),
        parent: None,
        attributes: vec![pair("email", request.email.clone())],
    })
}

/// Only plain membership can be written through Asana's API.
fn membership_path(entitlement: &ids::EntitlementId, action: &str) -> Result<String, ConnectorError> {
    let resource = &entitlement.resource;
    match (resource.resource_type.as_str(), entitlement.slug.as_str()) {
        ("team", "member") => Ok(format!("/teams/{}/{action}", resource.id)),
        ("workspace", "member") => Ok(format!("/workspaces/{}/{action}", resource.id)),
        (kind @ ("team" | "workspace"), role) => Err(ConnectorError::Unsupported(format!(
            "Asana's API cannot change the {role} role of a {kind}; only membership can be granted or revoked"
        ))),
        (kind, _) => Err(ConnectorError::InvalidArgument(format!("no grantable entitlements on {kind:?}"))),
    }
}

fn require_user(principal: &ResourceRef) -> Result<(), ConnectorError> {
    if principal.resource_type == "user" {
        Ok(())
    } else {
        Err(ConnectorError::InvalidArgument(format!("principals are users, not {:?}", principal.resource_type)))
    }
}

fn grant_record(resource: &ResourceRef, slug: &str, user_gid: &str, immutable: bool, attributes: Vec<Pair>) -> Grant {
    let entitlement_id = ids::entitlement_id(&resource.resource_type, &resource.id, slug);
    Grant {
        id: ids::grant_id(&entitlement_id, user_gid),
        entitlement_id,
        principal: ResourceRef { resource_type: "user".into(), id: user_gid.to_string() },
        immutable,
        attributes,
    }
}

fn workspace_resource(item: &Value) -> Result<Resource, ConnectorError> {
    let gid = gid(item)?;
    Ok(Resource {
        resource_type: "workspace".into(),
        id: gid.clone(),
        display_name: text(item, "name").unwrap_or(&gid).to_string(),
        parent: None,
        attributes: vec![pair("is_organization", bool_text(flag(item, "is_organization")))],
    })
}

fn team_resource(item: &Value, workspace: &ResourceRef) -> Result<Resource, ConnectorError> {
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

/// The user a membership names.
fn membership_user(membership: &Value) -> Result<&Value, ConnectorError> {
    membership
        .get("user")
        .filter(|u| u.is_object())
        .ok_or_else(|| ConnectorError::Upstream("membership without a user".into()))
}

/// A user object as a resource (memberships name users without email; the
/// host merges the attributes of every report of the same user).
fn user_resource(user: &Value) -> Result<Resource, ConnectorError> {
    let gid = gid(user)?;
    let email = text(user, "email");
    let mut attributes = vec![];
    if let Some(email) = email {
        attributes.push(pair("email", email.to_string()));
    }
    Ok(Resource {
        resource_type: "user".into(),
        display_name: text(user, "name").or(email).unwrap_or(&gid).to_string(),
        id: gid,
        parent: None,
        attributes,
    })
}

fn gid(item: &Value) -> Result<String, ConnectorError> {
    text(item, "gid")
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ConnectorError::Upstream(format!("Asana object without a gid: {}", truncate(&item.to_string()))))
}

fn text<'a>(item: &'a Value, key: &str) -> Option<&'a str> {
    item.get(key).and_then(Value::as_str)
}

fn flag(item: &Value, key: &str) -> bool {
    flag_or(item, key, false)
}

fn flag_or(item: &Value, key: &str, default: bool) -> bool {
    item.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn bool_text(value: bool) -> String {
    value.to_string()
}

fn pair(name: &str, value: String) -> Pair {
    Pair { name: name.into(), value }
}

fn empty_page() -> Page {
    Page { resources: vec![], entitlements: vec![], grants: vec![], next_token: None }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(120) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}
