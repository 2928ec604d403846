//! Rust bindings for the `tether:connector` WIT package.

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "connector-world",
    // Host imports are async (HTTP waits on the network without blocking a
    // thread) and trappable (a limit violation ends the guest's call).
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use exports::tether::connector::connector as guest;
pub use tether::connector::types::{ConnectorError, Pair, RateLimit, ResourceRef};
