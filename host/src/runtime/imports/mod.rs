//! The host side of every import a connector may use, one module per
//! import: `http`, `config`, `storage`, `log` (the `tether:connector`
//! interfaces) and `wasi` (what a Rust std guest needs to start).
//!
//! Each module owns the state its import needs in a context of its own
//! (`HttpCtx`, `ConfigCtx`, …), implements the generated `Host` trait on
//! that context, and names it for the linker with a `HasData` marker, the
//! way wasmtime's WASI crates do. The store data
//! ([`crate::runtime::store_data::StoreData`]) is one field per context and links
//! each import with a projection onto its field; no import sees the others'
//! state or the store data, so adding an import touches this folder and
//! that list alone.

pub mod config;
pub mod http;
pub mod log;
pub mod storage;
pub mod upstream;
pub mod wasi;

use wasmtime::component::HasData;

use crate::runtime::bindings::tether::connector::types;

/// `tether:connector/types` holds only type definitions: it has nothing to
/// serve, but a connector importing it needs the instance to exist.
pub struct Types;

impl HasData for Types {
    type Data<'a> = Types;
}

impl types::Host for Types {}
