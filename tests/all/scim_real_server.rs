//! The connector's SCIM client against a real SCIM 2.0 server (scim2-server
//! from PyPI): create, filter, PATCH answered 204, deactivation, paging.

use crate::support::scim2::Scim2Server;
use crate::support::*;
use tether_host::runtime::bindings::{guest, ResourceRef};
use tether_host::runtime::imports::config::ConnectorConfig;
use tether_host::runtime::imports::http::AllowedHost;
use tether_host::runtime::instance::ConnectorInstance;

async fn connector_for(server: &Scim2Server) -> ConnectorInstance {
    // Asana's REST API says which organization the service account's SCIM
    // API serves (a license write must name it): a stub that knows ORG.
    let rest = serve_stub(axum::Router::new().route(
        "/api/1.0/workspaces",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"data": [{"gid": ORG, "name": "Org", "is_organization": true}]})) }),
    ))
    .await;
    let mut grants = permissions_for("http://127.0.0.1:9/api/1.0", server.addr(), "any-token");
    grants.config = ConnectorConfig::new([
        ("use-service-account".to_string(), "true".to_string()),
        ("use-scim-api".to_string(), "true".to_string()),
        ("scim-url".to_string(), server.base_url()),
        ("asana-api-url".to_string(), format!("http://{rest}/api/1.0")),
    ]);
    grants.extra_hosts = vec![AllowedHost::parse(&server.addr().to_string()).unwrap(), AllowedHost::parse(&rest.to_string()).unwrap()];
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    ConnectorInstance::start(&engine, &module, &grants).await.unwrap()
}

/// The organization the licenses belong to (any gid: the SCIM server has none).
const ORG: &str = "1200000000000001";

fn changed(result: &guest::WriteResult) -> bool {
    matches!(result.outcome, guest::Outcome::Changed)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scim_client_works_against_a_real_scim_server() {
    let server = tokio::task::spawn_blocking(Scim2Server::start).await.unwrap();
    let mut connector = connector_for(&server).await;

    // Create, then find by userName filter instead of creating twice.
    let mut ids = vec![];
    for n in 0..3 {
        let request = guest::AccountRequest { email: format!("person{n}@example.com"), display_name: Some(format!("Person {n}")), options: vec![] };
        let created = connector.create_account(&request).await.expect("SCIM POST");
        assert_eq!(created.outcome, Some(guest::Outcome::Changed));
        let account = created.account;
        assert!(account.attributes.iter().any(|p| p.name == "user_type" && p.value == "view only"), "{:?}", account.attributes);
        let again = connector.create_account(&request).await.expect("SCIM filter");
        assert_eq!(again.account.id, account.id);
        assert_eq!(again.outcome, Some(guest::Outcome::NoChange));
        ids.push(account.id);
    }

    // PATCH userType (the server answers 204), then read it back. License
    // IDs name the organization the service account's SCIM API serves.
    let user = ResourceRef { resource_type: "user".into(), id: ids[0].clone() };
    let enterprise = format!("license:{ORG}:enterprise:assigned");
    assert!(changed(&connector.grant_entitlement(&enterprise, &user).await.expect("PATCH userType")));
    assert!(!changed(&connector.grant_entitlement(&enterprise, &user).await.unwrap()), "read back as enterprise");

    // The listing pass: every user with the license their userType gives.
    let license = guest::Resource {
        resource_type: "license".into(),
        id: format!("{ORG}:enterprise"),
        display_name: "Enterprise".into(),
        parent: Some(ResourceRef { resource_type: "workspace".into(), id: ORG.into() }),
        attributes: vec![],
    };
    let page = connector.list_grants(&license, None).await.expect("SCIM list");
    assert_eq!(page.resources.len(), 3);
    let holders: Vec<_> = page.grants.iter().filter(|g| g.entitlement_id == enterprise).map(|g| g.principal.id.clone()).collect();
    assert_eq!(holders, vec![ids[0].clone()]);
    assert_eq!(page.grants.len(), 3);
    assert!(page.next_token.is_none());

    // Deactivate (PATCH active=false, 204); a second time is no change.
    let other = ResourceRef { resource_type: "user".into(), id: ids[1].clone() };
    assert!(changed(&connector.disable_account(&other).await.expect("PATCH active")));
    assert!(!changed(&connector.disable_account(&other).await.unwrap()));
    let page = connector.list_grants(&license, None).await.unwrap();
    assert_eq!(page.grants.len(), 2, "a deactivated user holds no license");
}
