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
use crate::store::{ConnectorIdentity, SyncFile, Table};

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
    let started = Instant::now();
    let connector = ConnectorIdentity {
        name: instance.metadata.name.clone(),
        version: instance.metadata.version.clone(),
        digest: digest.to_string(),
    };
    let run_id = file.begin_run(&connector)?;
    let result = drive(instance, file, run_id, progress).await;
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
                elapsed: started.elapsed(),
            })
        }
        Err(error) => {
            if let Err(mark) = file.finish_run(run_id, Some(&format!("{error:#}")), requests) {
                tracing::error!("cannot mark sync run {run_id} failed: {mark:#}");
            }
            Err(error)
        }
    }
}

async fn drive(instance: &mut ConnectorInstance, file: &mut SyncFile, run: i64, progress: &ProgressBar) -> Result<()> {
    instance.validate().await.map_err(|e| anyhow!("the connector refused its configuration: {e}"))?;
    let types: Vec<ResourceType> = instance.metadata.resource_types.iter().cloned().map(Into::into).collect();
    file.write_resource_types(run, &types)?;
    let mut tally = Tally::default();

    for top in types.iter().filter(|t| t.listed_under.is_none()) {
        list_all(instance, file, run, Listing::Resources(&top.id, None), progress, &mut tally).await?;
    }
    let mut cursor = 0;
    loop {
        let batch = file.resources_after(run, cursor, QUEUE_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        for queued in batch {
            cursor = queued.row;
            let resource: ResourceRef = (&queued.key).into();
            for child in types.iter().filter(|t| t.listed_under.as_deref() == Some(queued.key.resource_type.as_str())) {
                list_all(instance, file, run, Listing::Resources(&child.id, Some(&resource)), progress, &mut tally).await?;
            }
            list_all(instance, file, run, Listing::Entitlements(&resource), progress, &mut tally).await?;
            list_all(instance, file, run, Listing::Grants(&resource), progress, &mut tally).await?;
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

async fn list_all(
    instance: &mut ConnectorInstance,
    file: &mut SyncFile,
    run: i64,
    listing: Listing<'_>,
    progress: &ProgressBar,
    tally: &mut Tally,
) -> Result<()> {
    let mut token: Option<String> = None;
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
            Some(next) => token = Some(next),
        }
    }
    bail!("{}: more than {MAX_PAGES_PER_LISTING} pages", listing.describe())
}
