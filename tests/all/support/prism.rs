//! Stoplight Prism as a validating proxy in front of the simulator: every
//! request the connector sends is checked against Asana's official OpenAPI
//! spec (`--errors`: a request that breaks it is answered 422 and never
//! reaches the simulator; a response that breaks it becomes a 500).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{free_port, loopback, wait_listening};
use super::repo_root;

pub struct Prism {
    child: Child,
    pub port: u16,
}

impl Prism {
    /// Starts Prism proxying to `upstream` (the simulator's base URL) and
    /// waits until it accepts connections.
    pub fn start(upstream: &str) -> Prism {
        let bin = std::env::var_os("TETHER_PRISM").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools/prism/node_modules/.bin/prism"));
        assert!(bin.is_file(), "{} is missing: run scripts/install-prism.sh (scripts/test.sh does)", bin.display());
        // Vendored with its source and license: simulators/asana/spec/SOURCE.md.
        let spec = repo_root().join("simulators/asana/spec/asana_oas.yaml");
        assert!(spec.is_file(), "Asana's spec is missing at {}", spec.display());
        let port = free_port();
        let child = Command::new(bin)
            .args(["proxy", spec.to_str().unwrap(), upstream, "--errors", "-p", &port.to_string(), "-h", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prism starts");
        let mut prism = Prism { child, port };
        prism.wait_ready();
        prism
    }

    /// The base URL a connector uses: Prism matches paths without Asana's
    /// /api/1.0 prefix and adds the upstream's.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    fn wait_ready(&mut self) {
        if let Err(why) = wait_listening(&mut self.child, self.port, Duration::from_secs(90)) {
            panic!("prism {why}");
        }
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
