//! The connector's configuration, read through the host's `config` import
//! (the `token` secret is attached by the host; the connector never reads it).

use tether_guest::{config, ConnectorError};

/// How the grants of a group are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembersFrom {
    /// Ask `/Schemas` whether groups return `members`.
    Auto,
    /// From each group's `members` attribute.
    Attribute,
    /// Per user, `GET /Groups?filter=members.value eq "USER"`: for servers
    /// that never return `members`.
    Filter,
}

pub struct Settings {
    pub base_url: String,
    pub members_from: MembersFrom,
    /// The server cannot reactivate a deactivated user (the operator says
    /// so; SCIM has no standard way for a server to say it).
    pub deactivation_irreversible: bool,
    /// The server takes a member removal as `path: members` with the
    /// member in `value` where it answers 501 to a path filter (see
    /// `ScimClient::remove_member`); the operator says so.
    pub remove_member_by_value: bool,
}

impl Settings {
    pub fn load() -> Result<Self, ConnectorError> {
        let base_url = config::get("base-url")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ConnectorError::InvalidConfig("base-url (the SCIM root, e.g. https://example.com/scim/v2) is required".into()))?;
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) || base_url.contains(['?', '#']) {
            return Err(ConnectorError::InvalidConfig(format!("base-url must be an http(s) URL without query or fragment, got {base_url:?}")));
        }
        let members_from = match config::get("group-members").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("auto") => MembersFrom::Auto,
            Some("attribute") => MembersFrom::Attribute,
            Some("filter") => MembersFrom::Filter,
            Some(other) => return Err(ConnectorError::InvalidConfig(format!("group-members must be auto, attribute or filter, got {other:?}"))),
        };
        Ok(Settings {
            base_url: base_url.trim_end_matches('/').to_string(),
            members_from,
            deactivation_irreversible: flag("deactivation-irreversible")?,
            remove_member_by_value: flag("remove-member-by-value")?,
        })
    }
}

/// A true-or-false setting, false when not given.
fn flag(key: &str) -> Result<bool, ConnectorError> {
    match config::get(key).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("false") | Some("no") | Some("0") => Ok(false),
        Some("true") | Some("yes") | Some("1") => Ok(true),
        Some(other) => Err(ConnectorError::InvalidConfig(format!("{key} must be true or false, got {other:?}"))),
    }
}
