//! A SCIM 2.0 client (RFC 7643 resources, RFC 7644 protocol) over
//! [`JsonClient`]: what the server supports (`/ServiceProviderConfig`),
//! list with `startIndex`/`count` and filters, get, create, and PATCH with
//! add/remove/replace operations, whether the server answers PATCH with
//! 200 and the resource or with 204 and nothing.

use serde_json::{json, Value};

use crate::http::{segment, JsonClient, Method};
use crate::json;
use crate::paging;
use crate::types::ConnectorError;

pub const MEDIA_TYPE: &str = "application/scim+json";
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// What a server answers a PATCH form it does not implement.
const NOT_IMPLEMENTED: u16 = 501;

/// What a server says it supports (RFC 7643 §5). A server that does not
/// say is taken at the RFC's word: filter and patch are optional features,
/// so they are off unless announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProviderConfig {
    pub patch: bool,
    pub filter: bool,
    /// The most resources a filtered or listed answer holds (`filter.maxResults`).
    pub max_results: Option<u64>,
    pub bulk: bool,
    pub sort: bool,
    pub etag: bool,
}

impl ServiceProviderConfig {
    pub fn parse(body: &Value) -> Self {
        let supported = |feature: &str| body.get(feature).and_then(|f| json::flag(f, "supported")).unwrap_or(false);
        let max_results = body.get("filter").and_then(|f| json::number(f, "maxResults")).filter(|n| *n > 0);
        ServiceProviderConfig {
            patch: supported("patch"),
            filter: supported("filter"),
            max_results,
            bulk: supported("bulk"),
            sort: supported("sort"),
            etag: supported("etag"),
        }
    }

    /// The page size to ask for: `wanted`, capped by the server's limit.
    pub fn page_size(&self, wanted: u64) -> u64 {
        self.max_results.map_or(wanted, |max| wanted.min(max)).max(1)
    }
}

/// The query of a list request; unset parts are not sent.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<'a> {
    pub start_index: Option<u64>,
    pub count: Option<u64>,
    pub filter: Option<&'a str>,
    pub attributes: Option<&'a str>,
    pub excluded_attributes: Option<&'a str>,
}

impl ListQuery<'_> {
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![];
        if let Some(start) = self.start_index {
            params.push(("startIndex", start.to_string()));
        }
        if let Some(count) = self.count {
            params.push(("count", count.to_string()));
        }
        if let Some(filter) = self.filter {
            params.push(("filter", filter.to_string()));
        }
        if let Some(attributes) = self.attributes {
            params.push(("attributes", attributes.to_string()));
        }
        if let Some(excluded) = self.excluded_attributes {
            params.push(("excludedAttributes", excluded.to_string()));
        }
        params
    }
}

/// A ListResponse (RFC 7644 §3.4.2).
#[derive(Debug, Clone)]
pub struct ListResponse {
    pub resources: Vec<Value>,
    pub total_results: Option<u64>,
    /// The `startIndex` the server says it answered.
    pub start_index: Option<u64>,
}

impl ListResponse {
    /// A ListResponse; `Resources` may be absent when there are none (the
    /// RFC allows it for `totalResults: 0`).
    pub fn parse(body: &Value) -> Result<Self, String> {
        if !body.is_object() {
            return Err("not a ListResponse object".into());
        }
        let resources = match body.get("Resources") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err("`Resources` is not a list".into()),
        };
        Ok(ListResponse { resources, total_results: json::number(body, "totalResults"), start_index: json::number(body, "startIndex") })
    }

    /// The next `startIndex` after this page, which started at `start`; an `upstream` error when the answer contradicts
    /// itself (see [`paging::next_start_index`]).
    pub fn next_start(&self, start: u64) -> Result<Option<u64>, ConnectorError> {
        paging::next_start_index(start, self.resources.len() as u64, self.total_results, self.start_index)
            .map_err(|why| ConnectorError::Upstream(format!("SCIM paging: {why}")))
    }
}

/// A SCIM page token: the `startIndex` to ask for and a mark of the page
/// before it (its first id, hashed), written `START` or `START.MARK`. A
/// server that ignores `startIndex` and says nothing of it (no
/// `startIndex`, no `totalResults` in its answer) gives the same page
/// again: caught on the second page, where it was read until the page cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartToken {
    pub start: u64,
    previous_first: Option<u64>,
}

impl StartToken {
    /// The token the host handed back (the first page's when none).
    pub fn parse(token: Option<&str>) -> Result<Self, ConnectorError> {
        let Some(token) = token else { return Ok(StartToken { start: 1, previous_first: None }) };
        let (start, mark) = match token.split_once('.') {
            Some((start, mark)) => (start, Some(mark)),
            None => (token, None),
        };
        let bad = || ConnectorError::InvalidArgument(format!("bad SCIM page token {token:?}"));
        let previous_first = mark.map(|m| u64::from_str_radix(m, 16).map_err(|_| bad())).transpose()?;
        Ok(StartToken { start: paging::number_token(Some(start), 1, "SCIM").map_err(|_| bad())?, previous_first })
    }

    /// The token of the page after `list` (this token's page), if any; an
    /// `upstream` error when `list` is the page before it again.
    pub fn next(&self, list: &ListResponse) -> Result<Option<String>, ConnectorError> {
        let first = list.resources.first().and_then(|r| json::text(r, "id")).map(mark_of);
        if first.is_some() && first == self.previous_first {
            return Err(ConnectorError::Upstream(format!(
                "SCIM paging: asked for startIndex {}, the server answered the page before it again: it does not page as SCIM does",
                self.start
            )));
        }
        Ok(list.next_start(self.start)?.map(|next| match first {
            Some(mark) => format!("{next}.{mark:x}"),
            None => next.to_string(),
        }))
    }
}

/// A page's mark: its first id, hashed (the same in every build of one
/// Rust release; a resume across releases at worst misses one repeat).
fn mark_of(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// `attribute eq "value"`, the value escaped as a JSON string (RFC 7644
/// §3.4.2.2: compValue is a JSON literal), so it cannot end the filter.
pub fn filter_eq(attribute: &str, value: &str) -> String {
    format!("{attribute} eq {}", Value::String(value.to_string()))
}

pub fn op_add(path: &str, value: Value) -> Value {
    json!({ "op": "add", "path": path, "value": value })
}

pub fn op_remove(path: &str) -> Value {
    json!({ "op": "remove", "path": path })
}

pub fn op_replace(path: &str, value: Value) -> Value {
    json!({ "op": "replace", "path": path, "value": value })
}

/// A PatchOp message.
pub fn patch_body(operations: Vec<Value>) -> Value {
    json!({ "schemas": [PATCH_SCHEMA], "Operations": operations })
}

/// The path that selects one member of a group: `members[value eq "ID"]`.
pub fn member_path(id: &str) -> String {
    format!("members[{}]", filter_eq("value", id))
}

/// A resource's `id`, required and non-empty.
pub fn resource_id(resource: &Value) -> Option<&str> {
    json::non_empty(resource, "id")
}

/// A SCIM server's endpoints. Endpoints are `/Users`, `/Groups` (any
/// resource type's endpoint works).
#[derive(Debug, Clone)]
pub struct ScimClient {
    pub http: JsonClient,
}

impl ScimClient {
    /// `base_url` is the SCIM root (`base_url + "/Users"` is the Users endpoint).
    pub fn new(service: &str, base_url: &str) -> Self {
        ScimClient { http: JsonClient::new(service, base_url).with_media_type(MEDIA_TYPE) }
    }

    pub fn service_provider_config(&self) -> Result<ServiceProviderConfig, ConnectorError> {
        let body = self.http.get("/ServiceProviderConfig", &[])?;
        if !body.is_object() {
            return Err(self.malformed("/ServiceProviderConfig", "not an object"));
        }
        Ok(ServiceProviderConfig::parse(&body))
    }

    /// One page of `endpoint`.
    pub fn list(&self, endpoint: &str, query: &ListQuery) -> Result<ListResponse, ConnectorError> {
        let params = query.params();
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = self.http.get(endpoint, &pairs)?;
        ListResponse::parse(&body).map_err(|why| self.malformed(endpoint, &why))
    }

    /// The first resource matching `filter`, if any.
    pub fn find(&self, endpoint: &str, filter: &str) -> Result<Option<Value>, ConnectorError> {
        let page = self.list(endpoint, &ListQuery { filter: Some(filter), ..ListQuery::default() })?;
        Ok(page.resources.into_iter().next())
    }

    /// One resource; `attributes` narrows the answer when given.
    pub fn get(&self, endpoint: &str, id: &str, attributes: Option<&str>) -> Result<Value, ConnectorError> {
        let path = self.resource_path(endpoint, id)?;
        let query: Vec<(&str, &str)> = attributes.map(|a| ("attributes", a)).into_iter().collect();
        let body = self.http.get(&path, &query)?;
        if !body.is_object() {
            return Err(self.malformed(&path, "not a resource object"));
        }
        Ok(body)
    }

    /// POSTs a new resource: the server's copy (with its `id`), or none
    /// when it answers 204 No Content (as the host answers a dry run's
    /// writes).
    pub fn create(&self, endpoint: &str, resource: Value) -> Result<Option<Value>, ConnectorError> {
        let response = self.http.exchange(Method::Post, endpoint, &[], Some(resource))?;
        let body = self.http.answer(endpoint, &response)?;
        match body {
            Value::Object(_) => Ok(Some(body)),
            // No content: how the host answers a write under --dry-run.
            _ if response.status == 204 => Ok(None),
            // RFC 7644 §3.3: a 201 carries the new resource. Without it the
            // resource may well exist: an error, never "would create".
            _ => Err(ConnectorError::Upstream(format!(
                "{endpoint}: the server answered {} without the new resource; it may have been created (look it up before trying again)",
                response.status
            ))),
        }
    }

    /// PATCHes one resource: the resource when the server answers 200 with
    /// it, none when it answers 204 (both are RFC 7644 §3.5.2).
    pub fn patch(&self, endpoint: &str, id: &str, operations: Vec<Value>) -> Result<Option<Value>, ConnectorError> {
        let path = self.resource_path(endpoint, id)?;
        let body = self.http.patch(&path, &[], patch_body(operations))?;
        Ok(body.is_object().then_some(body))
    }

    /// Removes one member from a group with RFC 7644's
    /// `members[value eq "ID"]` path; the group when the server answers 200
    /// with it. A server that answers that with 501 Not Implemented
    /// (django-scim2 does) is sent the form many servers take instead,
    /// `path: members` with the member in `value`, only if `by_value` says
    /// the operator knows it takes it: on a server that implements the RFC
    /// that form removes every member. Otherwise the 501 is an
    /// `unsupported` error.
    pub fn remove_member(&self, group_id: &str, member_id: &str, by_value: bool) -> Result<Option<Value>, ConnectorError> {
        let path = self.resource_path("/Groups", group_id)?;
        let by_filter = patch_body(vec![op_remove(&member_path(member_id))]);
        let response = self.http.exchange(Method::Patch, &path, &[], Some(by_filter))?;
        let body = if response.status != NOT_IMPLEMENTED {
            self.http.answer(&path, &response)?
        } else if by_value {
            let by_value = patch_body(vec![json!({ "op": "remove", "path": "members", "value": [{ "value": member_id }] })]);
            self.http.patch(&path, &[], by_value)?
        } else {
            return Err(ConnectorError::Unsupported(
                "the server does not implement removing one member by path filter (PATCH answered 501); the form it may take instead (path members, the member in value) removes every member on a server that follows RFC 7644"
                    .into(),
            ));
        };
        Ok(body.is_object().then_some(body))
    }

    /// `endpoint/ID`, the ID as one path segment.
    pub fn resource_path(&self, endpoint: &str, id: &str) -> Result<String, ConnectorError> {
        if id.is_empty() {
            return Err(ConnectorError::InvalidArgument(format!("an empty {} id", endpoint.trim_start_matches('/'))));
        }
        Ok(format!("{endpoint}/{}", segment(id)?))
    }

    fn malformed(&self, path: &str, what: &str) -> ConnectorError {
        crate::http::malformed(&self.http.service, path, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_answered_again_for_the_next_start_index_is_caught() {
        let page = |ids: &[&str]| ListResponse { resources: ids.iter().map(|id| json!({"id": id})).collect(), total_results: None, start_index: None };
        let first = StartToken::parse(None).unwrap();
        let next = first.next(&page(&["a", "b"])).unwrap().expect("a next page");
        assert!(next.starts_with("3."), "{next}");
        let second = StartToken::parse(Some(&next)).unwrap();
        assert_eq!(second.start, 3);
        let err = second.next(&page(&["a", "b"])).unwrap_err();
        assert!(matches!(&err, ConnectorError::Upstream(m) if m.contains("answered the page before it again")), "{err:?}");
        assert_eq!(second.next(&page(&["c"])).unwrap().as_deref().map(|t| t.starts_with("4.")), Some(true));
        assert_eq!(second.next(&page(&[])).unwrap(), None);
        // Tokens of before (a number alone) still read; garbage does not.
        assert_eq!(StartToken::parse(Some("101")).unwrap().start, 101);
        assert!(StartToken::parse(Some("5.zz")).is_err());
        assert!(StartToken::parse(Some("x")).is_err());
    }

    #[test]
    fn service_provider_config_reads_features_and_limits() {
        let body = json!({
            "patch": {"supported": true}, "bulk": {"supported": false, "maxOperations": 0},
            "filter": {"supported": true, "maxResults": 50}, "sort": {"supported": "true"}, "etag": {}
        });
        let spc = ServiceProviderConfig::parse(&body);
        assert_eq!(spc, ServiceProviderConfig { patch: true, filter: true, max_results: Some(50), bulk: false, sort: true, etag: false });
        assert_eq!(spc.page_size(100), 50);
        assert_eq!(spc.page_size(10), 10);
        let silent = ServiceProviderConfig::parse(&json!({"filter": {"supported": true, "maxResults": 0}}));
        assert!(!silent.patch && silent.filter && silent.max_results.is_none());
        assert_eq!(silent.page_size(100), 100);
    }

    #[test]
    fn list_queries_send_only_what_is_set() {
        assert!(ListQuery::default().params().is_empty());
        let q = ListQuery { start_index: Some(1), count: Some(100), excluded_attributes: Some("members"), ..ListQuery::default() };
        assert_eq!(q.params(), vec![("startIndex", "1".into()), ("count", "100".into()), ("excludedAttributes", "members".into())]);
    }

    #[test]
    fn list_responses() {
        let page = ListResponse::parse(&json!({"totalResults": 3, "Resources": [{"id": "a"}, {"id": "b"}]})).unwrap();
        assert_eq!(page.next_start(1).unwrap(), Some(3));
        let last = ListResponse::parse(&json!({"totalResults": 3, "Resources": [{"id": "c"}]})).unwrap();
        assert_eq!(last.next_start(3).unwrap(), None);
        let none = ListResponse::parse(&json!({"totalResults": 0})).unwrap();
        assert!(none.resources.is_empty());
        assert!(ListResponse::parse(&json!({"Resources": {}})).is_err());
        assert!(ListResponse::parse(&json!([])).is_err());
    }

    #[test]
    fn filters_and_paths_escape_their_values() {
        assert_eq!(filter_eq("userName", "bjensen"), "userName eq \"bjensen\"");
        assert_eq!(filter_eq("userName", "a\"b\\c"), "userName eq \"a\\\"b\\\\c\"");
        assert_eq!(member_path("2819c223"), "members[value eq \"2819c223\"]");
        let body = patch_body(vec![op_add("members", json!([{"value": "u"}])), op_remove(&member_path("v")), op_replace("active", json!(false))]);
        assert_eq!(body["schemas"][0], PATCH_SCHEMA);
        assert_eq!(body["Operations"].as_array().unwrap().len(), 3);
        assert_eq!(body["Operations"][1]["op"], "remove");
        let client = ScimClient::new("SCIM server", "http://h/v2");
        assert_eq!(client.resource_path("/Users", "a/b").unwrap(), "/Users/a%2Fb");
        assert!(client.resource_path("/Users", "").is_err());
    }
}
