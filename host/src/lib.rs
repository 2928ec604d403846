//! Tether's host: loads connector components, sandboxes them, drives them
//! and writes what they report into the sync file.
//!
//! One module per concern: `engine` (wasmtime, limits, compiled-code cache),
//! `imports` (the host side of each import, one module each: `http`,
//! `config`, `storage`, `log`, `wasi`, each owning its own context),
//! `store_data` (what a wasmtime store holds: those contexts and the
//! limits), `connector` (one sandboxed instance and its guarded calls),
//! `model` (the uniform data model), `store` (the SQLite sync file), `sync`
//! (the driver), and the commands (`cli`, `demo`, `inspect`).

pub mod api_version;
pub mod bindings;
pub mod cli;
pub mod connector;
pub mod engine;
pub mod imports;
pub mod limits;
pub mod store_data;
pub mod sync;
pub mod terminal;
pub mod trust;
