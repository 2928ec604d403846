//! Talking to an OCI registry: which scheme (https unless the registry is
//! loopback or the operator named it insecure), which credentials (the
//! Docker config file, or a user and a password given by reference), and
//! the `oci-client` built from both. The protocol itself is `oci-client`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

/// Where a registry password comes from: never the command line itself,
/// which other users can read in the process list.
#[derive(Clone, Debug)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
}

impl std::str::FromStr for PasswordSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("env", var)) if !var.is_empty() => Ok(PasswordSource::Env(var.to_string())),
            Some(("file", path)) if !path.is_empty() => Ok(PasswordSource::File(PathBuf::from(path))),
            _ => Err("expected env:VAR or file:PATH (a password is never given on the command line)".into()),
        }
    }
}

impl PasswordSource {
    fn read(&self) -> Result<String> {
        match self {
            PasswordSource::Env(var) => std::env::var(var).with_context(|| format!("registry password: environment variable {var} is not set")),
            PasswordSource::File(path) => {
                crate::runtime::imports::config::read_secret_file(path).with_context(|| format!("registry password: cannot read {}", path.display()))
            }
        }
    }
}

/// How to reach registries: shared by the CLI and `tether serve`.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Registries (`HOST[:PORT]`) that may be spoken to over plain http.
    /// Loopback registries always may: nothing leaves the machine.
    pub insecure: Vec<String>,
    /// A user and password for every registry, instead of the Docker config.
    pub credentials: Option<(String, PasswordSource)>,
    /// The Docker config file (default: `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Seconds to wait for a connection to the registry.
    pub connect_timeout: Option<Duration>,
}

/// A registry client and the credentials for one reference's registry.
pub struct Registry {
    pub client: Client,
    pub auth: RegistryAuth,
    /// For manifests and the token exchange (see [`Registry::pull_manifest`]):
    /// redirects within the server only.
    http: reqwest::Client,
    /// For blobs: redirects within the server, or to https (a storage
    /// bucket or a CDN, as big registries do).
    blob_http: reqwest::Client,
    scheme: &'static str,
}

/// The largest manifest read: the OCI distribution spec asks clients to
/// expect manifests up to 4 MiB; a module's is under 2 KiB.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How long a manifest may take, all told: it is asked for before every
/// sync of a module pinned by tag, which must not stall behind a registry
/// that accepts connections and never answers.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(20);

impl Registry {
    /// The OCI image manifest `reference` names, as bytes, reading at most
    /// `MAX_MANIFEST_BYTES` within `MANIFEST_TIMEOUT`, with `auth` (see
    /// [`Registry::authenticate`]). oci-client reads a manifest whole,
    /// however big (rust-oci-client issue 206: one answer took 5.6 GB).
    pub async fn pull_manifest(&self, reference: &Reference, media_type: &str, auth: &RegistryAuth) -> Result<Vec<u8>> {
        let tag_or_digest = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = format!("{}://{}/v2/{}/manifests/{tag_or_digest}", self.scheme, reference.resolve_registry(), reference.repository());
        let request = self.http.get(&url).header(reqwest::header::ACCEPT, media_type).timeout(MANIFEST_TIMEOUT);
        self.get_capped(request, auth, &url, MAX_MANIFEST_BYTES, "the manifest").await
    }

    /// The blob `digest` of `reference`'s repository, reading at most `max`
    /// bytes, with `auth`. The pull never goes through oci-client, whose
    /// own authentication would read a token endpoint without bounds. A
    /// redirect elsewhere (a storage bucket) does not carry the credentials.
    pub async fn pull_blob(&self, reference: &Reference, digest: &str, auth: &RegistryAuth, max: usize) -> Result<Vec<u8>> {
        let url = format!("{}://{}/v2/{}/blobs/{digest}", self.scheme, reference.resolve_registry(), reference.repository());
        self.get_capped(self.blob_http.get(&url), auth, &url, max, "the module").await
    }

    /// Sends `request` with `auth` and reads a successful answer's body, at
    /// most `max` bytes of it (`what` it is, for the error).
    async fn get_capped(&self, request: reqwest::RequestBuilder, auth: &RegistryAuth, url: &str, max: usize, what: &str) -> Result<Vec<u8>> {
        let request = match auth {
            RegistryAuth::Bearer(token) => request.bearer_auth(token),
            RegistryAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            RegistryAuth::Anonymous => request,
        };
        let mut response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        read_capped(&mut response, max, what).await.with_context(|| format!("GET {url}"))
    }

    /// The credentials for `operation` on `reference`: a bearer token
    /// fetched here when the registry asks for one (else the configured
    /// ones), for the pulls above and for oci-client's push. oci-client's
    /// own exchange reads the token endpoint's answer whole with no time
    /// limit (an endless one took the process to 3.8 GB) and sends the
    /// credentials to any realm named.
    pub async fn authenticate(&self, reference: &Reference, operation: RegistryOperation) -> Result<RegistryAuth> {
        let registry = reference.resolve_registry();
        let url = format!("{}://{registry}/v2/", self.scheme);
        let answer = self.http.get(&url).timeout(MANIFEST_TIMEOUT).send().await.with_context(|| format!("GET {url}"))?;
        let challenge = answer.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|value| value.to_str().ok()).and_then(bearer_challenge);
        drop(answer);
        let Some((realm, service)) = challenge else { return Ok(self.auth.clone()) };
        let shown = || crate::terminal::escape(&realm).into_owned();
        let realm_url = url::Url::parse(&realm).with_context(|| format!("the registry's token realm {} is not a URL", shown()))?;
        let origin = |u: &url::Url| (u.host_str().map(str::to_string), u.port_or_known_default());
        let registry_origin = url::Url::parse(&url).ok().map(|u| origin(&u));
        // The credentials go over https, or to the plain-http registry
        // itself (its host and port: another port of the host is another
        // server).
        let plain_allowed = self.scheme == "http" && Some(origin(&realm_url)) == registry_origin;
        if realm_url.scheme() != "https" && !(realm_url.scheme() == "http" && plain_allowed) {
            bail!("the registry's token realm {} is not https (plain http is sent only to the registry itself)", shown());
        }
        let scope = match operation {
            RegistryOperation::Pull => format!("repository:{}:pull", reference.repository()),
            RegistryOperation::Push => format!("repository:{}:pull,push", reference.repository()),
        };
        let mut request = self.http.get(realm_url).query(&[("scope", scope)]).timeout(MANIFEST_TIMEOUT);
        if let Some(service) = service {
            request = request.query(&[("service", service)]);
        }
        if let RegistryAuth::Basic(user, password) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let mut response = request.send().await.with_context(|| format!("GET {}", shown()))?;
        if !response.status().is_success() {
            bail!("the registry's token realm {} answered {}", shown(), response.status());
        }
        let body = read_capped(&mut response, MAX_TOKEN_BYTES, "the token").await.with_context(|| format!("GET {}", shown()))?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).with_context(|| format!("the token realm {}'s answer is not a token", shown()))?;
        let token = answer.token.or(answer.access_token).filter(|t| !t.is_empty()).with_context(|| format!("the token realm {} gave no token", shown()))?;
        Ok(RegistryAuth::Bearer(token))
    }
}

/// Where a registry request may be redirected.
#[derive(Clone, Copy)]
enum Redirects {
    /// Only within the server first asked (its scheme, host and port): a
    /// manifest or a token comes from the registry or its token service,
    /// never from wherever they point (an internal address, say).
    SameServer,
    /// Within it, or to any https server (a blob's storage bucket).
    SameServerOrHttps,
}

/// At most 5 hops, each as `redirects` allows; credentials are not carried
/// across servers (reqwest drops them).
fn redirect_policy(redirects: Redirects) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let same_server = attempt.previous().first().is_some_and(|first| {
            let server = |u: &url::Url| (u.scheme().to_string(), u.host_str().map(str::to_string), u.port_or_known_default());
            server(first) == server(attempt.url())
        });
        let allowed = same_server || matches!(redirects, Redirects::SameServerOrHttps) && attempt.url().scheme() == "https";
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if allowed {
            attempt.follow()
        } else {
            let to = crate::terminal::escape(attempt.url().as_str()).into_owned();
            attempt.error(format!("a redirect to {to}, outside the registry, is not followed"))
        }
    })
}

/// A token endpoint's answer is a few KiB.
const MAX_TOKEN_BYTES: usize = 64 << 10;

/// The body of `response`, failing past `max` bytes (`what` it is).
async fn read_capped(response: &mut reqwest::Response, max: usize, what: &str) -> Result<Vec<u8>> {
    if response.content_length().is_some_and(|length| length > max as u64) {
        bail!("{what} is {} bytes (at most {max})", response.content_length().unwrap_or_default());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > max {
            bail!("{what} is larger than {max} bytes");
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The realm and service of a `WWW-Authenticate` header's Bearer
/// challenge, if it has one.
fn bearer_challenge(header: &str) -> Option<(String, Option<String>)> {
    http_auth::ChallengeParser::new(header).filter_map(Result::ok).find(|c| c.scheme.eq_ignore_ascii_case("bearer")).and_then(|challenge| {
        let param = |name: &str| challenge.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_unescaped());
        Some((param("realm")?, param("service")))
    })
}

impl RegistryOptions {
    /// A client that reaches `reference`'s registry under these options.
    pub fn connect(&self, reference: &Reference) -> Result<Registry> {
        let registry = reference.resolve_registry().to_string();
        let plain_http = is_loopback(&registry) || self.insecure.iter().any(|r| r == &registry || r == reference.registry());
        // reqwest 0.13 is built without a bundled crypto provider (that would
        // build aws-lc); it takes the process default, ring, as ours does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if plain_http { ClientProtocol::HttpsExcept(vec![registry.clone()]) } else { ClientProtocol::Https },
            connect_timeout: Some(self.connect_timeout.unwrap_or(Duration::from_secs(10))),
            read_timeout: Some(Duration::from_secs(60)),
            // A connector is one component: an image index (several
            // platforms) is not something Tether publishes or pulls.
            platform_resolver: None,
            user_agent: concat!("tether/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).context("cannot set up the registry client")?;
        let http_with = |redirects: Redirects| {
            reqwest::Client::builder()
                .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(10)))
                .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
                .redirect(redirect_policy(redirects))
                .build()
                .context("cannot set up the registry client")
        };
        let scheme = if plain_http { "http" } else { "https" };
        Ok(Registry {
            client,
            auth: self.auth_for(&registry)?,
            http: http_with(Redirects::SameServer)?,
            blob_http: http_with(Redirects::SameServerOrHttps)?,
            scheme,
        })
    }

    fn auth_for(&self, registry: &str) -> Result<RegistryAuth> {
        if let Some((user, password)) = &self.credentials {
            return Ok(RegistryAuth::Basic(user.clone(), password.read()?));
        }
        let path = match &self.docker_config {
            Some(path) => Some(path.clone()),
            None => default_docker_config(),
        };
        match path {
            Some(path) if path.is_file() => docker_config_auth(&path, registry),
            _ => Ok(RegistryAuth::Anonymous),
        }
    }
}

fn default_docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(|dir| PathBuf::from(dir).join("config.json"))
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json")))
}

/// Plain http is safe only where nothing leaves the machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map(|(host, _)| host).unwrap_or(registry),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `auths` entry for `registry` in a Docker config file: `auth` is
/// base64 of `user:password` (or `username` and `password` fields).
/// Credential helpers (`credsStore`, `credHelpers`) are not run.
fn docker_config_auth(path: &Path, registry: &str) -> Result<RegistryAuth> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the Docker config {}", path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not a Docker config file (JSON)", path.display()))?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    // Keys may carry a scheme and a path: https://index.docker.io/v1/.
    let bare = |key: &str| key.trim_start_matches("https://").trim_start_matches("http://").split('/').next().unwrap_or("").to_string();
    let docker_hub = registry == "index.docker.io" || registry == "registry-1.docker.io" || registry == "docker.io";
    let entry = auths.iter().find(|(key, _)| {
        let key = bare(key);
        key == registry || (docker_hub && (key == "index.docker.io" || key == "docker.io"))
    });
    let Some((key, entry)) = entry else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .with_context(|| format!("{}: the auth of {key} is not base64 of user:password", path.display()))?;
        let Some((user, password)) = decoded.split_once(':') else {
            bail!("{}: the auth of {key} is not base64 of user:password", path.display());
        };
        return Ok(RegistryAuth::Basic(user.to_string(), password.to_string()));
    }
    match (entry.get("username").and_then(|u| u.as_str()), entry.get("password").and_then(|p| p.as_str())) {
        (Some(user), Some(password)) => Ok(RegistryAuth::Basic(user.to_string(), password.to_string())),
        _ => match entry.get("identitytoken").and_then(|t| t.as_str()) {
            Some(token) => Ok(RegistryAuth::Bearer(token.to_string())),
            None => Ok(RegistryAuth::Anonymous),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_registries_are_plain_http_by_default() {
        for registry in ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.5.0.1"] {
            assert!(is_loopback(registry), "{registry}");
        }
        for registry in ["registry.example.com", "10.0.0.1:5000", "ghcr.io", "localhost.evil.com:80", "[::2]:5000"] {
            assert!(!is_loopback(registry), "{registry}");
        }
    }

    #[test]
    fn docker_config_credentials_are_found_by_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with-colon");
        std::fs::write(
            &path,
            format!(r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}}}}}}"#),
        )
        .unwrap();
        assert!(matches!(docker_config_auth(&path, "127.0.0.1:5000").unwrap(), RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret:with-colon"));
        assert!(matches!(docker_config_auth(&path, "index.docker.io").unwrap(), RegistryAuth::Basic(u, _) if u == "bob"));
        assert!(matches!(docker_config_auth(&path, "127.0.0.1:5001").unwrap(), RegistryAuth::Anonymous));
        std::fs::write(&path, r#"{"auths": {"r.example": {"auth": "!!!"}}}"#).unwrap();
        assert!(docker_config_auth(&path, "r.example").is_err());
        std::fs::write(&path, "not json").unwrap();
        assert!(docker_config_auth(&path, "r.example").is_err());
    }
}
