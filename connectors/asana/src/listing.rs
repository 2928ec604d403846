//! The paged listings the host drives: every call is at most one request.
//! A workspace's memberships need to know whether it is an organization:
//! the host gives the listing the workspace as reported, `is_organization`
//! attribute included, so no instance asks `/workspaces` again (only a
//! workspace without the attribute, from a host that does not pass it, is
//! looked up there).
//!
//! Per workspace: its teams, its users (`/users?workspace=`) and its
//! memberships; per team, its memberships.
//!
//! Licenses belong to organizations: each organization's two license
//! resources (`ORG_GID:enterprise`, `ORG_GID:view only`) come with the
//! `/workspaces` page that lists it, since only that page says which
//! workspaces are organizations; plain workspaces have none. A user's
//! license comes from SCIM when enabled (one pass over `/scim/Users` for
//! the organization, made when the host lists the grants of its enterprise
//! license), otherwise from the `is_view_only` flag of their membership in
//! the organization (read only): one license per user per organization.

use std::cell::RefCell;
use std::collections::BTreeMap;
use tether_guest::http::segment;

use crate::client::Client;
use crate::ids;
use crate::records::*;
use crate::scim;
use tether_guest::contract::{Page, Resource};
use tether_guest::log;
use tether_guest::page::{attribute, reference, GrantSets};
use tether_guest::types::{ConnectorError, ResourceRef};

pub const WORKSPACE_FIELDS: &str = "name,is_organization,email_domains";
const TEAM_FIELDS: &str = "name,description";
const USER_FIELDS: &str = "name,email";
// Asana's spec allows only `user.name` of the user inside a membership, so
// emails come from one paged pass over `/users?workspace=` (never
// `/workspaces/{gid}/users`, which stops at 2000 users).
pub const WORKSPACE_MEMBERSHIP_FIELDS: &str = "user.name,is_admin,is_guest,is_active,is_view_only";
// A team's memberships report grants only (see `list_grants`): the user's
// gid is all they need, and the name would be a sixth of every page.
pub const TEAM_MEMBERSHIP_FIELDS: &str = "user,is_admin,is_guest,is_limited_access";

/// Roles: (slug, display name, description, grantable through the API).
/// Only plain membership can be changed through Asana's API.
const WORKSPACE_ROLES: &[(&str, &str, &str, bool)] = &[
    ("admin", "Admin", "Administers the workspace or organization", false),
    ("member", "Member", "A full member of the workspace", true),
    ("guest", "Guest", "A guest with access to what is shared with them", false),
];
const TEAM_ROLES: &[(&str, &str, &str, bool)] = &[
    ("member", "Member", "A member of the team", true),
    ("admin", "Admin", "Administers the team", false),
    ("limited-access", "Limited access", "A member who sees only what is shared with them", false),
    ("guest", "Guest", "A guest member of the team", false),
];

/// The role a workspace membership gives: an active admin is an admin, not
/// also a member.
pub fn workspace_role(membership: &Membership) -> &'static str {
    if membership.is_admin.is_true() {
        "admin"
    } else if membership.is_guest.is_true() {
        "guest"
    } else {
        "member"
    }
}

pub fn team_role(membership: &Membership) -> &'static str {
    if membership.is_admin.is_true() {
        "admin"
    } else if membership.is_limited_access.is_true() {
        "limited-access"
    } else if membership.is_guest.is_true() {
        "guest"
    } else {
        "member"
    }
}

thread_local! {
    /// Workspace gid -> is it an organization, as the `/workspaces` pages
    /// this instance read said: counts organizations for the SCIM check,
    /// and answers for a workspace given without its attribute.
    static ORGANIZATIONS: RefCell<BTreeMap<String, bool>> = const { RefCell::new(BTreeMap::new()) };
}

fn remember_workspaces(items: &[serde_json::Value]) -> Result<(), ConnectorError> {
    for item in items {
        let gid = gid(item)?;
        let is_organization = flag(item, "is_organization");
        ORGANIZATIONS.with(|known| known.borrow_mut().insert(gid, is_organization));
    }
    Ok(())
}

fn known_organizations() -> usize {
    ORGANIZATIONS.with(|known| known.borrow().values().filter(|is_org| **is_org).count())
}

/// Whether a workspace is an organization (has licenses): as its resource
/// says (the `is_organization` attribute the workspace listing reported),
/// else as `/workspaces` says (read once per instance).
fn is_organization(client: &Client, workspace: &Resource) -> Result<bool, ConnectorError> {
    match attribute(workspace, "is_organization") {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => is_organization_id(client, &workspace.id),
    }
}

/// Whether workspace `workspace` is an organization, from `/workspaces`.
fn is_organization_id(client: &Client, workspace: &str) -> Result<bool, ConnectorError> {
    if let Some(known) = ORGANIZATIONS.with(|known| known.borrow().get(workspace).copied()) {
        return Ok(known);
    }
    let mut token: Option<String> = None;
    loop {
        let page = client.list::<serde_json::Value>("/workspaces", &[], WORKSPACE_FIELDS, token.as_deref())?;
        remember_workspaces(&page.items)?;
        match page.next_offset {
            Some(next) if Some(&next) != token.as_ref() => token = Some(next),
            _ => break,
        }
    }
    Ok(ORGANIZATIONS.with(|known| known.borrow().get(workspace).copied()).unwrap_or(false))
}

pub fn list_resources(client: &Client, resource_type: &str, scope: Option<&ResourceRef>, token: Option<&str>) -> Result<Page, ConnectorError> {
    match (resource_type, scope) {
        ("workspace", None) => {
            let page = client.list::<serde_json::Value>("/workspaces", &[], WORKSPACE_FIELDS, token)?;
            remember_workspaces(&page.items)?;
            if client.settings.use_scim && known_organizations() > 1 {
                return Err(crate::settings::scim_serves_one_organization(known_organizations()));
            }
            let mut resources = Vec::new();
            for item in &page.items {
                let workspace = workspace_resource(item)?;
                let organization = ResourceRef { resource_type: "workspace".into(), id: workspace.id.clone() };
                resources.push(workspace);
                if flag(item, "is_organization") {
                    resources.extend(license_resources(&organization));
                }
            }
            Ok(Page { resources, next_token: page.next_offset, ..empty_page() })
        }
        // Listed with the `/workspaces` page (above), the only place that
        // says which workspaces are organizations.
        ("license", Some(workspace)) if workspace.resource_type == "workspace" => Ok(empty_page()),
        ("team", Some(workspace)) if workspace.resource_type == "workspace" => {
            let path = format!("/workspaces/{}/teams", segment(&workspace.id)?);
            let page = match client.list::<serde_json::Value>(&path, &[], TEAM_FIELDS, token) {
                // Only organizations have teams; a plain workspace may answer
                // 400 rather than an empty list. Say so, and go on. An
                // organization has teams: its 400 is a failure, not a sync
                // that would record every team as gone.
                Err(ConnectorError::InvalidArgument(why)) if token.is_none() => {
                    if is_organization_id(client, &workspace.id)? {
                        return Err(ConnectorError::Upstream(format!("organization {} refused to list its teams: {why}", workspace.id)));
                    }
                    log::emit(log::Level::Warn, &format!("no teams listed for workspace {}: {why}", workspace.id));
                    return Ok(empty_page());
                }
                other => other?,
            };
            let resources = page.items.iter().map(|team| team_resource(team, workspace)).collect::<Result<_, _>>()?;
            Ok(Page { resources, next_token: page.next_offset, ..empty_page() })
        }
        ("user", Some(workspace)) if workspace.resource_type == "workspace" => {
            let page = client.list::<User>("/users", &[("workspace", &workspace.id)], USER_FIELDS, token)?;
            let resources = page.items.into_iter().map(user_resource).collect::<Result<_, _>>()?;
            Ok(Page { resources, next_token: page.next_offset, ..empty_page() })
        }
        _ => Err(ConnectorError::InvalidArgument(format!(
            "no resources of type {resource_type:?} under {:?}",
            scope.map(|p| format!("{}:{}", p.resource_type, p.id))
        ))),
    }
}

pub fn list_entitlements(client: &Client, resource: &ResourceRef) -> Result<Page, ConnectorError> {
    let entitlements = match resource.resource_type.as_str() {
        "workspace" => roles(resource, WORKSPACE_ROLES),
        "team" => roles(resource, TEAM_ROLES),
        "license" => vec![entitlement(
            resource,
            "assigned",
            "Assigned",
            "Holds this license",
            // License changes go through SCIM.
            client.settings.use_scim,
        )],
        "user" => vec![],
        other => return Err(ConnectorError::InvalidArgument(format!("unknown resource type {other:?}"))),
    };
    Ok(Page { entitlements, ..empty_page() })
}

fn roles(resource: &ResourceRef, roles: &[(&str, &str, &str, bool)]) -> Vec<tether_guest::contract::Entitlement> {
    roles.iter().map(|(slug, name, description, grantable)| entitlement(resource, slug, name, description, *grantable)).collect()
}

pub fn list_grants(client: &Client, whole: &Resource, token: Option<&str>) -> Result<Page, ConnectorError> {
    let resource = &reference(whole);
    match resource.resource_type.as_str() {
        "workspace" => workspace_grants(client, whole, token),
        "team" => {
            let path = format!("/teams/{}/team_memberships", segment(&resource.id)?);
            let page = client.list::<Membership>(&path, &[], TEAM_MEMBERSHIP_FIELDS, token)?;
            // Grants only: a team's members are members of its organization,
            // whose memberships listing reports each user once, with the same
            // name. Reported here too, a user came back once per team. They
            // go in sets, one per role: the user's gid is each grant's one
            // string.
            let role_ids: Vec<(&str, String)> = TEAM_ROLES.iter().map(|(slug, ..)| (*slug, ids::entitlement_id("team", &resource.id, slug))).collect();
            let mut members = GrantSets::new();
            for membership in page.items {
                let role = team_role(&membership);
                let entitlement_id = role_ids.iter().find(|(slug, _)| *slug == role).map(|(_, id)| id.as_str()).unwrap_or_default();
                members.add(entitlement_id, "user", membership.into_user()?.gid.non_empty().ok_or_else(no_gid)?, role != "member");
            }
            Ok(Page { grant_sets: members.into_sets(), next_token: page.next_offset, ..empty_page() })
        }
        "license" => {
            let (org, license) = ids::parse_license(&resource.id)?;
            if license != "enterprise" || !client.settings.use_scim {
                // Reported with the SCIM pass or the workspace memberships.
                return Ok(empty_page());
            }
            // The one SCIM pass over the organization yields every user's license.
            let (users, next_token) = scim::list_users(client, token)?;
            let mut out = Page { next_token, ..empty_page() };
            for user in &users {
                out.grants.extend(user.license_grant(org));
                out.resources.push(user.resource());
            }
            Ok(out)
        }
        "user" => Ok(empty_page()),
        other => Err(ConnectorError::InvalidArgument(format!("unknown resource type {other:?}"))),
    }
}

fn workspace_grants(client: &Client, whole: &Resource, token: Option<&str>) -> Result<Page, ConnectorError> {
    // Without SCIM, the license is what REST says, read only; only an
    // organization has licenses.
    let rest_licenses = !client.settings.use_scim && is_organization(client, whole)?;
    let workspace = &reference(whole);
    let path = format!("/workspaces/{}/workspace_memberships", segment(&workspace.id)?);
    let page = client.list::<Membership>(&path, &[], WORKSPACE_MEMBERSHIP_FIELDS, token)?;
    let mut out = Page { next_token: page.next_offset, ..empty_page() };
    let license_id = |license| ids::entitlement_id("license", &ids::license_resource_id(&workspace.id, license), "assigned");
    let (enterprise, view_only_license) = (license_id("enterprise"), license_id("view only"));
    let mut licenses = GrantSets::new();
    for membership in page.items {
        let role = workspace_role(&membership);
        let active = membership.is_active();
        let view_only = membership.is_view_only.is_true();
        let user = user_resource(membership.into_user()?)?;
        let attributes = vec![pair("is_active", active.to_string()), pair("is_view_only", view_only.to_string())];
        out.grants.push(grant(workspace, role, &user.id, role != "member", attributes));
        if rest_licenses && active && role != "guest" {
            let license = if view_only { &view_only_license } else { &enterprise };
            licenses.add(license, "user", user.id.clone(), true);
        }
        out.resources.push(user);
    }
    out.grant_sets = licenses.into_sets();
    Ok(out)
}
