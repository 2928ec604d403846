//! JSON over the host's `http` import. The host attaches the bearer secret
//! (the connector never sees it), enforces the egress allow-list and limits;
//! this module builds URLs, encodes and parses JSON bodies, and maps HTTP
//! failures to the contract's typed errors so the host can retry a 429 and
//! report a 401 as what it is.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::tether::connector0_1_0::http::{self, HttpError, Request};
pub use crate::bindings::tether::connector0_1_0::http::{Method, Response};
use crate::types::{ConnectorError, Pair, RateLimit};

/// How long to wait after a 429 that carries no usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 60;

/// One upstream API: where it is, what it is called in error messages, its
/// media type, and the secret the host attaches as a bearer token.
#[derive(Debug, Clone)]
pub struct JsonClient {
    /// Named in error messages ("Asana", "SCIM server").
    pub service: String,
    /// Without a trailing `/`; request paths start with one.
    pub base_url: String,
    pub media_type: String,
    pub bearer_secret: Option<String>,
}

impl JsonClient {
    /// A client for `application/json` with the secret `token` as bearer.
    pub fn new(service: &str, base_url: &str) -> Self {
        JsonClient {
            service: service.into(),
            base_url: base_url.trim_end_matches('/').into(),
            media_type: "application/json".into(),
            bearer_secret: Some("token".into()),
        }
    }

    pub fn with_media_type(mut self, media_type: &str) -> Self {
        self.media_type = media_type.into();
        self
    }

    pub fn with_bearer_secret(mut self, secret: Option<&str>) -> Self {
        self.bearer_secret = secret.map(str::to_string);
        self
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ConnectorError> {
        self.send(Method::Get, path, query, None)
    }

    pub fn post(&self, path: &str, query: &[(&str, &str)], body: Value) -> Result<Value, ConnectorError> {
        self.send(Method::Post, path, query, Some(body))
    }

    pub fn patch(&self, path: &str, query: &[(&str, &str)], body: Value) -> Result<Value, ConnectorError> {
        self.send(Method::Patch, path, query, Some(body))
    }

    pub fn put(&self, path: &str, query: &[(&str, &str)], body: Value) -> Result<Value, ConnectorError> {
        self.send(Method::Put, path, query, Some(body))
    }

    pub fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ConnectorError> {
        self.send(Method::Delete, path, query, None)
    }

    /// The request as it would be sent (pure: no import is called).
    pub fn request(&self, method: Method, path: &str, query: &[(&str, &str)], body: Option<&Value>) -> Request {
        let mut headers = vec![Pair { name: "accept".into(), value: self.media_type.clone() }];
        if body.is_some() {
            headers.push(Pair { name: "content-type".into(), value: self.media_type.clone() });
        }
        Request {
            method,
            url: url(&self.base_url, path, query),
            headers,
            body: body.map(|b| b.to_string().into_bytes()),
            bearer_secret: self.bearer_secret.clone(),
        }
    }

    /// Sends one request; the answer's JSON, or null for an empty body (a
    /// 204). A non-2xx answer is a typed error.
    pub fn send(&self, method: Method, path: &str, query: &[(&str, &str)], body: Option<Value>) -> Result<Value, ConnectorError> {
        let response = self.exchange(method, path, query, body)?;
        self.answer(path, &response)
    }

    /// Sends one request and returns the answer whatever its status (only
    /// a transport failure is an error): for callers that act on a status.
    pub fn exchange(&self, method: Method, path: &str, query: &[(&str, &str)], body: Option<Value>) -> Result<Response, ConnectorError> {
        let request = self.request(method, path, query, body.as_ref());
        http::send(&request).map_err(|e| transport_error(&self.service, path, e))
    }

    /// GETs `path` and reads a 2xx answer straight into `T`, skipping the
    /// fields `T` does not name: a big listing's pages cost what the
    /// connector reads of them, not a `Value` of every field.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, ConnectorError> {
        let response = self.exchange(Method::Get, path, query, None)?;
        self.answer_as(path, &response)
    }

    /// A response read into `T`, or mapped to an error as [`Self::answer`]
    /// maps it (pure). A 2xx body that is not `T` is malformed.
    pub fn answer_as<T: DeserializeOwned>(&self, path: &str, response: &Response) -> Result<T, ConnectorError> {
        if !(200..300).contains(&response.status) {
            return Err(self.refusal(path, response));
        }
        serde_json::from_slice(&response.body).map_err(|e| malformed(&self.service, path, &format!("unexpected JSON: {e}")))
    }

    /// A non-2xx answer as its typed error. An error page that is not JSON
    /// (or none, a bare status): the status says enough.
    fn refusal(&self, path: &str, response: &Response) -> ConnectorError {
        let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        status_error(&self.service, path, response.status, &response.headers, &body)
    }

    /// A response read as JSON or mapped to an error (pure).
    pub fn answer(&self, path: &str, response: &Response) -> Result<Value, ConnectorError> {
        if !(200..300).contains(&response.status) {
            return Err(self.refusal(path, response));
        }
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body).map_err(|e| malformed(&self.service, path, &format!("invalid JSON: {e}")))
    }
}

/// `base + path`, with `query` form-encoded.
pub fn url(base: &str, path: &str, query: &[(&str, &str)]) -> String {
    let mut url = format!("{base}{path}");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
    }
    url
}

/// One path segment (an upstream ID) percent-encoded, so an ID cannot
/// reach another endpoint (`../`, `?`, `#`). An empty ID, `.` and `..`
/// are refused: no encoding keeps them in place (URL parsers take `%2E%2E`
/// for `..` too, and a write to `/workspaces/../addUser` went to
/// `/addUser`).
pub fn segment(id: &str) -> Result<String, ConnectorError> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(ConnectorError::InvalidArgument(format!("{id:?} is not an ID (it would not stay one path segment)")));
    }
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

pub fn malformed(service: &str, path: &str, what: &str) -> ConnectorError {
    ConnectorError::Upstream(format!("malformed response from {service} {path}: {what}"))
}

pub fn transport_error(service: &str, path: &str, error: HttpError) -> ConnectorError {
    match error {
        HttpError::Denied(why) => ConnectorError::Forbidden(format!("request to {path} refused by the host: {why}")),
        HttpError::Timeout(why) => ConnectorError::Upstream(format!("{service} {path} timed out: {why}")),
        // Not "cannot reach": the answer may have started and broken off.
        HttpError::Connect(why) => ConnectorError::Upstream(format!("request to {service} {path} failed: {why}")),
        HttpError::TooLarge(why) => ConnectorError::Upstream(format!("{service} {path} answer too large: {why}")),
        HttpError::InvalidRequest(why) => ConnectorError::InvalidConfig(format!("bad request to {path}: {why}")),
    }
}

/// The error an answer's status means. The detail comes from the body's
/// `errors[0].message` (Asana-style REST) or `detail` (SCIM, RFC 7644 §3.12).
pub fn status_error(service: &str, path: &str, status: u16, headers: &[Pair], body: &Value) -> ConnectorError {
    let detail =
        body.get("errors").and_then(|errors| errors.get(0)).and_then(|error| error.get("message")).or_else(|| body.get("detail")).and_then(Value::as_str);
    let message = match detail {
        Some(detail) => format!("{service} {path}: {detail} (HTTP {status})"),
        None => format!("{service} {path}: HTTP {status}"),
    };
    match status {
        401 => ConnectorError::Unauthorized(message),
        403 => ConnectorError::Forbidden(message),
        404 => ConnectorError::NotFound(message),
        429 => ConnectorError::RateLimited(RateLimit { retry_after_ms: retry_after_seconds(headers).saturating_mul(1000), message }),
        400 | 409 | 422 => ConnectorError::InvalidArgument(message),
        _ => ConnectorError::Upstream(message),
    }
}

/// `Retry-After` in seconds (the delay form; an HTTP date or garbage falls
/// back to [`DEFAULT_RETRY_AFTER_SECONDS`]).
pub fn retry_after_seconds(headers: &[Pair]) -> u64 {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case("retry-after")).and_then(|h| h.value.trim().parse::<u64>().ok()).unwrap_or(DEFAULT_RETRY_AFTER_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(status: u16, body: &str) -> Response {
        Response { status, headers: vec![], body: body.as_bytes().to_vec() }
    }

    #[test]
    fn requests_carry_the_media_type_and_the_secret_name() {
        let client = JsonClient::new("SCIM server", "http://h/scim/v2/").with_media_type("application/scim+json");
        let request = client.request(Method::Get, "/Users", &[("filter", "userName eq \"a b\""), ("count", "10")], None);
        assert_eq!(request.url, "http://h/scim/v2/Users?filter=userName+eq+%22a+b%22&count=10");
        assert_eq!(request.headers.len(), 1);
        assert_eq!(request.bearer_secret.as_deref(), Some("token"));
        let request = client.request(Method::Post, "/Users", &[], Some(&json!({"a": 1})));
        assert_eq!(request.headers[1].value, "application/scim+json");
        assert_eq!(request.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(JsonClient::new("x", "http://h").with_bearer_secret(None).request(Method::Get, "/", &[], None).bearer_secret.is_none());
    }

    #[test]
    fn answers_map_to_json_or_typed_errors() {
        let client = JsonClient::new("SCIM server", "http://h");
        assert_eq!(client.answer("/Users", &response(200, "{\"a\":1}")).unwrap(), json!({"a": 1}));
        assert_eq!(client.answer("/Users/1", &response(204, "")).unwrap(), Value::Null);
        assert!(
            matches!(client.answer("/Users", &response(200, "<html>")), Err(ConnectorError::Upstream(m)) if m.starts_with("malformed response from SCIM server /Users"))
        );
        let scim_error = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"404","detail":"User 'x' not found"}"#;
        assert!(
            matches!(client.answer("/Users/x", &response(404, scim_error)), Err(ConnectorError::NotFound(m)) if m == "SCIM server /Users/x: User 'x' not found (HTTP 404)")
        );
        assert!(matches!(client.answer("/a", &response(401, "nope")), Err(ConnectorError::Unauthorized(m)) if m == "SCIM server /a: HTTP 401"));
        assert!(
            matches!(client.answer("/a", &response(409, "{\"errors\":[{\"message\":\"taken\"}]}")), Err(ConnectorError::InvalidArgument(m)) if m.contains("taken"))
        );
        assert!(matches!(client.answer("/a", &response(503, "")), Err(ConnectorError::Upstream(_))));
        assert!(matches!(client.answer("/a", &response(403, "")), Err(ConnectorError::Forbidden(_))));
    }

    #[test]
    fn typed_answers_read_what_they_name_and_map_errors_alike() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Body {
            data: Vec<u32>,
        }
        let client = JsonClient::new("Asana", "http://h");
        let body: Body = client.answer_as("/x", &response(200, r#"{"data":[1,2],"next_page":{"offset":"a"}}"#)).unwrap();
        assert_eq!(body, Body { data: vec![1, 2] });
        assert!(matches!(client.answer_as::<Body>("/x", &response(200, r#"{"data":"no"}"#)),
            Err(ConnectorError::Upstream(m)) if m.starts_with("malformed response from Asana /x: unexpected JSON")));
        assert!(matches!(client.answer_as::<Body>("/x", &response(401, "nope")), Err(ConnectorError::Unauthorized(m)) if m == "Asana /x: HTTP 401"));
        assert!(
            matches!(client.answer_as::<Body>("/x", &response(404, r#"{"errors":[{"message":"gone"}]}"#)), Err(ConnectorError::NotFound(m)) if m.contains("gone"))
        );
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let headers = [Pair { name: "Retry-After".into(), value: " 7 ".into() }];
        assert!(matches!(status_error("s", "/p", 429, &headers, &Value::Null), ConnectorError::RateLimited(r) if r.retry_after_ms == 7000));
        let date = [Pair { name: "retry-after".into(), value: "Wed, 21 Oct 2015 07:28:00 GMT".into() }];
        assert_eq!(retry_after_seconds(&date), DEFAULT_RETRY_AFTER_SECONDS);
        assert_eq!(retry_after_seconds(&[]), DEFAULT_RETRY_AFTER_SECONDS);
    }

    #[test]
    fn segments_cannot_leave_their_endpoint() {
        assert_eq!(segment("2819c223-7f76-453a-919d-413861904646").unwrap(), "2819c223-7f76-453a-919d-413861904646");
        assert_eq!(segment("../Groups?x#y").unwrap(), "..%2FGroups%3Fx%23y");
        assert_eq!(segment("a b:é").unwrap(), "a%20b%3A%C3%A9");
        assert_eq!(segment("a..b").unwrap(), "a..b");
        for dots in ["", ".", ".."] {
            assert!(matches!(segment(dots), Err(ConnectorError::InvalidArgument(_))), "{dots:?}");
        }
    }
}
