//! The HTTP API (see docs/openapi.yaml, served at /openapi.yaml). Health
//! checks answer anyone; everything else needs the bearer token. Errors are
//! JSON `{code, message}` with a stable code.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::scheduler::InstanceRuntime;
use super::Server;
use crate::sync::query::{self, Cursor, Filter};
use crate::sync::SyncFile;

/// How long a client has to send a request's body once its headers are in.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OpenAPI document of this API, as kept in the repository.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

pub fn router(server: Arc<Server>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .route("/v1/instances", get(list_instances))
        .route("/v1/instances/{name}", get(one_instance))
        .route("/v1/instances/{name}/sync", post(trigger_sync))
        .route("/v1/instances/{name}/resources", get(resources))
        .route("/v1/instances/{name}/entitlements", get(entitlements))
        .route("/v1/instances/{name}/grants", get(grants).post(super::writes::grant))
        .route("/v1/instances/{name}/grants/{id}", delete(super::writes::revoke))
        .route("/v1/instances/{name}/accounts", post(super::writes::create_account))
        .route("/v1/instances/{name}/accounts/{id}/disable", post(super::writes::disable_account))
        .route("/v1/audit", get(audit))
        // Inside the token check: only an authenticated refusal is audited.
        .route_layer(middleware::from_fn_with_state(server.clone(), super::writes::audit_refused_writes))
        .route_layer(middleware::from_fn_with_state(server.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path") })
        .layer(middleware::map_response(errors_as_json))
        // hyper bounds the time to send headers; this, the body's (a body
        // sent a byte at a time held its connection slot for good).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        .with_state(server)
}

/// axum's own refusals (a body that is not the JSON expected, a bad query,
/// a method a path does not take) come as plain text: every error of this
/// API is `{code, message}`.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut fixed = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        fixed.headers_mut().insert(header::ALLOW, allow.clone());
    }
    fixed
}

/// An API error: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response()
    }
}

async fn require_token(State(server): State<Arc<Server>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    // The scheme's name is case-insensitive (RFC 9110, 11.1).
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim_start());
    // Compared as hashes: the time taken says nothing about the token.
    let token = server.token.read().expect("token lock").clone();
    let matches = !token.is_empty() && Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes());
    if !matches {
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required").into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

async fn readyz(State(server): State<Arc<Server>>) -> Response {
    if server.ready.load(Ordering::SeqCst) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the instances' modules are not all loaded yet (or the server is stopping)").into_response()
    }
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let running: Vec<(String, Arc<super::loader::LoadedVersion>)> =
        server.instances().into_iter().filter_map(|(name, instance)| instance.version().map(|version| (name, version))).collect();
    server.metrics.set_modules(running.iter().map(|(name, v)| [name.as_str(), v.name.as_str(), v.version.as_str(), v.api.as_str(), v.digest.as_str()]));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], server.metrics.render()).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

pub fn find(server: &Server, name: &str) -> Result<Arc<InstanceRuntime>, ApiError> {
    server.instance(name).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_instance", format!("no instance named {name:?}")))
}

fn describe(instance: &InstanceRuntime) -> Value {
    let settings = instance.settings();
    let status = instance.status.lock().expect("status lock").clone();
    let module = instance.version().map(|v| {
        json!({
            "source": v.source,
            "path": v.path.display().to_string(),
            "manifest_digest": v.manifest_digest,
            "name": v.name,
            "version": v.version,
            "digest": v.digest,
            "signer": v.signer,
            "api": v.api,
            "declared_hosts": v.declared_hosts,
            "loaded_at": super::scheduler::rfc3339(v.loaded_at),
        })
    });
    let granted: Vec<String> = settings
        .allowed_hosts
        .iter()
        .map(|h| format!("{}{}{}", if h.plain_http { "http://" } else { "" }, h.host, h.port.map(|p| format!(":{p}")).unwrap_or_default()))
        .collect();
    json!({
        "name": instance.name,
        "module": module,
        "allowed_hosts": granted,
        "schedule": settings.schedule.describe(),
        "running": status.running,
        "last_sync": status.last_sync,
        "next_run": status.next_run,
        "consecutive_failures": status.consecutive_failures,
        "last_refusal": status.last_refusal,
        "module_source_error": status.module_source_error,
    })
}

async fn list_instances(State(server): State<Arc<Server>>) -> Json<Value> {
    let instances: Vec<Value> = server.instances().values().map(|i| describe(i)).collect();
    let refusal = server.config_refusal.lock().expect("refusal lock").clone();
    Json(json!({"instances": instances, "config_reload_refusal": refusal}))
}

async fn one_instance(State(server): State<Arc<Server>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let instance = find(&server, &name)?;
    Ok(Json(describe(&instance)))
}

async fn trigger_sync(State(server): State<Arc<Server>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let instance = find(&server, &name)?;
    if !server.ready.load(Ordering::SeqCst) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting or stopping"));
    }
    if !instance.request_run() {
        return Err(ApiError::new(StatusCode::CONFLICT, "sync_running", format!("{name} is syncing now; try again when it ends")));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted", "instance": name}))).into_response())
}

/// Filters and paging of the record listings.
#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    /// Resource type (of the resource; for entitlements and grants, of the entitled resource).
    #[serde(rename = "type")]
    resource_type: Option<String>,
    /// Grants to this principal, `TYPE:ID`.
    principal: Option<String>,
    /// Grants of this entitlement.
    entitlement: Option<String>,
    /// Entitlements on this resource, `TYPE:ID`.
    resource: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

const MAX_PAGE: usize = 1000;

#[derive(Clone, Copy)]
enum Listing {
    Resources,
    Entitlements,
    Grants,
}

impl Listing {
    /// Integers in the key a cursor of this listing carries.
    fn key_parts(self) -> usize {
        match self {
            Listing::Grants => 2,
            _ => 1,
        }
    }
}

/// A page of records, read by a keyset query (sync::query): no total, as
/// counting would scan the whole run.
async fn list(server: Arc<Server>, name: String, what: Listing, query: ListQuery) -> Result<Json<Value>, ApiError> {
    find(&server, &name)?;
    let path = server.sync_file(&name);
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("limit must be 1 to {MAX_PAGE}")));
    }
    let cursor = match &query.cursor {
        Some(text) => Some(
            Cursor::decode(text, what.key_parts())
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", "the cursor is not one this API gave"))?,
        ),
        None => None,
    };
    let pair = |text: &Option<String>| -> Result<Option<(String, String)>, ApiError> {
        match text {
            None => Ok(None),
            Some(t) => t
                .split_once(':')
                .map(|(a, b)| Some((a.to_string(), b.to_string())))
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("{t:?}: expected TYPE:ID"))),
        }
    };
    let principal = pair(&query.principal)?;
    let resource = pair(&query.resource)?;
    tokio::task::spawn_blocking(move || {
        // No file yet is "not synced"; a file that cannot be read is the
        // server's problem, not the client's.
        if !path.is_file() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "no_sync", format!("{name} has not synced yet")));
        }
        let file = SyncFile::open_reader(&path).map_err(|e| ApiError::internal(format!("{e:#}")))?;
        let run = match &cursor {
            Some(cursor) => {
                // A good run whose records a later sync pruned reads as
                // expired too, not as an empty page.
                if crate::sync::review::reviewable_run(&file, Some(cursor.run)).is_err() {
                    return Err(ApiError::new(
                        StatusCode::GONE,
                        "cursor_expired",
                        "the sync this cursor reads is no longer kept; start again without a cursor",
                    ));
                }
                cursor.run
            }
            None => {
                file.last_good_run()
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no_sync", format!("{name} has no successful sync yet")))?
                    .id
            }
        };
        let filter = Filter {
            resource_type: query.resource_type.as_deref(),
            resource: resource.as_ref().map(|(t, id)| (t.as_str(), id.as_str())),
            principal: principal.as_ref().map(|(t, id)| (t.as_str(), id.as_str())),
            entitlement: query.entitlement.as_deref(),
        };
        let after = cursor.as_ref();
        let (items, next) = match what {
            Listing::Resources => paged(query::resources(&file, run, &filter, after, limit))?,
            Listing::Entitlements => paged(query::entitlements(&file, run, &filter, after, limit))?,
            Listing::Grants => paged(query::grants(&file, run, &filter, after, limit))?,
        };
        Ok(Json(json!({"run_id": run, "items": items, "next_cursor": next.map(|c| c.encode())})))
    })
    .await
    .map_err(ApiError::internal)?
}

fn paged<T: serde::Serialize>(page: anyhow::Result<query::Page<T>>) -> Result<(Vec<Value>, Option<Cursor>), ApiError> {
    let page = page.map_err(ApiError::internal)?;
    Ok((page.items.iter().map(|item| json!(item)).collect(), page.next))
}

async fn resources(State(s): State<Arc<Server>>, Path(name): Path<String>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    list(s, name, Listing::Resources, q).await
}

async fn entitlements(State(s): State<Arc<Server>>, Path(name): Path<String>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    list(s, name, Listing::Entitlements, q).await
}

async fn grants(State(s): State<Arc<Server>>, Path(name): Path<String>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    list(s, name, Listing::Grants, q).await
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    instance: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn audit(State(server): State<Arc<Server>>, Query(q): Query<AuditQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let before = match &q.cursor {
        Some(text) => Some(text.parse::<i64>().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", "the cursor is not one this API gave"))?),
        None => None,
    };
    let entries = server.audit.list(q.instance.as_deref(), before, limit).map_err(ApiError::internal)?;
    let next_cursor = (entries.len() == limit).then(|| entries.last().map(|e| e.id.to_string())).flatten();
    Ok(Json(json!({"items": entries, "next_cursor": next_cursor})))
}
