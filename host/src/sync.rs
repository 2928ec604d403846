//! The sync driver: walks a connector's resources page by page and writes
//! each page to the sync file as it arrives.
//!
//! The sync file itself is the work queue: the driver lists the top-level
//! types, then reads resources back in the order they were written and, for
//! each, lists the types listed under it, its entitlements and its grants.
//! Memory stays flat whatever the size of the org.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use indicatif::ProgressBar;

use crate::bindings::ResourceRef;
use crate::connector::{retry_rate_limited, ConnectorInstance};
use crate::model::{PageRecords, ResourceType};
use crate::store::{Checkpoint, ConnectorIdentity, SyncFile, Table, Within};

/// A guard against a connector that never stops paging.
const MAX_PAGES_PER_LISTING: usize = 1_000_000;
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

enum Listing<'a> {
    Resources(&'a str, Option<&'a ResourceRef>),
    Entitlements(&'a ResourceRef),
    Grants(&'a ResourceRef),
}

impl Listing<'_> {
    fn describe(&self) -> String {
        match self {
            Listing::Resources(t, None) => format!("listing {t} resources"),
            Listing::Resources(t, Some(scope)) => format!("listing {t} resources of {} {}", scope.resource_type, scope.id),
            Listing::Entitlements(r) => format!("listing entitlements of {} {}", r.resource_type, r.id),
            Listing::Grants(r) => format!("listing grants of {} {}", r.resource_type, r.id),
        }
    }
}

/// Runs one sync into `file`. On failure the run is marked failed with the
/// error and the last good run stays what the file shows.
pub async fn run(instance: &mut ConnectorInstance, file: &mut SyncFile, digest: &str, progress: &ProgressBar) -> Result<SyncSummary> {
    run_or_resume(instance, file, digest, progress, false).await
}

/// Like [`run`]; with `resume`, a failed last run of the same module goes
/// on from its checkpoint instead of starting over (listings already
/// written are not asked for again).
pub async fn run_or_resume(instance: &mut ConnectorInstance, file: &mut SyncFile, digest: &str, progress: &ProgressBar, resume: bool) -> Result<SyncSummary> {
    let started = Instant::now();
    let connector = ConnectorIdentity { name: instance.metadata.name.clone(), version: instance.metadata.version.clone(), digest: digest.to_string() };
    let resumable = if resume { file.resumable_run(digest)? } else { None };
    let (run_id, checkpoint) = match resumable {
        Some((run_id, checkpoint)) => {
            file.reopen_run(run_id)?;
            tracing::info!("resuming sync run {run_id} from {checkpoint:?}");
            (run_id, checkpoint)
        }
        None => (file.begin_run(&connector)?, Checkpoint::default()),
    };
    let result = drive(instance, file, run_id, checkpoint, progress).await;
    let requests = instance.http().requests_sent();
    match result {
        Ok(()) => {
            file.finish_run(run_id, None, requests)?;
            Ok(SyncSummary {
                run_id,
                connector,
                resources: file.count_resources_by_type(run_id)?,
                entitlements: file.count(run_id, Table::Entitlements)?,
                grants: file.count(run_id, Table::Grants)?,
                http_requests: requests,
                rate_limited: instance.http().counters.rate_limited.load(std::sync::atomic::Ordering::Relaxed),
                retries: instance.http().retries(),
                elapsed: started.elapsed(),
            })
        }
        Err(error) => {
            let error = match instance.http().retry_budget_note() {
                Some(note) => error.context(note),
                None => error,
            };
            if let Err(mark) = file.finish_run(run_id, Some(&format!("{error:#}")), requests) {
                tracing::error!("cannot mark sync run {run_id} failed: {mark:#}");
            }
            Err(error)
        }
    }
}

async fn drive(instance: &mut ConnectorInstance, file: &mut SyncFile, run: i64, from: Checkpoint, progress: &ProgressBar) -> Result<()> {
    instance.validate().await.map_err(|e| anyhow!("the connector refused its configuration: {e}"))?;
    let types: Vec<ResourceType> = instance.metadata.resource_types.iter().cloned().map(Into::into).collect();
    file.write_resource_types(run, &types)?;
    let mut tally = Tally::default();

    if !from.top_level_done {
        for top in types.iter().filter(|t| t.listed_under.is_none()) {
            list_all(instance, file, run, Listing::Resources(&top.id, None), None, None, progress, &mut tally).await?;
        }
        file.save_checkpoint(run, &Checkpoint { top_level_done: true, cursor: 0, within: None })?;
    }
    // Each queued resource takes steps: one listing per type listed under
    // it, then its entitlements, then its grants. The checkpoint names the
    // last resource done and, inside the next one, the step and page token
    // to go on from; records written again on a resume merge (upserts).
    let mut cursor = from.cursor;
    let mut resume_within = from.within;
    loop {
        let batch = file.resources_after(run, cursor, QUEUE_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        for queued in batch {
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
            for (step, listing) in steps.into_iter().enumerate().skip(first_step) {
                let at = Checkpoint { top_level_done: true, cursor, within: Some(Within { row: queued.row, step, token: None }) };
                let start = if step == first_step { first_token.take() } else { None };
                list_all(instance, file, run, listing, start, Some(at), progress, &mut tally).await?;
            }
            cursor = queued.row;
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

/// Lists every page from `start` on. With `checkpoint_at`, each page that
/// has a next one records where to go on from (the page costs a request
/// anyway; the checkpoint write is small beside it).
#[allow(clippy::too_many_arguments)]
async fn list_all(
    instance: &mut ConnectorInstance,
    file: &mut SyncFile,
    run: i64,
    listing: Listing<'_>,
    start: Option<String>,
    checkpoint_at: Option<Checkpoint>,
    progress: &ProgressBar,
    tally: &mut Tally,
) -> Result<()> {
    let mut token: Option<String> = start;
    for _ in 0..MAX_PAGES_PER_LISTING {
        let page = match &listing {
            Listing::Resources(t, scope) => retry_rate_limited!(instance, list_resources(t, *scope, token.as_deref())),
            Listing::Entitlements(r) => retry_rate_limited!(instance, list_entitlements(r, token.as_deref())),
            Listing::Grants(r) => retry_rate_limited!(instance, list_grants(r, token.as_deref())),
        }
        .map_err(|e| anyhow!("{} failed: {e}", listing.describe()))?;
        let next = page.next_token.clone();
        let records = PageRecords::from(page);
        file.write_page(run, &records)?;

        tally.resources += records.resources.len();
        tally.entitlements += records.entitlements.len();
        tally.grants += records.grants.len();
        progress.set_message(format!(
            "{} resources, {} entitlements, {} grants, {} requests",
            tally.resources,
            tally.entitlements,
            tally.grants,
            instance.http().requests_sent()
        ));
        progress.tick();

        match next {
            None => return Ok(()),
            Some(next) if token.as_ref() == Some(&next) => {
                bail!("{}: the connector returned the same page token twice", listing.describe())
            }
            Some(next) => {
                if let Some(mut at) = checkpoint_at.clone() {
                    if let Some(within) = at.within.as_mut() {
                        within.token = Some(next.clone());
                    }
                    file.save_checkpoint(run, &at)?;
                }
                token = Some(next);
            }
        }
    }
    bail!("{}: more than {MAX_PAGES_PER_LISTING} pages", listing.describe())
}
