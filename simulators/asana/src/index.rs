//! Lookups the list endpoints need, built once per state of the org and
//! dropped by any write, so that a page costs what is on it rather than a
//! scan of every membership in the org (at 100k users and 2k teams the
//! scans made the simulator, not the connector, the bottleneck).
//!
//! Every list is in gid order, the order pages are served in, so a page
//! is found by a binary search for its offset (see `query::window`)
//! instead of a sort and a filter of the whole list.

use std::collections::HashMap;

use crate::org::Org;
use crate::query::gid_num;

#[derive(Default)]
pub(crate) struct OrgIndex {
    /// Indices into `org.teams`, per workspace gid.
    pub teams_by_workspace: HashMap<String, Vec<usize>>,
    /// Indices into `org.workspace_memberships`, per workspace gid.
    pub workspace_memberships_by_workspace: HashMap<String, Vec<usize>>,
    /// Indices into `org.team_memberships`, per team gid.
    pub team_memberships_by_team: HashMap<String, Vec<usize>>,
    /// Indices into `org.users`, per workspace gid and per team gid.
    pub users_by_workspace: HashMap<String, Vec<usize>>,
    pub users_by_team: HashMap<String, Vec<usize>>,
    /// Workspace gids per user gid, in membership order.
    pub workspaces_by_user: HashMap<String, Vec<String>>,
}

impl OrgIndex {
    pub fn build(org: &Org) -> OrgIndex {
        let mut index = OrgIndex::default();
        let user_at: HashMap<&str, usize> = org.users.iter().enumerate().map(|(i, u)| (u.gid.as_str(), i)).collect();
        for (i, team) in org.teams.iter().enumerate() {
            index.teams_by_workspace.entry(team.workspace_gid.clone()).or_default().push(i);
        }
        for (i, m) in org.workspace_memberships.iter().enumerate() {
            index.workspace_memberships_by_workspace.entry(m.workspace_gid.clone()).or_default().push(i);
            index.workspaces_by_user.entry(m.user_gid.clone()).or_default().push(m.workspace_gid.clone());
            if let Some(&u) = user_at.get(m.user_gid.as_str()) {
                index.users_by_workspace.entry(m.workspace_gid.clone()).or_default().push(u);
            }
        }
        for (i, m) in org.team_memberships.iter().enumerate() {
            index.team_memberships_by_team.entry(m.team_gid.clone()).or_default().push(i);
            if let Some(&u) = user_at.get(m.user_gid.as_str()) {
                index.users_by_team.entry(m.team_gid.clone()).or_default().push(u);
            }
        }
        for users in index.users_by_workspace.values_mut().chain(index.users_by_team.values_mut()) {
            by_gid(users, |i| &org.users[i].gid);
            users.dedup();
        }
        for teams in index.teams_by_workspace.values_mut() {
            by_gid(teams, |i| &org.teams[i].gid);
        }
        for memberships in index.workspace_memberships_by_workspace.values_mut() {
            by_gid(memberships, |i| &org.workspace_memberships[i].gid);
        }
        for memberships in index.team_memberships_by_team.values_mut() {
            by_gid(memberships, |i| &org.team_memberships[i].gid);
        }
        index
    }

    /// The indices listed under `key`, or none.
    pub fn get<'a>(map: &'a HashMap<String, Vec<usize>>, key: &str) -> &'a [usize] {
        map.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Sorts indices by the gid of what they point at (ties: by index).
fn by_gid<'o>(list: &mut [usize], gid_at: impl Fn(usize) -> &'o str) {
    list.sort_by_cached_key(|&i| (gid_num(gid_at(i)), i));
}
