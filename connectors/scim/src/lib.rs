//! A generic SCIM 2.0 connector (RFC 7643/7644), built as a wasm32-wasip2
//! component on the `tether-guest` SDK.
//!
//! It learns what the server supports from `/ServiceProviderConfig` (and
//! how it returns group members from `/Schemas`), lists users and groups,
//! reports each group's `member` entitlement and its grants, and writes
//! through PATCH (group membership, deactivation) and POST (new users).
//! Every write reads first and answers "no change" when there is nothing to do.

mod effects;
mod listing;
mod provision;
mod records;
mod server;
mod settings;

use tether_guest::contract::{AccountRequest, AccountResult, ConnectorMetadata, Page, Resource, WriteEffect, WriteRequest, WriteResult};
use tether_guest::page::reference;
use tether_guest::{ConnectorError, Guest, ResourceRef};

struct ScimConnector;

impl Guest for ScimConnector {
    fn metadata() -> ConnectorMetadata {
        records::metadata()
    }

    fn validate() -> Result<(), ConnectorError> {
        settings::Settings::load().map(|_| ())
    }

    fn list_resources(resource_type: String, _scope: Option<Resource>, page_token: Option<String>) -> Result<Page, ConnectorError> {
        listing::list_resources(&server::Server::connect()?, &resource_type, page_token.as_deref())
    }

    fn list_entitlements(resource: Resource, _page_token: Option<String>) -> Result<Page, ConnectorError> {
        listing::list_entitlements(&server::Server::connect()?, &reference(&resource))
    }

    fn list_grants(resource: Resource, page_token: Option<String>) -> Result<Page, ConnectorError> {
        listing::list_grants(&server::Server::connect()?, &reference(&resource), page_token.as_deref())
    }

    fn grant_entitlement(entitlement_id: String, principal: ResourceRef) -> Result<WriteResult, ConnectorError> {
        provision::add_member(&server::Server::connect()?, &entitlement_id, &principal)
    }

    fn revoke_grant(grant_id: String) -> Result<WriteResult, ConnectorError> {
        provision::remove_member(&server::Server::connect()?, &grant_id)
    }

    fn create_account(request: AccountRequest) -> Result<AccountResult, ConnectorError> {
        provision::create_user(&server::Server::connect()?, &request)
    }

    fn disable_account(account: ResourceRef) -> Result<WriteResult, ConnectorError> {
        provision::deactivate(&server::Server::connect()?, &account)
    }

    fn test_connection() -> Result<String, ConnectorError> {
        let server = server::Server::connect()?;
        let features = server.features()?;
        Ok(format!("connected to the SCIM server at {} ({})", server.settings.base_url, features.describe()))
    }

    fn check_write(request: WriteRequest) -> Result<WriteEffect, ConnectorError> {
        effects::check_write(&settings::Settings::load()?, &request)
    }
}

tether_guest::export!(ScimConnector);
