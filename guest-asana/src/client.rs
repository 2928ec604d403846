//! Asana's REST API through the host's `http` import: URLs, the `data`
//! envelope, offset pagination and the mapping of HTTP failures to typed
//! connector errors.

use serde_json::Value;

use crate::tether::connector::config;
use crate::tether::connector::http::{self, HttpError, Method, Request};
use crate::tether::connector::types::{ConnectorError, Pair, RateLimit};

pub const DEFAULT_API_URL: &str = "https://app.asana.com/api/1.0";
/// Asana's largest page; fewer, bigger pages mean fewer requests.
pub const PAGE_SIZE: &str = "100";

pub struct Client {
    base_url: String,
}

/// One page of a list endpoint.
pub struct ListPage {
    pub items: Vec<Value>,
    pub next_offset: Option<String>,
}

impl Client {
    pub fn from_config() -> Result<Self, ConnectorError> {
        let base_url = config::get("asana-api-url").unwrap_or_else(|| DEFAULT_API_URL.to_string());
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ConnectorError::InvalidConfig(format!(
                "asana-api-url must be an http(s) URL, got {base_url:?}"
            )));
        }
        Ok(Client { base_url: base_url.trim_end_matches('/').to_string() })
    }

    /// GETs one page of a list endpoint with `limit=100` and `opt_fields`.
    pub fn list(&self, path: &str, params: &[(&str, &str)], opt_fields: &str, offset: Option<&str>) -> Result<ListPage, ConnectorError> {
        let mut query: Vec<(&str, &str)> = params.to_vec();
        query.push(("limit", PAGE_SIZE));
        query.push(("opt_fields", opt_fields));
        if let Some(offset) = offset {
            query.push(("offset", offset));
        }
        let body = self.call(Method::Get, path, &query, None)?;
        let items = match body.get("data") {
            Some(Value::Array(items)) => items.clone(),
            _ => return Err(malformed(path, "no `data` list")),
        };
        let next_offset = body
            .get("next_page")
            .and_then(|next| next.get("offset"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(ListPage { items, next_offset })
    }

    /// POSTs `{"data": data}` and returns the answer's `data` (null when the
    /// answer has no body).
    pub fn post(&self, path: &str, data: Value) -> Result<Value, ConnectorError> {
        let body = serde_json::json!({ "data": data });
        let answer = self.call(Method::Post, path, &[], Some(body.to_string().into_bytes()))?;
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }

    fn call(&self, method: Method, path: &str, query: &[(&str, &str)], body: Option<Vec<u8>>) -> Result<Value, ConnectorError> {
        let mut url = format!("{}{}", self.base_url, path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
        }
        let mut headers = vec![Pair { name: "accept".into(), value: "application/json".into() }];
        if body.is_some() {
            headers.push(Pair { name: "content-type".into(), value: "application/json".into() });
        }
        let request = Request { method, url, headers, body, bearer_secret: Some("token".into()) };
        let response = http::send(&request).map_err(|e| transport_error(path, e))?;
        let parsed: Value = if response.body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&response.body) {
                Ok(value) => value,
                Err(e) if (200..300).contains(&response.status) => {
                    return Err(malformed(path, &format!("invalid JSON: {e}")))
                }
                Err(_) => Value::Null,
            }
        };
        match response.status {
            200..=299 => Ok(parsed),
            status => Err(status_error(path, status, &response.headers, &parsed)),
        }
    }
}

fn malformed(path: &str, what: &str) -> ConnectorError {
    ConnectorError::Upstream(format!("malformed response from Asana {path}: {what}"))
}

fn transport_error(path: &str, error: HttpError) -> ConnectorError {
    match error {
        HttpError::Denied(why) => ConnectorError::Forbidden(format!("request to {path} refused by the host: {why}")),
        HttpError::Timeout(why) => ConnectorError::Upstream(format!("Asana {path} timed out: {why}")),
        HttpError::Connect(why) => ConnectorError::Upstream(format!("cannot reach Asana ({path}): {why}")),
        HttpError::TooLarge(why) => ConnectorError::Upstream(format!("Asana {path} answer too large: {why}")),
        HttpError::InvalidRequest(why) => ConnectorError::InvalidConfig(format!("bad request to {path}: {why}")),
    }
}

/// Asana reports errors as `{"errors": [{"message": ...}]}`.
fn status_error(path: &str, status: u16, headers: &[Pair], body: &Value) -> ConnectorError {
    let message = body
        .get("errors")
        .and_then(|errors| errors.get(0))
        .and_then(|error| error.get("message"))
        .and_then(Value::as_str)
        .map(|m| format!("Asana {path}: {m} (HTTP {status})"))
        .unwrap_or_else(|| format!("Asana {path}: HTTP {status}"));
    match status {
        401 => ConnectorError::Unauthorized(message),
        403 => ConnectorError::Forbidden(message),
        404 => ConnectorError::NotFound(message),
        429 => {
            let seconds = headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                .and_then(|h| h.value.trim().parse::<u64>().ok())
                .unwrap_or(60);
            ConnectorError::RateLimited(RateLimit { retry_after_ms: seconds * 1000, message })
        }
        400 | 422 => ConnectorError::InvalidArgument(message),
        _ => ConnectorError::Upstream(message),
    }
}
