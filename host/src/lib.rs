//! Tether's host: loads connector components, sandboxes them, drives them
//! and writes what they report into the sync file.
//!
//! - `runtime/`: running one connector (engine and cache, trust, contract
//!   versions, limits, the sandboxed instance, the imports it is given);
//! - `sync/`: the data model, the sync file, checkpoints and the driver;
//! - `distribution/`: modules from files or OCI registries (push, pull, resolve);
//! - `cli/`: the `tether` command line, one module per command;
//! - `report`: the HTML page of `tether report`, for access reviews;
//! - `serve`: `tether serve`, the long-running multi-connector host;
//! - `terminal`: connector text made safe to print.

pub mod cli;
pub mod distribution;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod sync;
pub mod terminal;
