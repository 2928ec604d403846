//! Asana's REST and SCIM APIs through the SDK's clients over the host's
//! `http` import: the REST `data` envelope and offset pagination here; the
//! URLs, JSON bodies and the mapping of HTTP failures to typed connector
//! errors are the SDK's.

use serde_json::Value;
use tether_guest::http::JsonClient;
use tether_guest::scim::ScimClient;
use tether_guest::ConnectorError;

use crate::settings::Settings;

/// Asana's largest page; fewer, bigger pages mean fewer requests.
pub const PAGE_SIZE: &str = "100";

/// Named in error messages.
const SERVICE: &str = "Asana";

pub struct Client {
    pub settings: Settings,
    rest: JsonClient,
    pub scim: ScimClient,
}

/// One page of a REST list endpoint.
pub struct ListPage {
    pub items: Vec<Value>,
    pub next_offset: Option<String>,
}

impl Client {
    pub fn from_config() -> Result<Self, ConnectorError> {
        let settings = Settings::load()?;
        let rest = JsonClient::new(SERVICE, &settings.api_url);
        let scim = ScimClient::new(SERVICE, &settings.scim_url);
        Ok(Client { settings, rest, scim })
    }

    /// GETs one page of a REST list endpoint with `limit=100` and `opt_fields`.
    pub fn list(&self, path: &str, params: &[(&str, &str)], opt_fields: &str, offset: Option<&str>) -> Result<ListPage, ConnectorError> {
        let mut query: Vec<(&str, &str)> = params.to_vec();
        query.push(("limit", PAGE_SIZE));
        query.push(("opt_fields", opt_fields));
        if let Some(offset) = offset {
            query.push(("offset", offset));
        }
        let mut body = self.rest.get(path, &query)?;
        // Taken out, not cloned: a page of 100 members is thousands of values.
        let items = match body.get_mut("data").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => return Err(malformed(path, "no `data` list")),
        };
        let next_offset = body.get("next_page").and_then(|next| next.get("offset")).and_then(Value::as_str).map(str::to_string);
        Ok(ListPage { items, next_offset })
    }

    /// GETs one REST object (the answer's `data`).
    pub fn get(&self, path: &str, opt_fields: &str) -> Result<Value, ConnectorError> {
        let body = self.rest.get(path, &[("opt_fields", opt_fields)])?;
        body.get("data").filter(|d| d.is_object()).cloned().ok_or_else(|| malformed(path, "no `data` object"))
    }

    /// POSTs `{"data": data}` and returns the answer's `data` (null when the
    /// answer has no body).
    pub fn post(&self, path: &str, data: Value) -> Result<Value, ConnectorError> {
        let answer = self.rest.post(path, &[], serde_json::json!({ "data": data }))?;
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }
}

pub fn malformed(path: &str, what: &str) -> ConnectorError {
    tether_guest::http::malformed(SERVICE, path, what)
}
