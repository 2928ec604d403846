//! A real SCIM 2.0 server for the connector's SCIM client: `scim2-server`
//! 0.8.3 from PyPI (installed by scripts/install-scim2-server.sh into
//! .tools/scim2), run as its own test server,
//! `python -m scim2_server.testserver.cli --hostname 127.0.0.1 --port N`,
//! with resources kept in memory (each `Scim2Server` starts empty).
//!
//! What it does, as checked by hand with curl against 0.8.3:
//! - Endpoints are under `/v2` (the prefix is optional: `/Users` works too);
//!   `base_url()` includes it, so `base_url() + "/Users"` is the Users
//!   endpoint. It speaks HTTP/1.0 (wsgiref): one request per connection,
//!   bodies with Content-Length.
//! - Schemas and resource types are RFC 7643's defaults: User (with the
//!   enterprise extension `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`,
//!   optional) and Group. `userName`, `emails`, `name`, `active`,
//!   `userType`, `title` and the extension's `department` are stored and
//!   returned as sent. Ids are 32 lowercase hex digits, assigned by the server.
//! - Auth: without `--bearer-token` it accepts every request, with any
//!   `Authorization` header or none ([`Scim2Server::start`]). With it
//!   ([`Scim2Server::start_with_token`]) any other token is answered 401.
//! - POST /Users: 201 with the created user; 409 for a `userName` already
//!   taken (`userName` is unique and not case-exact).
//! - GET /Users/{id}: 200; an unknown id is 404 with a SCIM Error body
//!   (`{"schemas":[...Error], "status":"404", "detail":"User 'x' not found"}`),
//!   for PATCH too.
//! - `filter=userName eq "x"` is supported (case-insensitive match, `\"`
//!   escapes parse); no match is 200 with `totalResults: 0, Resources: []`.
//! - Paging: `startIndex` (1-based) and `count` are honoured; the answer is a
//!   ListResponse with `totalResults` (all matches), `startIndex`,
//!   `itemsPerPage` and `Resources` (`Resources: []` past the end). Users are
//!   ordered by id (random, but stable while nothing is added), not by
//!   creation.
//! - PATCH /Users/{id} with a PatchOp `replace` of `userType` or `active`:
//!   **204 No Content** (empty body, with ETag and Location), also when the
//!   PATCH changes nothing. It answers 200 with a body only when the request
//!   has an `attributes` or `excludedAttributes` query parameter (then the
//!   body holds just those attributes, plus `schemas` and `id`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::process::{free_port, loopback, wait_listening};
use super::repo_root;

pub struct Scim2Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Scim2Server {
    /// Starts an empty server that accepts any bearer token (or none) and
    /// waits until it accepts connections.
    pub fn start() -> Scim2Server {
        Self::spawn(&[])
    }

    /// Starts an empty server that answers 401 unless the request carries
    /// `Authorization: Bearer <token>`.
    pub fn start_with_token(token: &str) -> Scim2Server {
        Self::spawn(&["--bearer-token", token])
    }

    /// Starts an empty server with more of its own command-line options
    /// (`--schema FILE`, `--service-provider-config FILE`, ...).
    pub fn start_with(extra: &[&str]) -> Scim2Server {
        Self::spawn(extra)
    }

    fn spawn(extra: &[&str]) -> Scim2Server {
        let python = python();
        let port = free_port();
        let log = std::env::temp_dir().join(format!("tether-scim2-{}-{port}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("scim2-server log file");
        let child = Command::new(python)
            .args(["-m", "scim2_server.testserver.cli", "--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(extra)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("scim2-server starts");
        let mut server = Scim2Server { child, port, log };
        server.wait_ready();
        server
    }

    /// The SCIM base URL: `base_url() + "/Users"` is the Users endpoint.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v2", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// What the server logged so far (one line per request, and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        if let Err(why) = wait_listening(&mut self.child, self.port, Duration::from_secs(60)) {
            panic!("scim2-server {why}\n{}", self.log());
        }
    }
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The venv's python: `TETHER_SCIM2_PYTHON`, or .tools/scim2's, installed
/// by scripts/install-scim2-server.sh on first use (a no-op when it is
/// already there; the script locks against concurrent installs).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(python) = std::env::var_os("TETHER_SCIM2_PYTHON") {
                return PathBuf::from(python);
            }
            let script = repo_root().join("scripts/install-scim2-server.sh");
            let out = Command::new("bash").arg(&script).stdin(Stdio::null()).output().expect("runs scripts/install-scim2-server.sh");
            assert!(out.status.success(), "scripts/install-scim2-server.sh failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
            let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(python.is_file(), "scripts/install-scim2-server.sh printed {}, which is not a file", python.display());
            python
        })
        .clone()
}
