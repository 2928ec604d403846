//! Asana's SCIM 2.0 Users endpoints (user provisioning in the organization).
//!
//! SCIM sees only full members of the organization: guests and users of other workspaces
//! are not listed. Like Asana, GET hides deactivated users (the list leaves them out and
//! `GET /Users/{id}` answers 404); REST still shows their workspace memberships with
//! `is_active: false`. A PATCH still finds them, and refuses to reactivate them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::error::{scim_json, ScimError};
use crate::lock;
use crate::org::{name_from_email, valid_email, License, Org, User};
use crate::server::Shared;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const MAX_COUNT: usize = 100;

type ScimResult = Result<Response, ScimError>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new().route("/Users", get(list_users).post(create_user)).route("/Users/{id}", get(get_user).patch(patch_user))
}

/// Users SCIM manages: non-guest members of the organization, deactivated ones included.
fn scim_users(org: &Org) -> Vec<&User> {
    let Some(orgws) = org.organization() else {
        return Vec::new();
    };
    let mut users: Vec<&User> =
        org.workspace_memberships.iter().filter(|m| m.workspace_gid == orgws.gid && !m.is_guest).filter_map(|m| org.user(&m.user_gid)).collect();
    users.sort_by_key(|u| u.gid.parse::<u64>().unwrap_or(u64::MAX));
    users.dedup_by(|a, b| a.gid == b.gid);
    users
}

/// Users SCIM GET shows: the active ones.
fn visible_scim_users(org: &Org) -> Vec<&User> {
    scim_users(org).into_iter().filter(|u| u.active).collect()
}

fn find_scim_user<'a>(org: &'a Org, id: &str) -> Result<&'a User, ScimError> {
    scim_users(org).into_iter().find(|u| u.gid == id).ok_or_else(|| ScimError::not_found(id))
}

/// "First Rest Of Name" -> ("First", "Rest Of Name").
fn split_name(name: &str) -> (String, String) {
    match name.trim().split_once(' ') {
        Some((g, f)) => (g.to_string(), f.trim().to_string()),
        None => (name.trim().to_string(), String::new()),
    }
}

fn resource(base_url: &str, u: &User) -> Value {
    let (given, family) = split_name(&u.name);
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "id": u.gid,
        "userName": u.email,
        "name": {"givenName": given, "familyName": family, "formatted": u.name},
        "displayName": u.name,
        "emails": [{"value": u.email, "primary": true, "type": "work"}],
        "active": u.active,
        "title": u.title,
        "userType": u.license.as_str(),
        ENTERPRISE_SCHEMA: {"department": u.department},
        "meta": {"resourceType": "User", "location": format!("{base_url}/scim/Users/{}", u.gid)},
    })
}

fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, ScimError> {
    serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|_| ScimError::bad_request("invalidSyntax", "Could not parse the query string"))
}

/// Supports the one filter provisioning clients use: `userName eq "value"`.
fn parse_filter(filter: &str) -> Result<String, ScimError> {
    let invalid = || ScimError::bad_request("invalidFilter", format!("Unsupported filter: {filter}"));
    let mut parts = filter.trim().splitn(3, char::is_whitespace);
    let (Some(attr), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let value = value.trim();
    if !attr.eq_ignore_ascii_case("userName") || !op.eq_ignore_ascii_case("eq") {
        return Err(invalid());
    }
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).map(str::to_string).ok_or_else(invalid)
}

fn int_param(pairs: &[(String, String)], name: &str) -> Result<Option<i64>, ScimError> {
    match pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
        None => Ok(None),
        Some((_, v)) => v.trim().parse().map(Some).map_err(|_| ScimError::bad_request("invalidValue", format!("{name} must be an integer"))),
    }
}

async fn list_users(State(shared): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> ScimResult {
    let pairs = parse_query(raw.as_deref())?;
    // SCIM: startIndex is 1-based and values below 1 mean 1; negative counts mean 0.
    let start = int_param(&pairs, "startIndex")?.unwrap_or(1).max(1) as usize;
    let count = int_param(&pairs, "count")?.unwrap_or(MAX_COUNT as i64).clamp(0, MAX_COUNT as i64) as usize;
    let filter = match pairs.iter().find(|(k, _)| k == "filter") {
        Some((_, f)) => Some(parse_filter(f)?),
        None => None,
    };
    let world = lock(&shared.world);
    let matching: Vec<&User> = visible_scim_users(&world.org).into_iter().filter(|u| filter.as_ref().is_none_or(|f| u.email.eq_ignore_ascii_case(f))).collect();
    let page: Vec<Value> = matching.iter().skip(start - 1).take(count).map(|u| resource(&shared.base_url, u)).collect();
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": matching.len(),
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    Ok(scim_json(StatusCode::OK, &body))
}

async fn get_user(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ScimResult {
    let world = lock(&shared.world);
    let user = visible_scim_users(&world.org).into_iter().find(|u| u.gid == id).ok_or_else(|| ScimError::not_found(&id))?;
    Ok(scim_json(StatusCode::OK, &resource(&shared.base_url, user)))
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ScimError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ScimError::bad_request("invalidSyntax", "Request body must be a JSON object")),
        Err(e) => Err(ScimError::bad_request("invalidSyntax", format!("Invalid JSON: {e}"))),
    }
}

fn conflict(email: &str) -> ScimError {
    ScimError::new(StatusCode::CONFLICT, Some("uniqueness"), format!("A user with userName {email} already exists"))
}

/// The editable SCIM view of a user; creates and patches both go through it.
#[derive(Clone)]
struct Draft {
    given: String,
    family: String,
    /// Set when the client names the user as a whole (displayName / name.formatted).
    formatted: Option<String>,
    email: String,
    title: String,
    department: String,
    active: bool,
    license: License,
}

impl Draft {
    fn of(u: &User) -> Draft {
        let (given, family) = split_name(&u.name);
        Draft {
            given,
            family,
            formatted: None,
            email: u.email.clone(),
            title: u.title.clone(),
            department: u.department.clone(),
            active: u.active,
            license: u.license,
        }
    }

    fn name(&self) -> String {
        match &self.formatted {
            Some(f) if !f.trim().is_empty() => f.trim().to_string(),
            _ => format!("{} {}", self.given.trim(), self.family.trim()).trim().to_string(),
        }
    }

    /// Sets one attribute. `attr` is lowercase, relative to the core schema.
    /// Returns false for attributes this simulator does not know.
    fn set(&mut self, attr: &str, value: &Value) -> Result<bool, ScimError> {
        let text = || value.as_str().map(str::to_string).ok_or_else(|| ScimError::bad_request("invalidValue", format!("{attr} must be a string")));
        match attr {
            "active" => self.active = scim_bool(value)?,
            "usertype" => {
                self.license =
                    License::parse(&text()?).ok_or_else(|| ScimError::bad_request("invalidValue", "userType must be \"enterprise\" or \"view only\""))?
            }
            "title" => self.title = text()?,
            "username" => self.email = text()?,
            "displayname" | "name.formatted" => self.formatted = Some(text()?),
            "name.givenname" => self.given = text()?,
            "name.familyname" => self.family = text()?,
            "name" => {
                let obj = value.as_object().ok_or_else(|| ScimError::bad_request("invalidValue", "name must be an object"))?;
                for (k, v) in obj {
                    self.set(&format!("name.{}", k.to_ascii_lowercase()), v)?;
                }
            }
            "emails" => {
                if let Some(email) = primary_email(value) {
                    self.email = email;
                }
            }
            a if a.starts_with("emails[") => {
                // e.g. emails[type eq "work"].value
                if let Some(s) = value.as_str() {
                    self.email = s.to_string();
                } else if let Some(email) = primary_email(value) {
                    self.email = email;
                }
            }
            "department" => self.department = text()?,
            a if a == ENTERPRISE_SCHEMA.to_ascii_lowercase() => {
                if let Some(dept) = value.get("department") {
                    self.set("department", dept)?;
                }
            }
            a if a.starts_with(&format!("{}:", ENTERPRISE_SCHEMA.to_ascii_lowercase())) => {
                let sub = &a[ENTERPRISE_SCHEMA.len() + 1..];
                if sub != "department" {
                    return Ok(false);
                }
                self.set("department", value)?;
            }
            // Known to SCIM but not modelled here.
            "externalid" | "schemas" | "id" | "meta" | "locale" | "timezone" | "preferredlanguage" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Applies a whole object (POST body, or a PATCH op without a path). Unknown
    /// attributes are ignored, as servers do for full resources.
    fn set_all(&mut self, obj: &Map<String, Value>) -> Result<(), ScimError> {
        for (k, v) in obj {
            self.set(&k.to_ascii_lowercase(), v)?;
        }
        Ok(())
    }
}

/// Azure AD sends booleans as "True"/"False" strings.
fn scim_bool(v: &Value) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::bad_request("invalidValue", "active must be a boolean")),
    }
}

fn primary_email(v: &Value) -> Option<String> {
    let list = v.as_array()?;
    let pick = list.iter().find(|e| e.get("primary") == Some(&Value::Bool(true))).or(list.first())?;
    pick.get("value")?.as_str().map(str::to_string)
}

async fn create_user(State(shared): State<Arc<Shared>>, body: Bytes) -> ScimResult {
    let obj = parse_body(&body)?;
    let email = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("userName"))
        .and_then(|(_, v)| v.as_str())
        .map(|s| s.trim().to_string())
        .ok_or_else(|| ScimError::bad_request("invalidValue", "userName is required"))?;
    if !valid_email(&email) {
        return Err(ScimError::bad_request("invalidValue", format!("userName must be an email address: {email}")));
    }
    let mut draft = Draft {
        given: String::new(),
        family: String::new(),
        formatted: None,
        email: email.clone(),
        title: String::new(),
        department: String::new(),
        active: true,
        license: License::ViewOnly,
    };
    draft.set_all(&obj)?;
    // userName is the identity; emails[] must not override it.
    draft.email = email.clone();

    let mut world = lock(&shared.world);
    if world.org.user_by_email(&email).is_some() {
        return Err(conflict(&email));
    }
    let org_gid =
        world.org.organization().map(|w| w.gid.clone()).ok_or_else(|| ScimError::bad_request("invalidValue", "There is no organization to provision into"))?;
    let name = match draft.name() {
        n if n.is_empty() => name_from_email(&email),
        n => n,
    };
    let i = world.create_user(name, email, draft.license);
    let gid = world.org.users[i].gid.clone();
    world.org.users[i].title = draft.title;
    world.org.users[i].department = draft.department;
    // SCIM provisions full members, whatever the email domain.
    if let Some(m) = world.add_workspace_member(&gid, &org_gid) {
        world.org.workspace_memberships[m].is_guest = false;
    }
    if !draft.active {
        world.deactivate_user(&gid);
    }
    let body = resource(&shared.base_url, &world.org.users[i]);
    let mut resp = scim_json(StatusCode::CREATED, &body);
    if let Ok(loc) = HeaderValue::from_str(&format!("{}/scim/Users/{gid}", shared.base_url)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

async fn patch_user(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> ScimResult {
    let obj = parse_body(&body)?;
    let ops = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .and_then(|(_, v)| v.as_array())
        .ok_or_else(|| ScimError::bad_request("invalidSyntax", "Operations is required"))?;

    let mut world = lock(&shared.world);
    let user = find_scim_user(&world.org, &id)?.clone();
    // Apply every operation to a draft first so a bad op changes nothing.
    let mut draft = Draft::of(&user);
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        let path = op.get("path").and_then(Value::as_str).map(|p| p.trim().to_ascii_lowercase());
        let value = op.get("value").unwrap_or(&Value::Null);
        match (kind.as_str(), path) {
            ("replace" | "add", None) => {
                let map = value.as_object().ok_or_else(|| ScimError::bad_request("invalidValue", "An operation without a path needs an object value"))?;
                draft.set_all(map)?;
            }
            ("replace" | "add", Some(p)) => {
                if !draft.set(&p, value)? {
                    return Err(ScimError::bad_request("invalidPath", format!("Unsupported path: {p}")));
                }
            }
            ("remove", Some(p)) if p == "title" || p.ends_with("department") => {
                draft.set(&p, &Value::String(String::new()))?;
            }
            ("remove", p) => {
                return Err(ScimError::bad_request("mutability", format!("Cannot remove {}", p.unwrap_or_else(|| "the user".into()))));
            }
            (other, _) => {
                return Err(ScimError::bad_request("invalidSyntax", format!("Unknown op: {other:?}")));
            }
        }
    }

    if !user.active && draft.active {
        return Err(ScimError::bad_request("mutability", "Asana cannot reactivate a deactivated user"));
    }
    let email = draft.email.trim().to_string();
    if !email.eq_ignore_ascii_case(&user.email) {
        if !valid_email(&email) {
            return Err(ScimError::bad_request("invalidValue", format!("userName must be an email address: {email}")));
        }
        if world.org.user_by_email(&email).is_some() {
            return Err(conflict(&email));
        }
    }
    let name = match draft.name() {
        n if n.is_empty() => user.name.clone(),
        n => n,
    };
    if let Some(u) = world.org.users.iter_mut().find(|u| u.gid == id) {
        u.name = name;
        u.email = email;
        u.title = draft.title;
        u.department = draft.department;
    }
    if draft.license != user.license {
        world.set_license(&id, draft.license);
    }
    if user.active && !draft.active {
        world.deactivate_user(&id);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
