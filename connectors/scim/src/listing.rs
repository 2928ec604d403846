//! The host's paged list calls: each is at most one SCIM request.
//!
//! Users and groups are listed with `startIndex`/`count` (the page token is
//! the next `startIndex`, see `StartToken`). A group's `member` entitlement costs no request.
//! Grants come from one of two places (`Server::members_from`): a group's
//! `members` (one GET per group, since servers often leave members out of
//! list answers), or, for servers that never return members, per user or
//! group by `GET /Groups?filter=members.value eq "ID"`.

use tether_guest::contract::Page;
use tether_guest::page::{empty, PageBuilder};
use tether_guest::scim::{filter_eq, ListQuery, StartToken};
use tether_guest::{json, ConnectorError, ResourceRef};

use crate::records;
use crate::server::Server;
use crate::settings::MembersFrom;

pub fn list_resources(server: &Server, resource_type: &str, token: Option<&str>) -> Result<Page, ConnectorError> {
    let (endpoint, excluded) = match resource_type {
        "user" => ("/Users", None),
        // Members are read per group (list_grants): list pages stay small.
        "group" => ("/Groups", Some("members")),
        other => return Err(unknown_type(other)),
    };
    let token = StartToken::parse(token)?;
    let count = server.page_size()?;
    let list =
        server.scim.list(endpoint, &ListQuery { start_index: Some(token.start), count: Some(count), excluded_attributes: excluded, ..ListQuery::default() })?;
    let mut page = PageBuilder::new();
    for raw in &list.resources {
        page.resource(if resource_type == "user" { records::user(raw)? } else { records::group(raw)? });
    }
    Ok(page.finish(token.next(&list)?))
}

pub fn list_entitlements(server: &Server, resource: &ResourceRef) -> Result<Page, ConnectorError> {
    match resource.resource_type.as_str() {
        "user" => Ok(empty()),
        "group" => {
            let grantable = server.features()?.config.patch;
            let mut page = PageBuilder::new();
            page.entitlement(records::member_entitlement(resource, grantable));
            Ok(page.finish(None))
        }
        other => Err(unknown_type(other)),
    }
}

pub fn list_grants(server: &Server, resource: &ResourceRef, token: Option<&str>) -> Result<Page, ConnectorError> {
    let kind = resource.resource_type.as_str();
    if !records::PRINCIPAL_TYPES.contains(&kind) {
        return Err(unknown_type(kind));
    }
    match (server.members_from()?, kind) {
        (MembersFrom::Filter, _) => groups_of(server, resource, token),
        (_, "group") => members_of(server, resource),
        _ => Ok(empty()),
    }
}

/// The grants of a group's `member` entitlement, from its `members`.
fn members_of(server: &Server, group: &ResourceRef) -> Result<Page, ConnectorError> {
    let raw = server.scim.get("/Groups", &group.id, Some("members"))?;
    let mut page = PageBuilder::new();
    for member in json::list(&raw, "members") {
        if let Some(principal) = records::member_principal(member) {
            page.grant(records::member_grant(&group.id, &principal));
        }
    }
    Ok(page.finish(None))
}

/// The grants `principal` holds, from the groups that list it as a member.
fn groups_of(server: &Server, principal: &ResourceRef, token: Option<&str>) -> Result<Page, ConnectorError> {
    let token = StartToken::parse(token)?;
    let count = server.page_size()?;
    let filter = filter_eq("members.value", &principal.id);
    let query = ListQuery { start_index: Some(token.start), count: Some(count), filter: Some(&filter), attributes: Some("id"), ..ListQuery::default() };
    let list = server.scim.list("/Groups", &query)?;
    let mut page = PageBuilder::new();
    for group in &list.resources {
        let group = records::group(group)?;
        page.grant(records::member_grant(&group.id, principal));
    }
    Ok(page.finish(token.next(&list)?))
}

fn unknown_type(resource_type: &str) -> ConnectorError {
    ConnectorError::InvalidArgument(format!("the SCIM connector lists users and groups, not {resource_type:?}"))
}
