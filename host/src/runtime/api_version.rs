//! Which version of the `tether:connector` contract a module was built
//! against, which versions this host serves, and the conversion of a newer
//! export's types into the host's own (0.1.0) shapes.
//!
//! Every released version of the WIT package stays in `wit/`; the imports of
//! every version so far are 0.1.0's, so only the `connector` export differs.

use std::fmt;

use anyhow::{bail, Result};
use semver::Version;
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::runtime::bindings::v0_2::guest as v0_2_guest;
use crate::runtime::bindings::v0_3::guest as v0_3_guest;
use crate::runtime::bindings::v0_4::guest as v0_4_guest;
use crate::runtime::bindings::v0_5::guest as v0_5_guest;
use crate::runtime::bindings::{guest, ConnectorError, Pair, ResourceRef};

const PACKAGE: &str = "tether:connector";
/// The interfaces the host implements, all at 0.1.0.
const IMPORTED_INTERFACES: &[&str] = &["types", "http", "config", "storage", "log"];
const IMPORTS_VERSION: Version = Version::new(0, 1, 0);

/// A version of the `connector` export this host can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V0_1,
    /// Adds `test-connection`.
    V0_2,
    /// Adds `check-write` (irreversible writes need confirmation).
    V0_3,
    /// Adds the upstream's limits and the per-type listing flags to the
    /// metadata; the listings take the resource as reported.
    V0_4,
    /// Adds grant sets to the pages.
    V0_5,
}

impl ApiVersion {
    pub const SUPPORTED: [ApiVersion; 5] = [ApiVersion::V0_1, ApiVersion::V0_2, ApiVersion::V0_3, ApiVersion::V0_4, ApiVersion::V0_5];

    pub fn version(self) -> Version {
        match self {
            ApiVersion::V0_1 => Version::new(0, 1, 0),
            ApiVersion::V0_2 => Version::new(0, 2, 0),
            ApiVersion::V0_3 => Version::new(0, 3, 0),
            ApiVersion::V0_4 => Version::new(0, 4, 0),
            ApiVersion::V0_5 => Version::new(0, 5, 0),
        }
    }

    /// Reads which `tether:connector/connector@X` the component exports and
    /// picks the version of the contract that serves it.
    pub fn of(engine: &Engine, component: &Component) -> Result<ApiVersion> {
        let export_prefix = format!("{PACKAGE}/connector@");
        let exported: Vec<String> =
            component.component_type().exports(engine).filter_map(|(name, _)| name.strip_prefix(&export_prefix).map(str::to_string)).collect();
        if exported.is_empty() {
            bail!("it does not export {PACKAGE}/connector, so it is not a Tether connector");
        }
        // A module exporting several versions is driven through the newest.
        let mut best: Option<ApiVersion> = None;
        for text in &exported {
            let served = Version::parse(text).ok().and_then(|v| Self::SUPPORTED.into_iter().rev().find(|api| compatible(&api.version(), &v)));
            if served.is_some_and(|api| best.is_none_or(|b| api.version() > b.version())) {
                best = served;
            }
        }
        match best {
            Some(api) => Ok(api),
            None => bail!(
                "it exports {PACKAGE}/connector@{}, but this host supports {PACKAGE}@{}",
                exported.join(", @"),
                Self::SUPPORTED.map(|api| api.to_string()).join(" and @"),
            ),
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.version())
    }
}

/// Semver compatibility as the component model reads it: the same major
/// version, or for 0.x the same minor one.
fn compatible(offered: &Version, wanted: &Version) -> bool {
    if !offered.pre.is_empty() || !wanted.pre.is_empty() {
        return offered == wanted;
    }
    offered.major == wanted.major && (offered.major != 0 || offered.minor == wanted.minor)
}

/// Checks one `tether:connector/...` import: an interface the host
/// implements, at a version compatible with the one it implements.
pub fn check_tether_import(name: &str) -> Result<()> {
    let Some((interface, version)) = name.strip_prefix(PACKAGE).and_then(|rest| rest.strip_prefix('/')).and_then(|rest| rest.split_once('@')) else {
        bail!("it imports {name}, which names no version of {PACKAGE}");
    };
    if !IMPORTED_INTERFACES.contains(&interface) {
        bail!("it imports {name}, which the host does not offer (it offers {PACKAGE}/{{{}}}@{IMPORTS_VERSION})", IMPORTED_INTERFACES.join(","));
    }
    match Version::parse(version) {
        Ok(wanted) if compatible(&IMPORTS_VERSION, &wanted) => Ok(()),
        _ => {
            bail!("it imports {name}, but this host offers {PACKAGE}/{interface}@{IMPORTS_VERSION}")
        }
    }
}

/// Converts a value of one version's bindings into the same-shaped value of
/// another's (0.2.0 results into the host's 0.1.0 types, and back for
/// arguments).
pub trait Convert<T> {
    fn convert(self) -> T;
}

/// Types both versions share (they come from the 0.1.0 imports).
macro_rules! shared {
    ($($ty:ty),*) => {$(
        impl Convert<$ty> for $ty {
            fn convert(self) -> $ty { self }
        }
    )*};
}
shared!(String, bool, (), Pair, ResourceRef, ConnectorError);

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

impl<A: Convert<B>, B> Convert<Result<B, ConnectorError>> for Result<A, ConnectorError> {
    fn convert(self) -> Result<B, ConnectorError> {
        self.map(Convert::convert)
    }
}

/// Field-by-field conversion between records of the same shape; the
/// compiler checks that every field is named.
macro_rules! same_records {
    ($from:ident => $to:ident: $($record:ident { $($field:ident),* })*) => {$(
        impl Convert<$to::$record> for $from::$record {
            fn convert(self) -> $to::$record {
                $to::$record { $($field: self.$field.convert()),* }
            }
        }
    )*};
}

/// What a later version's export shares with 0.1.0's, converted field by
/// field: its results into the host's types, the account request back.
macro_rules! records_shared_with_v0_1 {
    ($($version:ident),*) => {$(
        same_records!($version => guest:
            ConfigField { key, description, secret, required, default_value }
            Resource { resource_type, id, display_name, parent, attributes }
            Entitlement { id, resource, slug, display_name, description, grantable }
            Grant { id, entitlement_id, principal, immutable, attributes }
            WriteResult { outcome, grant, message }
        );
        same_records!(guest => $version:
            AccountRequest { email, display_name, options }
        );

        impl Convert<guest::Outcome> for $version::Outcome {
            fn convert(self) -> guest::Outcome {
                match self {
                    $version::Outcome::Changed => guest::Outcome::Changed,
                    $version::Outcome::NoChange => guest::Outcome::NoChange,
                }
            }
        }
    )*};
}

records_shared_with_v0_1!(v0_2_guest, v0_3_guest, v0_4_guest, v0_5_guest);

/// Pages had 0.1.0's shape until 0.5.0 (see `runtime::page` for 0.5.0's).
macro_rules! pages_shared_with_v0_1 {
    ($($version:ident),*) => {$(
        same_records!($version => guest:
            Page { resources, entitlements, grants, next_token }
        );
    )*};
}

pages_shared_with_v0_1!(v0_2_guest, v0_3_guest, v0_4_guest);

/// The metadata had 0.1.0's shape until 0.4.0.
macro_rules! metadata_shared_with_v0_1 {
    ($($version:ident),*) => {$(
        same_records!($version => guest:
            ResourceType { id, display_name, description, listed_under }
            ConnectorMetadata { name, version, description, resource_types, config, hosts, account_fields }
        );
    )*};
}

metadata_shared_with_v0_1!(v0_2_guest, v0_3_guest);

/// What 0.4.0 changed in the metadata and the listings' argument, and
/// later versions kept.
macro_rules! shaped_like_v0_4 {
    ($($version:ident),*) => {$(
        // The listings take the resource as reported.
        same_records!(guest => $version:
            Resource { resource_type, id, display_name, parent, attributes }
        );

        /// Resource types in the host's shape; the listing flags are read
        /// apart (`ConnectorInstance::resource_types`).
        impl Convert<guest::ResourceType> for $version::ResourceType {
            fn convert(self) -> guest::ResourceType {
                guest::ResourceType { id: self.id, display_name: self.display_name, description: self.description, listed_under: self.listed_under }
            }
        }

        /// The metadata in the host's shape; the limits are read apart.
        impl Convert<guest::ConnectorMetadata> for $version::ConnectorMetadata {
            fn convert(self) -> guest::ConnectorMetadata {
                guest::ConnectorMetadata {
                    name: self.name,
                    version: self.version,
                    description: self.description,
                    resource_types: self.resource_types.convert(),
                    config: self.config.convert(),
                    hosts: self.hosts,
                    account_fields: self.account_fields.convert(),
                }
            }
        }
    )*};
}

shaped_like_v0_4!(v0_4_guest, v0_5_guest);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_follows_the_component_model() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(compatible(&v("0.1.0"), &v("0.1.3")));
        assert!(!compatible(&v("0.1.0"), &v("0.2.0")));
        assert!(compatible(&v("1.0.0"), &v("1.4.0")));
        assert!(!compatible(&v("1.0.0"), &v("9.0.0")));
        assert!(!compatible(&v("0.1.0"), &v("0.1.0-rc1")));
    }

    #[test]
    fn only_the_offered_interfaces_at_a_compatible_version_pass() {
        assert!(check_tether_import("tether:connector/http@0.1.0").is_ok());
        assert!(check_tether_import("tether:connector/log@0.1.2").is_ok());
        let err = check_tether_import("tether:connector/http@0.3.0").unwrap_err().to_string();
        assert!(err.contains("http@0.3.0") && err.contains("http@0.1.0"), "{err}");
        assert!(check_tether_import("tether:connector/secrets@0.1.0").is_err());
        assert!(check_tether_import("tether:connector/http").is_err());
    }
}
