//! A second, independent SCIM 2.0 server: django-scim2 0.23.0 from PyPI
//! (installed by scripts/install-django-scim2.sh into .tools/django-scim2),
//! served by the small Django project in scripts/django-scim2/ with
//! Django's development server, each instance with its own SQLite file.
//!
//! How it differs from scim2-server (checked with curl against 0.23.0):
//! - Endpoints under `/scim/v2`; ids are the database's integers as strings.
//! - /ServiceProviderConfig announces `filter: supported: false` (its
//!   filtering is partial) but `userName eq "x"` works; patch is supported.
//! - PATCH answers 200 with the resource. A remove with RFC 7644's
//!   `members[value eq "x"]` path is answered 501 Not Implemented; it takes
//!   `path: members` with the member in `value` instead.
//! - Groups always carry `members` (`excludedAttributes` is ignored).
//! - A second POST of a userName is 409.
//! - Auth is the project's: one static bearer token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::process::{free_port, loopback, wait_listening};
use super::repo_root;

pub struct DjangoScim2 {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl DjangoScim2 {
    /// Starts an empty server (a migrated, empty database) that answers 401
    /// unless the request carries `Authorization: Bearer <token>`.
    pub fn start(token: &str) -> DjangoScim2 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let manage = repo_root().join("scripts/django-scim2/manage.py");
        let command = |args: &[&str]| {
            let mut command = Command::new(python());
            command
                .arg(&manage)
                .args(args)
                .env("TETHER_SCIM_DB", dir.path().join("scim.sqlite3"))
                .env("TETHER_SCIM_TOKEN", token)
                .env("TETHER_SCIM_NETLOC", format!("127.0.0.1:{port}"))
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null());
            command
        };
        let migrated = command(&["migrate", "-v0"]).output().expect("django-scim2 migrate runs");
        assert!(migrated.status.success(), "django-scim2 migrate failed:\n{}", String::from_utf8_lossy(&migrated.stderr));
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = command(&["runserver", "--noreload", &format!("127.0.0.1:{port}")]).stdout(Stdio::null()).stderr(log).spawn().expect("django-scim2 starts");
        let mut server = DjangoScim2 { child, port, dir };
        if let Err(why) = wait_listening(&mut server.child, port, Duration::from_secs(60)) {
            panic!("django-scim2 {why}\n{}", server.log());
        }
        server
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/scim/v2", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// One line per request (Django's development server log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for DjangoScim2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python, installed by scripts/install-django-scim2.sh on first
/// use (a no-op when it is already there).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = repo_root().join("scripts/install-django-scim2.sh");
            let out = Command::new("bash").arg(&script).stdin(Stdio::null()).output().expect("runs scripts/install-django-scim2.sh");
            assert!(out.status.success(), "scripts/install-django-scim2.sh failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
            let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(python.is_file(), "scripts/install-django-scim2.sh printed {}, which is not a file", python.display());
            python
        })
        .clone()
}
