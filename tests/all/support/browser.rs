//! A real headless browser for the tests: Debian's Chromium, driven over
//! WebDriver by chromedriver on a loopback port (scripts/install-chromium.sh
//! installs both; TETHER_CHROMIUM and TETHER_CHROMEDRIVER point elsewhere).
//!
//! Each `Browser` has its own chromedriver process and a fresh profile
//! directory, both gone when it is dropped. `screenshot` writes a PNG to
//! TETHER_SCREENSHOT_DIR, when set, so a human can look at a page.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

use super::process::{free_port, wait_listening};

/// The flags Chromium needs here: no sandbox (root in a container), no GPU,
/// and nothing that reaches the network on its own.
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1300,1400",
];

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// `env`'s path, or `name` found on PATH (chromedriver wants a full path).
fn program(env: &str, name: &str) -> PathBuf {
    let on_path = || std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()));
    let path = std::env::var_os(env).map(PathBuf::from).or_else(on_path).unwrap_or_else(|| PathBuf::from(name));
    let found = Command::new(&path).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(found, "{} does not run: run scripts/install-chromium.sh (or set {env})", path.display());
    path
}

impl Browser {
    pub async fn start() -> Browser {
        let chromium = program("TETHER_CHROMIUM", "chromium");
        let chromedriver = program("TETHER_CHROMEDRIVER", "chromedriver");
        let port = free_port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        if let Err(e) = wait_listening(&mut driver, port, Duration::from_secs(30)) {
            let _ = driver.kill();
            panic!("chromedriver {e}");
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let connected = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match connected {
            Ok(client) => client,
            Err(e) => {
                let _ = driver.kill();
                panic!("no Chromium session: {e}");
            }
        };
        Browser { client, driver, _profile: profile }
    }

    /// Opens a file of this machine.
    pub async fn open(&self, path: &Path) {
        self.client.goto(&format!("file://{}", path.canonicalize().unwrap().display())).await.expect("the page opens");
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{e}: {script}"))
    }

    /// Polls `script` until it returns true (the page renders on its own time).
    pub async fn wait_for(&self, script: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the page never got to `{script}` within {within:?}; its errors: {}", self.eval("return window.__errors || null").await);
    }

    /// A PNG of what the browser shows, also written to
    /// TETHER_SCREENSHOT_DIR/`name`.png when that is set.
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        let png = self.client.screenshot().await.expect("a screenshot");
        if let Some(dir) = std::env::var_os("TETHER_SCREENSHOT_DIR") {
            let path = Path::new(&dir).join(format!("{name}.png"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &png).unwrap();
            eprintln!("screenshot: {}", path.display());
        }
        png
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After `close`, a no-op; after a failed assertion, no stray driver.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
