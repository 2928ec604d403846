//! The `tether serve` config file (TOML): the server's settings and one
//! table per connector instance. Parsing never stops at the first problem:
//! every problem is collected with its file, instance and key, so that an
//! operator fixes a bad file in one go. Secrets (the connectors' and the
//! API token) are only ever references, `env:VAR` or `file:PATH`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ed25519_dalek::VerifyingKey;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::cli::args::{LimitArgs, SyncLimitArgs};
use crate::distribution::{ModuleSource, PasswordSource, RegistryOptions};
use crate::runtime::imports::config::{SecretFrom, SecretSource, Secrets};
use crate::runtime::imports::http::AllowedHost;
use crate::runtime::limits::{Limits, SyncLimits};

/// Where `tether serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub instance: Option<String>,
    /// A key outside `[server]` and the instances (a mistyped section).
    pub top_level: bool,
    pub key: String,
    pub message: String,
}

/// The longest key or instance name a problem shows whole.
const MAX_NAME_SHOWN: usize = 200;

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key or name is the file's own text: a long one is shown in part,
        // or one line of the error would be the whole of it.
        let clip = |text: &str| crate::terminal::clip(text, MAX_NAME_SHOWN).into_owned();
        let place = match &self.instance {
            Some(name) => format!("[instances.{}]", clip(name)),
            None if self.top_level => "top level,".to_string(),
            None => "[server]".to_string(),
        };
        let key = if self.key.is_empty() { String::new() } else { format!(" {}", clip(&self.key)) };
        // A problem with the file as a whole (it is not TOML) is nobody's
        // section; the TOML parser's message shows the line, on lines of
        // its own.
        if self.instance.is_none() && self.key.is_empty() {
            return write!(f, "{}: {}", self.file.display(), crate::terminal::escape_keeping_lines(&self.message));
        }
        write!(f, "{}: {place}{key}: {}", self.file.display(), crate::terminal::escape(&self.message))
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the config file has {} problem(s):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub path: PathBuf,
    pub server: ServerSettings,
    pub instances: BTreeMap<String, Arc<InstanceConfig>>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Option<SocketAddr>,
    /// One folder per instance (its sync file), the storage root, the audit log.
    pub data_dir: PathBuf,
    /// The bearer token every API call but health checks must carry.
    pub api_token: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// How long SIGTERM waits for running syncs to checkpoint.
    pub grace_period: Duration,
    /// How often module files are checked for a new version.
    pub watch_interval: Duration,
    /// Syncs that run at once, across instances; the others wait their
    /// turn. Each holds a pool of wasm instances and a sync file open: a
    /// config of hundreds of instances all syncing at start ran the host
    /// out of memory mappings.
    pub max_concurrent_syncs: usize,
}

/// Twice the cores, at least 4: syncs mostly wait on their upstream.
pub fn default_concurrent_syncs() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4))
}

#[derive(Clone)]
pub struct InstanceConfig {
    pub name: String,
    /// A file, or an OCI reference (a tag re-resolved before each sync, or
    /// a digest pin).
    pub module: ModuleSource,
    /// How to reach the registry of an `oci://` module.
    pub registry: RegistryOptions,
    pub digest: Option<String>,
    /// A new module must carry a good signature by one of these.
    pub public_keys: Vec<VerifyingKey>,
    pub signature: Option<PathBuf>,
    /// A new module version older (by its semver) than the running one is
    /// swapped in only with this: a signature covers a build, not its
    /// place in time, so a tag moved back would roll back a fix.
    pub allow_downgrade: bool,
    pub config: Vec<(String, String)>,
    pub secrets: Vec<SecretSource>,
    pub resolved_secrets: Arc<Secrets>,
    /// Exactly the hosts the instance may reach: in serve, hosts a module
    /// declares are a request, never a grant.
    pub allowed_hosts: Vec<AllowedHost>,
    pub schedule: Schedule,
    pub limits: Limits,
    pub sync_limits: SyncLimits,
    /// The raw table, to tell whether a reload changed the instance.
    pub raw: String,
}

impl fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceConfig").field("name", &self.name).field("module", &self.module).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: Option<Duration>,
    pub cron: Option<(String, croner::Cron)>,
    /// First wait after a failed sync; doubles each failure up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Schedule {
    /// How the schedule reads in the API.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if let Some(interval) = self.interval {
            parts.push(format!("every {}", humantime::format_duration(interval)));
        }
        if let Some((text, _)) = &self.cron {
            parts.push(format!("cron {text}"));
        }
        parts.join(" and ")
    }
}

/// The largest config file read: thousands of instances fit.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads and checks the config file; Err lists every problem.
pub fn load(path: &Path) -> Result<ServeConfig, ConfigErrors> {
    load_as(path, true)
}

/// For `tether sync --config-file`: one instance, run once, needs no API
/// token.
pub fn load_for_sync(path: &Path) -> Result<ServeConfig, ConfigErrors> {
    load_as(path, false)
}

fn load_as(path: &Path, serving: bool) -> Result<ServeConfig, ConfigErrors> {
    let problem =
        |key: &str, message: String| ConfigErrors(vec![Problem { file: path.to_path_buf(), instance: None, top_level: false, key: key.into(), message }]);
    let text = crate::plain_file::read_text(path, MAX_CONFIG_BYTES).map_err(|e| problem("", format!("cannot read the config file: {e}")))?;
    let table: Table = text.parse().map_err(|e: toml::de::Error| problem("", format!("not valid TOML: {}", toml_error(&text, &e))))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut walker = Walker { file: path.to_path_buf(), base, instance: None, problems: vec![], serving };
    let config = walker.config(table);
    if walker.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(walker.problems))
    }
}

/// Where a TOML error is and what it is, without the line itself: the
/// parser quotes it, and a line that does not parse may be a secret pasted
/// unquoted (`token = s3cr3t`), which would go to the log and the API.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

struct Walker {
    file: PathBuf,
    /// Relative paths are relative to the config file's folder.
    base: PathBuf,
    instance: Option<String>,
    problems: Vec<Problem>,
    /// For `serve` (which needs the API token), not a one-off sync.
    serving: bool,
}

impl Walker {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.push_problem(self.instance.clone(), false, key, message.into());
    }

    /// A problem with a key of the file's top level, outside any section.
    fn top_level_problem(&mut self, key: &str, message: impl Into<String>) {
        self.push_problem(None, true, key, message.into());
    }

    fn push_problem(&mut self, instance: Option<String>, top_level: bool, key: &str, message: String) {
        self.problems.push(Problem { file: self.file.clone(), instance, top_level, key: key.to_string(), message });
    }

    /// Takes `key` out of `table` as a `T`; a wrong type is a problem.
    fn take<T: DeserializeOwned>(&mut self, table: &mut Table, key: &str, expected: &str) -> Option<T> {
        let value = table.remove(key)?;
        match value.clone().try_into::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(key, format!("expected {expected}, found {}", describe_value(&value)));
                None
            }
        }
    }

    fn unknown_keys(&mut self, table: Table, prefix: &str, known: &[&str]) {
        for key in table.keys() {
            self.problem(&format!("{prefix}{key}"), format!("unknown key (known keys: {})", known.join(", ")));
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let path = PathBuf::from(text);
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    fn duration(&mut self, table: &mut Table, key: &str) -> Option<Duration> {
        self.duration_at(table, key, key)
    }

    /// `key` of `table`, reported as `at` (its path from the instance).
    fn duration_at(&mut self, table: &mut Table, key: &str, at: &str) -> Option<Duration> {
        let value = table.remove(key)?;
        let Value::String(text) = value else {
            self.problem(at, format!("expected a duration such as \"90s\", \"15m\" or \"1h\", found {}", describe_value(&value)));
            return None;
        };
        let key = at;
        match humantime::parse_duration(&text) {
            Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(366 * 86_400) => Some(d),
            Ok(_) => {
                self.problem(key, "must be between 100ms and a year");
                None
            }
            Err(e) => {
                self.problem(key, format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"15m\" or \"1h\""));
                None
            }
        }
    }

    /// An `env:VAR` or `file:PATH` reference, resolved now so that a
    /// missing variable or file is a problem at start, not at 3 a.m.
    fn secret_ref(&mut self, key: &str, name: &str, text: &str) -> Option<SecretSource> {
        let text = match text.strip_prefix("file:") {
            Some(path) if !path.is_empty() => format!("file:{}", self.path(path).display()),
            _ => text.to_string(),
        };
        let source: SecretSource = match format!("{name}={text}").parse() {
            Ok(source) => source,
            Err(_) => {
                self.problem(key, "a secret is a reference: \"env:VAR\" or \"file:PATH\"");
                return None;
            }
        };
        if matches!(source.from, SecretFrom::Literal(_)) {
            self.problem(key, "secrets are never written in the config file: give \"env:VAR\" or \"file:PATH\"");
            return None;
        }
        match Secrets::resolve(std::slice::from_ref(&source)) {
            Ok(_) => Some(source),
            Err(e) => {
                self.problem(key, format!("{e:#}"));
                None
            }
        }
    }

    fn config(&mut self, mut table: Table) -> ServeConfig {
        let server = match table.remove("server") {
            Some(Value::Table(server)) => self.server(server),
            Some(other) => {
                self.top_level_problem("server", format!("expected a table, found {}", describe_value(&other)));
                self.server(Table::new())
            }
            None => self.server(Table::new()),
        };
        let mut instances = BTreeMap::new();
        match table.remove("instances") {
            Some(Value::Table(list)) => {
                for (name, value) in list {
                    self.instance = Some(name.clone());
                    if let Err(e) = crate::cli::args::parse_instance_name(&name) {
                        self.problem("", e);
                    }
                    match value {
                        Value::Table(t) => {
                            if let Some(instance) = self.instance_config(&name, t) {
                                instances.insert(name.clone(), Arc::new(instance));
                            }
                        }
                        other => self.problem("", format!("expected a table, found {}", describe_value(&other))),
                    }
                    self.instance = None;
                }
            }
            Some(other) => self.top_level_problem("instances", format!("expected tables [instances.NAME], found {}", describe_value(&other))),
            None => {}
        }
        if instances.is_empty() && !self.problems.iter().any(|p| p.instance.is_some()) {
            self.top_level_problem("instances", "no connector instances: add at least one [instances.NAME] table");
        }
        for key in table.keys() {
            self.top_level_problem(key, "unknown key (known: [server] and [instances.NAME]; keys such as data_dir go under [server])");
        }
        ServeConfig { path: self.file.clone(), server, instances }
    }

    fn server(&mut self, mut t: Table) -> ServerSettings {
        let listen = self.take::<String>(&mut t, "listen", "an address such as \"127.0.0.1:8787\"").and_then(|text| match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem("listen", format!("{text:?} is not an IP:PORT address"));
                None
            }
        });
        let data_dir = match self.take::<String>(&mut t, "data_dir", "a folder path") {
            Some(dir) => self.path(&dir),
            None => {
                self.problem("data_dir", "missing: the folder for the sync files, storage and audit log");
                PathBuf::new()
            }
        };
        let api_token = self.take::<String>(&mut t, "api_token", "\"env:VAR\" or \"file:PATH\"").filter(|_| self.serving).and_then(|text| {
            let source = self.secret_ref("api_token", "api_token", &text)?;
            let secrets = Secrets::resolve(&[source]).ok()?;
            secrets.get("api_token").map(|v| v.expose().to_string())
        });
        if self.serving && api_token.is_none() && !self.problems.iter().any(|p| p.key == "api_token") {
            self.problem("api_token", "missing: the API's bearer token, as \"env:VAR\" or \"file:PATH\"");
        }
        let cache_dir = self.take::<String>(&mut t, "cache_dir", "a folder path").map(|d| self.path(&d));
        let grace_period = self.duration(&mut t, "grace_period").unwrap_or(Duration::from_secs(30));
        let watch_interval = self.duration(&mut t, "watch_interval").unwrap_or(Duration::from_secs(2));
        let max_concurrent_syncs = match self.take::<i64>(&mut t, "max_concurrent_syncs", "a number of syncs") {
            Some(n @ 1..=4096) => n as usize,
            Some(n) => {
                self.problem("max_concurrent_syncs", format!("{n} is not from 1 to 4096"));
                1
            }
            None => default_concurrent_syncs(),
        };
        self.unknown_keys(t, "", &["listen", "data_dir", "api_token", "cache_dir", "grace_period", "watch_interval", "max_concurrent_syncs"]);
        ServerSettings { listen, data_dir, api_token, cache_dir, grace_period, watch_interval, max_concurrent_syncs }
    }

    fn instance_config(&mut self, name: &str, mut t: Table) -> Option<InstanceConfig> {
        let raw = t.to_string();
        let before = self.problems.len();
        let module = match self.take::<String>(&mut t, "module", "the path of a .wasm component, or oci://REGISTRY/REPOSITORY:TAG") {
            Some(module) if module.starts_with("oci://") => match module.parse::<ModuleSource>() {
                Ok(source) => source,
                Err(e) => {
                    self.problem("module", e);
                    ModuleSource::Path(PathBuf::new())
                }
            },
            Some(module) => {
                let path = self.path(&module);
                if !path.exists() {
                    self.problem("module", format!("no file at {}", path.display()));
                } else if !path.is_file() {
                    self.problem("module", format!("{} is not a plain file (a folder or a device?)", path.display()));
                }
                ModuleSource::Path(path)
            }
            // Present but not text is a problem already reported.
            None if self.problems[before..].iter().any(|p| p.key == "module") => ModuleSource::Path(PathBuf::new()),
            None => {
                self.problem("module", "missing: the connector component (.wasm)");
                ModuleSource::Path(PathBuf::new())
            }
        };
        let registry = self.registry_options(&mut t, &module);
        let digest = self.take::<String>(&mut t, "digest", "a sha256 in hex");
        if digest.as_deref().is_some_and(|d| crate::runtime::trust::parse_sha256(d).is_none()) {
            self.problem("digest", "expected a sha256: 64 hex digits, optionally after \"sha256:\"");
        }
        let allow_downgrade = self.take::<bool>(&mut t, "allow_downgrade", "true or false").unwrap_or(false);
        let mut public_keys = vec![];
        for (i, spec) in
            self.take::<Vec<String>>(&mut t, "public_keys", "a list of keys (NAME.pub paths or 64 hex digits)").unwrap_or_default().iter().enumerate()
        {
            let spec = if spec.len() == 64 && spec.bytes().all(|b| b.is_ascii_hexdigit()) { spec.clone() } else { self.path(spec).display().to_string() };
            match crate::runtime::trust::parse_verifying_key(&spec) {
                Ok(key) => public_keys.push(key),
                Err(e) => self.problem(&format!("public_keys[{i}]"), format!("{e:#}")),
            }
        }
        let signature = self.take::<String>(&mut t, "signature", "a path").map(|s| self.path(&s));
        if signature.is_some() && matches!(module, ModuleSource::Oci(_)) {
            self.problem("signature", "an oci:// module carries its signature in the registry; remove this key");
        }
        let config = match t.remove("config") {
            Some(Value::Table(values)) => values
                .into_iter()
                .filter_map(|(key, value)| match value {
                    Value::String(s) => Some((key, s)),
                    Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => Some((key, value.to_string())),
                    other => {
                        self.problem(&format!("config.{key}"), format!("expected a string, number or boolean, found {}", describe_value(&other)));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.problem("config", format!("expected a table of values, found {}", describe_value(&other)));
                vec![]
            }
            None => vec![],
        };
        let mut secrets = vec![];
        match t.remove("secrets") {
            Some(Value::Table(values)) => {
                for (key, value) in values {
                    let at = format!("secrets.{key}");
                    match value {
                        Value::String(text) => {
                            if let Some(source) = self.secret_ref(&at, &key, &text) {
                                secrets.push(source);
                            }
                        }
                        other => self.problem(&at, format!("expected \"env:VAR\" or \"file:PATH\", found {}", describe_value(&other))),
                    }
                }
            }
            Some(other) => self.problem("secrets", format!("expected a table of references, found {}", describe_value(&other))),
            None => {}
        }
        for (key, _) in &config {
            if secrets.iter().any(|s| &s.name == key) {
                self.problem(&format!("config.{key}"), "given both as config and as a secret");
            }
        }
        let mut allowed_hosts = vec![];
        for (i, spec) in self.take::<Vec<String>>(&mut t, "allowed_hosts", "a list of strings, each HOST[:PORT]").unwrap_or_default().iter().enumerate() {
            match AllowedHost::parse(spec) {
                Ok(host) => allowed_hosts.push(host),
                Err(e) => self.problem(&format!("allowed_hosts[{i}]"), format!("{e:#}")),
            }
        }
        let schedule = match t.remove("schedule") {
            Some(Value::Table(s)) => self.schedule(s),
            Some(other) => {
                self.problem("schedule", format!("expected a table, found {}", describe_value(&other)));
                None
            }
            None => {
                self.problem("schedule", "missing: give [instances.NAME.schedule] with interval = \"1h\" and/or cron = \"…\"");
                None
            }
        };
        let (limits, sync_limits) = match t.remove("limits") {
            Some(Value::Table(l)) => self.limits(l),
            Some(other) => {
                self.problem("limits", format!("expected a table, found {}", describe_value(&other)));
                (Limits::default(), SyncLimits::default())
            }
            None => self.limits(Table::new()),
        };
        self.unknown_keys(
            t,
            "",
            &[
                "module",
                "digest",
                "public_keys",
                "signature",
                "allow_downgrade",
                "config",
                "secrets",
                "allowed_hosts",
                "schedule",
                "limits",
                "insecure_registry",
                "registry_user",
                "registry_password",
                "docker_config",
            ],
        );
        if self.problems.len() > before {
            return None;
        }
        let resolved_secrets = match Secrets::resolve(&secrets) {
            Ok(resolved) => Arc::new(resolved),
            Err(e) => {
                self.problem("secrets", format!("{e:#}"));
                return None;
            }
        };
        Some(InstanceConfig {
            name: name.to_string(),
            module,
            registry,
            digest,
            public_keys,
            signature,
            allow_downgrade,
            config,
            secrets,
            resolved_secrets,
            allowed_hosts,
            schedule: schedule?,
            limits,
            sync_limits,
            raw,
        })
    }

    /// The registry keys of an `oci://` module: plain http to its registry
    /// (`insecure_registry = true`; loopback registries always may), a user
    /// and a password by reference, or a Docker config file. The password
    /// is read now, so that a missing one is a problem at start.
    fn registry_options(&mut self, t: &mut Table, module: &ModuleSource) -> RegistryOptions {
        let insecure = self.take::<bool>(t, "insecure_registry", "true or false").unwrap_or(false);
        let user = self.take::<String>(t, "registry_user", "a user name");
        let password = self.take::<String>(t, "registry_password", "\"env:VAR\" or \"file:PATH\"").and_then(|text| {
            let text = match text.strip_prefix("file:") {
                Some(path) if !path.is_empty() => format!("file:{}", self.path(path).display()),
                _ => text,
            };
            match text.parse::<PasswordSource>() {
                Ok(source) => {
                    let readable = match &source {
                        PasswordSource::Env(var) => std::env::var(var).map(|_| ()).map_err(|_| format!("environment variable {var} is not set")),
                        PasswordSource::File(path) => {
                            crate::runtime::imports::config::read_secret_file(path).map(|_| ()).map_err(|e| format!("cannot read {}: {e}", path.display()))
                        }
                    };
                    match readable {
                        Ok(()) => Some(source),
                        Err(e) => {
                            self.problem("registry_password", e);
                            None
                        }
                    }
                }
                Err(e) => {
                    self.problem("registry_password", e);
                    None
                }
            }
        });
        let docker_config = self.take::<String>(t, "docker_config", "a path").map(|p| self.path(&p));
        match (&user, &password) {
            (Some(_), None) if !self.problems.iter().any(|p| p.key == "registry_password" && p.instance == self.instance) => {
                self.problem("registry_password", "missing: registry_user needs registry_password (\"env:VAR\" or \"file:PATH\")")
            }
            (None, Some(_)) => self.problem("registry_user", "missing: registry_password needs registry_user"),
            _ => {}
        }
        let given = insecure || user.is_some() || password.is_some() || docker_config.is_some();
        let reference = match module {
            ModuleSource::Oci(reference) => Some(reference),
            ModuleSource::Path(_) => {
                if given {
                    self.problem("module", "insecure_registry, registry_user, registry_password and docker_config are for an oci:// module");
                }
                None
            }
        };
        RegistryOptions {
            insecure: reference.filter(|_| insecure).map(|r| vec![r.registry().to_string()]).unwrap_or_default(),
            credentials: user.zip(password),
            docker_config,
            connect_timeout: None,
        }
    }

    fn schedule(&mut self, mut t: Table) -> Option<Schedule> {
        let before = self.problems.len();
        let interval = self.duration_at(&mut t, "interval", "schedule.interval");
        let cron = t.remove("cron").and_then(|value| match value {
            Value::String(text) => match text.parse::<croner::Cron>() {
                // A date that never comes (30 February) would silently
                // fall back to the scheduler's hourly default.
                Ok(cron) if cron.find_next_occurrence(&chrono::Utc::now(), false).is_err() => {
                    self.problem("schedule.cron", format!("{text:?} never fires (no date matches it)"));
                    None
                }
                Ok(cron) => Some((text, cron)),
                Err(e) => {
                    self.problem("schedule.cron", format!("{text:?} is not a cron expression: {e}"));
                    None
                }
            },
            other => {
                self.problem("schedule.cron", format!("expected a cron expression such as \"0 */6 * * *\", found {}", describe_value(&other)));
                None
            }
        });
        let backoff = self.duration_at(&mut t, "backoff", "schedule.backoff").unwrap_or(Duration::from_secs(30));
        let max_backoff = self.duration_at(&mut t, "max_backoff", "schedule.max_backoff").unwrap_or(Duration::from_secs(3600));
        self.unknown_keys(t, "schedule.", &["interval", "cron", "backoff", "max_backoff"]);
        if interval.is_none() && cron.is_none() && self.problems.len() == before {
            self.problem("schedule", "give interval = \"1h\" and/or cron = \"…\"");
        }
        (self.problems.len() == before).then_some(Schedule { interval, cron, backoff, max_backoff: max_backoff.max(backoff) })
    }

    /// Limits take the names of `tether sync`'s flags (`max-memory-mb = 32`)
    /// and are checked by the same parser, so both agree on names, defaults
    /// and ranges.
    fn limits(&mut self, t: Table) -> (Limits, SyncLimits) {
        #[derive(Parser)]
        #[command(no_binary_name = true)]
        struct FromConfig {
            #[command(flatten)]
            limits: LimitArgs,
            #[command(flatten)]
            sync: SyncLimitArgs,
        }
        let mut all = vec![];
        for (key, value) in t {
            let at = format!("limits.{key}");
            let text = match value {
                Value::Integer(n) => n.to_string(),
                Value::Float(x) => x.to_string(),
                other => {
                    self.problem(&at, format!("expected a number, found {}", describe_value(&other)));
                    continue;
                }
            };
            // One argument, so that a negative number is read as the
            // value it is, not as another flag.
            let args = [format!("--{key}={text}")];
            match FromConfig::try_parse_from(&args) {
                Ok(_) => all.extend(args),
                Err(e) => {
                    let message = e.kind().to_string();
                    let detail = e.to_string();
                    let first = detail.lines().next().unwrap_or(&message).trim_start_matches("error: ").to_string();
                    let first = if e.kind() == clap::error::ErrorKind::UnknownArgument {
                        "unknown limit (the names are those of `tether sync --help`, without the dashes)".into()
                    } else {
                        first
                    };
                    self.problem(&at, first);
                }
            }
        }
        let parsed = FromConfig::try_parse_from(&all).ok();
        let Some(parsed) = parsed else {
            return (Limits::default(), SyncLimits::default());
        };
        let limits = parsed.limits.to_limits().unwrap_or_else(|e| {
            self.problem("limits", format!("{e:#}"));
            Limits::default()
        });
        let sync = parsed.sync.to_limits().unwrap_or_else(|e| {
            self.problem("limits", format!("{e:#}"));
            SyncLimits::default()
        });
        (limits, sync)
    }
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_key_or_instance_name_is_shown_in_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        let long = "k".repeat(120_000);
        std::fs::write(&path, format!("[server]\ndata_dir = \"data\"\n{long} = 1\n[instances.{long}]\nmodule = 1\n")).unwrap();
        let Err(errors) = load_for_sync(&path) else { panic!("a huge key is refused") };
        let errors = errors.to_string();
        assert!(errors.contains("[server] kkkk") && errors.contains("more bytes)"), "{}", &errors[..500.min(errors.len())]);
        assert!(errors.len() < 4_000, "{} bytes of error: {}", errors.len(), errors.replace(&long, "<LONG>"));
        assert_eq!(errors.matches("module:").count(), 1, "a module of the wrong type is not also missing: {}", errors.replace(&long, "<LONG>"));
    }

    #[test]
    fn a_line_that_is_not_toml_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, "[server]\ndata_dir = \"data\"\n[instances.a.secrets]\ntoken = pasted-s3cr3t-unquoted\n").unwrap();
        let Err(errors) = load_for_sync(&path) else { panic!("not TOML") };
        let errors = errors.to_string();
        assert!(errors.contains("not valid TOML: line 4, column 9"), "{errors}");
        assert!(!errors.contains("s3cr3t"), "the line is quoted: {errors}");
    }
}
