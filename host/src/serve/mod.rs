//! `tether serve`: the long-running host of many connector instances.
//!
//! - `config`: the TOML config file, every problem listed;
//! - `loader`: an instance's module verified, compiled and validated;
//! - `scheduler`: one task per instance, its runs and back-off;
//! - `reload`: new module versions and SIGHUP config reloads;
//! - `adapter`: the one call into the sync driver, the one write;
//! - `api`, `writes`, `audit`, `metrics`: the HTTP API;
//! - `logging`: text or JSON logs.

pub mod adapter;
pub mod api;
pub mod audit;
pub mod config;
pub mod http_server;
pub mod loader;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod scheduler;
pub mod writes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tracing::Instrument;

use crate::runtime::engine::ConnectorEngine;
use config::ServeConfig;
use scheduler::{InstanceRuntime, Refusal};

/// What every part of the server shares.
pub struct Server {
    pub config: RwLock<Arc<ServeConfig>>,
    pub instances: RwLock<BTreeMap<String, Arc<InstanceRuntime>>>,
    /// Instances that left the config, by name, until one of that name is
    /// added again: its first sync waits for theirs to end.
    pub retiring: Mutex<BTreeMap<String, Arc<InstanceRuntime>>>,
    pub engine: ConnectorEngine,
    pub data_dir: PathBuf,
    pub metrics: metrics::Metrics,
    pub audit: audit::Audit,
    /// Every instance's module is loaded and the schedulers run.
    pub ready: AtomicBool,
    /// Set on shutdown: the watcher and schedulers end.
    pub quit: watch::Sender<bool>,
    /// The API's bearer token; a reload that changes it (a rotated
    /// `file:` token) applies it at once.
    pub token: RwLock<String>,
    /// The last config reload refused, if the one after it did not succeed.
    pub config_refusal: Mutex<Option<Refusal>>,
    /// One config reload at a time (SIGHUP and the file watcher).
    reloading: tokio::sync::Mutex<()>,
    /// Held (shared) by every API write in progress: a stop waits for them
    /// within its grace period, so a write that reached the upstream gets
    /// its answer and its audit entry.
    pub writes: tokio::sync::RwLock<()>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// One permit per sync that may run at once (`max_concurrent_syncs`).
    pub sync_slots: Arc<tokio::sync::Semaphore>,
}

impl Server {
    pub fn config(&self) -> Arc<ServeConfig> {
        self.config.read().expect("config lock").clone()
    }

    pub fn instances(&self) -> BTreeMap<String, Arc<InstanceRuntime>> {
        self.instances.read().expect("instances lock").clone()
    }

    pub fn instance(&self, name: &str) -> Option<Arc<InstanceRuntime>> {
        self.instances.read().expect("instances lock").get(name).cloned()
    }

    /// Each instance's sync file: `DATA_DIR/instances/NAME/sync.db`.
    pub fn sync_file(&self, name: &str) -> PathBuf {
        sync_file_in(&self.data_dir, name)
    }

    /// Where `oci://` modules are pulled to.
    pub fn module_cache(&self) -> PathBuf {
        module_cache_in(&self.config().server)
    }

    pub(crate) fn spawn_instance(self: &Arc<Self>, runtime: Arc<InstanceRuntime>) {
        let previous = self.retiring.lock().expect("retiring lock").remove(&runtime.name);
        let handle = tokio::spawn(scheduler::run(self.clone(), runtime, previous));
        self.tasks.lock().expect("tasks lock").push(handle);
    }
}

pub fn sync_file_in(data_dir: &std::path::Path, name: &str) -> PathBuf {
    data_dir.join("instances").join(name).join("sync.db")
}

/// Pulled modules, cached by manifest digest: `cache_dir/modules`, else
/// `data_dir/modules` (writable wherever serve runs, unlike a home folder).
pub fn module_cache_in(settings: &config::ServerSettings) -> PathBuf {
    settings.cache_dir.as_ref().unwrap_or(&settings.data_dir).join("modules")
}

/// How `tether serve` was started.
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: Option<SocketAddr>,
    /// Check the config and every module, then exit.
    pub check: bool,
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn run(options: ServeOptions) -> Result<()> {
    let mut signals = Signals::install()?;
    let config = config::load(&options.config).map_err(anyhow::Error::new)?;
    let sync_slots = config.server.max_concurrent_syncs;
    let data_dir = config.server.data_dir.clone();
    // A check writes nothing of the server's (a config is often checked
    // on a build machine without the server's folders): instances start
    // with their storage and module pulls in a scratch folder, gone at
    // exit, compile without the code cache, and audit to memory.
    let scratch = if options.check { Some(tempfile::tempdir().context("cannot make a scratch folder for the check")?) } else { None };
    if scratch.is_none() {
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    }
    let cache_dir = if options.check { None } else { config.server.cache_dir.clone().or_else(ConnectorEngine::default_cache_dir) };
    let engine = ConnectorEngine::new(cache_dir)?;
    let audit = match &scratch {
        Some(_) => audit::Audit::in_memory()?,
        None => audit::Audit::open(&data_dir.join("audit.db"))?,
    };
    let listen = options.listen.or(config.server.listen).unwrap_or_else(|| config::DEFAULT_LISTEN.parse().expect("default address"));
    let server = Arc::new(Server {
        token: RwLock::new(config.server.api_token.clone().unwrap_or_default()),
        audit,
        config: RwLock::new(Arc::new(config)),
        instances: RwLock::new(BTreeMap::new()),
        retiring: Mutex::new(BTreeMap::new()),
        engine,
        data_dir,
        metrics: metrics::Metrics::new()?,
        ready: AtomicBool::new(false),
        quit: watch::channel(false).0,
        config_refusal: Mutex::new(None),
        reloading: tokio::sync::Mutex::new(()),
        writes: tokio::sync::RwLock::new(()),
        tasks: Mutex::new(vec![]),
        sync_slots: Arc::new(tokio::sync::Semaphore::new(sync_slots)),
    });

    // Listen first: health checks answer while the modules compile.
    let listener = if options.check { None } else { Some(tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?) };
    let http = listener.map(|listener| {
        tracing::info!("listening on http://{}", listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
        if !listen.ip().is_loopback() {
            tracing::warn!("listening beyond loopback ({listen}): the bearer token is the only guard; put TLS and a network policy in front");
        }
        let app = api::router(server.clone());
        tokio::spawn(http_server::serve(listener, app, server.quit.subscribe()))
    });

    // Every module loads, or the start fails with every problem listed.
    let config = server.config();
    // A task of its own: a compile holds its thread (see
    // `loader::off_the_runtime`), and the stop below must still be heard.
    let (module_cache, instances_dir) = match &scratch {
        Some(scratch) => (scratch.path().join("modules"), scratch.path().to_path_buf()),
        None => (server.module_cache(), server.data_dir.clone()),
    };
    let load_all = tokio::spawn({
        let (server, config, check) = (server.clone(), config.clone(), options.check);
        async move {
            let mut problems = vec![];
            let mut loaded = vec![];
            for (name, settings) in &config.instances {
                let span = tracing::info_span!("instance", instance = %name);
                let mut loaded_version = loader::resolve_and_load(&server.engine, settings, &module_cache, &instances_dir, None)
                    .instrument(span.clone())
                    .await
                    .and_then(|version| reload::refuse_rollback(&server.data_dir, name, settings, None, &version).map(|()| version));
                let mut source_error = None;
                if let Err(e) = &loaded_version {
                    // A registry that is down keeps a tag's instance on the
                    // version of its last good sync, as it would have running
                    // (a check reports it: the registry is a problem to fix).
                    let fallback = if check { None } else { reload::load_last_synced_pull(&server, name, settings).instrument(span).await };
                    if let Some(fallback) = fallback {
                        source_error = Some(format!("{e:#}"));
                        loaded_version = Ok(fallback);
                    }
                }
                match loaded_version {
                    Ok(version) => {
                        server.metrics.module_loads.with_label_values(&[name, "loaded"]).inc();
                        let runtime = InstanceRuntime::new(settings.clone(), Some(Arc::new(version)));
                        if let Some(error) = source_error {
                            tracing::warn!(instance = %name, "cannot look up {}; starting on the cached pull of its last good sync: {}", settings.module, crate::terminal::escape(&error));
                            runtime.status.lock().expect("status lock").module_source_error = Some(scheduler::SourceError {
                                at: scheduler::rfc3339(std::time::SystemTime::now()),
                                module: settings.module.to_string(),
                                error,
                            });
                        }
                        loaded.push(runtime);
                    }
                    Err(e) => problems.push(format!("{}: [instances.{name}] module: {e:#}", config.path.display())),
                }
            }
            (problems, loaded)
        }
    });
    // A stop while the modules load (a registry that does not answer can
    // take a while, a compile up to its limits) ends the start at once:
    // nothing runs yet, and a compiler child dies with this process.
    let (problems, loaded) = tokio::select! {
        loaded = load_all => loaded.context("loading the modules failed")?,
        _ = signals.stop() => {
            let _ = server.quit.send(true);
            tracing::info!("stopped while the modules loaded");
            return Ok(());
        }
    };
    if !problems.is_empty() {
        let _ = server.quit.send(true);
        anyhow::bail!("{} instance(s) cannot start:\n  {}", problems.len(), problems.join("\n  "));
    }
    if options.check {
        outln!("{}: {} instance(s), every module verified and validated", config.path.display(), loaded.len())?;
        return Ok(());
    }
    for runtime in loaded {
        server.instances.write().expect("instances lock").insert(runtime.name.clone(), runtime.clone());
        server.spawn_instance(runtime);
    }
    server.ready.store(true, Ordering::SeqCst);
    tracing::info!("ready: {} instance(s)", config.instances.len());
    let watcher = tokio::spawn(reload::watch_modules(server.clone()));

    signals.serve_until_stop(&server).await;
    shutdown(&server).await;
    watcher.abort();
    if let Some(http) = http {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http).await;
    }
    Ok(())
}

/// The signals serve answers, handled from its first moment: SIGHUP's
/// default action would end a server still loading its modules.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Until SIGTERM or SIGINT.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// Until SIGTERM or SIGINT, reloading the config on each SIGHUP. A
    /// reload runs beside the wait, not in it: one stuck on a registry that
    /// never answers must not hold up a stop.
    async fn serve_until_stop(&mut self, server: &Arc<Server>) {
        let mut reloads: Vec<tokio::task::JoinHandle<()>> = vec![];
        loop {
            tokio::select! {
                _ = self.terminate.recv() => break,
                _ = self.interrupt.recv() => break,
                _ = self.hangup.recv() => {
                    reloads.retain(|reload| !reload.is_finished());
                    let server = server.clone();
                    // Reloads take their turn on `server.reloading`.
                    reloads.push(tokio::spawn(async move { reload::reload_config(&server).await }));
                }
            }
        }
        for reload in reloads {
            reload.abort();
        }
    }
}

/// Stops taking work, asks running syncs to checkpoint, and waits for them
/// within the grace period. A sync still running then is marked
/// interrupted by the next start, which resumes it.
async fn shutdown(server: &Arc<Server>) {
    let grace = server.config().server.grace_period;
    tracing::info!("stopping: running syncs checkpoint (grace period {})", humantime::format_duration(grace));
    server.ready.store(false, Ordering::SeqCst);
    let _ = server.quit.send(true);
    for instance in server.instances().values() {
        instance.stop.request();
        let _ = instance.quit.send(true);
    }
    let tasks: Vec<_> = std::mem::take(&mut *server.tasks.lock().expect("tasks lock"));
    let all = futures::future::join(futures::future::join_all(tasks), server.writes.write());
    match tokio::time::timeout(grace, all).await {
        Ok(_) => tracing::info!("stopped cleanly"),
        Err(_) => tracing::warn!(
            "the grace period ran out with syncs or API writes still running; the next start resumes the syncs, and the audit table shows such a write as started"
        ),
    }
}
