//! Asana's SCIM Users API: listing users with their license (`userType`)
//! and profile, reading one user, and the PATCH operations.

use serde_json::{json, Value};

use tether_guest::paging;
use tether_guest::scim::{self, ListQuery, ENTERPRISE_USER_SCHEMA as ENTERPRISE_EXTENSION};

use crate::client::{malformed, Client};
use crate::records::{license_grant, pair, text, LICENSES};
use tether_guest::contract::{Grant, Resource};
use tether_guest::types::ConnectorError;

/// Users per SCIM page.
const PAGE_SIZE: u64 = 100;

/// A SCIM user as Tether needs it.
pub struct ScimUser {
    pub id: String,
    pub user_name: String,
    pub active: bool,
    pub user_type: Option<String>,
    raw: Value,
}

impl ScimUser {
    pub fn parse(raw: Value) -> Result<Self, ConnectorError> {
        let id = text(&raw, "id").filter(|id| !id.is_empty()).ok_or_else(|| malformed("/scim/Users", "a user without an id"))?.to_string();
        let user_name = text(&raw, "userName").unwrap_or_default().to_string();
        let active = raw.get("active").and_then(Value::as_bool).unwrap_or(true);
        let user_type = text(&raw, "userType").map(str::to_string);
        Ok(ScimUser { id, user_name, active, user_type, raw })
    }

    /// The SCIM id is the user's gid in Asana, so this merges with the
    /// same user listed through REST.
    pub fn resource(&self) -> Resource {
        let raw = &self.raw;
        let email = raw
            .get("emails")
            .and_then(Value::as_array)
            .and_then(|emails| emails.iter().find(|e| e.get("primary").and_then(Value::as_bool) == Some(true)).or(emails.first()))
            .and_then(|e| text(e, "value"))
            .unwrap_or(&self.user_name);
        let name = raw.get("name").and_then(|n| text(n, "formatted")).or(text(raw, "displayName")).unwrap_or(email);
        let mut attributes = vec![pair("email", email.to_string()), pair("active", self.active.to_string())];
        if let Some(title) = text(raw, "title") {
            attributes.push(pair("title", title.to_string()));
        }
        if let Some(department) = raw.get(ENTERPRISE_EXTENSION).and_then(|e| text(e, "department")) {
            attributes.push(pair("department", department.to_string()));
        }
        if let Some(user_type) = &self.user_type {
            attributes.push(pair("user_type", user_type.clone()));
        }
        Resource { resource_type: "user".into(), id: self.id.clone(), display_name: name.to_string(), parent: None, attributes }
    }

    /// The license this user holds: none when deactivated.
    pub fn license(&self) -> Option<&'static str> {
        if !self.active {
            return None;
        }
        let user_type = self.user_type.as_deref()?.to_ascii_lowercase();
        LICENSES.iter().map(|(id, _)| *id).find(|id| *id == user_type)
    }

    /// The grant of this user's license in `org`, the organization SCIM
    /// serves.
    pub fn license_grant(&self, org: &str) -> Option<Grant> {
        self.license().map(|license| license_grant(org, license, &self.id, false))
    }
}

/// One page of `/Users`; the token is the next `startIndex`.
pub fn list_users(client: &Client, token: Option<&str>) -> Result<(Vec<ScimUser>, Option<String>), ConnectorError> {
    let start = paging::number_token(token, 1, "SCIM")?;
    let page = client.scim.list("/Users", &ListQuery { start_index: Some(start), count: Some(PAGE_SIZE), ..ListQuery::default() })?;
    let next = page.next_start(start)?;
    let users = page.resources.into_iter().map(ScimUser::parse).collect::<Result<Vec<_>, _>>()?;
    Ok((users, next.map(|n| n.to_string())))
}

/// One user. Asana hides deactivated users from SCIM GET: they answer 404
/// (see `provision::scim_user`, which tells them from strangers).
pub fn get_user(client: &Client, id: &str) -> Result<ScimUser, ConnectorError> {
    if id.is_empty() || id.contains('/') {
        return Err(ConnectorError::InvalidArgument(format!("bad user id {id:?}")));
    }
    ScimUser::parse(client.scim.get("/Users", id, None)?)
}

pub fn find_by_user_name(client: &Client, user_name: &str) -> Result<Option<ScimUser>, ConnectorError> {
    client.scim.find("/Users", &scim::filter_eq("userName", user_name))?.map(ScimUser::parse).transpose()
}

/// The created user, or null when the answer has no body (a dry run).
pub fn create_user(client: &Client, email: &str, name: Option<&str>, user_type: &str) -> Result<Value, ConnectorError> {
    let formatted = name.unwrap_or(email);
    let (given, family) = match formatted.rsplit_once(' ') {
        Some((given, family)) => (given, family),
        None => (formatted, ""),
    };
    let created = client.scim.create(
        "/Users",
        json!({
            "schemas": [scim::USER_SCHEMA],
            "userName": email,
            "emails": [{ "value": email, "primary": true, "type": "work" }],
            "name": { "formatted": formatted, "givenName": given, "familyName": family },
            "userType": user_type,
            "active": true,
        }),
    )?;
    Ok(created.unwrap_or(Value::Null))
}

pub fn set_user_type(client: &Client, id: &str, user_type: &str) -> Result<(), ConnectorError> {
    patch(client, id, scim::op_replace("userType", json!(user_type)))
}

pub fn deactivate(client: &Client, id: &str) -> Result<(), ConnectorError> {
    patch(client, id, scim::op_replace("active", json!(false)))
}

/// SCIM PATCH; Asana answers 204 No Content, other servers the updated user.
fn patch(client: &Client, id: &str, operation: Value) -> Result<(), ConnectorError> {
    client.scim.patch("/Users", id, vec![operation])?;
    Ok(())
}
