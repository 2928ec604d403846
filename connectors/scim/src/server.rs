//! The SCIM server as this connector sees it: the client, and what the
//! server supports, read once per connector instance (the host keeps one
//! instance for a whole sync) from `/ServiceProviderConfig` and, for how
//! group members are returned, the Group schema.

use std::sync::OnceLock;

use serde_json::Value;
use tether_guest::log::{self, Level};
use tether_guest::scim::{ScimClient, ServiceProviderConfig, GROUP_SCHEMA};
use tether_guest::{json, ConnectorError};

use crate::settings::{MembersFrom, Settings};

/// The most resources asked for per page (capped by the server's `maxResults`).
pub const PAGE_SIZE: u64 = 100;

pub struct Server {
    pub settings: Settings,
    pub scim: ScimClient,
}

/// What the server supports.
#[derive(Debug, Clone)]
pub struct Features {
    pub config: ServiceProviderConfig,
    /// Whether the server announced its configuration at all.
    pub announced: bool,
}

impl Features {
    pub fn describe(&self) -> String {
        if !self.announced {
            return "no /ServiceProviderConfig: only the RFC's required features are used".into();
        }
        let on = |b: bool| if b { "yes" } else { "no" };
        let limit = self.config.max_results.map_or("none".to_string(), |n| n.to_string());
        format!("patch: {}, filter: {}, max results: {limit}", on(self.config.patch), on(self.config.filter))
    }
}

static FEATURES: OnceLock<Features> = OnceLock::new();
static MEMBERS_FROM: OnceLock<MembersFrom> = OnceLock::new();

impl Server {
    pub fn connect() -> Result<Self, ConnectorError> {
        let settings = Settings::load()?;
        let scim = ScimClient::new("SCIM server", &settings.base_url);
        Ok(Server { settings, scim })
    }

    /// `/ServiceProviderConfig`, read on first use. A server without one
    /// (404) gets only what RFC 7644 requires: no filter, no PATCH.
    pub fn features(&self) -> Result<Features, ConnectorError> {
        if let Some(features) = FEATURES.get() {
            return Ok(features.clone());
        }
        let features = match self.scim.service_provider_config() {
            Ok(config) => Features { config, announced: true },
            Err(ConnectorError::NotFound(why)) => {
                log::emit(Level::Warn, &format!("no /ServiceProviderConfig ({why}): filters and PATCH stay unused"));
                Features { config: ServiceProviderConfig::parse(&Value::Null), announced: false }
            }
            Err(e) => return Err(e),
        };
        Ok(FEATURES.get_or_init(|| features).clone())
    }

    pub fn page_size(&self) -> Result<u64, ConnectorError> {
        Ok(self.features()?.config.page_size(PAGE_SIZE))
    }

    /// Where a group's members are read from: the setting, or in `auto`
    /// the Group schema (`members` with `returned: never` means they must
    /// be found by filter). A server without `/Schemas` returns them.
    pub fn members_from(&self) -> Result<MembersFrom, ConnectorError> {
        if self.settings.members_from != MembersFrom::Auto {
            return Ok(self.settings.members_from);
        }
        if let Some(from) = MEMBERS_FROM.get() {
            return Ok(*from);
        }
        let from = match self.scim.http.get(&format!("/Schemas/{GROUP_SCHEMA}"), &[]) {
            Ok(schema) if members_never_returned(&schema) => MembersFrom::Filter,
            Ok(_) | Err(ConnectorError::NotFound(_)) | Err(ConnectorError::InvalidArgument(_)) => MembersFrom::Attribute,
            Err(e) => return Err(e),
        };
        if from == MembersFrom::Filter && !self.features()?.config.filter {
            return Err(ConnectorError::Unsupported("the server never returns group members and supports no filter: its memberships cannot be read".into()));
        }
        Ok(*MEMBERS_FROM.get_or_init(|| from))
    }

    /// PATCH is how every write but create-account is made.
    pub fn require_patch(&self, what: &str) -> Result<(), ConnectorError> {
        if self.features()?.config.patch {
            Ok(())
        } else {
            Err(ConnectorError::Unsupported(format!("{what} needs PATCH, which this SCIM server does not support (/ServiceProviderConfig)")))
        }
    }
}

/// The Group schema says `members` is never returned.
pub fn members_never_returned(schema: &Value) -> bool {
    json::list(schema, "attributes")
        .iter()
        .find(|a| json::text(a, "name").is_some_and(|n| n.eq_ignore_ascii_case("members")))
        .and_then(|a| json::text(a, "returned"))
        .is_some_and(|r| r.eq_ignore_ascii_case("never"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_group_schema_says_whether_members_are_returned() {
        let schema = |returned: &str| json!({"attributes": [{"name": "displayName"}, {"name": "members", "returned": returned}]});
        assert!(members_never_returned(&schema("never")));
        assert!(!members_never_returned(&schema("default")));
        assert!(!members_never_returned(&schema("request")));
        assert!(!members_never_returned(&json!({})));
    }
}
