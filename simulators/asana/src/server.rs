//! The HTTP server: configuration, the gate every request passes (recording, auth, rate
//! limits), and the handle tests and the CLI hold.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{ApiError, ScimError, RATE_LIMITED};
use crate::faults::{self, Fault, Faults};
use crate::org::{Org, OrgSpec, World};
use crate::ratelimit::{Limited, RateLimiter};
use crate::{lock, rest, scim, API_PREFIX};

/// Bodies larger than this are refused (Asana's own limit is far lower for these calls).
const MAX_BODY: usize = 2 * 1024 * 1024;
/// Recording stops growing here so a long-running `asana-sim` stays bounded.
const MAX_RECORDED: usize = 100_000;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub org: Org,
    pub token: String,
    pub per_minute_budget: u32,
    pub max_concurrent_reads: usize,
    pub max_concurrent_writes: usize,
    pub inject_429_rate: f64,
    /// Share of requests answered 500 or 503 (half each) with an error body
    /// in the API's shape; the request is not carried out.
    pub inject_5xx_rate: f64,
    /// Share of requests whose connection is dropped before the answer's
    /// body (recorded with status 0); the request is not carried out.
    pub inject_reset_rate: f64,
    pub retry_after_secs: u64,
    pub seed: u64,
    /// Answer 400 for the teams of a workspace that is not an organization,
    /// as some Asana accounts do (teams belong to organizations).
    pub teams_only_in_organizations: bool,
    /// Added before every answer, like a real upstream's round trip (and so
    /// that a test can stop a sync halfway through).
    pub latency: std::time::Duration,
    /// Membership lookups ignore their `user` filter and answer with every
    /// membership of the team or workspace, as a lying or broken upstream
    /// might: a connector must not take someone else's for the user's.
    pub ignore_user_filter: bool,
}

impl SimConfig {
    pub fn new(org: Org) -> Self {
        SimConfig {
            org,
            token: "sim-token".to_string(),
            per_minute_budget: 1500,
            max_concurrent_reads: 50,
            max_concurrent_writes: 15,
            inject_429_rate: 0.0,
            inject_5xx_rate: 0.0,
            inject_reset_rate: 0.0,
            retry_after_secs: 1,
            seed: 42,
            teams_only_in_organizations: false,
            latency: std::time::Duration::ZERO,
            ignore_user_filter: false,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::new(Org::generate(&OrgSpec::default()))
    }
}

/// One request as the simulator saw it. `path` has no `/api/1.0` prefix; `body` is the
/// request body (None when empty); `status` is 0 for a dropped connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub body: Option<String>,
}

/// State shared by all handlers.
pub(crate) struct Shared {
    pub world: Mutex<World>,
    pub base_url: String,
    pub teams_only_in_organizations: bool,
    pub ignore_user_filter: bool,
    latency: std::time::Duration,
    token: String,
    limiter: RateLimiter,
    faults: Faults,
    outage: Mutex<Option<(u64, u32)>>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    count: AtomicU64,
    /// While true, every request waits before it is answered (see `SimHandle::hold`).
    held: tokio::sync::watch::Sender<bool>,
    /// Requests waiting while held.
    waiting: AtomicU64,
}

impl Shared {
    fn new(config: SimConfig, addr: SocketAddr) -> Shared {
        Shared {
            base_url: base_url(addr),
            teams_only_in_organizations: config.teams_only_in_organizations,
            ignore_user_filter: config.ignore_user_filter,
            latency: config.latency,
            token: config.token,
            limiter: RateLimiter::new(
                config.per_minute_budget,
                config.max_concurrent_reads,
                config.max_concurrent_writes,
                config.inject_429_rate,
                config.retry_after_secs,
                config.seed,
            ),
            faults: Faults::new(config.inject_5xx_rate, config.inject_reset_rate, config.seed),
            world: Mutex::new(World::new(config.org)),
            outage: Mutex::new(None),
            recorded: Mutex::new(VecDeque::new()),
            count: AtomicU64::new(0),
            held: tokio::sync::watch::Sender::new(false),
            waiting: AtomicU64::new(0),
        }
    }
}

/// "http://127.0.0.1:PORT/api/1.0"; a wildcard bind is reached through loopback.
fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}{API_PREFIX}", SocketAddr::new(ip, addr.port()))
}

fn app(shared: Arc<Shared>) -> Router {
    // Each router gets the 405 fallback: it does not carry over into nested routers.
    let api = rest::router().nest("/scim", scim::router().method_not_allowed_fallback(method_not_allowed)).method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest(API_PREFIX, api)
        .fallback(|| async { ApiError::not_found("No matching route for request") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed for this route")
}

fn is_scim(path: &str) -> bool {
    path == "/scim" || path.starts_with("/scim/")
}

/// Every request passes here: it is counted and recorded whatever happens to it, then
/// authenticated and rate limited before reaching a handler.
async fn gate(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    // The sender lives as long as `shared`, so this cannot fail.
    shared.waiting.fetch_add(1, Ordering::SeqCst);
    let _ = shared.held.subscribe().wait_for(|held| !*held).await;
    shared.waiting.fetch_sub(1, Ordering::SeqCst);
    let number = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    // A planned outage: from request number `at` on, `n` requests get 429.
    if let Some((at, n)) = *lock(&shared.outage) {
        if number == at {
            shared.limiter.force_next(n);
        }
    }
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let full_path = parts.uri.path();
    let path = match full_path.strip_prefix(API_PREFIX) {
        Some("") => "/".to_string(),
        Some(p) => p.to_string(),
        None => full_path.to_string(),
    };
    let query = parts.uri.query().unwrap_or_default().to_string();
    let scim = is_scim(&path);

    let (bytes, response) = match to_bytes(body, MAX_BODY).await {
        Err(_) => {
            let msg = "Request body too large or unreadable";
            let resp = if scim {
                ScimError::new(StatusCode::PAYLOAD_TOO_LARGE, None, msg).into_response()
            } else {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg).into_response()
            };
            (Default::default(), Some(resp))
        }
        Ok(bytes) => (bytes, None),
    };
    let recorded_body = (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned());

    let is_read = method == Method::GET || method == Method::HEAD;
    let mut dropped = false;
    let response = match response {
        Some(resp) => resp,
        None if !authorized(&parts.headers, &shared.token) => {
            if scim {
                ScimError::new(StatusCode::UNAUTHORIZED, None, "Not Authorized").into_response()
            } else {
                ApiError::unauthorized().into_response()
            }
        }
        None => match shared.faults.pick(is_read) {
            Some(fault) => {
                dropped = fault == Fault::Reset;
                faults::respond(fault, scim)
            }
            None => match shared.limiter.admit(is_read) {
                Err(limited) => too_many_requests(&limited, scim),
                Ok(admission) => {
                    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
                    drop(admission);
                    resp
                }
            },
        },
    };

    let status = if dropped { 0 } else { response.status().as_u16() };
    tracing::debug!(%method, %path, %query, status, "asana-sim");
    let mut recorded = lock(&shared.recorded);
    if recorded.len() >= MAX_RECORDED {
        recorded.pop_front();
    }
    recorded.push_back(RecordedRequest { method: method.to_string(), path, query, status, body: recorded_body });
    response
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match value.trim().split_once(' ') {
        Some((scheme, presented)) => scheme.eq_ignore_ascii_case("bearer") && presented.trim() == token,
        None => false,
    }
}

fn too_many_requests(limited: &Limited, scim: bool) -> Response {
    tracing::debug!(reason = limited.reason, "asana-sim: 429");
    let mut resp = if scim {
        ScimError::new(StatusCode::TOO_MANY_REQUESTS, None, RATE_LIMITED).into_response()
    } else {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED).into_response()
    };
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after_secs));
    resp
}

/// A running simulator. Dropping it stops the server too; `shutdown` waits for that.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Binds `bind` (use 127.0.0.1:0 for an ephemeral port) and serves in the background.
    /// Returns once the socket is listening, so requests can be sent right away.
    pub async fn start(config: SimConfig, bind: SocketAddr) -> anyhow::Result<SimHandle> {
        let listener = TcpListener::bind(bind).await.with_context(|| format!("binding the Asana simulator to {bind}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, addr));
        let (stop, stopped) = oneshot::channel::<()>();
        let router = app(shared.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("asana-sim server error: {e}");
            }
        });
        Ok(SimHandle { shared, addr, stop: Some(stop), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Every request received, including rejected ones.
    pub fn request_count(&self) -> u64 {
        self.shared.count.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).iter().cloned().collect()
    }

    /// Snapshot of the current state (writes change it).
    pub fn org(&self) -> Org {
        lock(&self.shared.world).org.clone()
    }

    /// The next `n` authenticated requests get 429 with Retry-After (tests of retry paths).
    pub fn force_429_next(&self, n: u32) {
        self.shared.limiter.force_next(n);
    }

    /// The next `n` authenticated requests get 503 (tests of retry paths).
    pub fn force_503_next(&self, n: u32) {
        self.shared.faults.force_next(n);
    }

    /// The next `n` authenticated writes (not GET or HEAD) get 503; reads
    /// pass. The writes are not carried out.
    pub fn force_503_next_writes(&self, n: u32) {
        self.shared.faults.force_next_writes(n);
    }

    /// From the `at`-th request (counting from 1) on, `n` requests get 429:
    /// an outage in the middle of a sync, for tests of failure and resume.
    pub fn force_429_from(&self, at: u64, n: u32) {
        *lock(&self.shared.outage) = Some((at, n));
    }

    /// Requests wait, unanswered, until `release`: a test can keep a sync
    /// running for as long as it needs, however fast the machine.
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Requests waiting to be answered (while held, the ones held).
    pub fn waiting(&self) -> u64 {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Answers the held requests and every one after.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            // Graceful shutdown waits for open connections; a client holding one open
            // must not hang the caller.
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
