//! The two places `serve` calls into the rest of the host: one sync, and
//! one write. Kept to one function each so that a change of the driver's or
//! the connector's signatures touches only this file.

use std::path::Path;

use anyhow::Result;

use crate::runtime::bindings::guest;
use crate::runtime::instance::{retry_rate_limited, CallError, ConnectorInstance, PlannedWrite};
use crate::sync::{SyncFile, SyncOptions, SyncSummary};

/// Runs one sync on `pool` (instances of one module sharing one HTTP
/// gateway) into the sync file at `path`.
pub async fn run_sync(pool: &mut Vec<ConnectorInstance>, path: &Path, digest: &str, options: &SyncOptions) -> Result<SyncSummary> {
    let mut file = SyncFile::open_for_sync(path)?;
    crate::sync::run_pool(pool, &mut file, digest, &indicatif::ProgressBar::hidden(), options).await
}

/// What a write did, as the connector says.
pub struct WriteDone {
    pub changed: Option<bool>,
    pub message: String,
    /// The grant or account it made or touched.
    pub id: Option<String>,
}

/// Performs `write` through the connector (waiting out rate limits).
pub async fn perform_write(instance: &mut ConnectorInstance, write: &PlannedWrite) -> Result<WriteDone, CallError> {
    let from_result =
        |r: guest::WriteResult| WriteDone { changed: Some(matches!(r.outcome, guest::Outcome::Changed)), message: r.message, id: r.grant.map(|g| g.id) };
    Ok(match write {
        PlannedWrite::Grant { entitlement_id, principal } => from_result(retry_rate_limited!(instance, grant_entitlement(entitlement_id, principal))?),
        PlannedWrite::Revoke { grant_id } => from_result(retry_rate_limited!(instance, revoke_grant(grant_id))?),
        PlannedWrite::DisableAccount(account) => from_result(retry_rate_limited!(instance, disable_account(account))?),
        PlannedWrite::CreateAccount(request) => {
            let created = retry_rate_limited!(instance, create_account(request))?;
            WriteDone {
                changed: created.outcome.map(|o| matches!(o, guest::Outcome::Changed)),
                message: created.message,
                id: Some(format!("{}:{}", created.account.resource_type, created.account.id)),
            }
        }
    })
}
