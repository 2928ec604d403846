//! `tether-guest`: what every Tether connector written in Rust needs, so
//! that a connector holds only what is specific to its upstream.
//!
//! - [`bindings`]: the contract this SDK targets (`tether:connector@0.5.0`),
//!   generated once here; [`contract`] and [`types`] re-export its records.
//!   A connector implements [`Guest`] and calls [`export!`](crate::export).
//! - [`metadata`]: resource types (with the listings each has) and the
//!   upstream's limits, as the metadata declares them.
//! - [`ids`]: entitlement and grant IDs (`TYPE:ID:SLUG`, `ENTITLEMENT:TYPE:ID`).
//! - [`page`]: records and pages, and what a listing's resource says.
//! - [`http`]: JSON over the host's `http` import, HTTP failures mapped to
//!   the contract's error variants.
//! - [`paging`]: page tokens for offset, cursor and `startIndex` styles.
//! - [`scim`]: a SCIM 2.0 (RFC 7643/7644) client.
//!
//! The pure functions are unit-tested natively; the imports (`http::send`,
//! `config::get`) exist only in a component and must not be called there.

pub mod http;
pub mod ids;
pub mod json;
pub mod metadata;
pub mod page;
pub mod paging;
pub mod scim;

/// The contract bindings. `export!` (at the crate root) looks for the types
/// here, so a connector calls `tether_guest::export!(MyConnector);`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.5.0",
        world: "connector-world",
        // The 0.1.0 interfaces the world imports come from wit/v0.5.0/deps/.
        generate_all,
        pub_export_macro: true,
        // Tests compare records; connectors may too.
        additional_derives: [PartialEq, Eq],
        default_bindings_module: "tether_guest::bindings",
    });
}

/// The contract version this SDK targets.
pub const CONTRACT_VERSION: &str = "0.5.0";

/// `tether_guest::export!(MyConnector);` exports a connector.
pub use bindings::export;
/// The exported interface's records and the trait a connector implements.
pub use bindings::exports::tether::connector0_5_0::connector as contract;
/// The host's imports: configuration, HTTP, storage and logging.
pub use bindings::tether::connector0_1_0::{config, log, storage, types};
pub use contract::Guest;
pub use types::{ConnectorError, Pair, RateLimit, ResourceRef};
