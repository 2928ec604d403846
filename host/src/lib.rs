//! Tether's host: loads connector components, sandboxes them, drives them
//! and writes what they report into the sync file.
//!
//! One module per concern: `engine` (wasmtime, limits, compiled-code cache),
//! the host side of each WIT import (`http`, `config`, `storage`, `log`),
//! `connector` (one sandboxed instance and its guarded calls), `model` (the
//! uniform data model), `store` (the SQLite sync file), `sync` (the driver),
//! and the commands (`cli`, `demo`, `inspect`).

pub mod api_version;
pub mod bindings;
pub mod cli;
pub mod config;
pub mod connector;
pub mod engine;
pub mod guest_stderr;
pub mod http;
pub mod limits;
pub mod log;
pub mod state;
pub mod storage;
pub mod sync;
pub mod terminal;
pub mod trust;
pub mod wasi;
