//! A real OCI registry for the distribution tests: Debian's docker-registry
//! (the CNCF distribution registry, v2.8), installed by
//! scripts/install-registry.sh, started on a free loopback port with its
//! own config.yml and filesystem storage in a temp dir, and ready once
//! `GET /v2/` answers (200, or 401 where it wants credentials).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::{free_port, loopback};
use super::repo_root;

pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Self::spawn(None)
    }

    /// A registry that wants HTTP basic auth: `htpasswd` is one
    /// `user:bcrypt-hash` line.
    pub fn start_with_htpasswd(htpasswd: &str) -> Registry {
        Self::spawn(Some(htpasswd))
    }

    fn spawn(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some(line) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, format!("{line}\n")).unwrap();
            text.push_str(&format!("auth:\n  htpasswd:\n    realm: tether-test\n    path: {}\n", path.display()));
        }
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(binary())
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let mut registry = Registry { child, port, dir };
        registry.wait_ready();
        registry
    }

    /// `127.0.0.1:PORT`, as references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage: blobs under docker/registry/v2/blobs.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Stops the registry (as an outage would); `Drop` copes with a stopped one.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Polls `GET /v2/` until the registry answers 200 (or exits, or 60 s pass).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited early: {status}\n{}", self.log());
            }
            // 401: up, and asking for credentials.
            if matches!(v2_status(self.port).as_deref(), Some("200" | "401")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not answer /v2/ on {} within 60 s\n{}", loopback(self.port), self.log());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of `GET /v2/`, if anything answers.
fn v2_status(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head[9..12]).into_owned())
}

/// The registry binary: `TETHER_REGISTRY`, or what scripts/install-registry.sh
/// installs (a no-op when it is already there).
fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let script = repo_root().join("scripts/install-registry.sh");
            let out = Command::new("bash").arg(&script).stdin(Stdio::null()).output().expect("runs scripts/install-registry.sh");
            assert!(out.status.success(), "scripts/install-registry.sh failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
            let binary = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(Path::new(&binary).is_file(), "scripts/install-registry.sh printed {}, which is not a file", binary.display());
            binary
        })
        .clone()
}
