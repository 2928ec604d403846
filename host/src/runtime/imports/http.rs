//! The `http` import: every request a connector makes goes through here.
//!
//! The host decides where a request may go (the egress allow-list, checked
//! again on every redirect), attaches secrets only to allowed hosts, caps
//! response sizes and time, and counts what was sent.
//!
//! Transient upstream failures are tried again here, for every connector:
//! an idempotent request (a GET, or any request carrying an
//! `Idempotency-Key` header, the IETF httpapi convention for "safe to
//! repeat") that meets a 500, 502, 503 or 504, a timeout or a broken
//! connection is sent again after an exponential backoff with jitter, a
//! bounded number of times per request and within a retry budget shared by
//! every call of the instance. Other writes are sent again only when no
//! connection could be made, so nothing reached the upstream. A 429 goes to
//! the connector, which reports `rate-limited` with the upstream's
//! Retry-After; the sync driver waits that out.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{bail, Result};
use backon::{ExponentialBuilder, Retryable};
use url::Url;
use wasmtime::component::HasData;

use crate::runtime::activity::GuestActivity;
use crate::runtime::bindings::tether::connector::http::{self as wit, HttpError, Method, Request, Response};
use crate::runtime::bindings::Pair;
use crate::runtime::imports::config::Secrets;
use crate::runtime::imports::upstream::{self, Access, HostThrottle};
use crate::runtime::limits::{CallBudget, Limits};

/// One destination a connector may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    pub host: String,
    /// None: the scheme's default port.
    pub port: Option<u16>,
    /// Plain http is allowed only where the operator said so (`http://`
    /// prefix), or for loopback addresses they listed.
    pub plain_http: bool,
    /// Listed by the operator, not only declared by the connector: only
    /// then may it be an IP address or resolve to a private one.
    pub from_operator: bool,
}

impl AllowedHost {
    /// Parses the operator's `HOST`, `HOST:PORT`, `http://HOST[:PORT]` or
    /// `https://HOST[:PORT]`. Errors say what is wrong with `spec`; the
    /// caller says where it was given (a flag, a config key, metadata).
    pub fn parse(spec: &str) -> Result<Self> {
        let (scheme, rest) = match spec.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
            Some((other, _)) => bail!("scheme {other:?} is not http or https"),
            None => (None, spec),
        };
        let url = Url::parse(&format!("https://{}", rest.trim_end_matches('/'))).map_err(|e| anyhow::anyhow!("not a HOST[:PORT] ({e})"))?;
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            bail!("give a host and optional port only");
        }
        let host = url.host_str().ok_or_else(|| anyhow::anyhow!("no host"))?.to_ascii_lowercase();
        // The URL parser would take `*` as the name "%2a".
        if rest.contains('*') || host.contains('%') {
            bail!("wildcards are not supported; list each host");
        }
        if rest.trim_end_matches('/').ends_with(':') {
            bail!("the port is empty");
        }
        // The port as written: parsed as https, 443 reads as no port, and
        // would then mean 80 for a plain-http request.
        let written = |scheme: &str| Url::parse(&format!("{scheme}://{}", rest.trim_end_matches('/'))).ok().and_then(|url| url.port());
        let port = written("https").or_else(|| written("http"));
        if port == Some(0) {
            bail!("port 0 is no port a request can go to");
        }
        let plain_http = scheme == Some("http") || is_loopback(&host);
        Ok(AllowedHost { host, port, plain_http, from_operator: true })
    }

    /// A host the connector declares in its metadata: https only, and never
    /// an IP address or a name resolving to a private one.
    pub fn declared(spec: &str) -> Result<Self> {
        let parsed = Self::parse(spec)?;
        Ok(AllowedHost { plain_http: false, from_operator: false, ..parsed })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// True for addresses on the public internet; false for loopback, private,
/// link-local (cloud metadata), shared, documentation, multicast and
/// reserved ranges, which a connector reaches only where the operator
/// listed the host.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]) // NAT64 of any v4
        }
    }
}

/// Which URLs a connector may reach.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    hosts: Vec<AllowedHost>,
}

impl EgressPolicy {
    pub fn new(hosts: Vec<AllowedHost>) -> Self {
        EgressPolicy { hosts }
    }

    pub fn hosts(&self) -> &[AllowedHost] {
        &self.hosts
    }

    /// Ok when `url` may be requested; otherwise why not. IP addresses pass
    /// only when the operator listed them, like private ones.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(format!("scheme {scheme:?} is not allowed (https only)"));
        }
        let host = url.host_str().ok_or("the URL has no host")?.to_ascii_lowercase();
        // reqwest would send them as an Authorization header of the
        // connector's making: credentials come only from the operator.
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL holds a user name or password (credentials come only from the operator's secrets)".into());
        }
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let default_port = if scheme == "https" { 443 } else { 80 };
        let matching = || self.hosts.iter().filter(|h| h.host == host && h.port.unwrap_or(default_port) == port);
        // The operator's listing of a host outranks the connector's.
        let entry = matching()
            .find(|h| h.from_operator)
            .or_else(|| matching().next())
            .ok_or_else(|| format!("{host}:{port} is not an allowed host (the operator allows hosts with --allow-host, or allowed_hosts under serve)"))?;
        if matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))) && !entry.from_operator {
            return Err(format!("{host} is an IP address, which only the operator can allow (--allow-host)"));
        }
        // A name the operator listed may resolve to private addresses (see
        // `may_resolve_privately`), which the resolver cannot tell apart by
        // port: the operator's port is the only one the connector reaches.
        if !entry.from_operator && self.hosts.iter().any(|h| h.from_operator && h.host == host) {
            return Err(format!(
                "{host}:{port} is not an allowed host: the operator allowed {host} on other ports only (--allow-host {host}:{port} to allow it)"
            ));
        }
        if scheme == "http" && !entry.plain_http {
            return Err(format!("plain http to {host}:{port} is not allowed (https only)"));
        }
        Ok(())
    }

    /// Whether `name` may resolve to a private address: only a host the
    /// operator listed.
    fn may_resolve_privately(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| h.from_operator && h.host.eq_ignore_ascii_case(name))
    }
}

/// Resolves names for the connector's requests, refusing private, loopback
/// and link-local addresses unless the operator listed the host: a declared
/// host cannot be pointed at the inside of the network through DNS.
struct PublicOnlyResolver {
    policy: Arc<RwLock<EgressPolicy>>,
}

/// Why a name was not resolved; found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to private addresses, which only the operator can allow (--allow-host)")]
struct PrivateAddressRefused(String);

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        let private_ok = self.policy.read().map(|p| p.may_resolve_privately(&name)).unwrap_or(false);
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.filter(|address| private_ok || is_public(address.ip())).collect();
            if addresses.is_empty() {
                return Err(Box::new(PrivateAddressRefused(name)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Figures the host keeps about a connector's HTTP use.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Every attempt sent, retries included.
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    /// How long upstreams take to answer (a moving average, in µs; 0 until
    /// the first answer), from sending to the last byte, waits excluded.
    pub response_micros: AtomicU64,
    /// Attempts sent again by the host after a transient failure.
    pub retries: AtomicU64,
    /// Attempts by (host, status), "error" when no answer came: what
    /// `tether serve` exports as metrics.
    pub by_host_status: Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

impl HttpCounters {
    /// Folds one answer's time into the moving average (weight 1/8).
    fn count_response_time(&self, took: std::time::Duration) {
        let sample = took.as_micros().min(u128::from(u64::MAX / 2)) as u64;
        let _ = self
            .response_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| Some(if mean == 0 { sample.max(1) } else { (mean * 7 + sample) / 8 }));
    }

    /// The moving average of answers' times (zero before the first).
    pub fn response_time(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.response_micros.load(Ordering::Relaxed))
    }

    fn count_answer(&self, host: &str, status: &str) {
        if let Ok(mut counts) = self.by_host_status.lock() {
            *counts.entry((host.to_string(), status.to_string())).or_default() += 1;
        }
    }

    /// Attempts so far by (host, status).
    pub fn answers(&self) -> Vec<((String, String), u64)> {
        self.by_host_status.lock().map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }
}

/// How an attempt failed, as far as trying it again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream answered with this status.
    Status(u16),
    /// No connection could be made: nothing reached the upstream.
    NotConnected,
    /// The request or its answer took longer than `http-timeout`.
    TimedOut,
    /// The connection broke (reset, closed early) once the request may
    /// have been sent.
    Broken,
    /// Refused by the host (egress policy, size cap) or malformed: the same
    /// again would fail the same way.
    Final,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "HTTP {status}"),
            Failure::NotConnected => f.write_str("no connection"),
            Failure::TimedOut => f.write_str("timed out"),
            Failure::Broken => f.write_str("connection broken"),
            Failure::Final => f.write_str("refused"),
        }
    }
}

/// Whether a request may be sent again on its own: a GET, or one the
/// connector marks with an `Idempotency-Key` header. POST, PATCH, PUT and
/// DELETE without one are not, whatever HTTP says of PUT and DELETE: the
/// host cannot know what a connector's write does twice.
pub fn is_idempotent(method: &Method, headers: &[Pair]) -> bool {
    matches!(method, Method::Get) || headers.iter().any(|h| h.name.eq_ignore_ascii_case("idempotency-key"))
}

/// Whether the host tries a failed attempt again. 429 is not retried here:
/// the connector reports it with the upstream's Retry-After.
pub fn may_retry(idempotent: bool, failure: Failure) -> bool {
    match failure {
        Failure::Status(500 | 502 | 503 | 504) | Failure::TimedOut | Failure::Broken => idempotent,
        Failure::NotConnected => true,
        Failure::Status(_) | Failure::Final => false,
    }
}

/// An attempt that did not give a final answer: why, and what the
/// connector gets if it is not tried again.
struct FailedAttempt {
    failure: Failure,
    outcome: Result<Response, HttpError>,
}

/// Retries: the backoff schedule of one request, and the budget all of an
/// instance's requests share.
struct RetryPolicy {
    backoff: ExponentialBuilder,
    budget: u32,
    budget_left: AtomicU64,
    exhausted: AtomicBool,
}

impl RetryPolicy {
    fn new(limits: &Limits) -> Self {
        RetryPolicy {
            // Exponential (factor 2) from the base delay, capped, with
            // jitter of up to as much again so clients that failed together
            // do not come back together.
            backoff: ExponentialBuilder::default()
                .with_min_delay(limits.http_retry_base)
                .with_max_delay(limits.http_retry_max_delay.max(limits.http_retry_base))
                .with_max_times(limits.http_retries as usize)
                .with_jitter(),
            budget: limits.http_retry_budget,
            budget_left: AtomicU64::new(limits.http_retry_budget.into()),
            exhausted: AtomicBool::new(false),
        }
    }

    /// Takes one retry from the budget; false once it is spent.
    fn take(&self) -> bool {
        let taken = self.budget_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_ok();
        if !taken {
            self.exhausted.store(true, Ordering::Relaxed);
        }
        taken
    }
}

/// A write the host did not send because of `--dry-run`.
#[derive(Debug, Clone)]
pub struct HeldRequest {
    pub method: String,
    pub url: String,
    pub body: Option<String>,
}

pub struct HttpGateway {
    client: reqwest::Client,
    policy: Arc<RwLock<EgressPolicy>>,
    secrets: Arc<Secrets>,
    max_response_bytes: usize,
    /// Rate budget, requests in flight and 429 pauses per host, shared by
    /// every instance that holds this gateway.
    pub throttle: Arc<HostThrottle>,
    retry: RetryPolicy,
    pub counters: HttpCounters,
    /// With dry-run, writes are held here instead of being sent.
    dry_run: Option<Mutex<Vec<HeldRequest>>>,
}

/// Request headers the host sets, never the connector: the credentials and
/// the host, and those that would have the answer compressed or cut in
/// pieces, where a secret it echoes would pass redaction unrecognised.
const HOST_HEADERS: [&str; 6] = ["authorization", "host", "accept-encoding", "te", "range", "if-range"];

impl HttpGateway {
    /// `throttle`: a budget to share; None, one of its own.
    pub fn new(policy: EgressPolicy, secrets: Arc<Secrets>, limits: &Limits, dry_run: bool, throttle: Option<Arc<HostThrottle>>) -> Result<Self> {
        let timeout = limits.http_timeout;
        let policy = Arc::new(RwLock::new(policy));
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(PublicOnlyResolver { policy: policy.clone() }))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
            // A proxy from the environment would resolve the names itself,
            // past the resolver's refusal of private addresses.
            .no_proxy()
            // Every hop of a redirect must pass the same egress check; reqwest
            // also drops the Authorization header when the host changes.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("too many redirects");
                }
                let verdict = redirect_policy.read().map(|p| p.check(attempt.url())).unwrap_or(Err("policy unavailable".into()));
                match verdict {
                    Ok(()) => attempt.follow(),
                    Err(why) => attempt.error(format!("redirect refused: {why}")),
                }
            }))
            .build()?;
        Ok(HttpGateway {
            client,
            policy,
            secrets,
            max_response_bytes: limits.http_response_bytes,
            throttle: throttle.unwrap_or_else(|| Arc::new(HostThrottle::undeclared(&limits.upstream))),
            retry: RetryPolicy::new(limits),
            counters: HttpCounters::default(),
            dry_run: dry_run.then(|| Mutex::new(vec![])),
        })
    }

    /// The hosts requests may go to now, as `host[:port]`.
    pub fn allowed_hosts(&self) -> Vec<String> {
        self.policy.read().map(|p| p.hosts().iter().map(|h| h.port.map_or(h.host.clone(), |port| format!("{}:{port}", h.host))).collect()).unwrap_or_default()
    }

    pub fn set_policy(&self, policy: EgressPolicy) {
        if let Ok(mut current) = self.policy.write() {
            *current = policy;
        }
    }

    pub fn requests_sent(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    pub fn retries(&self) -> u64 {
        self.counters.retries.load(Ordering::Relaxed)
    }

    /// Once a transient failure went to the connector because this
    /// instance's retry budget was spent: says so, for the error the
    /// operator sees.
    pub fn retry_budget_note(&self) -> Option<String> {
        self.retry
            .exhausted
            .load(Ordering::Relaxed)
            .then(|| format!("the HTTP retry budget is spent ({} retries for this connector instance, --retry-budget)", self.retry.budget))
    }

    /// Writes held back by dry-run, in order.
    pub fn held_requests(&self) -> Vec<HeldRequest> {
        self.dry_run.as_ref().map(|held| held.lock().map(|h| h.clone()).unwrap_or_default()).unwrap_or_default()
    }

    pub async fn send(&self, request: Request) -> Result<Response, HttpError> {
        self.send_held(request, None).await
    }

    /// Sends `request`, adding the time it waits out a 429's pause to `held`.
    pub async fn send_held(&self, request: Request, held: Option<&upstream::HeldTime>) -> Result<Response, HttpError> {
        if has_dot_segment(&request.url) {
            return Err(HttpError::InvalidRequest(format!(
                "{}: a path segment . or .. (also as %2E) would take the request to another endpoint than the one named",
                crate::terminal::escape(&crate::terminal::clip(&request.url, 256))
            )));
        }
        let url = Url::parse(&request.url).map_err(|e| HttpError::InvalidRequest(format!("bad URL: {e}")))?;
        self.policy.read().map_err(|_| HttpError::Denied("policy unavailable".into()))?.check(&url).map_err(HttpError::Denied)?;

        let method = http_method(&request.method);
        if let Some(held) = &self.dry_run {
            if method != reqwest::Method::GET {
                let body = request.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                if let Ok(mut held) = held.lock() {
                    held.push(HeldRequest { method: method.to_string(), url: url.to_string(), body });
                }
                // Answer as the API does for an accepted write with no body.
                return Ok(Response { status: 204, headers: vec![], body: vec![] });
            }
        }

        let idempotent = is_idempotent(&request.method, &request.headers);
        let mut builder = self.client.request(method.clone(), url.clone());
        for header in &request.headers {
            if HOST_HEADERS.iter().any(|name| header.name.eq_ignore_ascii_case(name)) {
                continue;
            }
            builder = builder.header(header.name.as_str(), header.value.as_str());
        }
        builder = builder.header(reqwest::header::ACCEPT_ENCODING, "identity");
        if let Some(name) = &request.bearer_secret {
            let secret = self.secrets.get(name).ok_or_else(|| HttpError::InvalidRequest(format!("no secret named {name:?} was given to this connector")))?;
            builder = builder.bearer_auth(secret.expose());
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let prepared = builder.build().map_err(|e| self.transport_error(e))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();

        // The call's wall-clock limit bounds the attempts and the waits
        // between them, like any other wait.
        let outcome = (|| self.attempt(&prepared, &host, held))
            .retry(self.retry.backoff)
            .sleep(tokio::time::sleep)
            .when(|failed: &FailedAttempt| may_retry(idempotent, failed.failure))
            .adjust(|failed, delay| {
                let delay = delay?;
                if self.retry.take() {
                    Some(delay)
                } else {
                    tracing::warn!("{method} {host}{}: {}; not retried: the retry budget is spent", url.path(), failed.failure);
                    None
                }
            })
            .notify(|failed, delay| {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!("{method} {host}{}: {}; retrying in {delay:?}", url.path(), failed.failure);
            })
            .await;
        outcome.or_else(|failed| failed.outcome)
    }

    /// Sends one attempt of `prepared`. Ok is an answer to hand over as it
    /// is; a 500/502/503/504 or a transport failure comes back as a
    /// failed attempt, which may be tried again.
    async fn attempt(&self, prepared: &reqwest::Request, host: &str, held: Option<&upstream::HeldTime>) -> Result<Response, FailedAttempt> {
        let failed = |failure, error| FailedAttempt { failure, outcome: Err(error) };
        let request = prepared.try_clone().ok_or_else(|| failed(Failure::Final, HttpError::InvalidRequest("the request body cannot be sent again".into())))?;
        // Past the per-host budget, the cap on requests in flight or a 429's
        // pause a request waits its turn (the call's wall-clock limit still
        // bounds the wait); its slot and its place in the budget are held
        // until the answer is read.
        let access = if prepared.method() == reqwest::Method::GET || prepared.method() == reqwest::Method::HEAD { Access::Read } else { Access::Write };
        let _admission = self.throttle.acquire_held(host, access, held).await;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let sent = std::time::Instant::now();
        let mut response = self.client.execute(request).await.map_err(|e| {
            self.counters.count_answer(host, "error");
            failed(self.failure_of(&e), self.transport_error(e))
        })?;
        let status = response.status().as_u16();
        self.counters.count_answer(host, &status.to_string());
        if status == 429 {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            // Every worker of the pool waits, not only the one refused.
            if let Some(wait) = upstream::retry_after(response.headers()) {
                self.throttle.pause(host, wait);
            }
        }
        // An upstream that echoes the request (an echo endpoint, an error
        // quoting the token) must not hand the connector a secret.
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let mut value = String::from_utf8_lossy(&self.secrets.redact_bytes(value.as_bytes().to_vec())).into_owned();
                // The date form told as seconds: a connector has no clock
                // it can trust to tell how long to wait.
                if name == reqwest::header::RETRY_AFTER && value.trim().parse::<u64>().is_err() {
                    if let Some(wait) = upstream::retry_after_value(&value) {
                        value = wait.as_secs_f64().ceil().to_string();
                    }
                }
                Pair { name: name.as_str().to_string(), value }
            })
            .collect();
        // A compressed body is checked for secrets by nobody: the host asks
        // for none, and takes none.
        if let Some(coding) = response.headers().get(reqwest::header::CONTENT_ENCODING).filter(|c| !c.as_bytes().eq_ignore_ascii_case(b"identity")) {
            let coding = crate::terminal::escape(&String::from_utf8_lossy(coding.as_bytes())).into_owned();
            return Err(failed(
                Failure::Final,
                HttpError::Connect(format!("the answer (HTTP {status}) is encoded ({coding}), which the host refuses: it could not check it for secrets")),
            ));
        }
        if response.content_length().is_some_and(|len| len > self.max_response_bytes as u64) {
            return Err(failed(Failure::Final, self.too_large()));
        }
        // Sized from the length the upstream announces, not grown chunk by
        // chunk: a page is copied once, not log(n) times. At most 1 MiB up
        // front, so an upstream that announces more than it sends cannot
        // make every worker reserve the whole response limit.
        let announced = response.content_length().unwrap_or(0).min(self.max_response_bytes.min(1 << 20) as u64);
        let mut body = Vec::with_capacity(announced as usize);
        // A body that breaks off is told apart from an upstream never reached.
        let cut_off = |e: reqwest::Error| {
            let failure = self.failure_of(&e);
            let error = match self.transport_error(e) {
                HttpError::Connect(why) => HttpError::Connect(format!("the answer (HTTP {status}) broke off: {why}")),
                other => other,
            };
            failed(failure, error)
        };
        while let Some(chunk) = response.chunk().await.map_err(cut_off)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(failed(Failure::Final, self.too_large()));
            }
            body.extend_from_slice(&chunk);
        }
        self.counters.count_response_time(sent.elapsed());
        let response = Response { status, headers, body: self.secrets.redact_bytes(body) };
        match status {
            500 | 502 | 503 | 504 => Err(FailedAttempt { failure: Failure::Status(status), outcome: Ok(response) }),
            _ => Ok(response),
        }
    }

    /// How far a request that failed in transport got.
    fn failure_of(&self, e: &reqwest::Error) -> Failure {
        if e.is_redirect() || e.is_builder() {
            Failure::Final
        } else if e.is_connect() {
            // Includes a refused private address, which transport_error
            // turns into a denial; trying again would be refused again.
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                if cause.is::<PrivateAddressRefused>() {
                    return Failure::Final;
                }
                source = cause.source();
            }
            Failure::NotConnected
        } else if e.is_timeout() {
            Failure::TimedOut
        } else {
            Failure::Broken
        }
    }

    fn too_large(&self) -> HttpError {
        HttpError::TooLarge(format!("limit exceeded: http-response-bytes: the response is over {} bytes", self.max_response_bytes))
    }

    fn transport_error(&self, e: reqwest::Error) -> HttpError {
        // reqwest's messages include the URL but never our headers; redact
        // anyway in case a secret was placed in a URL by a connector.
        // reqwest's own message is generic ("error following redirect");
        // the reason is further down its chain.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<PrivateAddressRefused>() {
                return HttpError::Denied(refused.to_string());
            }
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        let text = self.secrets.redact(&text);
        if e.is_redirect() {
            HttpError::Denied(text)
        } else if e.is_timeout() {
            HttpError::Timeout(text)
        } else {
            HttpError::Connect(text)
        }
    }
}

/// What the `http` import serves: the instance's gateway (shared with the
/// host, which reads its counters and sets its policy) and the current
/// call's request budget.
pub struct HttpCtx {
    pub gateway: Arc<HttpGateway>,
    /// Requests the current call has sent, against `http-requests-per-call`.
    pub requests: CallBudget,
    /// A call waiting on its upstream runs no guest code.
    activity: Arc<GuestActivity>,
    /// Whether the current call is a write (see [`HttpCtx::begin_call`]).
    writes: bool,
    /// Time this instance's calls waited out 429 pauses.
    pub held: Arc<upstream::HeldTime>,
}

impl HttpCtx {
    pub fn new(gateway: Arc<HttpGateway>, limits: &Limits, activity: Arc<GuestActivity>) -> Self {
        HttpCtx {
            gateway,
            requests: CallBudget::new(limits.http_requests_per_call, "http-requests-per-call", "HTTP requests"),
            activity,
            writes: false,
            held: Arc::default(),
        }
    }

    /// Before every call into the guest: a fresh request budget, and
    /// whether the call may send more than GET. Only the writes (grant,
    /// revoke, create and disable an account) may, and only once the
    /// operator confirmed them: a sync, a test, the metadata and above all
    /// check-write (which says whether a write can be undone, before the
    /// host asks for `--yes`) change nothing upstream.
    pub fn begin_call(&mut self, writes: bool) {
        self.requests.reset();
        self.writes = writes;
    }
}

/// The contract's method as HTTP's.
fn http_method(method: &Method) -> reqwest::Method {
    match method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    }
}

/// Whether the path of `url` (as the connector wrote it) has a `.` or `..`
/// segment, plain or percent-encoded: URL parsing removes them (WHATWG
/// takes `%2E%2E` for `..`), so `/workspaces/%2E%2E/addUser` would be sent
/// as `/addUser`. Whatever a connector's escaping, the request goes where
/// its path says or not at all.
fn has_dot_segment(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let Some((_, path)) = after_scheme.split_once('/') else { return false };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\']).any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// Links `http` with a projection onto an [`HttpCtx`].
pub struct Http;

impl HasData for Http {
    type Data<'a> = &'a mut HttpCtx;
}

impl wit::Host for HttpCtx {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        self.requests.charge()?;
        if !self.writes && !matches!(request.method, Method::Get) {
            return Ok(Err(HttpError::Denied(format!(
                "{} {}: only GET is sent outside a write call (grant, revoke, create-account, disable-account); a sync, a test or check-write changes nothing upstream",
                http_method(&request.method),
                crate::terminal::escape(&crate::terminal::clip(&request.url, 256))
            ))));
        }
        let _waiting = self.activity.wait();
        Ok(self.gateway.send_held(request, Some(&self.held)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dot_segment_in_any_spelling_is_caught() {
        for url in [
            "https://a.example/x/../y",
            "https://a.example/x/%2E%2E/addUser",
            "https://a.example/x/%2e/y",
            "https://a.example/x/.%2E",
            "https://a.example/..",
            "https://a.example/x\\..\\y",
        ] {
            assert!(has_dot_segment(url), "{url}");
        }
        for url in [
            "https://a.example/x/a..b",
            "https://a.example/x/...",
            "https://a.example/x?y=../z",
            "https://a.example/x#/../",
            "https://a.example",
            "https://a.example/x/%2E%2Ex",
        ] {
            assert!(!has_dot_segment(url), "{url}");
        }
    }

    fn check(hosts: Vec<AllowedHost>, url: &str) -> Result<(), String> {
        EgressPolicy::new(hosts).check(&Url::parse(url).unwrap())
    }

    #[test]
    fn declared_hosts_are_https_names_only() {
        let declared = |spec: &str| AllowedHost::declared(spec).unwrap();
        assert!(check(vec![declared("app.asana.com")], "https://app.asana.com/api").is_ok());
        assert!(check(vec![declared("app.asana.com")], "http://app.asana.com/api").unwrap_err().contains("https only"));
        assert!(check(vec![declared("169.254.169.254")], "https://169.254.169.254/").unwrap_err().contains("IP address"));
        assert!(check(vec![declared("127.0.0.1:8080")], "http://127.0.0.1:8080/").is_err());
        assert!(check(vec![declared("app.asana.com")], "https://evil.example/").unwrap_err().contains("not an allowed host"));
    }

    #[test]
    fn the_operator_may_allow_addresses_and_plain_http() {
        let operator = |spec: &str| AllowedHost::parse(spec).unwrap();
        assert!(check(vec![operator("127.0.0.1:8080")], "http://127.0.0.1:8080/").is_ok());
        assert!(check(vec![operator("http://10.1.2.3")], "http://10.1.2.3/").is_ok());
        assert!(check(vec![operator("10.1.2.3")], "http://10.1.2.3/").unwrap_err().contains("https only"));
        let both = vec![AllowedHost::declared("10.1.2.3").unwrap(), operator("10.1.2.3")];
        assert!(check(both, "https://10.1.2.3/").is_ok(), "the operator's listing wins");
    }

    /// The port the operator wrote is the one allowed, the scheme's
    /// default included: `HOST:443` used to read as "no port", which let a
    /// plain-http request reach port 80 and refused port 443.
    #[test]
    fn the_port_as_written_is_the_port_allowed() {
        for spec in ["127.0.0.1:443", "http://127.0.0.1:443", "https://127.0.0.1:443"] {
            let allowed = || vec![AllowedHost::parse(spec).unwrap()];
            assert!(check(allowed(), "http://127.0.0.1:443/").is_ok(), "{spec}");
            assert!(check(allowed(), "http://127.0.0.1/").unwrap_err().contains("not an allowed host"), "{spec}");
        }
        assert_eq!(AllowedHost::parse("http://10.0.0.1:80").unwrap().port, Some(80));
        assert_eq!(AllowedHost::parse("10.0.0.1").unwrap().port, None);
        for meaningless in ["*", "*.example.com", "10.0.0.1:0", "10.0.0.1:", "http://10.0.0.1:/"] {
            assert!(AllowedHost::parse(meaningless).is_err(), "{meaningless}");
        }
    }

    #[test]
    fn a_declared_port_of_a_name_the_operator_listed_is_refused() {
        // The operator's localhost may resolve to 127.0.0.1; the connector's
        // own declaration of another port must not ride on that.
        let hosts = || vec![AllowedHost::parse("localhost:18080").unwrap(), AllowedHost::declared("localhost:18081").unwrap()];
        assert!(check(hosts(), "https://localhost:18080/").is_ok());
        let refused = check(hosts(), "https://localhost:18081/").unwrap_err();
        assert!(refused.contains("on other ports only"), "{refused}");
        // A name the operator did not list is unaffected.
        assert!(check(vec![AllowedHost::declared("app.asana.com").unwrap()], "https://app.asana.com/").is_ok());
    }

    #[test]
    fn only_idempotent_requests_are_retried_after_an_answer() {
        let key = vec![Pair { name: "Idempotency-Key".into(), value: "k1".into() }];
        assert!(is_idempotent(&Method::Get, &[]));
        for write in [Method::Post, Method::Put, Method::Patch, Method::Delete] {
            assert!(!is_idempotent(&write, &[]), "{write:?}");
            assert!(is_idempotent(&write, &key), "{write:?} with a key");
        }
        for failure in [Failure::Status(500), Failure::Status(502), Failure::Status(503), Failure::Status(504), Failure::TimedOut, Failure::Broken] {
            assert!(may_retry(true, failure), "{failure}");
            assert!(!may_retry(false, failure), "a write is not sent twice after {failure}");
        }
        // Nothing was sent: safe for any request.
        assert!(may_retry(false, Failure::NotConnected));
        for failure in [Failure::Status(429), Failure::Status(404), Failure::Status(501), Failure::Status(200), Failure::Final] {
            assert!(!may_retry(true, failure), "{failure}");
        }
    }

    /// A server on 127.0.0.1 answering 503 to its first `failures`
    /// requests, then 200; counts what it received.
    async fn flaky_server(failures: u32) -> (SocketAddr, Arc<AtomicU64>) {
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < u64::from(failures) {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    fn gateway(addr: SocketAddr, limits: Limits) -> HttpGateway {
        let policy = EgressPolicy::new(vec![AllowedHost::parse(&addr.to_string()).unwrap()]);
        HttpGateway::new(policy, Arc::new(Secrets::default()), &limits, false, None).unwrap()
    }

    fn fast_retries(retries: u32, budget: u32) -> Limits {
        Limits {
            http_retries: retries,
            http_retry_base: Duration::from_millis(1),
            http_retry_max_delay: Duration::from_millis(4),
            http_retry_budget: budget,
            ..Limits::default()
        }
    }

    fn request(method: Method, addr: SocketAddr, headers: Vec<Pair>) -> Request {
        Request { method, url: format!("http://{addr}/x"), headers, body: Some(b"{}".to_vec()).filter(|_| method != Method::Get), bearer_secret: None }
    }

    #[tokio::test]
    async fn a_get_is_sent_again_until_it_succeeds() {
        let (addr, seen) = flaky_server(2).await;
        let http = gateway(addr, fast_retries(4, 200));
        let response = http.send(request(Method::Get, addr, vec![])).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!((seen.load(Ordering::SeqCst), http.requests_sent(), http.retries()), (3, 3, 2));
        assert!(http.retry_budget_note().is_none());
    }

    #[tokio::test]
    async fn a_write_is_sent_again_only_with_an_idempotency_key() {
        let (addr, seen) = flaky_server(1).await;
        let http = gateway(addr, fast_retries(4, 200));
        let response = http.send(request(Method::Post, addr, vec![])).await.unwrap();
        assert_eq!(response.status, 503, "the connector sees the failure");
        assert_eq!((seen.load(Ordering::SeqCst), http.retries()), (1, 0));

        let (addr, seen) = flaky_server(1).await;
        let http = gateway(addr, fast_retries(4, 200));
        let key = vec![Pair { name: "idempotency-key".into(), value: "grant-1".into() }];
        let response = http.send(request(Method::Post, addr, key)).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!((seen.load(Ordering::SeqCst), http.retries()), (2, 1));
    }

    #[tokio::test]
    async fn attempts_per_request_and_the_budget_are_bounded() {
        let (addr, seen) = flaky_server(u32::MAX).await;
        let http = gateway(addr, fast_retries(2, 5));
        assert_eq!(http.send(request(Method::Get, addr, vec![])).await.unwrap().status, 503);
        assert_eq!((http.requests_sent(), http.retries()), (3, 2), "two retries per request");
        assert!(http.retry_budget_note().is_none());
        // The budget is the instance's: 3 retries left for all requests.
        http.send(request(Method::Get, addr, vec![])).await.unwrap();
        http.send(request(Method::Get, addr, vec![])).await.unwrap();
        assert_eq!((http.requests_sent(), http.retries()), (3 + 3 + 2, 5));
        assert!(http.retry_budget_note().unwrap().contains("5 retries"));
        http.send(request(Method::Get, addr, vec![])).await.unwrap();
        assert_eq!((seen.load(Ordering::SeqCst), http.requests_sent(), http.retries()), (9, 9, 5), "no retries past the budget");
    }

    #[tokio::test]
    async fn a_write_that_could_not_connect_is_sent_again() {
        // A port nothing listens on: the connection is refused, nothing sent.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let http = gateway(addr, fast_retries(3, 200));
        let error = http.send(request(Method::Post, addr, vec![])).await.unwrap_err();
        assert!(matches!(error, HttpError::Connect(_)), "{error:?}");
        assert_eq!((http.requests_sent(), http.retries()), (4, 3));
    }

    #[test]
    fn private_ranges_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.8",
            "172.16.3.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
