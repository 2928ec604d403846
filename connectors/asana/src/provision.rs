//! Writes: team and workspace membership through REST, licenses and
//! accounts through SCIM. Each write first reads the current state, so a
//! grant already held or a revoke already done is "no change" and writes
//! nothing.

use serde_json::json;
use tether_guest::http::segment;

use crate::client::{malformed, Client};
use crate::ids::{self, EntitlementId};
use crate::listing::{team_role, workspace_role, TEAM_MEMBERSHIP_FIELDS, WORKSPACE_FIELDS, WORKSPACE_MEMBERSHIP_FIELDS};
use crate::records::*;
use crate::scim;
use tether_guest::contract::{AccountRequest, AccountResult, Outcome, Resource, WriteResult};
use tether_guest::types::{ConnectorError, ResourceRef};

pub fn grant_entitlement(client: &Client, entitlement_id: &str, principal: &ResourceRef) -> Result<WriteResult, ConnectorError> {
    let entitlement = ids::parse_entitlement(entitlement_id)?;
    if principal.resource_type != "user" || principal.id.is_empty() {
        return Err(ConnectorError::InvalidArgument(format!("principals are users (user:GID), not {}:{}", principal.resource_type, principal.id)));
    }
    let user = principal.id.as_str();
    let resource = &entitlement.resource;
    match (resource.resource_type.as_str(), entitlement.slug.as_str()) {
        ("team", "member") => {
            if let Some(role) = team_membership_role(client, &resource.id, user)? {
                return Ok(no_change(format!("user {user} is already on team {} (as {role})", resource.id)));
            }
            client.post(&format!("/teams/{}/addUser", segment(&resource.id)?), json!({ "user": user }))?;
            Ok(changed(format!("added user {user} to team {}", resource.id), Some(grant(resource, "member", user, false, vec![]))))
        }
        ("workspace", "member") => {
            if let Some(role) = workspace_membership_role(client, &resource.id, user)? {
                return Ok(no_change(format!("user {user} is already in workspace {} (as {role})", resource.id)));
            }
            client.post(&format!("/workspaces/{}/addUser", segment(&resource.id)?), json!({ "user": user }))?;
            Ok(changed(format!("added user {user} to workspace {}", resource.id), Some(grant(resource, "member", user, false, vec![]))))
        }
        ("license", "assigned") => {
            client.settings.require_scim("changing a license")?;
            let (org, license) = ids::parse_license(&resource.id)?;
            require_scim_organization(client, org)?;
            let current = match scim_user(client, user, Some(org))? {
                ScimLookup::Found(current) if current.active => current,
                _ => return Err(ConnectorError::InvalidArgument(format!("user {user} is deactivated, and Asana cannot reactivate a user"))),
            };
            if current.license() == Some(license) {
                return Ok(no_change(format!("user {user} already has the {license} license in organization {org}")));
            }
            scim::set_user_type(client, user, license)?;
            Ok(changed(format!("moved user {user} to the {license} license in organization {org}"), Some(license_grant(org, license, user, false))))
        }
        _ => Err(not_writable(&entitlement)),
    }
}

pub fn revoke_grant(client: &Client, grant_id: &str) -> Result<WriteResult, ConnectorError> {
    let (entitlement, principal) = ids::parse_grant(grant_id)?;
    let user = principal.id.as_str();
    let resource = &entitlement.resource;
    match (resource.resource_type.as_str(), entitlement.slug.as_str()) {
        ("team", "member") => match team_membership_role(client, &resource.id, user)? {
            Some("member") => {
                client.post(&format!("/teams/{}/removeUser", segment(&resource.id)?), json!({ "user": user }))?;
                Ok(changed(format!("removed user {user} from team {}", resource.id), None))
            }
            Some(role) => Ok(no_change(format!("user {user} is on team {} as {role}, not as a member", resource.id))),
            None => Ok(no_change(format!("user {user} is not on team {}", resource.id))),
        },
        ("workspace", "member") => match workspace_membership_role(client, &resource.id, user)? {
            Some("member") => {
                client.post(&format!("/workspaces/{}/removeUser", segment(&resource.id)?), json!({ "user": user }))?;
                Ok(changed(format!("removed user {user} from workspace {}", resource.id), None))
            }
            Some(role) => Ok(no_change(format!("user {user} is in workspace {} as {role}, not as a member", resource.id))),
            None => Ok(no_change(format!("user {user} is not in workspace {}", resource.id))),
        },
        ("license", "assigned") => {
            client.settings.require_scim("changing a license")?;
            let (org, license) = ids::parse_license(&resource.id)?;
            require_scim_organization(client, org)?;
            let current = match scim_user(client, user, Some(org))? {
                ScimLookup::Found(current) => current,
                ScimLookup::Deactivated { .. } => {
                    return Ok(no_change(format!("user {user} is deactivated and holds no license in organization {org}")));
                }
            };
            if current.license() != Some(license) {
                return Ok(no_change(format!("user {user} does not hold the {license} license in organization {org}")));
            }
            if license == "enterprise" {
                // Without the enterprise license a user falls back to view only.
                scim::set_user_type(client, user, "view only")?;
                Ok(changed(format!("moved user {user} from enterprise to the view only license"), None))
            } else {
                // View only is the last license: taking it deactivates.
                scim::deactivate(client, user)?;
                Ok(changed(format!("deactivated user {user} (the view only license was their last)"), None))
            }
        }
        _ => Err(not_writable(&entitlement)),
    }
}

pub fn create_account(client: &Client, request: &AccountRequest) -> Result<AccountResult, ConnectorError> {
    let email = request.email.trim();
    if !email.contains('@') || email.chars().any(char::is_whitespace) {
        return Err(ConnectorError::InvalidArgument(format!("{email:?} is not an email address")));
    }
    let option = |name: &str| request.options.iter().find(|p| p.name == name).map(|p| p.value.clone());
    let license = option("license").unwrap_or_else(|| "view only".into());
    if !LICENSES.iter().any(|(id, _)| *id == license) {
        return Err(ConnectorError::InvalidArgument(format!("license must be \"enterprise\" or \"view only\", got {license:?}")));
    }
    if client.settings.use_scim {
        if let Some(existing) = scim::find_by_user_name(client, email)? {
            return Ok(account_exists(existing.resource(), email));
        }
        let created = scim::create_user(client, email, request.display_name.as_deref(), &license)?;
        return Ok(match scim::ScimUser::parse(created) {
            Ok(user) => account_created(user.resource(), email),
            // A dry run answers without a body: nothing was created.
            Err(_) => pending_account(email),
        });
    }
    if license != "view only" {
        return Err(ConnectorError::Unsupported("new accounts made through REST get the view only license; another license needs use-scim-api".into()));
    }
    let workspace = option("workspace")
        .or_else(|| client.settings.default_workspace.clone())
        .ok_or_else(|| ConnectorError::InvalidArgument("name a workspace for the new account, or configure default-workspace-id".into()))?;
    // Asana answers 400 or 404 for an email it does not know: a new person.
    let existing_role = match workspace_membership_role(client, &workspace, email) {
        Err(ConnectorError::InvalidArgument(_) | ConnectorError::NotFound(_)) => None,
        other => other?,
    };
    if let Some(role) = existing_role {
        let existing =
            client.list::<Membership>(&format!("/workspaces/{}/workspace_memberships", segment(&workspace)?), &[("user", email)], "user.name", None)?;
        let membership = existing.items.into_iter().find(|m| names_user(m, email)).ok_or_else(|| ConnectorError::Upstream("membership vanished".into()))?;
        let mut resource = user_resource(membership.into_user()?)?;
        resource.attributes.extend([pair("email", email.to_string()), pair("role", role.into())]);
        return Ok(account_exists(resource, email));
    }
    let add_user = format!("/workspaces/{}/addUser", segment(&workspace)?);
    let user = client.post(&add_user, json!({ "user": email }))?;
    // addUser takes only the email: the invitee sets their own name.
    let unnamed = |mut result: AccountResult| {
        if let Some(name) = request.display_name.as_deref().filter(|n| !n.trim().is_empty()) {
            result
                .message
                .push_str(&format!(" (not named {name:?}: Asana's REST API takes only the email, and the invitee sets their name; use-scim-api sets it)"));
        }
        result
    };
    if user.is_null() {
        return Ok(unnamed(pending_account(email)));
    }
    let user: User = serde_json::from_value(user).map_err(|e| malformed(&add_user, &format!("unexpected JSON: {e}")))?;
    let mut resource = user_resource(user)?;
    resource.attributes.push(pair("email", email.to_string()));
    Ok(unnamed(account_created(resource, email)))
}

fn account_created(account: Resource, email: &str) -> AccountResult {
    AccountResult { outcome: Outcome::Changed, message: format!("invited {email} as user {}", account.id), account }
}

fn account_exists(account: Resource, email: &str) -> AccountResult {
    AccountResult { outcome: Outcome::NoChange, message: format!("{email} already has an account (user {})", account.id), account }
}

pub fn disable_account(client: &Client, account: &ResourceRef) -> Result<WriteResult, ConnectorError> {
    client.settings.require_scim("disabling an account")?;
    if account.resource_type != "user" {
        return Err(ConnectorError::InvalidArgument(format!("accounts are users, not {:?}", account.resource_type)));
    }
    let current = match scim_user(client, &account.id, None)? {
        ScimLookup::Found(current) if current.active => current,
        ScimLookup::Found(_) => return Ok(no_change(format!("user {} is already deactivated", account.id))),
        ScimLookup::Deactivated { org } => {
            return Ok(no_change(format!(
                "user {} is already deactivated (SCIM no longer lists them; their membership in organization {org} is inactive)",
                account.id
            )))
        }
    };
    scim::deactivate(client, &account.id)?;
    Ok(changed(format!("deactivated user {} ({})", account.id, current.user_name), None))
}

/// What SCIM says of a user.
enum ScimLookup {
    /// SCIM shows the user (some SCIM servers keep deactivated users
    /// visible with `active: false`).
    Found(scim::ScimUser),
    /// SCIM hides the user, as Asana does once a user is deactivated, and
    /// REST shows their membership in organization `org` inactive.
    Deactivated { org: String },
}

/// Reads `user` through SCIM. A 404 there is either a deactivated user
/// (Asana hides them from SCIM) or someone the organization never had: the
/// user's REST membership in `org` (or, without one, in every organization
/// the token sees) tells which. A real stranger stays a clear not-found.
fn scim_user(client: &Client, user: &str, org: Option<&str>) -> Result<ScimLookup, ConnectorError> {
    let why = match scim::get_user(client, user) {
        Ok(found) => return Ok(ScimLookup::Found(found)),
        Err(ConnectorError::NotFound(why)) => why,
        Err(other) => return Err(other),
    };
    let organizations = match org {
        Some(org) => vec![org.to_string()],
        None => organizations(client)?,
    };
    for org in organizations {
        let Some(membership) = organization_membership(client, &org, user)? else { continue };
        if !membership.is_active() {
            return Ok(ScimLookup::Deactivated { org });
        }
        if workspace_role(&membership) == "guest" {
            return Err(ConnectorError::NotFound(format!(
                "user {user} is a guest of organization {org}, and Asana's SCIM API knows only full members ({why})"
            )));
        }
    }
    Err(ConnectorError::NotFound(format!("user {user} does not exist in the organization ({why})")))
}

/// Licenses change through SCIM, which serves the service account's one
/// organization: a license ID naming another organization is refused, not
/// written to this one (with the other organization named in the answer
/// and the audit).
fn require_scim_organization(client: &Client, org: &str) -> Result<(), ConnectorError> {
    match organizations(client)?.as_slice() {
        [only] if only == org => Ok(()),
        [only] => Err(ConnectorError::InvalidArgument(format!(
            "organization {org} is not the one whose licenses this token's SCIM API changes (organization {only})"
        ))),
        [] => Err(ConnectorError::InvalidArgument(format!("the token sees no organization, so organization {org}'s licenses cannot be changed"))),
        many => Err(crate::settings::scim_serves_one_organization(many.len())),
    }
}

/// The gids of the organizations the token sees.
fn organizations(client: &Client) -> Result<Vec<String>, ConnectorError> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client.list::<serde_json::Value>("/workspaces", &[], WORKSPACE_FIELDS, token.as_deref())?;
        for workspace in page.items.iter().filter(|w| flag(w, "is_organization")) {
            found.push(gid(workspace)?);
        }
        match page.next_offset {
            Some(next) if Some(&next) != token.as_ref() => token = Some(next),
            _ => return Ok(found),
        }
    }
}

/// The user's membership in an organization, active or not (an active one
/// first, should there be several); None when Asana does not know the user
/// there.
fn organization_membership(client: &Client, org: &str, user: &str) -> Result<Option<Membership>, ConnectorError> {
    let path = format!("/workspaces/{}/workspace_memberships", segment(org)?);
    let page = match client.list(&path, &[("user", user)], WORKSPACE_MEMBERSHIP_FIELDS, None) {
        // Asana answers 404 (or 400) for a user it does not know.
        Err(ConnectorError::NotFound(_) | ConnectorError::InvalidArgument(_)) => return Ok(None),
        other => other?,
    };
    let mut items: Vec<Membership> = page.items.into_iter().filter(|m| names_user(m, user)).collect();
    let active = items.iter().position(Membership::is_active).unwrap_or(0);
    Ok((active < items.len()).then(|| items.swap_remove(active)))
}

/// The user's role on a team, if they are on it.
fn team_membership_role(client: &Client, team: &str, user: &str) -> Result<Option<&'static str>, ConnectorError> {
    // Asana takes `user` only together with `workspace`: the team's.
    let team_object = client.get(&format!("/teams/{}", segment(team)?), "organization")?;
    let workspace =
        team_object.get("organization").map(gid).transpose()?.ok_or_else(|| ConnectorError::Upstream(format!("team {team} has no organization")))?;
    let page = client.list::<Membership>("/team_memberships", &[("team", team), ("user", user), ("workspace", &workspace)], TEAM_MEMBERSHIP_FIELDS, None)?;
    Ok(page.items.iter().find(|m| names_user(m, user)).map(team_role))
}

/// Whether `membership` is `user`'s (a gid or an email): an upstream that
/// ignored the `user` filter must not answer for someone else (a grant
/// then said "already a member" and sent nothing). Asana's API gives no
/// email in a membership (its spec allows `user.name` only), so a lookup
/// by email is taken as it comes unless the answer names another email.
fn names_user(membership: &Membership, user: &str) -> bool {
    let Some(named) = membership.user.as_ref() else { return false };
    if user.contains('@') {
        named.email.as_deref().is_none_or(|email| email.eq_ignore_ascii_case(user))
    } else {
        named.gid.as_deref() == Some(user)
    }
}

/// The user's role in a workspace, if they are an active member.
fn workspace_membership_role(client: &Client, workspace: &str, user: &str) -> Result<Option<&'static str>, ConnectorError> {
    let page = client.list::<Membership>(
        &format!("/workspaces/{}/workspace_memberships", segment(workspace)?),
        &[("user", user)],
        WORKSPACE_MEMBERSHIP_FIELDS,
        None,
    )?;
    Ok(page.items.iter().find(|m| m.is_active() && names_user(m, user)).map(workspace_role))
}

fn not_writable(entitlement: &EntitlementId) -> ConnectorError {
    let kind = &entitlement.resource.resource_type;
    match kind.as_str() {
        "team" | "workspace" => {
            ConnectorError::Unsupported(format!("the {} role of a {kind} is immutable: Asana's API can only add and remove members", entitlement.slug))
        }
        _ => ConnectorError::InvalidArgument(format!("{kind}:{}:{} is not an entitlement this connector can write", entitlement.resource.id, entitlement.slug)),
    }
}

/// What a dry run reports: the account would be created.
fn pending_account(email: &str) -> AccountResult {
    AccountResult {
        outcome: Outcome::Changed,
        account: Resource {
            resource_type: "user".into(),
            id: String::new(),
            display_name: email.into(),
            parent: None,
            attributes: vec![pair("email", email.into())],
        },
        message: format!("would invite {email}"),
    }
}

fn changed(message: String, grant: Option<tether_guest::contract::Grant>) -> WriteResult {
    WriteResult { outcome: Outcome::Changed, grant, message }
}

fn no_change(message: String) -> WriteResult {
    WriteResult { outcome: Outcome::NoChange, grant: None, message }
}
