//! An Asana API simulator for testing connectors.
//!
//! It serves a generated org ([`Org::generate`]) over the parts of Asana's REST API an
//! identity-governance connector uses (workspaces, teams, memberships, users, and the
//! membership writes) plus Asana's SCIM Users API, with Asana's envelope, pagination,
//! `opt_fields`, errors and rate limiting, and records every request for assertions.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use asana_sim::{Org, OrgSpec, SimConfig, SimHandle};
//! let sim = SimHandle::start(SimConfig::new(Org::generate(&OrgSpec::default())), "127.0.0.1:0".parse()?).await?;
//! println!("{}", sim.base_url()); // http://127.0.0.1:PORT/api/1.0, token "sim-token"
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod error;
mod faults;
mod index;
mod names;
mod org;
mod query;
mod ratelimit;
mod rest;
mod scim;
mod server;
mod views;

use std::sync::{Mutex, MutexGuard};

pub use org::{License, Org, OrgSpec, Team, TeamMembership, User, Workspace, WorkspaceMembership, FIRST_GID};
pub use server::{RecordedRequest, SimConfig, SimHandle};

/// Every route lives under this prefix, as on app.asana.com.
pub(crate) const API_PREFIX: &str = "/api/1.0";

/// Locks ignoring poisoning: state stays usable even if a handler ever panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
