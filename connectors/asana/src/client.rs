//! Asana's REST and SCIM APIs through the host's `http` import: URLs, the
//! `data` envelope, offset pagination and the mapping of HTTP failures to
//! typed connector errors.

use serde_json::Value;

use crate::settings::Settings;
use crate::tether::connector0_1_0::http::{self, HttpError, Method, Request};
use crate::tether::connector0_1_0::types::{ConnectorError, Pair, RateLimit};

/// Asana's largest page; fewer, bigger pages mean fewer requests.
pub const PAGE_SIZE: &str = "100";

pub struct Client {
    pub settings: Settings,
}

/// One page of a REST list endpoint.
pub struct ListPage {
    pub items: Vec<Value>,
    pub next_offset: Option<String>,
}

#[derive(Clone, Copy)]
enum Api {
    Rest,
    Scim,
}

impl Client {
    pub fn from_config() -> Result<Self, ConnectorError> {
        Ok(Client { settings: Settings::load()? })
    }

    /// GETs one page of a REST list endpoint with `limit=100` and `opt_fields`.
    pub fn list(&self, path: &str, params: &[(&str, &str)], opt_fields: &str, offset: Option<&str>) -> Result<ListPage, ConnectorError> {
        let mut query: Vec<(&str, &str)> = params.to_vec();
        query.push(("limit", PAGE_SIZE));
        query.push(("opt_fields", opt_fields));
        if let Some(offset) = offset {
            query.push(("offset", offset));
        }
        let body = self.call(Api::Rest, Method::Get, path, &query, None)?;
        let items = match body.get("data") {
            Some(Value::Array(items)) => items.clone(),
            _ => return Err(malformed(path, "no `data` list")),
        };
        let next_offset = body.get("next_page").and_then(|next| next.get("offset")).and_then(Value::as_str).map(str::to_string);
        Ok(ListPage { items, next_offset })
    }

    /// GETs one REST object (the answer's `data`).
    pub fn get(&self, path: &str, opt_fields: &str) -> Result<Value, ConnectorError> {
        let body = self.call(Api::Rest, Method::Get, path, &[("opt_fields", opt_fields)], None)?;
        body.get("data").filter(|d| d.is_object()).cloned().ok_or_else(|| malformed(path, "no `data` object"))
    }

    /// POSTs `{"data": data}` and returns the answer's `data` (null when the
    /// answer has no body).
    pub fn post(&self, path: &str, data: Value) -> Result<Value, ConnectorError> {
        let body = serde_json::json!({ "data": data });
        let answer = self.call(Api::Rest, Method::Post, path, &[], Some(body))?;
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }

    pub fn scim_get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ConnectorError> {
        self.call(Api::Scim, Method::Get, path, query, None)
    }

    pub fn scim_post(&self, path: &str, body: Value) -> Result<Value, ConnectorError> {
        self.call(Api::Scim, Method::Post, path, &[], Some(body))
    }

    /// SCIM PATCH; Asana answers 204 No Content (null here), other servers
    /// the updated user.
    pub fn scim_patch(&self, path: &str, body: Value) -> Result<Value, ConnectorError> {
        self.call(Api::Scim, Method::Patch, path, &[], Some(body))
    }

    fn call(&self, api: Api, method: Method, path: &str, query: &[(&str, &str)], body: Option<Value>) -> Result<Value, ConnectorError> {
        let (base, media_type) = match api {
            Api::Rest => (&self.settings.api_url, "application/json"),
            Api::Scim => (&self.settings.scim_url, "application/scim+json"),
        };
        let mut url = format!("{base}{path}");
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
        }
        let mut headers = vec![Pair { name: "accept".into(), value: media_type.into() }];
        if body.is_some() {
            headers.push(Pair { name: "content-type".into(), value: media_type.into() });
        }
        let request = Request { method, url, headers, body: body.map(|b| b.to_string().into_bytes()), bearer_secret: Some("token".into()) };
        let response = http::send(&request).map_err(|e| transport_error(path, e))?;
        let parsed: Value = if response.body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&response.body) {
                Ok(value) => value,
                Err(e) if (200..300).contains(&response.status) => return Err(malformed(path, &format!("invalid JSON: {e}"))),
                Err(_) => Value::Null,
            }
        };
        match response.status {
            200..=299 => Ok(parsed),
            status => Err(status_error(path, status, &response.headers, &parsed)),
        }
    }
}

pub fn malformed(path: &str, what: &str) -> ConnectorError {
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

/// Asana's REST errors are `{"errors": [{"message": ...}]}`; SCIM errors
/// `{"detail": ..., "status": ...}`.
fn status_error(path: &str, status: u16, headers: &[Pair], body: &Value) -> ConnectorError {
    let detail =
        body.get("errors").and_then(|errors| errors.get(0)).and_then(|error| error.get("message")).or_else(|| body.get("detail")).and_then(Value::as_str);
    let message = match detail {
        Some(detail) => format!("Asana {path}: {detail} (HTTP {status})"),
        None => format!("Asana {path}: HTTP {status}"),
    };
    match status {
        401 => ConnectorError::Unauthorized(message),
        403 => ConnectorError::Forbidden(message),
        404 => ConnectorError::NotFound(message),
        429 => {
            let seconds = headers.iter().find(|h| h.name.eq_ignore_ascii_case("retry-after")).and_then(|h| h.value.trim().parse::<u64>().ok()).unwrap_or(60);
            ConnectorError::RateLimited(RateLimit { retry_after_ms: seconds * 1000, message })
        }
        400 | 409 | 422 => ConnectorError::InvalidArgument(message),
        _ => ConnectorError::Upstream(message),
    }
}
