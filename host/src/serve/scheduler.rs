//! One task per instance: waits for its next run (interval, cron, or a
//! trigger from the API), syncs, and works out the next run. Runs of one
//! instance never overlap (the task runs one at a time); ticks missed while
//! a sync ran become one run, not many; failures back off exponentially.
//! Each instance has its own task, sync file and connector instance, so a
//! slow, failing or looping connector delays nobody else.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use super::config::{InstanceConfig, Schedule};
use super::loader::Version;
use super::Server;
use crate::runtime::imports::upstream::HostThrottle;
use crate::runtime::instance::ConnectorInstance;
use crate::runtime::limits::LimitExceeded;
use crate::sync::{Interrupted, StopRequest, SyncOptions};

/// One instance as the server runs it.
pub struct InstanceRuntime {
    pub name: String,
    /// Its config now; a sync takes it when it starts.
    pub settings: RwLock<Arc<InstanceConfig>>,
    /// The module version the next sync runs; a running sync keeps its own.
    pub current: RwLock<Option<Version>>,
    pub status: Mutex<Status>,
    pub trigger: Notify,
    /// Asks the running sync to stop at its next page (shutdown, removal,
    /// a revoked signing key).
    pub stop: StopRequest,
    /// The stop was asked for a revoked key alone: the instance goes on,
    /// so the stop is lifted once its sync has ended.
    pub stopped_for_revocation: std::sync::atomic::AtomicBool,
    /// Ends the task (shutdown, or the instance left the config).
    pub quit: watch::Sender<bool>,
    /// The module file (and its signature) as last seen.
    pub module_seen: Mutex<Option<super::reload::Fingerprint>>,
    /// True once its task has ended (its last sync with it).
    pub done: watch::Sender<bool>,
    /// Writes through the API, one at a time: each reads the upstream
    /// before it acts, and two at once (a grant and a disable of one user)
    /// would act on what the other is changing.
    pub writing: tokio::sync::Mutex<()>,
    /// The upstream budget its syncs and API writes share: the rate and
    /// the caps in flight the operator set are the instance's, not each
    /// call's.
    pub throttle: Arc<HostThrottle>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub running: bool,
    /// A run asked for through the API that has not started yet.
    #[serde(skip)]
    pub requested: bool,
    pub last_sync: Option<LastSync>,
    pub next_run: Option<String>,
    pub consecutive_failures: u32,
    pub last_refusal: Option<Refusal>,
    /// The last lookup of the instance's OCI tag, if it failed (registry
    /// down, tag gone); cleared by the next good lookup.
    pub module_source_error: Option<SourceError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastSync {
    pub outcome: String,
    pub run_id: Option<i64>,
    pub started_at: String,
    pub ended_at: String,
    pub duration_seconds: f64,
    pub module_version: String,
    pub module_digest: String,
    pub records: Option<i64>,
    pub error: Option<String>,
}

/// A module source (an OCI tag) that could not be looked up.
#[derive(Debug, Clone, Serialize)]
pub struct SourceError {
    pub at: String,
    pub module: String,
    pub error: String,
}

/// A module version (or config) that was refused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub at: String,
    pub module: String,
    pub digest: Option<String>,
    pub reason: String,
    /// The OCI manifest refused: the same module bytes pushed again with a
    /// good signature come in another manifest, which is not refused
    /// unseen (see `reload::swap_in`).
    #[serde(skip)]
    pub manifest_digest: Option<String>,
}

pub fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl InstanceRuntime {
    pub fn new(settings: Arc<InstanceConfig>, version: Option<Version>) -> Arc<Self> {
        let seen = super::reload::fingerprint(&settings);
        Arc::new(InstanceRuntime {
            name: settings.name.clone(),
            current: RwLock::new(version),
            status: Mutex::new(Status::default()),
            trigger: Notify::new(),
            stop: StopRequest::default(),
            stopped_for_revocation: Default::default(),
            quit: watch::channel(false).0,
            module_seen: Mutex::new(seen),
            done: watch::channel(false).0,
            writing: tokio::sync::Mutex::new(()),
            throttle: Arc::new(HostThrottle::undeclared(&settings.limits.upstream)),
            settings: RwLock::new(settings),
        })
    }

    /// Until its task has ended.
    pub async fn ended(&self) {
        let _ = self.done.subscribe().wait_for(|done| *done).await;
    }

    pub fn settings(&self) -> Arc<InstanceConfig> {
        self.settings.read().map(|s| s.clone()).expect("settings lock")
    }

    pub fn version(&self) -> Option<Version> {
        self.current.read().ok().and_then(|v| v.clone())
    }

    /// Asks for a run now; false if one is running or already asked for.
    pub fn request_run(&self) -> bool {
        let mut status = self.status.lock().expect("status lock");
        if status.running || status.requested {
            return false;
        }
        status.requested = true;
        self.trigger.notify_one();
        true
    }
}

/// When the schedule next fires after `from`: the interval counted from
/// the last run's start, or the cron expression, whichever comes first.
fn next_due(schedule: &Schedule, last_start: Instant) -> Instant {
    let now = Instant::now();
    let by_interval = schedule.interval.map(|i| last_start + i);
    let by_cron = schedule.cron.as_ref().and_then(|(_, cron)| {
        let next = cron.find_next_occurrence(&chrono::Utc::now(), false).ok()?;
        let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
        Some(now + wait)
    });
    match (by_interval, by_cron) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => now + Duration::from_secs(3600),
    }
}

fn backoff_for(schedule: &Schedule) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default().with_min_delay(schedule.backoff).with_max_delay(schedule.max_backoff).with_factor(2.0).without_max_times().build()
}

/// The instance's task: runs until told to quit.
/// Sets `done` when the task ends, however it ends.
struct Done(Arc<InstanceRuntime>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.done.send_replace(true);
    }
}

/// Runs the instance's syncs until it quits. `previous`: an instance of
/// the same name that left the config, whose sync may still be running
/// (it is stopping): this one's first sync waits for it, as both write the
/// same sync file.
pub async fn run(server: Arc<Server>, instance: Arc<InstanceRuntime>, previous: Option<Arc<InstanceRuntime>>) {
    let span = tracing::info_span!("instance", instance = %instance.name);
    let _done = Done(instance.clone());
    async move {
        let mut quit = instance.quit.subscribe();
        if let Some(previous) = previous.filter(|p| !*p.done.borrow()) {
            tracing::info!("waiting for the sync of the instance removed under this name to end");
            tokio::select! {
                _ = previous.ended() => {}
                _ = quit.changed() => return,
            }
        }
        // The first sync runs at start.
        let mut due = Instant::now();
        let mut backoff = backoff_for(&instance.settings().schedule);
        loop {
            set_next_run(&instance, due);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = instance.trigger.notified() => tracing::info!("sync requested through the API"),
                _ = quit.changed() => break,
            }
            if *quit.borrow() {
                break;
            }
            // One of the server's sync slots: with hundreds of instances,
            // all due at start, the rest wait their turn.
            let slot = match server.sync_slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    tracing::info!("waiting for a sync slot: as many syncs as max_concurrent_syncs are running");
                    tokio::select! {
                        slot = server.sync_slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                        _ = quit.changed() => break,
                    }
                }
            };
            // A tag may have moved: a new version swaps in for this sync.
            super::reload::follow_tag(&server, &instance).await;
            let started = Instant::now();
            let ok = sync_once(&server, &instance).await;
            drop(slot);
            let schedule = instance.settings().schedule.clone();
            let regular = next_due(&schedule, started);
            let wait = if ok {
                backoff = backoff_for(&schedule);
                Duration::ZERO
            } else {
                let wait = backoff.next().unwrap_or(schedule.max_backoff);
                tracing::info!("backing off: next try in {}", humantime::format_duration(wait));
                wait
            };
            due = due_after(ok, regular, Instant::now(), wait);
            // Ticks missed while the sync ran: `due` is in the past, so the
            // next loop runs once at once, and counts on from there.
            if *quit.borrow() {
                break;
            }
        }
        tracing::info!("stopped");
    }
    .instrument(span)
    .await
}

/// When the next sync runs: the regular time after a good one; after a
/// failure, once its back-off has passed, sooner or later than the
/// regular time (back-off brings a retry forward on a long interval and
/// spaces retries out on a short one).
fn due_after(ok: bool, regular: Instant, now: Instant, backoff: Duration) -> Instant {
    if ok {
        regular
    } else {
        now + backoff
    }
}

fn set_next_run(instance: &InstanceRuntime, due: Instant) {
    let at = SystemTime::now() + due.saturating_duration_since(Instant::now());
    instance.status.lock().expect("status lock").next_run = Some(rfc3339(at));
}

/// One sync, on the version current when it starts; true if it succeeded.
async fn sync_once(server: &Server, instance: &InstanceRuntime) -> bool {
    let Some(version) = instance.version() else {
        tracing::warn!("no module loaded; nothing to sync");
        instance.status.lock().expect("status lock").requested = false;
        return false;
    };
    let settings = instance.settings();
    {
        let mut status = instance.status.lock().expect("status lock");
        if status.running {
            return false;
        }
        status.running = true;
        status.requested = false;
    }
    let metrics = &server.metrics;
    metrics.running.with_label_values(&[&instance.name]).set(1);
    let started_at = SystemTime::now();
    let started = Instant::now();
    tracing::info!("sync started ({} {})", crate::terminal::escape(&version.name), crate::terminal::escape(&version.version));
    let options = SyncOptions { resume: true, limits: settings.sync_limits.clone(), stop: instance.stop.clone() };
    let path = server.sync_file(&instance.name);
    let last_run_id = || crate::sync::SyncFile::open_reader(&path).ok().and_then(|file| file.last_run().ok().flatten()).map(|run| (run.id, run.status));
    let run_before = last_run_id().map(|(id, _)| id);
    let mut counters = None;
    let result = async {
        std::fs::create_dir_all(path.parent().unwrap_or(&server.data_dir))?;
        let permissions = super::loader::permissions(&settings, &server.data_dir, false, Some(instance.throttle.clone()));
        // Listings run concurrently on a pool, as with `tether sync`.
        let mut pool = ConnectorInstance::start_pool(&server.engine, &version.module, &permissions, settings.sync_limits.concurrency).await?;
        let result = super::adapter::run_sync(&mut pool, &path, &version.digest, &options).await;
        counters = pool.into_iter().next();
        result
    };
    // A panic under the sync (wasmtime's, when the host runs out of memory
    // mappings) fails this sync only: left to unwind, it ended the
    // instance's scheduler with the instance shown running for good.
    let result = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("no message");
            Err(anyhow::anyhow!("the sync failed in the host (a panic: {}); the instance syncs again on its schedule", crate::terminal::escape(what)))
        }
    };
    if let Some(connector) = &counters {
        metrics.add_http(&instance.name, &connector.http().counters);
    }
    let elapsed = started.elapsed();
    let (outcome, run_id, records, error) = match &result {
        Ok(summary) => {
            metrics.add_summary(&instance.name, summary);
            let records = summary.resources.iter().map(|(_, n)| n).sum::<i64>() + summary.entitlements + summary.grants;
            tracing::info!(records, requests = summary.http_requests, "sync succeeded in {:.2}s (run {})", elapsed.as_secs_f64(), summary.run_id);
            ("succeeded", Some(summary.run_id), Some(records), None)
        }
        Err(e) => {
            let interrupted = e.chain().find_map(|c| c.downcast_ref::<Interrupted>());
            // By type only: the host's limits carry it; a connector's error
            // text saying "limit exceeded" is not one (and read as one, it
            // named a new series of the metric with every failure).
            if let Some(limit) = e.chain().find_map(|c| c.downcast_ref::<LimitExceeded>()) {
                metrics.limit_violations.with_label_values(&[&instance.name, limit.limit]).inc();
            }
            let text = format!("{e:#}");
            match interrupted {
                Some(i) => {
                    tracing::warn!("sync interrupted; run {} is saved with a checkpoint and goes on at the next start", i.run_id);
                    ("interrupted", Some(i.run_id), None, Some(text))
                }
                None => {
                    tracing::warn!("sync failed: {text}");
                    // The run the failure is recorded as, if it got that far
                    // (a run resumed keeps its id).
                    let failed_run = last_run_id().filter(|(id, status)| status == "failed" && Some(*id) >= run_before).map(|(id, _)| id);
                    ("failed", failed_run, None, Some(text))
                }
            }
        }
    };
    metrics.syncs.with_label_values(&[&instance.name, outcome]).inc();
    metrics.sync_duration.with_label_values(&[&instance.name, outcome]).observe(elapsed.as_secs_f64());
    metrics.running.with_label_values(&[&instance.name]).set(0);
    if instance.stopped_for_revocation.swap(false, std::sync::atomic::Ordering::SeqCst) && !*instance.quit.borrow() {
        instance.stop.clear();
    }
    let mut status = instance.status.lock().expect("status lock");
    status.running = false;
    status.consecutive_failures = if outcome == "succeeded" { 0 } else { status.consecutive_failures + 1 };
    status.last_sync = Some(LastSync {
        outcome: outcome.into(),
        run_id,
        started_at: rfc3339(started_at),
        ended_at: rfc3339(SystemTime::now()),
        duration_seconds: elapsed.as_secs_f64(),
        module_version: version.version.clone(),
        module_digest: version.digest.clone(),
        records,
        error,
    });
    outcome == "succeeded"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(interval: Option<u64>, cron: Option<&str>) -> Schedule {
        Schedule {
            interval: interval.map(Duration::from_secs),
            cron: cron.map(|c| (c.to_string(), c.parse().unwrap())),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
        }
    }

    #[test]
    fn the_next_run_counts_from_the_last_start_and_takes_the_earlier_of_interval_and_cron() {
        let start = Instant::now();
        assert_eq!(next_due(&schedule(Some(60), None), start), start + Duration::from_secs(60));
        // A run that overran its interval is due at once, once.
        let long_ago = start - Duration::from_secs(600);
        assert!(next_due(&schedule(Some(60), None), long_ago) <= Instant::now());
        // Every minute on the minute: within the next 60 s, before an hour's interval.
        let by_cron = next_due(&schedule(Some(3600), Some("* * * * *")), start);
        assert!(by_cron <= Instant::now() + Duration::from_secs(61) && by_cron < start + Duration::from_secs(3600));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let waits: Vec<Duration> = backoff_for(&schedule(Some(1), None)).take(5).collect();
        assert!(waits[0] >= Duration::from_secs(1) && waits[0] < Duration::from_secs(2), "{waits:?}");
        assert!(waits[1] >= Duration::from_secs(2), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)), "{waits:?}");
        assert_eq!(waits[4], Duration::from_secs(4), "{waits:?}");
    }

    /// The limits metric counts the host's limits, by type: a connector's
    /// error that says "limit exceeded" is not one.
    #[test]
    fn only_the_hosts_limits_count_as_limits() {
        use crate::runtime::bindings::ConnectorError;
        use crate::runtime::instance::CallError;
        let limit_of = |e: &anyhow::Error| e.chain().find_map(|c| c.downcast_ref::<LimitExceeded>()).map(|l| l.limit);
        let hit = CallError::Limit(LimitExceeded::new("cpu", "the call ran 10s")).context("listing probe failed");
        assert_eq!(format!("{hit:#}"), "listing probe failed: limit exceeded: cpu: the call ran 10s");
        assert_eq!(limit_of(&hit), Some("cpu"));
        let claimed = CallError::Connector(ConnectorError::Upstream("limit exceeded: cpu: made up".into())).context("listing probe failed");
        assert_eq!(limit_of(&claimed), None);
    }

    #[test]
    fn a_failed_sync_is_tried_again_after_its_backoff_not_at_the_next_regular_run() {
        let now = Instant::now();
        let regular = now + Duration::from_secs(3600);
        assert_eq!(due_after(false, regular, now, Duration::from_secs(2)), now + Duration::from_secs(2));
        assert_eq!(due_after(true, regular, now, Duration::from_secs(2)), regular);
    }
}
