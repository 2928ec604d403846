//! The Asana connector, built as a wasm32-wasip2 component.
//!
//! It reaches Asana only through the host's `http` import (which attaches the
//! token), and answers the host's paged list calls one upstream request at a
//! time: every list call is at most one Asana request.

mod client;
mod ids;
mod model;

wit_bindgen::generate!({
    path: "../wit/v0.1.0",
    world: "connector-world",
});

use exports::tether::connector::connector::{
    AccountRequest, Guest, ConnectorMetadata, Page, Resource, WriteResult,
};
use tether::connector::types::{ConnectorError, ResourceRef};

struct AsanaConnector;

impl Guest for AsanaConnector {
    fn metadata() -> ConnectorMetadata {
        model::metadata()
    }

    fn validate() -> Result<(), ConnectorError> {
        // Config only: a bad token shows up on the first request, and the
        // sync must not spend a request on a check it gets for free.
        client::Client::from_config().map(|_| ())
    }

    fn list_resources(
        resource_type: String,
        scope: Option<ResourceRef>,
        page_token: Option<String>,
    ) -> Result<Page, ConnectorError> {
        let client = client::Client::from_config()?;
        model::list_resources(&client, &resource_type, scope.as_ref(), page_token.as_deref())
    }

    fn list_entitlements(resource: ResourceRef, _page_token: Option<String>) -> Result<Page, ConnectorError> {
        model::list_entitlements(&resource)
    }

    fn list_grants(resource: ResourceRef, page_token: Option<String>) -> Result<Page, ConnectorError> {
        let client = client::Client::from_config()?;
        model::list_grants(&client, &resource, page_token.as_deref())
    }

    fn grant_entitlement(entitlement_id: String, principal: ResourceRef) -> Result<WriteResult, ConnectorError> {
        let client = client::Client::from_config()?;
        model::grant(&client, &entitlement_id, &principal)
    }

    fn revoke_grant(grant_id: String) -> Result<WriteResult, ConnectorError> {
        let client = client::Client::from_config()?;
        model::revoke(&client, &grant_id)
    }

    fn create_account(request: AccountRequest) -> Result<Resource, ConnectorError> {
        let client = client::Client::from_config()?;
        model::create_account(&client, &request)
    }

    fn disable_account(account: ResourceRef) -> Result<WriteResult, ConnectorError> {
        let _ = account;
        Err(ConnectorError::Unsupported(
            "disabling an account needs the SCIM API (use-scim-api)".into(),
        ))
    }
}

export!(AsanaConnector);
