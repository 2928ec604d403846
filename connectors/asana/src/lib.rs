//! The Asana connector, built as a wasm32-wasip2 component.
//!
//! It reaches Asana only through the host's `http` import (which attaches the
//! token), and answers the host's paged list calls one upstream request at a
//! time: every list call is at most one Asana request. It targets
//! `tether:connector@0.5.0` through the `tether-guest` SDK (bindings, HTTP
//! client, SCIM client, IDs): it declares Asana's limits (1,500 requests a
//! minute, 50 concurrent reads, 15 concurrent writes) and that users list
//! neither entitlements nor grants, reports team memberships and licenses
//! as grant sets (a string per grant), reads what it needs of a listing's
//! resource from the attributes it reported (a workspace's
//! `is_organization`), and says before each write what the write would do
//! and whether Asana could undo it (`effects`).

mod client;
mod effects;
mod ids;
mod listing;
mod provision;
mod records;
mod scim;
mod settings;

use client::Client;
use tether_guest::contract::{AccountRequest, AccountResult, ConnectorMetadata, Page, Resource, WriteEffect, WriteRequest, WriteResult};
use tether_guest::page::reference;
use tether_guest::{ConnectorError, Guest, ResourceRef};

struct AsanaConnector;

impl Guest for AsanaConnector {
    fn metadata() -> ConnectorMetadata {
        records::metadata()
    }

    fn validate() -> Result<(), ConnectorError> {
        // Config only: a bad token shows up on the first request, and a sync
        // must not spend a request on a check it gets for free.
        settings::Settings::load().map(|_| ())
    }

    fn list_resources(resource_type: String, scope: Option<Resource>, page_token: Option<String>) -> Result<Page, ConnectorError> {
        let scope = scope.as_ref().map(reference);
        listing::list_resources(&Client::from_config()?, &resource_type, scope.as_ref(), page_token.as_deref())
    }

    fn list_entitlements(resource: Resource, _page_token: Option<String>) -> Result<Page, ConnectorError> {
        listing::list_entitlements(&Client::from_config()?, &reference(&resource))
    }

    fn list_grants(resource: Resource, page_token: Option<String>) -> Result<Page, ConnectorError> {
        listing::list_grants(&Client::from_config()?, &resource, page_token.as_deref())
    }

    fn grant_entitlement(entitlement_id: String, principal: ResourceRef) -> Result<WriteResult, ConnectorError> {
        provision::grant_entitlement(&Client::from_config()?, &entitlement_id, &principal)
    }

    fn revoke_grant(grant_id: String) -> Result<WriteResult, ConnectorError> {
        provision::revoke_grant(&Client::from_config()?, &grant_id)
    }

    fn create_account(request: AccountRequest) -> Result<AccountResult, ConnectorError> {
        provision::create_account(&Client::from_config()?, &request)
    }

    fn disable_account(account: ResourceRef) -> Result<WriteResult, ConnectorError> {
        provision::disable_account(&Client::from_config()?, &account)
    }

    fn test_connection() -> Result<String, ConnectorError> {
        let client = Client::from_config()?;
        let me = client.get("/users/me", "name,email")?;
        let name = records::text(&me, "name").unwrap_or("?");
        let email = records::text(&me, "email").unwrap_or("?");
        Ok(format!("connected to Asana as {name} <{email}>"))
    }

    fn check_write(request: WriteRequest) -> Result<WriteEffect, ConnectorError> {
        effects::check_write(&request)
    }
}

tether_guest::export!(AsanaConnector);
