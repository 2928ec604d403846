//! Asana's REST and SCIM APIs through the SDK's clients over the host's
//! `http` import: the REST `data` envelope and offset pagination here; the
//! URLs, JSON bodies and the mapping of HTTP failures to typed connector
//! errors are the SDK's.

use serde::de::DeserializeOwned;
use serde::Deserialize;
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

/// One page of a REST list endpoint, its items read as `T` (a `Value`, or
/// a typed record such as `records::Membership` for the big listings).
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub next_offset: Option<String>,
}

/// A REST list answer: `{"data": [...], "next_page": {"offset": ...}}`.
#[derive(Deserialize)]
struct ListBody<T> {
    data: Option<Vec<T>>,
    #[serde(default)]
    next_page: Value,
}

impl Client {
    pub fn from_config() -> Result<Self, ConnectorError> {
        let settings = Settings::load()?;
        let rest = JsonClient::new(SERVICE, &settings.api_url);
        let scim = ScimClient::new(SERVICE, &settings.scim_url);
        Ok(Client { settings, rest, scim })
    }

    /// GETs one page of a REST list endpoint with `limit=100` and `opt_fields`.
    pub fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, &str)],
        opt_fields: &str,
        offset: Option<&str>,
    ) -> Result<ListPage<T>, ConnectorError> {
        let mut query: Vec<(&str, &str)> = params.to_vec();
        query.push(("limit", PAGE_SIZE));
        query.push(("opt_fields", opt_fields));
        if let Some(offset) = offset {
            query.push(("offset", offset));
        }
        let body: ListBody<T> = self.rest.get_as(path, &query)?;
        let items = body.data.ok_or_else(|| malformed(path, "no `data` list"))?;
        let next_offset = body.next_page.get("offset").and_then(Value::as_str).map(str::to_string);
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
