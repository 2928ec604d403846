//! Where a sync goes on from: saved with every page (or batch of pages) it
//! writes, read back by `sync --resume`. Versioned: a checkpoint of an
//! older version is read, an unknown one is an error, never silently a
//! fresh start.

use anyhow::{Context, Result};
use serde_json::Value;

/// The version of the checkpoint format this host writes.
pub const CHECKPOINT_VERSION: u32 = 3;

/// How far a run got, saved with every page or batch of pages it writes
/// (in the same transaction), so that a resume asks for no page already
/// written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub position: Position,
    /// A salted fingerprint of the connector's config and secrets the run
    /// was made with (see `ConnectorInstance::config_fingerprint`): a
    /// resume under other config (another upstream URL, another org's
    /// token) would mix two sources in one run. None in checkpoints saved
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint { version: CHECKPOINT_VERSION, position: Position::TopLevel { index: 0, token: None }, settings: None }
    }
}

impl From<Position> for Checkpoint {
    fn from(position: Position) -> Self {
        Checkpoint { version: CHECKPOINT_VERSION, position, settings: None }
    }
}

/// Where the driver goes on from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Position {
    /// Listing the top-level types: the `index`-th of them (in the
    /// connector's order), from page `token`.
    TopLevel { index: usize, token: Option<String> },
    /// Walking the queue: every resource up to row `cursor` is done;
    /// `within` says how far the driver got inside the next one.
    Queue { cursor: i64, within: Option<Within> },
    /// Version 3, listings run concurrently: every resource up to row
    /// `cursor` has had its listings handed out, and `pending` holds those
    /// not finished (top-level ones included), each with the page to go on
    /// from. Everything else is done.
    Listings { cursor: i64, pending: Vec<Pending> },
}

/// One listing handed out and not finished, and the page it goes on from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub listing: ListingKey,
    pub token: Option<String>,
}

/// Which listing: the `index`-th top-level type, or step `step` (a type
/// listed under it, then entitlements, then grants) of the resource at `row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "of", rename_all = "kebab-case")]
pub enum ListingKey {
    TopLevel { index: usize },
    Resource { row: i64, step: usize },
}

/// A place inside one resource's listings: its row, the step (which
/// listing), and the page token to go on from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Within {
    pub row: i64,
    pub step: usize,
    pub token: Option<String>,
}

impl Checkpoint {
    /// Reads a saved checkpoint: this version's, version 2 (one listing at a
    /// time: `TopLevel` or `Queue`, which the driver turns into pending
    /// listings), or version 1 (no version field; top-level listings were
    /// checkpointed only once all done).
    /// Anything else is an error, never silently a fresh start.
    pub fn parse(text: &str) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct V1 {
            top_level_done: bool,
            cursor: i64,
            within: Option<Within>,
        }
        let value: Value = serde_json::from_str(text).context("the checkpoint is not JSON")?;
        match value.get("version").map(Value::as_u64) {
            Some(Some(2 | 3)) => serde_json::from_value(value).context("the checkpoint does not match its version's format"),
            Some(other) => anyhow::bail!(
                "the checkpoint has version {}, which this tether does not read (it reads 1 to {CHECKPOINT_VERSION})",
                other.map_or_else(|| "(not a number)".to_string(), |v| v.to_string())
            ),
            None => {
                let v1: V1 = serde_json::from_value(value).context("the checkpoint is in no format this tether reads")?;
                Ok(if v1.top_level_done { Position::Queue { cursor: v1.cursor, within: v1.within }.into() } else { Checkpoint::default() })
            }
        }
    }
}
