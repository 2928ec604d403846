//! The `http` import: every request a connector makes goes through here.
//!
//! The host decides where a request may go (the egress allow-list, checked
//! again on every redirect), attaches secrets only to allowed hosts, caps
//! response sizes and time, and counts what was sent.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{bail, Result};
use url::Url;

use crate::bindings::tether::connector::http::{self as wit, HttpError, Method, Request, Response};
use crate::bindings::Pair;
use crate::config::Secrets;
use crate::state::HostState;

/// One destination the operator allows.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    pub host: String,
    /// None: the scheme's default port.
    pub port: Option<u16>,
    /// Plain http is allowed only where the operator said so (`http://`
    /// prefix), or for loopback addresses they listed.
    pub plain_http: bool,
}

impl AllowedHost {
    /// Parses `HOST`, `HOST:PORT`, `http://HOST[:PORT]` or `https://HOST[:PORT]`.
    pub fn parse(spec: &str) -> Result<Self> {
        let (scheme, rest) = match spec.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
            Some((other, _)) => bail!("--allow-host {spec}: scheme {other:?} is not http or https"),
            None => (None, spec),
        };
        let url = Url::parse(&format!("https://{}", rest.trim_end_matches('/')))
            .map_err(|e| anyhow::anyhow!("--allow-host {spec}: not a HOST[:PORT] ({e})"))?;
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            bail!("--allow-host {spec}: give a host and optional port only");
        }
        let host = url.host_str().ok_or_else(|| anyhow::anyhow!("--allow-host {spec}: no host"))?.to_ascii_lowercase();
        let port = url.port();
        let plain_http = scheme == Some("http") || is_loopback(&host);
        Ok(AllowedHost { host, port, plain_http })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
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

    /// Ok when `url` may be requested; otherwise why not. IP literals and
    /// private addresses pass only when listed exactly, like any host.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(format!("scheme {scheme:?} is not allowed (https only)"));
        }
        let host = url.host_str().ok_or("the URL has no host")?.to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let default_port = if scheme == "https" { 443 } else { 80 };
        let entry = self
            .hosts
            .iter()
            .find(|h| h.host == host && h.port.unwrap_or(default_port) == port)
            .ok_or_else(|| format!("{host}:{port} is not an allowed host"))?;
        if scheme == "http" && !entry.plain_http {
            return Err(format!("plain http to {host}:{port} is not allowed (https only)"));
        }
        Ok(())
    }
}

/// Figures the host keeps about a connector's HTTP use.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
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
    pub counters: HttpCounters,
    /// With dry-run, writes are held here instead of being sent.
    dry_run: Option<Mutex<Vec<HeldRequest>>>,
}

impl HttpGateway {
    pub fn new(policy: EgressPolicy, secrets: Arc<Secrets>, timeout: Duration, max_response_bytes: usize, dry_run: bool) -> Result<Self> {
        let policy = Arc::new(RwLock::new(policy));
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
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
            max_response_bytes,
            counters: HttpCounters::default(),
            dry_run: dry_run.then(|| Mutex::new(vec![])),
        })
    }

    pub fn set_policy(&self, policy: EgressPolicy) {
        if let Ok(mut current) = self.policy.write() {
            *current = policy;
        }
    }

    pub fn requests_sent(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    /// Writes held back by dry-run, in order.
    pub fn held_requests(&self) -> Vec<HeldRequest> {
        self.dry_run.as_ref().map(|held| held.lock().map(|h| h.clone()).unwrap_or_default()).unwrap_or_default()
    }

    pub async fn send(&self, request: Request) -> Result<Response, HttpError> {
        let url = Url::parse(&request.url).map_err(|e| HttpError::InvalidRequest(format!("bad URL: {e}")))?;
        self.policy
            .read()
            .map_err(|_| HttpError::Denied("policy unavailable".into()))?
            .check(&url)
            .map_err(HttpError::Denied)?;

        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
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

        let mut builder = self.client.request(method, url.clone());
        for header in &request.headers {
            if header.name.eq_ignore_ascii_case("authorization") || header.name.eq_ignore_ascii_case("host") {
                continue;
            }
            builder = builder.header(header.name.as_str(), header.value.as_str());
        }
        if let Some(name) = &request.bearer_secret {
            let secret = self
                .secrets
                .get(name)
                .ok_or_else(|| HttpError::InvalidRequest(format!("no secret named {name:?} was given to this connector")))?;
            builder = builder.bearer_auth(secret.expose());
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }

        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut response = builder.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        if status == 429 {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| Pair { name: name.as_str().to_string(), value: String::from_utf8_lossy(value.as_bytes()).into_owned() })
            .collect();
        if response.content_length().is_some_and(|len| len > self.max_response_bytes as u64) {
            return Err(self.too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(e))? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(self.too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, headers, body })
    }

    fn too_large(&self) -> HttpError {
        HttpError::TooLarge(format!("limit exceeded: http-response-bytes: the response is over {} bytes", self.max_response_bytes))
    }

    fn transport_error(&self, e: reqwest::Error) -> HttpError {
        // reqwest's messages include the URL but never our headers; redact
        // anyway in case a secret was placed in a URL by a connector.
        let text = self.secrets.redact(&format!("{e:#}"));
        if e.is_redirect() {
            HttpError::Denied(text)
        } else if e.is_timeout() {
            HttpError::Timeout(text)
        } else {
            HttpError::Connect(text)
        }
    }
}

impl wit::Host for HostState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        Ok(self.http.send(request).await)
    }
}
