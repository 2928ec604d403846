//! Rust bindings for the `tether:connector` WIT package, one module per
//! supported version of the `connector` export.

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "connector-world",
    // Host imports are async (HTTP waits on the network without blocking a
    // thread) and trappable (a limit violation ends the guest's call).
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use exports::tether::connector::connector as guest;

/// Bindings of a later version of the contract. Its world imports 0.1.0's
/// interfaces, so they map onto the 0.1.0 bindings above: one
/// implementation of each import, one set of shared types
/// (`connector-error`, `pair`, `resource-ref`).
macro_rules! later_version {
    ($path:tt, $export:ident) => {
        wasmtime::component::bindgen!({
            path: $path,
            world: "connector-world",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "tether:connector/types@0.1.0": crate::runtime::bindings::tether::connector::types,
                "tether:connector/http@0.1.0": crate::runtime::bindings::tether::connector::http,
                "tether:connector/config@0.1.0": crate::runtime::bindings::tether::connector::config,
                "tether:connector/storage@0.1.0": crate::runtime::bindings::tether::connector::storage,
                "tether:connector/log@0.1.0": crate::runtime::bindings::tether::connector::log,
            },
        });

        pub use exports::tether::$export::connector as guest;
    };
}

/// `tether:connector@0.2.0`: the export adds `test-connection`.
pub mod v0_2 {
    later_version!("../wit/v0.2.0", connector0_2_0);
}

/// `tether:connector@0.3.0`: the export adds `check-write`, and
/// `create-account` returns an `account-result`.
pub mod v0_3 {
    later_version!("../wit/v0.3.0", connector0_3_0);
}

/// `tether:connector@0.4.0`: the metadata declares the upstream's limits
/// and which types list entitlements and grants; the listings take the
/// resource as reported (with its attributes), not its reference.
pub mod v0_4 {
    later_version!("../wit/v0.4.0", connector0_4_0);
}

/// `tether:connector@0.5.0`: a page may carry grants in sets (one
/// entitlement, many principals), the shape of a membership listing.
pub mod v0_5 {
    later_version!("../wit/v0.5.0", connector0_5_0);
}

pub use tether::connector::types::{ConnectorError, Pair, RateLimit, ResourceRef};

/// A connector error as one readable line (the generated Display is
/// Debug-like).
/// Escaped for the terminal and clipped: the text is the connector's.
pub fn describe(error: &ConnectorError) -> String {
    use crate::terminal::{clip, MAX_CONNECTOR_TEXT};
    let clip = |m: &str| clip(m, MAX_CONNECTOR_TEXT).into_owned();
    let line = match error {
        ConnectorError::Unauthorized(m) => format!("unauthorized: {}", clip(m)),
        ConnectorError::Forbidden(m) => format!("forbidden: {}", clip(m)),
        ConnectorError::NotFound(m) => format!("not found: {}", clip(m)),
        ConnectorError::RateLimited(r) => format!("rate limited (retry after {} ms): {}", r.retry_after_ms, clip(&r.message)),
        ConnectorError::InvalidConfig(m) => format!("invalid config: {}", clip(m)),
        ConnectorError::InvalidArgument(m) => format!("invalid argument: {}", clip(m)),
        ConnectorError::Upstream(m) => format!("upstream error: {}", clip(m)),
        ConnectorError::Unsupported(m) => format!("unsupported: {}", clip(m)),
    };
    crate::terminal::escape(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connector_error_is_clipped_and_escaped() {
        let described = describe(&ConnectorError::Upstream("\u{1}".repeat(1 << 20)));
        assert!(described.len() < 5 * crate::terminal::MAX_CONNECTOR_TEXT, "{} bytes", described.len());
        assert!(described.contains("more bytes)") && !described.contains('\u{1}'));
    }
}
