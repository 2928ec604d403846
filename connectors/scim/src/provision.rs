//! Writes. Each reads first and answers "no change" when the server is
//! already as asked, so a repeated write sends nothing. PATCH answers are
//! not relied on: servers answer 200 with the resource or 204 with nothing.

use serde_json::{json, Value};
use tether_guest::contract::{AccountRequest, AccountResult, Outcome, Resource, WriteResult};
use tether_guest::page::pair;
use tether_guest::scim::{filter_eq, op_add, op_replace, ListQuery, USER_SCHEMA};
use tether_guest::{json as read, ConnectorError, ResourceRef};

use crate::records::{self, check_principal, member_grant, parse_member_entitlement, parse_member_grant};
use crate::server::Server;
use crate::settings::MembersFrom;

pub fn add_member(server: &Server, entitlement_id: &str, principal: &ResourceRef) -> Result<WriteResult, ConnectorError> {
    let group = parse_member_entitlement(entitlement_id)?;
    check_principal(principal)?;
    server.require_patch("adding a group member")?;
    let grant = member_grant(&group, principal);
    if is_member(server, &group, &principal.id)? == Membership::Member {
        let message = format!("{} {} is already a member of group {group}", principal.resource_type, principal.id);
        return Ok(WriteResult { outcome: Outcome::NoChange, grant: Some(grant), message });
    }
    let answer = server.scim.patch("/Groups", &group, vec![op_add("members", json!([{ "value": principal.id }]))])?;
    if lists_member(answer.as_ref(), &principal.id) == Some(false) {
        return Err(contradicted(&group, &principal.id, "does not list", "added"));
    }
    let message = format!("added {} {} to group {group}", principal.resource_type, principal.id);
    Ok(WriteResult { outcome: Outcome::Changed, grant: Some(grant), message })
}

pub fn remove_member(server: &Server, grant_id: &str) -> Result<WriteResult, ConnectorError> {
    let (group, principal) = parse_member_grant(grant_id)?;
    server.require_patch("removing a group member")?;
    let membership = is_member(server, &group, &principal.id)?;
    if membership == Membership::NotMember {
        let message = format!("{} {} is not a member of group {group}", principal.resource_type, principal.id);
        return Ok(WriteResult { outcome: Outcome::NoChange, grant: None, message });
    }
    let answer = server.scim.remove_member(&group, &principal.id, server.settings.remove_member_by_value).map_err(|e| match e {
        ConnectorError::Unsupported(why) => {
            ConnectorError::Unsupported(format!("{why}: set remove-member-by-value = true only if this server removes just the member given"))
        }
        other => other,
    })?;
    if lists_member(answer.as_ref(), &principal.id) == Some(true) {
        return Err(contradicted(&group, &principal.id, "still lists", "removed"));
    }
    let unknown = if membership == Membership::Unknown { " (the server does not list the group's members, so it may not have been one)" } else { "" };
    let message = format!("removed {} {} from group {group}{unknown}", principal.resource_type, principal.id);
    Ok(WriteResult { outcome: Outcome::Changed, grant: None, message })
}

/// What the server says of one member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    Member,
    NotMember,
    /// The group came without `members` and the server has no filter to
    /// ask by: an empty group (RFC 7643 §2.5 leaves the attribute out), or a
    /// server that does not return members.
    Unknown,
}

/// Whether `member` is in `group`, read the way memberships are synced.
/// A group that comes without `members` is asked again by filter where the
/// server has one: a server that leaves members out (AWS IAM Identity
/// Center does) would otherwise make a revoke "no change" while the access
/// stays.
fn is_member(server: &Server, group: &str, member: &str) -> Result<Membership, ConnectorError> {
    if server.members_from()? != MembersFrom::Filter {
        let raw = server.scim.get("/Groups", group, Some("members"))?;
        if let Some(listed) = lists_member(Some(&raw), member) {
            return Ok(if listed { Membership::Member } else { Membership::NotMember });
        }
        if !server.features()?.config.filter {
            return Ok(Membership::Unknown);
        }
    }
    // RFC 7644 §3.4.2.2's own example of a membership test.
    let filter = format!("{} and {}", filter_eq("id", group), filter_eq("members.value", member));
    let found = server.scim.list("/Groups", &ListQuery { filter: Some(&filter), attributes: Some("id"), ..ListQuery::default() })?;
    // A group that does not exist is an error, not "not a member".
    if found.resources.is_empty() {
        server.scim.get("/Groups", group, Some("id"))?;
    }
    Ok(if found.resources.is_empty() { Membership::NotMember } else { Membership::Member })
}

/// Whether a group as the server gave it lists `member`; None when it
/// has no `members` attribute to say (or no group was given).
fn lists_member(group: Option<&Value>, member: &str) -> Option<bool> {
    let members = group?.get("members")?.as_array()?;
    Some(members.iter().any(|m| read::text(m, "value") == Some(member)))
}

/// A write the server answered 200 to, with the group, which says it did
/// not happen.
fn contradicted(group: &str, member: &str, says: &str, done: &str) -> ConnectorError {
    ConnectorError::Upstream(format!(
        "the server answered the PATCH with group {group}, which {says} member {member}: it was not {done}; read the group again before trying once more"
    ))
}

pub fn create_user(server: &Server, request: &AccountRequest) -> Result<AccountResult, ConnectorError> {
    let option = |key: &str| request.options.iter().find(|p| p.name == key).map(|p| p.value.trim()).filter(|v| !v.is_empty());
    if let Some(unknown) = request.options.iter().find(|p| p.name != "user-name" && p.name != "external-id") {
        return Err(ConnectorError::InvalidArgument(format!("unknown account field {:?} (the SCIM connector takes user-name and external-id)", unknown.name)));
    }
    let email = request.email.trim();
    if email.is_empty() || !email.contains('@') {
        return Err(ConnectorError::InvalidArgument(format!("not an email address: {email:?}")));
    }
    let user_name = option("user-name").unwrap_or(email);
    // Servers that announce no filter support often take `userName eq`
    // all the same (django-scim2 does): try it, and where it is refused,
    // the POST's 409 (userName is unique) is what stops a duplicate.
    let announced = server.features()?.config.filter;
    let existing = match server.scim.find("/Users", &filter_eq("userName", user_name)) {
        Err(ConnectorError::InvalidArgument(_) | ConnectorError::Upstream(_) | ConnectorError::Unsupported(_) | ConnectorError::Forbidden(_)) if !announced => {
            None
        }
        other => other?,
    };
    // A server that ignores the filter answers with other users.
    if let Some(existing) = existing.filter(|u| read::text(u, "userName").is_some_and(|n| n.eq_ignore_ascii_case(user_name))) {
        let account = records::user(&existing)?;
        let message = format!("user {user_name} already exists (id {})", account.id);
        return Ok(AccountResult { outcome: Outcome::NoChange, account, message });
    }
    let Some(created) = server.scim.create("/Users", new_user(user_name, email, request.display_name.as_deref(), option("external-id")))? else {
        // A dry run answers writes without a body: nothing was created.
        let account =
            Resource { resource_type: "user".into(), id: String::new(), display_name: user_name.into(), parent: None, attributes: vec![pair("email", email)] };
        return Ok(AccountResult { outcome: Outcome::Changed, account, message: format!("would create user {user_name}") });
    };
    let account = records::user(&created)?;
    let message = format!("created user {user_name} (id {})", account.id);
    Ok(AccountResult { outcome: Outcome::Changed, account, message })
}

fn new_user(user_name: &str, email: &str, display_name: Option<&str>, external_id: Option<&str>) -> Value {
    let mut user = json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "emails": [{ "value": email, "primary": true, "type": "work" }],
        "active": true,
    });
    if let Some(name) = display_name.map(str::trim).filter(|n| !n.is_empty()) {
        user["displayName"] = json!(name);
        user["name"] = json!({ "formatted": name });
    }
    if let Some(external_id) = external_id {
        user["externalId"] = json!(external_id);
    }
    user
}

pub fn deactivate(server: &Server, account: &ResourceRef) -> Result<WriteResult, ConnectorError> {
    if account.resource_type != "user" {
        return Err(ConnectorError::InvalidArgument(format!("only users can be deactivated, not a {:?}", account.resource_type)));
    }
    server.require_patch("deactivating a user")?;
    let raw = server.scim.get("/Users", &account.id, None)?;
    if read::flag(&raw, "active") == Some(false) {
        return Ok(WriteResult { outcome: Outcome::NoChange, grant: None, message: format!("user {} is already inactive", account.id) });
    }
    server.scim.patch("/Users", &account.id, vec![op_replace("active", json!(false))])?;
    Ok(WriteResult { outcome: Outcome::Changed, grant: None, message: format!("deactivated user {} (active=false)", account.id) })
}
