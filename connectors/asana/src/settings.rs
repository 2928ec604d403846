//! The connector's configuration, read through the host's `config` import
//! (the token is a secret: the host attaches it, we never read it).

use tether_guest::config;
use tether_guest::types::ConnectorError;

pub const DEFAULT_API_URL: &str = "https://app.asana.com/api/1.0";

pub struct Settings {
    pub api_url: String,
    pub scim_url: String,
    pub use_scim: bool,
    pub default_workspace: Option<String>,
}

impl Settings {
    pub fn load() -> Result<Self, ConnectorError> {
        let api_url = url_setting("asana-api-url", DEFAULT_API_URL.to_string())?;
        let scim_url = url_setting("scim-url", format!("{api_url}/scim"))?;
        let use_service_account = bool_setting("use-service-account")?;
        let use_scim = bool_setting("use-scim-api")?;
        if use_scim && !use_service_account {
            return Err(ConnectorError::InvalidConfig(
                "use-scim-api needs use-service-account=true: Asana's SCIM API is open only to service accounts (Enterprise)".into(),
            ));
        }
        let default_workspace = config::get("default-workspace-id").filter(|w| !w.is_empty());
        if let Some(workspace) = &default_workspace {
            if !workspace.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConnectorError::InvalidConfig(format!("default-workspace-id must be a workspace gid (digits), got {workspace:?}")));
            }
        }
        Ok(Settings { api_url, scim_url, use_scim, default_workspace })
    }

    pub fn require_scim(&self, what: &str) -> Result<(), ConnectorError> {
        if self.use_scim {
            Ok(())
        } else {
            Err(ConnectorError::Unsupported(format!("{what} goes through Asana's SCIM API: set use-service-account=true and use-scim-api=true")))
        }
    }
}

/// SCIM answers for the service account's one organization: with a token
/// that sees `organizations` of them, its licenses could not be told apart.
pub fn scim_serves_one_organization(organizations: usize) -> ConnectorError {
    ConnectorError::InvalidConfig(format!(
        "use-scim-api: the token sees {organizations} organizations, but Asana's SCIM API serves one (a service account belongs to one organization)"
    ))
}

fn url_setting(key: &str, default: String) -> Result<String, ConnectorError> {
    let url = config::get(key).unwrap_or(default);
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ConnectorError::InvalidConfig(format!("{key} must be an http(s) URL, got {url:?}")));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn bool_setting(key: &str) -> Result<bool, ConnectorError> {
    match config::get(key).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("false") | Some("no") | Some("0") => Ok(false),
        Some("true") | Some("yes") | Some("1") => Ok(true),
        Some(other) => Err(ConnectorError::InvalidConfig(format!("{key} must be true or false, got {other:?}"))),
    }
}
