//! `check-write`: what a write would do, from the IDs alone (no request).
//! A deactivation is irreversible only where the operator says the server
//! cannot reactivate users (`deactivation-irreversible`): SCIM itself
//! reactivates with `active=true`, and has no standard way to say otherwise.

use tether_guest::contract::{WriteEffect, WriteRequest};
use tether_guest::ConnectorError;

use crate::records::{check_principal, parse_member_entitlement, parse_member_grant};
use crate::settings::Settings;

pub fn check_write(settings: &Settings, request: &WriteRequest) -> Result<WriteEffect, ConnectorError> {
    let reversible = |description: String| WriteEffect { description, irreversible: false };
    Ok(match request {
        WriteRequest::GrantEntitlement(grant) => {
            let group = parse_member_entitlement(&grant.entitlement_id)?;
            check_principal(&grant.principal)?;
            reversible(format!("adds {} {} to SCIM group {group}", grant.principal.resource_type, grant.principal.id))
        }
        WriteRequest::RevokeGrant(grant_id) => {
            let (group, principal) = parse_member_grant(grant_id)?;
            reversible(format!("removes {} {} from SCIM group {group}", principal.resource_type, principal.id))
        }
        WriteRequest::CreateAccount(request) => reversible(format!("creates SCIM user {}", request.email)),
        WriteRequest::DisableAccount(account) if settings.deactivation_irreversible => WriteEffect {
            description: format!(
                "deactivates {} {} (active=false): this server cannot reactivate users (deactivation-irreversible=true)",
                account.resource_type, account.id
            ),
            irreversible: true,
        },
        WriteRequest::DisableAccount(account) => {
            reversible(format!("deactivates {} {} (active=false; active=true undoes it)", account.resource_type, account.id))
        }
    })
}
