//! Running a connector: the wasmtime engine (`engine`, whose epoch ticker
//! sleeps while no guest can run: `activity`) and its
//! compiled-code cache (`cache`), what a module must prove before it runs (`trust`), which
//! contract versions load and how they convert (`api_version`, `bindings`),
//! a listing's page in the host's shape (`page`), the limits (`limits`, and per upstream host `upstream_limits`), the operator's
//! settings checked against the declared ones (`settings`), one sandboxed instance and its guarded calls
//! (`instance`), what its wasmtime store holds (`store_data`), and the host
//! side of each import (`imports/`, one module each, owning its state).

pub mod activity;
pub mod api_version;
pub mod bindings;
pub mod cache;
pub mod compile;
pub mod engine;
pub mod imports;
pub mod instance;
pub mod limits;
pub mod page;
pub mod pool_memory;
pub mod settings;
pub mod store_data;
pub mod trust;
pub mod upstream_limits;
