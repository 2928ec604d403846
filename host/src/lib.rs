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
//! - `terminal`: connector text made safe to print;
//! - `plain_file`: reading a file the operator names, bounded.

/// `println!` that hands back the error instead of panicking: a reader
/// that closes the pipe early (`| head`) ends the command cleanly (see
/// `cli::main`), and a full disk is an error, not a crash.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub mod cli;
pub mod distribution;
pub mod plain_file;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod sync;
pub mod terminal;
