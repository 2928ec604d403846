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

/// A connector error as one readable line (the generated Display is
/// Debug-like).
pub fn describe(error: &ConnectorError) -> String {
    match error {
        ConnectorError::Unauthorized(m) => format!("unauthorized: {m}"),
        ConnectorError::Forbidden(m) => format!("forbidden: {m}"),
        ConnectorError::NotFound(m) => format!("not found: {m}"),
        ConnectorError::RateLimited(r) => format!("rate limited (retry after {} ms): {}", r.retry_after_ms, r.message),
        ConnectorError::InvalidConfig(m) => format!("invalid config: {m}"),
        ConnectorError::InvalidArgument(m) => format!("invalid argument: {m}"),
        ConnectorError::Upstream(m) => format!("upstream error: {m}"),
        ConnectorError::Unsupported(m) => format!("unsupported: {m}"),
    }
}
