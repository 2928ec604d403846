//! Writes through the API: grant, revoke, create and disable accounts.
//! Each asks the connector first what it would do (`check-write`); one the
//! upstream cannot undo needs `"confirm": true`, as the CLI needs `--yes`.
//! `"dry_run": true` holds every write back and shows it. Every request,
//! refused or not, goes to the audit table; one that reaches the write is
//! recorded as `started` before it goes out. Writes to one instance run one
//! at a time, and a stop waits for those in progress.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{find, ApiError};
use super::audit::NewEntry;
use super::Server;
use crate::runtime::bindings::{guest, Pair, ResourceRef};
use crate::runtime::instance::{ConnectorInstance, PlannedWrite};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    entitlement: String,
    /// `TYPE:ID`
    principal: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

/// The flags of a revoke (its query) and a disable (its body). Strict, as
/// the bodies are: a misspelt `dry_run` ignored would send the write. (A
/// refusal reaches the client as `{code, message}` through
/// `api::errors_as_json`.)
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WriteFlags {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountBody {
    email: String,
    display_name: Option<String>,
    #[serde(default)]
    fields: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

/// A disable's flags: none without a body (the defaults), else its JSON,
/// strictly. Read from the bytes, not through an optional `Json`: that
/// one is absent without a Content-Type header, and a `{"dry_run": true}`
/// sent without one made a real deactivation.
fn optional_flags(headers: &HeaderMap, body: &[u8]) -> Result<WriteFlags, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(WriteFlags::default());
    }
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or_default().trim().to_ascii_lowercase());
    if content_type.as_ref().is_some_and(|t| !(t.starts_with("application/json") || t.contains("+json"))) {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad_request", "the body must be JSON (Content-Type: application/json)"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_request", format!("the body is not the flags of a disable: {e}")))
}

fn reference(text: &str) -> Result<ResourceRef, ApiError> {
    match text.split_once(':') {
        Some((t, id)) if !t.is_empty() && !id.is_empty() => Ok(ResourceRef { resource_type: t.into(), id: id.into() }),
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("{text:?}: expected TYPE:ID (e.g. user:123)"))),
    }
}

/// Who asked: the API has one token, so the caller may name itself in
/// `X-Tether-Actor` (recorded as given, beside the token's use).
fn actor(headers: &HeaderMap) -> String {
    let named = headers.get("x-tether-actor").and_then(|v| v.to_str().ok()).map(|s| s.chars().take(200).collect::<String>());
    match named {
        Some(name) if !name.is_empty() => format!("api-token ({name})"),
        _ => "api-token".to_string(),
    }
}

/// A write's flags come in one place: the JSON body (grant, create and
/// disable) or the query (revoke, which has no body). Sent in the other,
/// they were ignored, and a `?dry_run=true` on a grant made the write.
fn no_query(uri: &Uri) -> Result<(), ApiError> {
    match uri.query() {
        Some(query) if !query.is_empty() => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "this write takes no query: send dry_run and confirm in the JSON body; nothing was done"))
        }
        _ => Ok(()),
    }
}

fn no_body(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "a revoke takes no body: send ?dry_run=true or ?confirm=true in the query; nothing was done"))
    }
}

/// The answer of a request that reached `write`, which audits it, marked
/// so that `audit_refused_writes` does not record it again.
fn audited(answer: Result<Json<Value>, ApiError>) -> Response {
    let mut response = answer.into_response();
    response.extensions_mut().insert(Audited);
    response
}

/// Marks an answer whose request is in the audit log already.
#[derive(Clone, Copy)]
pub struct Audited;

pub async fn grant(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<GrantBody>,
) -> Result<Response, ApiError> {
    no_query(&uri)?;
    let principal = reference(&body.principal)?;
    let target = json!({"entitlement": body.entitlement, "principal": body.principal});
    let planned = PlannedWrite::Grant { entitlement_id: body.entitlement.clone(), principal };
    Ok(audited(write(&s, &name, &actor(&headers), "grant", target, planned, body.dry_run, body.confirm).await))
}

pub async fn revoke(
    State(s): State<Arc<Server>>,
    Path((name, id)): Path<(String, String)>,
    Query(flags): Query<WriteFlags>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    no_body(&body)?;
    let target = json!({"grant": id});
    Ok(audited(write(&s, &name, &actor(&headers), "revoke", target, PlannedWrite::Revoke { grant_id: id.clone() }, flags.dry_run, flags.confirm).await))
}

pub async fn create_account(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<AccountBody>,
) -> Result<Response, ApiError> {
    no_query(&uri)?;
    let target = json!({"email": body.email, "display_name": body.display_name, "fields": body.fields});
    let options = body.fields.iter().map(|(k, v)| Pair { name: k.clone(), value: v.clone() }).collect();
    let request = guest::AccountRequest { email: body.email.clone(), display_name: body.display_name.clone(), options };
    Ok(audited(write(&s, &name, &actor(&headers), "create-account", target, PlannedWrite::CreateAccount(request), body.dry_run, body.confirm).await))
}

pub async fn disable_account(
    State(s): State<Arc<Server>>,
    Path((name, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    no_query(&uri)?;
    let flags = optional_flags(&headers, &body)?;
    let account = if id.contains(':') { reference(&id)? } else { ResourceRef { resource_type: "user".into(), id: id.clone() } };
    let target = json!({"account": format!("{}:{}", account.resource_type, account.id)});
    Ok(audited(write(&s, &name, &actor(&headers), "disable-account", target, PlannedWrite::DisableAccount(account), flags.dry_run, flags.confirm).await))
}

/// The write a request is, by its method and path: the instance's name and
/// the audit's action.
fn write_action(method: &Method, path: &str) -> Option<(String, &'static str)> {
    let rest = path.strip_prefix("/v1/instances/")?;
    let (name, what) = rest.split_once('/')?;
    let what: Vec<&str> = what.split('/').collect();
    let action = match (method, what.as_slice()) {
        (&Method::POST, ["grants"]) => "grant",
        (&Method::DELETE, ["grants", _]) => "revoke",
        (&Method::POST, ["accounts"]) => "create-account",
        (&Method::POST, ["accounts", _, "disable"]) => "disable-account",
        _ => return None,
    };
    Some((name.to_string(), action))
}

/// Records a write refused before it reached `write` (a body that is not
/// JSON, flags of the wrong type or in the wrong place, a body too big):
/// every write attempt is evidence, and one probing the API leaves a trace.
/// Behind the token check: unauthenticated requests are not recorded, or
/// anyone could fill the log.
pub async fn audit_refused_writes(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    let Some((name, action)) = write_action(request.method(), request.uri().path()) else { return next.run(request).await };
    let path = request.uri().path().to_string();
    let who = actor(request.headers());
    let response = next.run(request).await;
    if response.status().is_success() || response.extensions().get::<Audited>().is_some() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    // JSON from the handlers; axum's own refusals are still plain text here.
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let name = crate::terminal::clip(&name, 256);
    let target = json!({"path": crate::terminal::clip(&path, 1024)});
    let upstream = format!("{}: {}", parts.status, crate::terminal::clip(&message, 1024));
    let entry = NewEntry { actor: &who, instance: &name, action, target: &target, dry_run: false, outcome: "refused", upstream: &upstream };
    if let Err(e) = server.audit.record(&entry) {
        tracing::error!("cannot record a refused write in the audit log: {e:#}");
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[allow(clippy::too_many_arguments)]
async fn write(
    server: &Server,
    name: &str,
    actor: &str,
    action: &str,
    target: Value,
    planned: PlannedWrite,
    dry_run: bool,
    confirm: bool,
) -> Result<Json<Value>, ApiError> {
    let instance = match find(server, name) {
        Ok(instance) => instance,
        Err(unknown) => {
            // An attempt is evidence too, aimed at an instance or not.
            let name = crate::terminal::clip(name, 256);
            let entry = NewEntry { actor, instance: &name, action, target: &target, dry_run, outcome: "refused", upstream: "no such instance" };
            if let Err(e) = server.audit.record(&entry) {
                tracing::error!("cannot record a write in the audit log: {e:#}");
            }
            return Err(unknown);
        }
    };
    // Counted in before the stop is looked at: a stop either sees this
    // write and waits for it, or this write sees the stop.
    let _in_flight = server.writes.read().await;
    if *server.quit.borrow() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the server is stopping; send the write again once it is back"));
    }
    let _one_write_at_a_time = instance.writing.lock().await;
    let record = |outcome: &str, upstream: &str| {
        let entry = NewEntry { actor, instance: name, action, target: &target, dry_run, outcome, upstream };
        if let Err(e) = server.audit.record(&entry) {
            tracing::error!(instance = %name, "cannot record a write in the audit log: {e:#}");
        }
    };
    let Some(version) = instance.version() else {
        record("refused", "no module loaded");
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the instance has no module loaded"));
    };
    let settings = instance.settings();
    let permissions = super::loader::permissions(&settings, &server.data_dir, dry_run, Some(instance.throttle.clone()));
    let mut connector = ConnectorInstance::start(&server.engine, &version.module, &permissions).await.map_err(|e| {
        record("failed", &format!("{e:#}"));
        ApiError::new(StatusCode::BAD_GATEWAY, "connector_failed", format!("{e:#}"))
    })?;
    if let PlannedWrite::CreateAccount(request) = &planned {
        for pair in &request.options {
            if !connector.metadata.account_fields.iter().any(|f| f.key == pair.name) {
                record("refused", "unknown account field");
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("{}: not an account field this connector takes", pair.name)));
            }
        }
    }
    let effect = connector.check_write(&planned).await.map_err(|e| {
        record("failed", &e.to_string());
        match client_mistake(&e) {
            Some(refused) => refused,
            None => ApiError::new(StatusCode::BAD_GATEWAY, "connector_failed", format!("the connector could not say what the write would do: {e}")),
        }
    })?;
    if effect.irreversible && !dry_run && !confirm {
        record("refused", &format!("needs confirm: {}", effect.description));
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "confirmation_required",
            format!("this write cannot be undone ({}); send it again with \"confirm\": true", effect.description),
        ));
    }
    // Recorded before the write goes out, its outcome once it is known.
    let started = NewEntry { actor, instance: name, action, target: &target, dry_run, outcome: "started", upstream: "" };
    let entry = server.audit.record(&started).map_err(|e| {
        tracing::error!(instance = %name, "cannot record a write in the audit log: {e:#}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", "the audit log cannot be written, so no write is made")
    })?;
    let finish = |outcome: &str, upstream: &str| {
        if let Err(e) = server.audit.finish(entry, outcome, upstream) {
            tracing::error!(instance = %name, "cannot record a write's outcome in the audit log: {e:#}");
        }
    };
    let done = super::adapter::perform_write(&mut connector, &planned).await;
    server.metrics.add_http(name, &connector.http().counters);
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            let text = e.to_string();
            finish("failed", &text);
            return Err(client_mistake(&e).unwrap_or_else(|| ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", text)));
        }
    };
    let held: Vec<Value> = connector.http().held_requests().into_iter().map(|r| json!({"method": r.method, "url": r.url, "body": r.body})).collect();
    let outcome = if dry_run {
        "dry_run"
    } else {
        match done.changed {
            Some(true) => "changed",
            Some(false) => "no_change",
            None => "done",
        }
    };
    // The connector wrote its message as if the write went out (its
    // requests were held): said plainly, so no reader takes a dry run's
    // "deactivated user …" for a deactivation.
    let message = if dry_run { format!("dry run, nothing was sent: {}", done.message) } else { done.message };
    finish(outcome, &message);
    tracing::info!(instance = %name, action, outcome, "write through the API");
    Ok(Json(json!({
        "outcome": outcome,
        "message": message,
        "id": done.id,
        "irreversible": effect.irreversible,
        "effect": effect.description,
        "held_requests": held,
    })))
}

/// A connector's answer that says the request itself was wrong (an id of
/// the wrong shape, a missing field, an entitlement that is not there):
/// the client's to fix, and not worth sending again, unlike a 502.
fn client_mistake(error: &crate::runtime::instance::CallError) -> Option<ApiError> {
    use crate::runtime::bindings::ConnectorError;
    use crate::runtime::instance::CallError;
    match error {
        CallError::Connector(ConnectorError::InvalidArgument(_)) => Some(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", error.to_string())),
        CallError::Connector(ConnectorError::NotFound(_)) => Some(ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())),
        CallError::Connector(ConnectorError::Unsupported(_)) => Some(ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", error.to_string())),
        _ => None,
    }
}
