//! The sync driver: walks a connector's resources page by page and writes
//! each page to the sync file as it arrives.
//!
//! The sync file itself is the work queue: the driver lists the top-level
//! types, then reads resources back in the order they were written and, for
//! each, lists the types listed under it, its entitlements and its grants.
//! Memory stays flat whatever the size of the org.
//!
//! Listings are independent of each other, so a pool of instances runs as
//! many at once as it has instances (each instance one call at a time),
//! page by page; this driver is the one writer of the sync file. What the
//! file holds does not depend on the pool's size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::ProgressBar;

use super::checkpoint::{Checkpoint, ListingKey, Position};
use super::model::{PageRecords, ResourceType};
use super::sync_file::{ConnectorIdentity, RunEnd, SyncFile, Table};
use super::work::{self, Job, Listing, Work};
use crate::runtime::instance::{retry_rate_limited, CallError, ConnectorInstance};
use crate::runtime::limits::{LimitExceeded, SyncLimits};
use crate::runtime::page::Page;

/// Resources read from the queue at a time.
const QUEUE_BATCH: usize = 64;
/// Listings kept waiting per worker: enough to keep every worker busy (the
/// queue is refilled before every hand-out), few enough that the
/// checkpoint saved with each commit stays small. Every waiting listing is
/// in it: at four per worker it was about 25 KB, rewritten with each
/// commit of a 100k-user sync.
const WAITING_PER_WORKER: usize = 1;
/// How often the progress line's estimate reads the queue's length.
const ESTIMATE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct SyncSummary {
    pub run_id: i64,
    pub connector: ConnectorIdentity,
    /// Resources per type, in the connector's order.
    pub resources: Vec<(String, i64)>,
    pub entitlements: i64,
    pub grants: i64,
    pub http_requests: u64,
    pub rate_limited: u64,
    /// Requests the host sent again after a transient failure.
    pub retries: u64,
    pub elapsed: Duration,
}

/// Asks a running sync to stop at its next page boundary (set from a
/// SIGINT/SIGTERM handler, or by a service shutting down).
#[derive(Debug, Clone, Default)]
pub struct StopRequest(Arc<AtomicBool>);

impl StopRequest {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Lifts a stop asked for one sync (see `InstanceRuntime::stop`).
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The error a sync ends with when it was asked to stop: its records and
/// checkpoint are saved and the run is marked interrupted.
#[derive(Debug, thiserror::Error)]
#[error("the sync was interrupted; sync run {run_id} is saved with a checkpoint (tether sync --resume goes on from there)")]
pub struct Interrupted {
    pub run_id: i64,
}

/// How to run one sync.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Go on from the last run's checkpoint if it failed or was
    /// interrupted (same module), instead of starting over.
    pub resume: bool,
    pub limits: SyncLimits,
    pub stop: StopRequest,
}

/// Runs one sync into `file` with the default limits. On failure the run
/// is marked failed with the error and the last good run stays what the
/// file shows.
pub async fn run(instance: &mut ConnectorInstance, file: &mut SyncFile, digest: &str, progress: &ProgressBar) -> Result<SyncSummary> {
    run_with(instance, file, digest, progress, &SyncOptions::default()).await
}

/// Runs one sync on one instance, one listing at a time, as `options` say.
/// See [`run_pool`].
pub async fn run_with(
    instance: &mut ConnectorInstance,
    file: &mut SyncFile,
    digest: &str,
    progress: &ProgressBar,
    options: &SyncOptions,
) -> Result<SyncSummary> {
    run_workers(vec![Worker::Borrowed(instance)], file, digest, progress, options).await.1
}

/// Runs one sync on a pool of instances of one module (see
/// [`ConnectorInstance::start_pool`]), as many listings at once as it has
/// instances, each on a task of its own (so guest code runs on every
/// core). A run that fails keeps its records and checkpoint (for a
/// resume) and is marked failed; one asked to stop lets the pages in
/// flight come in, writes them, is marked interrupted and returns
/// [`Interrupted`]. One instance comes back to `pool` when it ends (none if
/// its task panicked): the others are dropped once the listings are done.
pub async fn run_pool(
    pool: &mut Vec<ConnectorInstance>,
    file: &mut SyncFile,
    digest: &str,
    progress: &ProgressBar,
    options: &SyncOptions,
) -> Result<SyncSummary> {
    let workers = std::mem::take(pool).into_iter().map(|instance| Worker::Owned(Box::new(instance))).collect();
    let (workers, result) = run_workers(workers, file, digest, progress, options).await;
    pool.extend(workers.into_iter().filter_map(Worker::into_owned));
    result
}

/// One worker of a sync: an instance the driver owns runs each call on a
/// task of its own; a borrowed one ([`run_with`]) on the driver's task.
enum Worker<'p> {
    Borrowed(&'p mut ConnectorInstance),
    /// Boxed: it moves into a task and back with every call.
    Owned(Box<ConnectorInstance>),
}

impl Worker<'_> {
    fn instance(&mut self) -> &mut ConnectorInstance {
        match self {
            Worker::Borrowed(instance) => instance,
            Worker::Owned(instance) => instance,
        }
    }

    fn into_owned(self) -> Option<ConnectorInstance> {
        match self {
            Worker::Owned(instance) => Some(*instance),
            Worker::Borrowed(_) => None,
        }
    }
}

/// The sync itself; hands back the workers that came home.
async fn run_workers<'p>(
    mut workers: Vec<Worker<'p>>,
    file: &mut SyncFile,
    digest: &str,
    progress: &ProgressBar,
    options: &SyncOptions,
) -> (Vec<Worker<'p>>, Result<SyncSummary>) {
    let result = sync_on(&mut workers, file, digest, progress, options).await;
    (workers, result)
}

async fn sync_on<'p>(workers: &mut Vec<Worker<'p>>, file: &mut SyncFile, digest: &str, progress: &ProgressBar, options: &SyncOptions) -> Result<SyncSummary> {
    let started = Instant::now();
    let Some(first) = workers.first_mut().map(Worker::instance) else { anyhow::bail!("a sync needs at least one connector instance") };
    let connector = ConnectorIdentity { name: first.metadata.name.clone(), version: first.metadata.version.clone(), digest: digest.to_string() };
    let types: Vec<ResourceType> = super::model::resource_types(&first.metadata, &first.declared);
    let settings = first.config_fingerprint(None);
    let resumable = if options.resume { file.resumable_run(digest)? } else { None };
    let resumable = resumable.filter(|(run_id, checkpoint)| {
        let same = checkpoint.settings.as_ref().is_none_or(|saved| first.has_config(saved));
        if !same {
            tracing::warn!("sync run {run_id} was made with other config: starting over rather than mixing two in one run");
        }
        same
    });
    let (run_id, checkpoint) = match resumable {
        Some((run_id, checkpoint)) => {
            file.reopen_run(run_id)?;
            // Where, in short: page tokens are the connector's, of any length.
            let pending = match &checkpoint.position {
                Position::Listings { pending, .. } => pending.len(),
                _ => 1,
            };
            tracing::info!("resuming sync run {run_id}: {pending} listing(s) pending");
            (run_id, checkpoint)
        }
        None => (file.begin_run(&connector)?, Checkpoint::default()),
    };
    // Resources that list nothing (users, mostly) need no place in the
    // work queue: they wait in a stage until the run succeeds.
    file.stage_resources_of(types.iter().filter(|t| work::listings_per_resource(&types, &t.id) == 0).map(|t| t.id.clone()));
    let records = file.records(run_id)?;
    let http = first.http_shared();
    let worker_count = workers.len();
    let mut driver = Driver {
        file,
        run: run_id,
        progress,
        options,
        started,
        records,
        tally: Tally::default(),
        types,
        work: Work::default(),
        unsaved: false,
        poisoned: false,
        workers: worker_count,
        http: http.clone(),
        estimate: Estimate::default(),
        tokens: TokensSeen::default(),
        settings,
    };
    let mut result = driver.drive(workers, checkpoint).await;
    // The listings are done: the other instances' memories go back before
    // the run's grants move into place, the file's biggest transaction.
    workers.truncate(1);
    if result.is_err() {
        // Where a failed run goes on from, as far as it got.
        if let Err(e) = driver.save_checkpoint() {
            result = result.context(format!("and its checkpoint could not be saved: {e:#}"));
        }
    }
    let requests = http.requests_sent();
    match result {
        Ok(()) => {
            file.finish_run(run_id, RunEnd::Succeeded, requests)?;
            Ok(SyncSummary {
                run_id,
                connector,
                resources: file.count_resources_by_type(run_id)?,
                entitlements: file.count(run_id, Table::Entitlements)?,
                grants: file.count(run_id, Table::Grants)?,
                http_requests: requests,
                rate_limited: http.counters.rate_limited.load(Ordering::Relaxed),
                retries: http.retries(),
                elapsed: started.elapsed(),
            })
        }
        Err(error) => {
            let error = match http.retry_budget_note() {
                Some(note) => error.context(note),
                None => error,
            };
            // Stored for good with the run: a connector's message is
            // clipped where it enters the error, and the whole is too.
            let text = format!("{error:#}");
            let text = crate::terminal::clip(&text, 16 * crate::terminal::MAX_CONNECTOR_TEXT);
            let end = if error.is::<Interrupted>() { RunEnd::Interrupted(&text) } else { RunEnd::Failed(&text) };
            if let Err(mark) = file.finish_run(run_id, end, requests) {
                tracing::error!("cannot mark sync run {run_id} ended: {mark:#}");
            }
            Err(error)
        }
    }
}

/// Records received so far, for the progress line.
#[derive(Default)]
struct Tally {
    resources: usize,
    entitlements: usize,
    grants: usize,
}

/// Listings the queue still holds beyond those handed out, read now and
/// then for the progress line's estimate.
#[derive(Default)]
struct Estimate {
    read_at: Option<Instant>,
    listings_left: u64,
}

/// One sync in progress.
struct Driver<'a> {
    file: &'a mut SyncFile,
    run: i64,
    progress: &'a ProgressBar,
    options: &'a SyncOptions,
    started: Instant,
    /// Records the run holds, counted against `records-per-sync`.
    records: u64,
    tally: Tally,
    types: Vec<ResourceType>,
    work: Work,
    /// Pages came in that were not worth a write of their own: the state
    /// saved last is behind.
    unsaved: bool,
    /// A page or a batch of pages failed to be written: the work is ahead
    /// of the file, so nothing more is written (no checkpoint either).
    poisoned: bool,
    workers: usize,
    http: Arc<crate::runtime::imports::http::HttpGateway>,
    estimate: Estimate,
    tokens: TokensSeen,
    /// The config's digest, saved with every checkpoint.
    settings: String,
}

/// What one worker brought back: itself (none if its task panicked), the
/// listing, the page asked for, and the page (and whether it cost a
/// request) or why not.
type Fetched<'p> = (Option<Worker<'p>>, ListingKey, Option<String>, Result<(Page, bool)>);

/// The page tokens each listing in progress has been given, as hashes:
/// an upstream whose pages go A → B → A would otherwise be listed until
/// `pages-per-listing`, spending the token's whole rate budget for an hour.
#[derive(Default)]
struct TokensSeen {
    by_listing: std::collections::HashMap<ListingKey, std::collections::HashSet<u64>>,
    hasher: std::hash::RandomState,
}

impl TokensSeen {
    /// Whether `next`, the token a page of `key` asked with `token` gave,
    /// was given before. A listing's tokens are forgotten when it ends.
    fn goes_round(&mut self, key: ListingKey, token: Option<&str>, next: Option<&str>) -> bool {
        use std::hash::BuildHasher;
        let Some(next) = next else {
            self.by_listing.remove(&key);
            return false;
        };
        let seen = self.by_listing.entry(key).or_default();
        if let Some(token) = token {
            seen.insert(self.hasher.hash_one(token));
        }
        !seen.insert(self.hasher.hash_one(next))
    }
}

/// A worker's task, ended when the driver stops waiting for it (a stop
/// whose grace ran out): its guest call is dropped with it, and its
/// listing stays pending in the checkpoint.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long the pages in flight when a stop is asked for may take to come
/// in and be written. A listing still out then (waiting out a long rate
/// limit, or a slow upstream) is left pending, to be asked again on
/// resume: a stop must fit a supervisor's grace period (Kubernetes gives
/// 30 s).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a driver waiting on its listings looks for a stop request.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// How long pages that come in are gathered to be committed together, at
/// most: a commit of one page cost as much as writing it. A worker whose
/// page waits for the commit waits this long at most, which lengthens a
/// listing's chain of pages by a tenth at 100 ms an answer, and not at all
/// where the rate budget sets the pace.
const COMMIT_WINDOW: Duration = Duration::from_millis(10);
const MAX_PAGES_PER_COMMIT: usize = 64;

/// Sets `worker` to fetch one page of `job`.
fn dispatch<'p>(worker: Worker<'p>, key: ListingKey, job: Job) -> BoxFuture<'p, Fetched<'p>> {
    let token = job.token.clone();
    match worker {
        Worker::Borrowed(instance) => Box::pin(async move {
            let result = fetch(instance, &job).await;
            (Some(Worker::Borrowed(instance)), key, token, result)
        }),
        Worker::Owned(mut instance) => {
            // Its own task: another core can run this guest call while the
            // driver writes pages or other instances run theirs.
            let mut task = AbortOnDrop(tokio::spawn(async move {
                let result = fetch(&mut instance, &job).await;
                (instance, result)
            }));
            Box::pin(async move {
                match (&mut task.0).await {
                    Ok((instance, result)) => (Some(Worker::Owned(instance)), key, token, result),
                    Err(e) => (None, key, token, Err(anyhow!("a connector instance's task ended abnormally: {e}"))),
                }
            })
        }
    }
}

/// Asks `instance` for one page of `job`, waiting out rate limits the
/// connector reports. The flag says whether it cost a request.
async fn fetch(instance: &mut ConnectorInstance, job: &Job) -> Result<(Page, bool)> {
    let token = job.token.as_deref();
    let page: Result<Page, CallError> = match &job.listing {
        Listing::Resources(t, scope) => retry_rate_limited!(instance, list_resources(t, scope.as_ref(), token)),
        Listing::Entitlements(r) => retry_rate_limited!(instance, list_entitlements(r, token)),
        Listing::Grants(r) => retry_rate_limited!(instance, list_grants(r, token)),
    };
    let cost = instance.requests_in_last_call() > 0;
    page.map(|page| (page, cost)).map_err(|e| e.context(format!("{} failed", job.listing.describe())))
}

impl Driver<'_> {
    /// Runs the listings on `idle` workers; every worker that comes home
    /// is back in `idle` when it returns.
    async fn drive<'p>(&mut self, idle: &mut Vec<Worker<'p>>, from: Checkpoint) -> Result<()> {
        // Validation is the connector's check of its configuration, the
        // same for every instance: once is enough.
        idle[0].instance().validate().await.map_err(|e| e.context("the connector refused its configuration"))?;
        self.file.write_resource_types(self.run, &self.types)?;
        self.work = self.plan(from)?;
        self.work.settings = Some(self.settings.clone());

        // Most recently used first: an instance that has listed before may
        // know what a fresh one would have to ask again.
        idle.reverse();
        let mut in_flight = FuturesUnordered::new();
        let mut failure: Option<anyhow::Error> = None;
        let mut queue_empty = false;
        let mut stop_deadline = None;
        // One timer for the whole drive, not one per page that comes in.
        let mut stop_check = tokio::time::interval_at(tokio::time::Instant::now() + STOP_CHECK, STOP_CHECK);
        stop_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if failure.is_none() {
                if let Err(e) = self.refill(&mut queue_empty) {
                    failure = Some(e);
                }
            }
            while failure.is_none() && !idle.is_empty() && in_flight.len() < self.in_flight_target() {
                let Some((key, job)) = self.work.take() else { break };
                let worker = idle.pop().expect("an idle worker");
                in_flight.push(dispatch(worker, key, job));
            }
            let next = if self.options.stop.is_requested() {
                let deadline = *stop_deadline.get_or_insert_with(|| tokio::time::Instant::now() + STOP_GRACE);
                match tokio::time::timeout_at(deadline, in_flight.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::warn!("{} listing(s) still in flight {STOP_GRACE:?} after the stop: left for --resume", in_flight.len());
                        return Err(failure.unwrap_or_else(|| Interrupted { run_id: self.run }.into()));
                    }
                }
            } else {
                // Woken now and then to see a stop asked for while every
                // listing in flight waits (on a rate limit, say).
                tokio::select! {
                    next = in_flight.next() => next,
                    _ = stop_check.tick() => {
                        if self.options.stop.is_requested() {
                            failure.get_or_insert_with(|| Interrupted { run_id: self.run }.into());
                        }
                        continue;
                    }
                }
            };
            let Some(first) = next else {
                // Nothing in flight: every listing is done, or a failure
                // let the pages in flight come in.
                return match failure {
                    Some(error) => Err(error),
                    None if self.work.pending() == 0 && queue_empty => {
                        self.save_checkpoint()?;
                        Ok(())
                    }
                    None => Err(anyhow!("the sync stopped with {} listings pending (a bug in the driver)", self.work.pending())),
                };
            };
            // Pages that come in within a short window are written with it
            // in one transaction (a group commit): a commit of one page cost
            // as much as writing it, and every commit rewrites the pages the
            // batch shares (the checkpoint, the stage's last page). Their
            // workers get listings again only after the commit, so a crash
            // still loses no more pages than were in flight.
            let mut arrived = vec![first];
            let commit_by = tokio::time::Instant::now() + COMMIT_WINDOW;
            while arrived.len() < MAX_PAGES_PER_COMMIT && !self.poisoned {
                let more = match in_flight.next().now_or_never() {
                    Some(more) => more,
                    None if self.options.stop.is_requested() => break,
                    None => tokio::time::timeout_at(commit_by, in_flight.next()).await.ok().flatten(),
                };
                match more {
                    Some(more) => arrived.push(more),
                    None => break,
                }
            }
            if arrived.len() > 1 && !self.poisoned {
                if let Err(e) = self.file.begin_batch() {
                    // Written one by one instead, each page would commit
                    // a checkpoint: simpler to stop writing.
                    self.poisoned = true;
                    failure.get_or_insert(e);
                }
            }
            for (worker, key, token, result) in arrived {
                idle.extend(worker);
                // After a failed commit, pages that still come in are not written.
                if self.poisoned {
                    continue;
                }
                match result.and_then(|(page, cost)| self.take_page(key, token, page, cost)) {
                    Ok(()) => queue_empty = false,
                    Err(error) => {
                        failure.get_or_insert(error);
                    }
                }
            }
            if self.file.in_batch() {
                // The batch's pages were written without their checkpoints:
                // one, of the work after all of them, is saved with them.
                if let Err(e) = self.save_checkpoint() {
                    failure.get_or_insert(e);
                }
                if let Err(e) = self.file.end_batch() {
                    // The work now runs ahead of the file: the checkpoint
                    // committed last is the one to resume from.
                    self.poisoned = true;
                    match &failure {
                        // A page that failed to write failed the batch: its
                        // own error says why.
                        Some(first) => tracing::error!("{e:#} (after: {first:#})"),
                        None => failure = Some(e),
                    }
                }
            }
            if failure.is_none() {
                if self.options.stop.is_requested() {
                    failure = Some(Interrupted { run_id: self.run }.into());
                } else if self.started.elapsed() > self.options.limits.duration {
                    failure = Some(LimitExceeded::new("sync-duration", format!("the sync ran longer than {:?}", self.options.limits.duration)).into());
                }
            }
        }
    }

    /// Listings in flight that keep the upstream's rate budget busy: its
    /// rate times how long an answer takes (Little's law), with room for
    /// jitter and the guest's own time. More would only queue for the
    /// budget, where a listing's next page waits behind all of them, and
    /// the long chains of pages (a big workspace's members) set a sync's
    /// length.
    fn in_flight_target(&self) -> usize {
        let per_second = f64::from(self.http.throttle.settings().requests_per_minute.value) / 60.0;
        // A worker waits for its page's commit too.
        let answer = (self.http.counters.response_time() + COMMIT_WINDOW).as_secs_f64();
        // `as` saturates: an unbounded rate asks for every worker.
        let needed = (per_second * answer * 1.5).ceil() as usize;
        needed.saturating_add(2).clamp(1, self.workers.max(1))
    }

    /// The work a run starts from, or goes on from after `from`.
    fn plan(&self, from: Checkpoint) -> Result<Work> {
        let top = work::top_level(&self.types);
        let mut work = Work::new(0);
        match from.position {
            Position::TopLevel { index: first, token } => {
                let mut first_token = token;
                for (index, t) in top.iter().enumerate().skip(first) {
                    let start = if index == first { first_token.take() } else { None };
                    work.add(ListingKey::TopLevel { index }, Listing::Resources(t.id.clone(), None), 0, start);
                }
            }
            Position::Queue { cursor, within: None } => work.cursor = cursor,
            Position::Queue { within: Some(within), .. } => {
                // Version 2: one resource part way through its steps.
                let queued = self
                    .file
                    .resource_at(self.run, within.row)?
                    .ok_or_else(|| anyhow!("the checkpoint names resource row {}, which the run does not hold", within.row))?;
                let mut first_token = within.token;
                for (step, listing) in work::steps(&self.types, &queued.resource).into_iter().enumerate().skip(within.step) {
                    let start = if step == within.step { first_token.take() } else { None };
                    work.add(ListingKey::Resource { row: within.row, step }, listing, queued.depth + 1, start);
                }
                work.cursor = within.row;
            }
            Position::Listings { cursor, pending } => {
                work.cursor = cursor;
                for p in pending {
                    match p.listing {
                        ListingKey::TopLevel { index } => {
                            let t = top.get(index).ok_or_else(|| anyhow!("the checkpoint names top-level type {index}, which the connector does not have"))?;
                            work.add(p.listing, Listing::Resources(t.id.clone(), None), 0, p.token);
                        }
                        ListingKey::Resource { row, step } => {
                            let queued = self
                                .file
                                .resource_at(self.run, row)?
                                .ok_or_else(|| anyhow!("the checkpoint names resource row {row}, which the run does not hold"))?;
                            let listing = work::steps(&self.types, &queued.resource)
                                .into_iter()
                                .nth(step)
                                .ok_or_else(|| anyhow!("the checkpoint names step {step} of resource row {row}, which has fewer"))?;
                            work.add(p.listing, listing, queued.depth + 1, p.token);
                        }
                    }
                }
            }
        }
        Ok(work)
    }

    /// Hands out the listings of the next queued resources while workers
    /// would otherwise wait. `queue_empty`: the queue held nothing more.
    fn refill(&mut self, queue_empty: &mut bool) -> Result<()> {
        while self.work.waiting() < self.workers * WAITING_PER_WORKER && !*queue_empty {
            let batch = self.file.resources_after(self.run, self.work.cursor, QUEUE_BATCH)?;
            *queue_empty = batch.len() < QUEUE_BATCH;
            for queued in batch {
                // Each report of a resource is capped; merged over many
                // reports its attributes could still grow without end, and
                // a queued resource is held in memory.
                let merged = queued.resource.attributes.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum::<usize>();
                if merged > crate::runtime::instance::MAX_RECORD_BYTES {
                    return Err(LimitExceeded::new(
                        "bytes-per-record",
                        format!(
                            "{} {}: its attributes, merged over its reports, are {merged} bytes (at most {})",
                            crate::terminal::escape(&queued.resource.resource_type),
                            crate::terminal::escape(&queued.resource.id),
                            crate::runtime::instance::MAX_RECORD_BYTES
                        ),
                    )
                    .into());
                }
                let max_depth = self.options.limits.depth;
                if queued.depth >= max_depth {
                    return Err(LimitExceeded::new(
                        "nesting-depth",
                        format!(
                            "{} {} is {} listings deep; what it lists would be deeper than {max_depth}",
                            crate::terminal::escape(&queued.resource.resource_type),
                            crate::terminal::escape(&queued.resource.id),
                            queued.depth
                        ),
                    )
                    .into());
                }
                for (step, listing) in work::steps(&self.types, &queued.resource).into_iter().enumerate() {
                    self.work.add(ListingKey::Resource { row: queued.row, step }, listing, queued.depth + 1, None);
                }
                // Handed out: the checkpoint saved with the next page
                // holds them as pending.
                self.work.cursor = queued.row;
                self.unsaved = true;
            }
        }
        Ok(())
    }

    /// Writes one page that came in, with the checkpoint of the work after
    /// it, in one transaction.
    fn take_page(&mut self, key: ListingKey, token: Option<String>, page: Page, cost: bool) -> Result<()> {
        let limits = &self.options.limits;
        let next = page.next_token.clone();
        let Some(depth) = self.work.depth_of(key) else { return Ok(()) };
        let describe = || self.work.describe(key);
        if next.is_some() && next == token {
            return Err(anyhow!("{}: the connector returned the same page token twice", describe()));
        }
        if self.tokens.goes_round(key, token.as_deref(), next.as_deref()) {
            return Err(anyhow!("{}: the connector returned a page token it had returned before: its pages go round in a circle", describe()));
        }
        let records = PageRecords::from(page);
        if let Some(what) = records.empty_id() {
            return Err(anyhow!("{}: the connector reported {what}", describe()));
        }
        let count = records.len() as u64;
        self.records += count;
        if self.records > limits.records {
            return Err(LimitExceeded::new("records-per-sync", format!("the connector reported more than {} records", limits.records)).into());
        }
        let pages = self.work.page_done(key, next.clone());
        // A page that brought nothing and cost no request is free to ask
        // again: its checkpoint waits for the next page worth a write (most
        // users list no entitlements of their own), or for a stop. Every
        // page that cost a request is saved with it.
        if count > 0 || cost {
            let written = if self.file.in_batch() {
                // The batch's end saves where the work is after all its pages.
                self.file.write_page(self.run, &records, depth, None).map(|()| true)
            } else {
                self.file.write_page(self.run, &records, depth, Some(&self.work.checkpoint_json())).map(|()| false)
            };
            match written {
                Ok(unsaved) => self.unsaved = unsaved,
                Err(e) => {
                    // The work counts the page done and the file does not
                    // hold it: any checkpoint saved from now on would skip
                    // it on resume. The last one committed is where to go
                    // on from.
                    self.poisoned = true;
                    return Err(e);
                }
            }
        } else {
            self.unsaved = true;
        }
        self.show_progress(&records);
        if next.is_some() {
            // Written first: the page is kept, the next one not asked.
            if pages >= self.options.limits.pages_per_listing {
                // Still pending (it has a next page): described only now, as
                // describing every page cost a string per page.
                let what = self.work.describe(key);
                return Err(LimitExceeded::new("pages-per-listing", format!("{what}: more than {} pages", self.options.limits.pages_per_listing)).into());
            }
            self.work.requeue(key);
        }
        Ok(())
    }

    /// Writes the checkpoint if pages came in since the last one saved.
    fn save_checkpoint(&mut self) -> Result<()> {
        if self.unsaved && !self.poisoned {
            self.file.save_checkpoint(self.run, &self.work.checkpoint_json())?;
            self.unsaved = false;
        }
        Ok(())
    }

    fn show_progress(&mut self, records: &PageRecords) {
        self.tally.resources += records.resources.len();
        self.tally.entitlements += records.entitlements.len();
        self.tally.grants += records.grant_count();
        if self.progress.is_hidden() {
            return;
        }
        if self.estimate.read_at.is_none_or(|at| at.elapsed() >= ESTIMATE_EVERY) {
            self.estimate.read_at = Some(Instant::now());
            if let Ok(left) = self.file.resources_left_by_type(self.run, self.work.cursor) {
                self.estimate.listings_left = left.iter().map(|(t, n)| n * work::listings_per_resource(&self.types, t)).sum();
            }
        }
        let line = progress_line(&Progress {
            done: self.work.done,
            queued: self.work.pending() as u64 + self.estimate.listings_left,
            requests: self.http.requests_sent(),
            rate_limited: self.http.counters.rate_limited.load(Ordering::Relaxed),
            retries: self.http.retries(),
            elapsed: self.started.elapsed(),
        });
        self.progress
            .set_message(format!("{line} · {} resources, {} entitlements, {} grants", self.tally.resources, self.tally.entitlements, self.tally.grants));
        self.progress.tick();
    }
}

/// What the progress line says.
struct Progress {
    done: u64,
    queued: u64,
    requests: u64,
    rate_limited: u64,
    retries: u64,
    elapsed: Duration,
}

/// `listings 40 done / 12 queued · 96 requests · 0 429s · 1 retries · 3s,
/// about 1s left`. The estimate assumes the listings left cost what the
/// ones done did on average; it grows as the queue does.
fn progress_line(p: &Progress) -> String {
    let left = if p.done > 0 && p.queued > 0 {
        let secs = p.elapsed.as_secs_f64() * p.queued as f64 / p.done as f64;
        format!(", about {} left", human_secs(secs))
    } else {
        String::new()
    };
    format!(
        "listings {} done / {} queued · {} requests · {} 429s · {} retries · {}{left}",
        p.done,
        p.queued,
        p.requests,
        p.rate_limited,
        p.retries,
        human_secs(p.elapsed.as_secs_f64())
    )
}

fn human_secs(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_says_listings_requests_and_time_left() {
        let line = progress_line(&Progress { done: 40, queued: 20, requests: 96, rate_limited: 2, retries: 1, elapsed: Duration::from_secs(30) });
        assert_eq!(line, "listings 40 done / 20 queued · 96 requests · 2 429s · 1 retries · 30s, about 15s left");
        let start = progress_line(&Progress { done: 0, queued: 3, requests: 0, rate_limited: 0, retries: 0, elapsed: Duration::from_secs(0) });
        assert!(!start.contains("left"), "no estimate before a listing is done: {start}");
        assert_eq!(human_secs(3725.0), "1h02m");
        assert_eq!(human_secs(75.0), "1m15s");
    }

    #[test]
    fn page_tokens_that_go_round_are_caught_and_forgotten_when_a_listing_ends() {
        let mut tokens = TokensSeen::default();
        let a = ListingKey::Resource { row: 1, step: 0 };
        let b = ListingKey::Resource { row: 2, step: 0 };
        assert!(!tokens.goes_round(a, None, Some("o1")));
        assert!(!tokens.goes_round(a, Some("o1"), Some("o2")));
        assert!(!tokens.goes_round(b, None, Some("o1")), "another listing's tokens are its own");
        assert!(tokens.goes_round(a, Some("o2"), Some("o1")), "A -> B -> A");
        assert!(!tokens.goes_round(b, Some("o1"), None));
        assert!(!tokens.goes_round(b, None, Some("o1")), "a listing that ended starts afresh");
    }
}
