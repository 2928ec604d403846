//! Full JSON representations of the org's objects, in Asana's field names. Endpoints cut
//! these down with `query::render` (compact form or `opt_fields`).

use serde_json::{json, Value};

use crate::org::{Org, Team, TeamMembership, User, Workspace, WorkspaceMembership};

pub(crate) const COMPACT: &[&str] = &["gid", "resource_type", "name"];
pub(crate) const WORKSPACE_MEMBERSHIP_COMPACT: &[&str] = &["gid", "resource_type", "user", "workspace"];
pub(crate) const TEAM_MEMBERSHIP_COMPACT: &[&str] = &["gid", "resource_type", "user", "team"];
/// What single-object responses (GET by gid, addUser) return without opt_fields.
pub(crate) const USER_DEFAULT: &[&str] = &["gid", "resource_type", "name", "email", "photo", "workspaces"];

pub(crate) fn workspace(ws: &Workspace) -> Value {
    json!({
        "gid": ws.gid,
        "resource_type": "workspace",
        "name": ws.name,
        "is_organization": ws.is_organization,
        "email_domains": ws.email_domains,
    })
}

fn workspace_ref(org: &Org, gid: &str) -> Value {
    match org.workspace(gid) {
        Some(ws) => workspace(ws),
        None => json!({"gid": gid, "resource_type": "workspace"}),
    }
}

pub(crate) fn user(org: &Org, u: &User, workspaces: &[&str]) -> Value {
    json!({
        "gid": u.gid,
        "resource_type": "user",
        "name": u.name,
        "email": u.email,
        "photo": null,
        "workspaces": workspaces.iter().map(|w| workspace_ref(org, w)).collect::<Vec<_>>(),
    })
}

/// A user nested in a membership: compact by default, email selectable via `user.email`.
fn user_ref(org: &Org, gid: &str) -> Value {
    match org.user(gid) {
        Some(u) => json!({"gid": u.gid, "resource_type": "user", "name": u.name, "email": u.email}),
        None => json!({"gid": gid, "resource_type": "user"}),
    }
}

pub(crate) fn team(org: &Org, t: &Team) -> Value {
    json!({
        "gid": t.gid,
        "resource_type": "team",
        "name": t.name,
        "description": t.description,
        "html_description": format!("<body>{}</body>", html_escape(&t.description)),
        "organization": workspace_ref(org, &t.workspace_gid),
        "permalink_url": format!("https://app.asana.com/0/team/{}", t.gid),
        "visibility": "request_to_join",
    })
}

fn team_ref(org: &Org, gid: &str) -> Value {
    match org.team(gid) {
        Some(t) => team(org, t),
        None => json!({"gid": gid, "resource_type": "team"}),
    }
}

pub(crate) fn workspace_membership(org: &Org, m: &WorkspaceMembership) -> Value {
    json!({
        "gid": m.gid,
        "resource_type": "workspace_membership",
        "user": user_ref(org, &m.user_gid),
        "workspace": workspace_ref(org, &m.workspace_gid),
        "is_admin": m.is_admin,
        "is_guest": m.is_guest,
        "is_active": m.is_active,
        "is_view_only": m.is_view_only,
        "created_at": created_at(&m.gid),
        "user_task_list": null,
        "vacation_dates": null,
    })
}

pub(crate) fn team_membership(org: &Org, m: &TeamMembership) -> Value {
    let access_level = if m.is_admin {
        "admin"
    } else if m.is_limited_access {
        "limited_access"
    } else {
        "member"
    };
    json!({
        "gid": m.gid,
        "resource_type": "team_membership",
        "user": user_ref(org, &m.user_gid),
        "team": team_ref(org, &m.team_gid),
        "is_admin": m.is_admin,
        "is_guest": m.is_guest,
        "is_limited_access": m.is_limited_access,
        "access_level": access_level,
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A stable pseudo creation time derived from the gid (the model keeps no timestamps).
fn created_at(gid: &str) -> String {
    let n: u64 = gid.parse().unwrap_or(0);
    // Spread over ~5 years from 2019-01-01 (day 17897 since the epoch).
    let days = 17_897 + (n.wrapping_mul(2_654_435_761) % 1_800) as i64;
    let secs = n.wrapping_mul(40_503) % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(17_897), (2019, 1, 1));
        assert_eq!(super::civil_from_days(19_782), (2024, 2, 29));
    }
}
