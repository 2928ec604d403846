//! The sync driver: walks a connector's resources page by page and writes
//! each page to the sync file as it arrives.
//!
//! The sync file itself is the work queue: the driver lists the top-level
//! types, then reads resources back in the order they were written and, for
//! each, lists the types listed under it, its entitlements and its grants.
//! Memory stays flat whatever the size of the org.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;

use super::checkpoint::{Checkpoint, Position, Within};
use super::model::{PageRecords, ResourceType};
use super::sync_file::{ConnectorIdentity, RunEnd, SyncFile, Table};
use crate::runtime::bindings::ResourceRef;
use crate::runtime::instance::{retry_rate_limited, ConnectorInstance};
use crate::runtime::limits::{LimitExceeded, SyncLimits};

const QUEUE_BATCH: usize = 256;

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

enum Listing<'a> {
    Resources(&'a str, Option<&'a ResourceRef>),
    Entitlements(&'a ResourceRef),
    Grants(&'a ResourceRef),
}

impl Listing<'_> {
    /// Escaped: the ids are the connector's.
    fn describe(&self) -> String {
        let text = match self {
            Listing::Resources(t, None) => format!("listing {t} resources"),
            Listing::Resources(t, Some(scope)) => format!("listing {t} resources of {} {}", scope.resource_type, scope.id),
            Listing::Entitlements(r) => {
                format!("listing entitlements of {} {}", r.resource_type, r.id)
            }
            Listing::Grants(r) => format!("listing grants of {} {}", r.resource_type, r.id),
        };
        crate::terminal::escape(&text).into_owned()
    }
}

/// Where a listing sits in the run, to say where to go on from after each
/// of its pages.
#[derive(Clone, Copy)]
enum Place {
    TopLevel { index: usize },
    Queue { cursor: i64, row: i64, step: usize, last_step: bool },
}

impl Place {
    /// Inside the listing, before the page `token`.
    fn at(self, token: Option<String>) -> Checkpoint {
        match self {
            Place::TopLevel { index } => Position::TopLevel { index, token }.into(),
            Place::Queue { cursor, row, step, .. } => Position::Queue { cursor, within: Some(Within { row, step, token }) }.into(),
        }
    }

    /// After the listing's last page.
    fn done(self) -> Checkpoint {
        match self {
            Place::TopLevel { index } => Position::TopLevel { index: index + 1, token: None }.into(),
            Place::Queue { row, last_step: true, .. } => Position::Queue { cursor: row, within: None }.into(),
            Place::Queue { cursor, row, step, last_step: false } => {
                Position::Queue { cursor, within: Some(Within { row, step: step + 1, token: None }) }.into()
            }
        }
    }
}

/// Runs one sync into `file` with the default limits. On failure the run
/// is marked failed with the error and the last good run stays what the
/// file shows.
pub async fn run(instance: &mut ConnectorInstance, file: &mut SyncFile, digest: &str, progress: &ProgressBar) -> Result<SyncSummary> {
    run_with(instance, file, digest, progress, &SyncOptions::default()).await
}

/// Runs one sync as `options` say. A run that fails keeps its records and
/// checkpoint (for a resume) and is marked failed; one asked to stop ends
/// at the next page boundary, is marked interrupted, and returns
/// [`Interrupted`].
pub async fn run_with(
    instance: &mut ConnectorInstance,
    file: &mut SyncFile,
    digest: &str,
    progress: &ProgressBar,
    options: &SyncOptions,
) -> Result<SyncSummary> {
    let started = Instant::now();
    let connector = ConnectorIdentity { name: instance.metadata.name.clone(), version: instance.metadata.version.clone(), digest: digest.to_string() };
    let resumable = if options.resume { file.resumable_run(digest)? } else { None };
    let (run_id, checkpoint) = match resumable {
        Some((run_id, checkpoint)) => {
            file.reopen_run(run_id)?;
            tracing::info!("resuming sync run {run_id} from {checkpoint:?}");
            (run_id, checkpoint)
        }
        None => (file.begin_run(&connector)?, Checkpoint::default()),
    };
    let records = file.records(run_id)?;
    let mut driver = Driver { instance, file, run: run_id, progress, options, started, records, tally: Tally::default(), unsaved: None };
    let mut result = driver.drive(checkpoint).await;
    if result.is_err() {
        // Where a failed run goes on from, as far as it got.
        if let Err(e) = driver.save_checkpoint() {
            result = result.context(format!("and its checkpoint could not be saved: {e:#}"));
        }
    }
    let requests = instance.http().requests_sent();
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
                rate_limited: instance.http().counters.rate_limited.load(Ordering::Relaxed),
                retries: instance.http().retries(),
                elapsed: started.elapsed(),
            })
        }
        Err(error) => {
            let error = match instance.http().retry_budget_note() {
                Some(note) => error.context(note),
                None => error,
            };
            let text = format!("{error:#}");
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

/// One sync in progress.
struct Driver<'a> {
    instance: &'a mut ConnectorInstance,
    file: &'a mut SyncFile,
    run: i64,
    progress: &'a ProgressBar,
    options: &'a SyncOptions,
    started: Instant,
    /// Records the run holds, counted against `records-per-sync`.
    records: u64,
    tally: Tally,
    /// The checkpoint after pages that were not worth a write of their own.
    unsaved: Option<Checkpoint>,
}

impl Driver<'_> {
    async fn drive(&mut self, from: Checkpoint) -> Result<()> {
        self.instance.validate().await.map_err(|e| anyhow!("the connector refused its configuration: {e}"))?;
        let types: Vec<ResourceType> = self.instance.metadata.resource_types.iter().cloned().map(Into::into).collect();
        self.file.write_resource_types(self.run, &types)?;

        let (mut cursor, mut resume_within) = match from.position {
            Position::TopLevel { index: first, token } => {
                let mut first_token = token;
                for (index, top) in types.iter().filter(|t| t.listed_under.is_none()).enumerate().skip(first) {
                    let start = if index == first { first_token.take() } else { None };
                    self.list_all(Listing::Resources(&top.id, None), start, 0, Place::TopLevel { index }).await?;
                }
                (0, None)
            }
            Position::Queue { cursor, within } => (cursor, within),
        };
        // Each queued resource takes steps: one listing per type listed
        // under it, then its entitlements, then its grants. Records written
        // again on a resume merge (upserts).
        loop {
            let batch = self.file.resources_after(self.run, cursor, QUEUE_BATCH)?;
            if batch.is_empty() {
                return Ok(());
            }
            for queued in batch {
                let max_depth = self.options.limits.depth;
                if queued.depth >= max_depth {
                    return Err(LimitExceeded::new(
                        "nesting-depth",
                        format!(
                            "{} {} is {} listings deep; what it lists would be deeper than {max_depth}",
                            crate::terminal::escape(&queued.key.resource_type),
                            crate::terminal::escape(&queued.key.id),
                            queued.depth
                        ),
                    )
                    .into());
                }
                let resource: ResourceRef = (&queued.key).into();
                let mut steps: Vec<Listing> = types
                    .iter()
                    .filter(|t| t.listed_under.as_deref() == Some(queued.key.resource_type.as_str()))
                    .map(|child| Listing::Resources(&child.id, Some(&resource)))
                    .collect();
                steps.push(Listing::Entitlements(&resource));
                steps.push(Listing::Grants(&resource));
                let (first_step, mut first_token) = match resume_within.take() {
                    Some(within) if within.row == queued.row => (within.step, within.token),
                    _ => (0, None),
                };
                let count = steps.len();
                for (step, listing) in steps.into_iter().enumerate().skip(first_step) {
                    let place = Place::Queue { cursor, row: queued.row, step, last_step: step + 1 == count };
                    let start = if step == first_step { first_token.take() } else { None };
                    self.list_all(listing, start, queued.depth + 1, place).await?;
                }
                cursor = queued.row;
            }
        }
    }

    /// Lists every page from `start` on, writing each with where to go on
    /// from after it. Stops (with the page written) when asked to or when a
    /// sync limit is reached.
    async fn list_all(&mut self, listing: Listing<'_>, start: Option<String>, depth: u32, place: Place) -> Result<()> {
        let limits = &self.options.limits;
        let mut token: Option<String> = start;
        let mut pages: u64 = 0;
        loop {
            if pages >= limits.pages_per_listing {
                return Err(LimitExceeded::new("pages-per-listing", format!("{}: more than {} pages", listing.describe(), limits.pages_per_listing)).into());
            }
            let instance = &mut *self.instance;
            let requests_before = instance.http().requests_sent();
            let page = match &listing {
                Listing::Resources(t, scope) => {
                    retry_rate_limited!(instance, list_resources(t, *scope, token.as_deref()))
                }
                Listing::Entitlements(r) => {
                    retry_rate_limited!(instance, list_entitlements(r, token.as_deref()))
                }
                Listing::Grants(r) => {
                    retry_rate_limited!(instance, list_grants(r, token.as_deref()))
                }
            }
            .map_err(|e| anyhow!("{} failed: {e}", listing.describe()))?;
            pages += 1;
            let next = page.next_token.clone();
            if next.is_some() && next == token {
                bail!("{}: the connector returned the same page token twice", listing.describe());
            }
            let records = PageRecords::from(page);
            let count = (records.resources.len() + records.entitlements.len() + records.grants.len()) as u64;
            self.records += count;
            if self.records > limits.records {
                return Err(LimitExceeded::new("records-per-sync", format!("the connector reported more than {} records", limits.records)).into());
            }
            let after = match &next {
                Some(next) => place.at(Some(next.clone())),
                None => place.done(),
            };
            // A page that brought nothing and cost no request is free to
            // ask again: its checkpoint waits for the next page worth a
            // write (most users list no entitlements of their own), or for
            // a stop. Every page that cost a request is saved with it.
            let cost_requests = self.instance.http().requests_sent() != requests_before;
            if count > 0 || cost_requests {
                self.file.write_page(self.run, &records, depth, &after)?;
                self.unsaved = None;
            } else {
                self.unsaved = Some(after);
            }
            self.show_progress(&records);

            if self.options.stop.is_requested() {
                self.save_checkpoint()?;
                return Err(Interrupted { run_id: self.run }.into());
            }
            if self.started.elapsed() > limits.duration {
                return Err(LimitExceeded::new("sync-duration", format!("the sync ran longer than {:?}", limits.duration)).into());
            }
            match next {
                None => return Ok(()),
                Some(next) => token = Some(next),
            }
        }
    }

    /// Writes the checkpoint of free pages not yet saved.
    fn save_checkpoint(&mut self) -> Result<()> {
        if let Some(checkpoint) = self.unsaved.take() {
            self.file.save_checkpoint(self.run, &checkpoint)?;
        }
        Ok(())
    }

    fn show_progress(&mut self, records: &PageRecords) {
        self.tally.resources += records.resources.len();
        self.tally.entitlements += records.entitlements.len();
        self.tally.grants += records.grants.len();
        self.progress.set_message(format!(
            "{} resources, {} entitlements, {} grants, {} requests",
            self.tally.resources,
            self.tally.entitlements,
            self.tally.grants,
            self.instance.http().requests_sent()
        ));
        self.progress.tick();
    }
}
