//! Asana REST endpoints (reads and the membership writes).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, OriginalUri, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::index::OrgIndex;
use crate::org::{name_from_email, valid_email, License, Org, User};
use crate::query::{paginate, render, window, Query};
use crate::server::Shared;
use crate::{lock, views, API_PREFIX};

type ApiResult = Result<Response, ApiError>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/workspaces", get(list_workspaces))
        .route("/workspaces/{gid}", get(get_workspace))
        .route("/workspaces/{gid}/teams", get(list_teams))
        .route("/workspaces/{gid}/workspace_memberships", get(list_workspace_memberships))
        .route("/workspaces/{gid}/users", get(list_workspace_users))
        .route("/workspaces/{gid}/addUser", post(workspace_add_user))
        .route("/workspaces/{gid}/removeUser", post(workspace_remove_user))
        .route("/team_memberships", get(query_team_memberships))
        .route("/teams/{gid}", get(get_team))
        .route("/teams/{gid}/team_memberships", get(list_team_memberships))
        .route("/teams/{gid}/addUser", post(team_add_user))
        .route("/teams/{gid}/removeUser", post(team_remove_user))
        .route("/users", get(list_users))
        .route("/users/{gid}", get(get_user))
}

/// The request's path (without /api/1.0) and parsed query string.
pub(crate) struct Ctx {
    path: String,
    query: Query,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Nested routers see a stripped URI; pagination links need the API-relative path.
        let uri = parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.clone(), |o| o.0.clone());
        let path = uri.path().strip_prefix(API_PREFIX).unwrap_or(uri.path()).to_string();
        Ok(Ctx { path, query: Query::parse(uri.query())? })
    }
}

impl Ctx {
    fn fields(&self) -> Option<Vec<String>> {
        self.query.opt_fields()
    }

    fn respond(&self, status: StatusCode, body: &Value) -> Response {
        let text = if self.query.pretty() { serde_json::to_string_pretty(body).unwrap_or_default() } else { body.to_string() };
        let mut resp = (status, text).into_response();
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
        resp
    }

    fn object(&self, data: Value) -> ApiResult {
        Ok(self.respond(StatusCode::OK, &json!({ "data": data })))
    }

    /// Paginates `items`, renders each, and wraps them in Asana's list envelope.
    fn list<T>(&self, shared: &Shared, items: Vec<T>, gid_of: impl Fn(&T) -> &str, full: impl Fn(&T) -> Value, compact_keys: &[&str]) -> ApiResult {
        let page = paginate(items, gid_of, &self.query, &self.path, &shared.base_url)?;
        let fields = self.fields();
        let data: Vec<Value> = page.items.iter().map(|t| render(&full(t), fields.as_deref(), compact_keys)).collect();
        let mut body = json!({ "data": data });
        // next_page is only part of the response when the client paginates.
        if let Some(next) = page.next {
            body["next_page"] = next.unwrap_or(Value::Null);
        }
        Ok(self.respond(StatusCode::OK, &body))
    }
}

/// Asana answers 400 for ids that cannot be gids and 404 for well-formed unknown ones.
fn unknown(kind: &str, gid: &str) -> ApiError {
    if !gid.is_empty() && gid.bytes().all(|b| b.is_ascii_digit()) {
        ApiError::not_found(format!("{kind}: Unknown object: {gid}"))
    } else {
        ApiError::bad_request(format!("{kind}: Not a recognized ID: {gid}"))
    }
}

/// A user reference as Asana accepts it: "me", an email, or a gid.
fn resolve_user<'a>(org: &'a Org, reference: &str) -> Result<&'a User, ApiError> {
    let r = reference.trim();
    let found = if r == "me" {
        org.token_owner()
    } else if r.contains('@') {
        org.user_by_email(r)
    } else {
        org.user(r)
    };
    found.ok_or_else(|| unknown("user", r))
}

/// The `user` of an addUser/removeUser body: JSON `{"data":{"user":..}}` or a form field.
fn body_user(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let missing = || ApiError::bad_request("user: Missing input");
    let is_form = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| ApiError::bad_request("Could not parse request data, invalid form data"))?;
        return pairs.into_iter().find(|(k, _)| k == "user").map(|(_, v)| v).ok_or_else(missing);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(missing());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Could not parse request data, invalid JSON: {e}")))?;
    match value.get("data").and_then(|d| d.get("user")) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(missing()),
    }
}

async fn list_workspaces(State(shared): State<Arc<Shared>>, ctx: Ctx) -> ApiResult {
    let world = lock(&shared.world);
    let items: Vec<_> = world.org.workspaces.iter().collect();
    ctx.list(&shared, items, |w| &w.gid, |w| views::workspace(w), views::COMPACT)
}

async fn get_workspace(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx) -> ApiResult {
    let world = lock(&shared.world);
    let ws = world.org.workspace(&gid).ok_or_else(|| unknown("workspace", &gid))?;
    let full = views::workspace(ws);
    let default = ["gid", "resource_type", "name", "is_organization", "email_domains"];
    ctx.object(render(&full, ctx.fields().as_deref(), &default))
}

async fn list_teams(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx) -> ApiResult {
    let mut world = lock(&shared.world);
    let (org, index) = world.indexed();
    let workspace = org.workspace(&gid).ok_or_else(|| unknown("workspace", &gid))?;
    if shared.teams_only_in_organizations && !workspace.is_organization {
        return Err(ApiError::bad_request("workspace: This workspace is not an organization, so it has no teams"));
    }
    let teams = window(OrgIndex::get(&index.teams_by_workspace, &gid), |&i| &org.teams[i].gid, &ctx.query, &ctx.path)?;
    let items: Vec<_> = teams.iter().map(|&i| &org.teams[i]).collect();
    ctx.list(&shared, items, |t| &t.gid, |t| views::team(org, t), views::COMPACT)
}

async fn get_team(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx) -> ApiResult {
    let world = lock(&shared.world);
    let org = &world.org;
    let team = org.team(&gid).ok_or_else(|| unknown("team", &gid))?;
    let default = ["gid", "resource_type", "name", "description", "html_description", "organization", "permalink_url", "visibility"];
    ctx.object(render(&views::team(org, team), ctx.fields().as_deref(), &default))
}

async fn list_workspace_memberships(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx) -> ApiResult {
    let mut world = lock(&shared.world);
    let (org, index) = world.indexed();
    org.workspace(&gid).ok_or_else(|| unknown("workspace", &gid))?;
    // Optional `user` filter (gid, email or "me").
    let only_user = match ctx.query.get("user") {
        Some(r) => Some(resolve_user(org, r)?.gid.clone()).filter(|_| !shared.ignore_user_filter),
        None => None,
    };
    let all = OrgIndex::get(&index.workspace_memberships_by_workspace, &gid);
    // Filtered, the page's window is not known before the filter.
    let memberships = if only_user.is_some() { all } else { window(all, |&i| &org.workspace_memberships[i].gid, &ctx.query, &ctx.path)? };
    let items: Vec<_> = memberships.iter().map(|&i| &org.workspace_memberships[i]).filter(|m| only_user.as_ref().is_none_or(|u| &m.user_gid == u)).collect();
    ctx.list(&shared, items, |m| &m.gid, |m| views::workspace_membership(org, m), views::WORKSPACE_MEMBERSHIP_COMPACT)
}

async fn list_team_memberships(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx) -> ApiResult {
    let mut world = lock(&shared.world);
    let (org, index) = world.indexed();
    org.team(&gid).ok_or_else(|| unknown("team", &gid))?;
    let memberships = window(OrgIndex::get(&index.team_memberships_by_team, &gid), |&i| &org.team_memberships[i].gid, &ctx.query, &ctx.path)?;
    let items: Vec<_> = memberships.iter().map(|&i| &org.team_memberships[i]).collect();
    ctx.list(&shared, items, |m| &m.gid, |m| views::team_membership(org, m), views::TEAM_MEMBERSHIP_COMPACT)
}

/// `GET /team_memberships`: by `team`, or by `user` with `workspace`, or
/// all three (Asana requires `user` and `workspace` together).
async fn query_team_memberships(State(shared): State<Arc<Shared>>, ctx: Ctx) -> ApiResult {
    let world = lock(&shared.world);
    let org = &world.org;
    let team = ctx.query.get("team").map(str::to_string);
    let workspace = ctx.query.get("workspace").map(str::to_string);
    let user = match ctx.query.get("user") {
        Some(r) => Some(resolve_user(org, r)?.gid.clone()),
        None => None,
    };
    if user.is_some() != workspace.is_some() {
        return Err(ApiError::bad_request("user and workspace must be given together"));
    }
    if team.is_none() && user.is_none() {
        return Err(ApiError::bad_request("give team, or user and workspace"));
    }
    if let Some(t) = &team {
        org.team(t).ok_or_else(|| unknown("team", t))?;
    }
    if let Some(w) = &workspace {
        org.workspace(w).ok_or_else(|| unknown("workspace", w))?;
    }
    let items: Vec<_> = org
        .team_memberships
        .iter()
        .filter(|m| team.as_ref().is_none_or(|t| &m.team_gid == t))
        .filter(|m| shared.ignore_user_filter || user.as_ref().is_none_or(|u| &m.user_gid == u))
        .filter(|m| workspace.as_ref().is_none_or(|w| org.team(&m.team_gid).is_some_and(|t| &t.workspace_gid == w)))
        .collect();
    ctx.list(&shared, items, |m| &m.gid, |m| views::team_membership(org, m), views::TEAM_MEMBERSHIP_COMPACT)
}

/// Users of a workspace and/or team (both optional), sorted by gid like Asana.
fn users_response(shared: &Shared, ctx: &Ctx, workspace: Option<&str>, team: Option<&str>) -> ApiResult {
    let mut world = lock(&shared.world);
    let (org, index) = world.indexed();
    if let Some(w) = workspace {
        org.workspace(w).ok_or_else(|| unknown("workspace", w))?;
    }
    if let Some(t) = team {
        org.team(t).ok_or_else(|| unknown("team", t))?;
    }
    // Indices into org.users; those of one workspace or team come in gid
    // order, so only the page's window of them is looked at.
    let user_gid = |&i: &usize| org.users[i].gid.as_str();
    let chosen: Vec<usize> = match (workspace, team) {
        (Some(w), Some(t)) => {
            let in_team: std::collections::HashSet<usize> = OrgIndex::get(&index.users_by_team, t).iter().copied().collect();
            OrgIndex::get(&index.users_by_workspace, w).iter().copied().filter(|u| in_team.contains(u)).collect()
        }
        (Some(w), None) => window(OrgIndex::get(&index.users_by_workspace, w), user_gid, &ctx.query, &ctx.path)?.to_vec(),
        (None, Some(t)) => window(OrgIndex::get(&index.users_by_team, t), user_gid, &ctx.query, &ctx.path)?.to_vec(),
        (None, None) => (0..org.users.len()).collect(),
    };
    let items: Vec<&User> = chosen.into_iter().map(|i| &org.users[i]).collect();
    ctx.list(shared, items, |u| &u.gid, |u| views::user(org, u, &workspaces_of(index, u)), views::COMPACT)
}

async fn list_users(State(shared): State<Arc<Shared>>, ctx: Ctx) -> ApiResult {
    let workspace = ctx.query.get("workspace").map(str::to_string);
    let team = ctx.query.get("team").map(str::to_string);
    users_response(&shared, &ctx, workspace.as_deref(), team.as_deref())
}

async fn list_workspace_users(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx) -> ApiResult {
    users_response(&shared, &ctx, Some(&gid), None)
}

/// The workspaces a user is in, from the org's lookups.
fn workspaces_of<'a>(index: &'a OrgIndex, user: &User) -> Vec<&'a str> {
    index.workspaces_by_user.get(user.gid.as_str()).map(|ws| ws.iter().map(String::as_str).collect()).unwrap_or_default()
}

fn user_object(org: &Org, index: &OrgIndex, ctx: &Ctx, user: &User) -> Value {
    render(&views::user(org, user, &workspaces_of(index, user)), ctx.fields().as_deref(), views::USER_DEFAULT)
}

async fn get_user(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx) -> ApiResult {
    let mut world = lock(&shared.world);
    let (org, index) = world.indexed();
    let user = resolve_user(org, &gid)?;
    ctx.object(user_object(org, index, &ctx, user))
}

async fn team_add_user(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx, headers: HeaderMap, body: Bytes) -> ApiResult {
    let reference = body_user(&headers, &body)?;
    let mut world = lock(&shared.world);
    let team = world.org.team(&gid).ok_or_else(|| unknown("team", &gid))?.clone();
    let user = resolve_user(&world.org, &reference)?.clone();
    let membership = world
        .org
        .workspace_membership(&user.gid, &team.workspace_gid)
        .ok_or_else(|| ApiError::bad_request("user: The user must be a member of the team's organization."))?;
    if !membership.is_active || !user.active {
        return Err(ApiError::bad_request("user: Cannot add a deactivated user to a team."));
    }
    let is_guest = membership.is_guest;
    let i = world.add_team_member(&user.gid, &team.gid, is_guest);
    let full = views::team_membership(&world.org, &world.org.team_memberships[i]);
    let default = ["gid", "resource_type", "user", "team", "is_admin", "is_guest", "is_limited_access", "access_level"];
    ctx.object(render(&full, ctx.fields().as_deref(), &default))
}

async fn team_remove_user(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx, headers: HeaderMap, body: Bytes) -> ApiResult {
    let reference = body_user(&headers, &body)?;
    let mut world = lock(&shared.world);
    world.org.team(&gid).ok_or_else(|| unknown("team", &gid))?;
    let user_gid = resolve_user(&world.org, &reference)?.gid.clone();
    // Removing a non-member is a no-op success, which keeps revocation idempotent.
    world.remove_team_member(&user_gid, &gid);
    ctx.object(json!({}))
}

async fn workspace_add_user(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx, headers: HeaderMap, body: Bytes) -> ApiResult {
    let reference = body_user(&headers, &body)?;
    let mut world = lock(&shared.world);
    world.org.workspace(&gid).ok_or_else(|| unknown("workspace", &gid))?;
    let user_gid = match resolve_user(&world.org, &reference) {
        Ok(u) if !u.active => {
            return Err(ApiError::bad_request("user: The user is deactivated and cannot be added."));
        }
        Ok(u) => u.gid.clone(),
        // Inviting an unknown email creates the account; new seats start view-only.
        Err(_) if reference.contains('@') => {
            let email = reference.trim().to_string();
            if !valid_email(&email) {
                return Err(ApiError::bad_request(format!("user: Not a valid email address: {email}")));
            }
            let i = world.create_user(name_from_email(&email), email, License::ViewOnly);
            world.org.users[i].gid.clone()
        }
        Err(e) => return Err(e),
    };
    world.add_workspace_member(&user_gid, &gid);
    let (org, index) = world.indexed();
    let user = org.user(&user_gid).ok_or_else(|| unknown("user", &user_gid))?;
    ctx.object(user_object(org, index, &ctx, user))
}

async fn workspace_remove_user(State(shared): State<Arc<Shared>>, Path(gid): Path<String>, ctx: Ctx, headers: HeaderMap, body: Bytes) -> ApiResult {
    let reference = body_user(&headers, &body)?;
    let mut world = lock(&shared.world);
    world.org.workspace(&gid).ok_or_else(|| unknown("workspace", &gid))?;
    let user_gid = resolve_user(&world.org, &reference)?.gid.clone();
    world.remove_workspace_member(&user_gid, &gid);
    ctx.object(json!({}))
}
