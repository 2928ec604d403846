//! `check-write`: what a write would do, said before it is made. Asana
//! cannot reactivate a deactivated user, so every write that deactivates one
//! is irreversible: `disable-account`, and revoking a user's `view only`
//! license (their last one: with it gone the user is deactivated). The rest
//! can be undone by the opposite write. Decided from the IDs alone, so the
//! check costs no request.

use crate::ids;
use tether_guest::contract::{WriteEffect, WriteRequest};
use tether_guest::types::ConnectorError;

/// Why Asana deactivations are flagged, in the operator's words.
const CANNOT_REACTIVATE: &str = "Asana cannot reactivate a deactivated user";

pub fn check_write(request: &WriteRequest) -> Result<WriteEffect, ConnectorError> {
    Ok(match request {
        WriteRequest::GrantEntitlement(grant) => {
            ids::parse_entitlement(&grant.entitlement_id)?;
            reversible(format!("grants {} to {}:{}", grant.entitlement_id, grant.principal.resource_type, grant.principal.id))
        }
        WriteRequest::RevokeGrant(grant_id) => {
            let (entitlement, user) = ids::parse_grant(grant_id)?;
            let resource = &entitlement.resource;
            if resource.resource_type == "license" {
                let (org, license) = ids::parse_license(&resource.id)?;
                if license == "view only" {
                    return Ok(WriteEffect {
                        description: format!("deactivates user {} in organization {org}: view only is their last license, and {CANNOT_REACTIVATE}", user.id),
                        irreversible: true,
                    });
                }
                return Ok(reversible(format!("moves user {} in organization {org} from {license} to view only", user.id)));
            }
            reversible(format!("removes user {} from {} {} ({})", user.id, resource.resource_type, resource.id, entitlement.slug))
        }
        WriteRequest::CreateAccount(request) => reversible(format!("invites {}", request.email)),
        WriteRequest::DisableAccount(account) => {
            WriteEffect { description: format!("deactivates {} {}: {CANNOT_REACTIVATE}", account.resource_type, account.id), irreversible: true }
        }
    })
}

fn reversible(description: String) -> WriteEffect {
    WriteEffect { description, irreversible: false }
}
