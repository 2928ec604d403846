//! What a connector's metadata declares: its config fields, its resource
//! types, with the listings each has, and what its upstream allows.

use crate::contract::{ConfigField, ResourceType, UpstreamLimits};

/// A config key (or an account field) the connector takes. Secrets are
/// given to the host only; `config.get` never returns them.
pub fn config_field(key: &str, description: &str, secret: bool, required: bool, default: Option<&str>) -> ConfigField {
    ConfigField { key: key.into(), description: description.into(), secret, required, default_value: default.map(str::to_string) }
}

/// A top-level resource type whose resources have entitlements and grants
/// (the host lists both); narrow it with the methods of [`TypeBuilder`].
pub fn resource_type(id: &str, display_name: &str, description: &str) -> ResourceType {
    ResourceType {
        id: id.into(),
        display_name: display_name.into(),
        description: description.into(),
        listed_under: None,
        lists_entitlements: true,
        lists_grants: true,
    }
}

/// Builder-style changes to a [`ResourceType`].
pub trait TypeBuilder {
    /// Listed once per resource of `parent`, which the listing gets.
    fn listed_under(self, parent: &str) -> Self;
    /// Its resources have no entitlements: the host never asks.
    fn without_entitlements(self) -> Self;
    /// Its resources grant nothing: the host never lists their grants.
    fn without_grants(self) -> Self;
}

impl TypeBuilder for ResourceType {
    fn listed_under(mut self, parent: &str) -> Self {
        self.listed_under = Some(parent.into());
        self
    }

    fn without_entitlements(mut self) -> Self {
        self.lists_entitlements = false;
        self
    }

    fn without_grants(mut self) -> Self {
        self.lists_grants = false;
        self
    }
}

/// No declared limits: the host's defaults (or the operator's) apply.
pub fn no_limits() -> UpstreamLimits {
    UpstreamLimits { requests_per_minute: None, concurrent_reads: None, concurrent_writes: None }
}

/// What the upstream allows per host: requests a minute, reads (GET) and
/// writes (other methods) in flight at once.
pub fn limits(requests_per_minute: u32, concurrent_reads: u32, concurrent_writes: u32) -> UpstreamLimits {
    UpstreamLimits { requests_per_minute: Some(requests_per_minute), concurrent_reads: Some(concurrent_reads), concurrent_writes: Some(concurrent_writes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_lists_both_until_told_otherwise() {
        let user = resource_type("user", "User", "a user").listed_under("workspace").without_entitlements().without_grants();
        assert_eq!(user.listed_under.as_deref(), Some("workspace"));
        assert!(!user.lists_entitlements && !user.lists_grants);
        let team = resource_type("team", "Team", "a team");
        assert!(team.lists_entitlements && team.lists_grants && team.listed_under.is_none());
        assert_eq!(limits(1500, 50, 15).concurrent_writes, Some(15));
        assert_eq!(no_limits().requests_per_minute, None);
        let token = config_field("token", "the API token", true, true, None);
        assert!(token.secret && token.required && token.default_value.is_none());
        assert_eq!(config_field("page-size", "per page", false, false, Some("100")).default_value.as_deref(), Some("100"));
    }
}
