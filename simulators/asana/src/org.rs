//! The simulated org: data model, deterministic generation, and the state changes the
//! write endpoints make.

use std::collections::{HashMap, HashSet};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::names;

/// First gid handed out; real Asana gids are 16-digit numbers of this shape.
pub const FIRST_GID: u64 = 1_200_000_000_000_001;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgSpec {
    pub users: usize,
    pub teams: usize,
    pub workspaces: usize,
    pub seed: u64,
}

impl Default for OrgSpec {
    fn default() -> Self {
        OrgSpec { users: 120, teams: 8, workspaces: 3, seed: 42 }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Org {
    pub workspaces: Vec<Workspace>,
    pub users: Vec<User>,
    pub teams: Vec<Team>,
    pub workspace_memberships: Vec<WorkspaceMembership>,
    pub team_memberships: Vec<TeamMembership>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Workspace {
    pub gid: String,
    pub name: String,
    pub is_organization: bool,
    pub email_domains: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct User {
    pub gid: String,
    pub name: String,
    pub email: String,
    pub title: String,
    pub department: String,
    /// false = deactivated (Asana cannot reactivate).
    pub active: bool,
    /// The license in the organization SCIM serves ([`Org::organization`]); a membership's
    /// `is_view_only` is the license in its own workspace (always false outside organizations).
    pub license: License,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum License {
    #[serde(rename = "enterprise")]
    Enterprise,
    #[serde(rename = "view only")]
    ViewOnly,
}

impl License {
    /// The spelling Asana's SCIM `userType` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            License::Enterprise => "enterprise",
            License::ViewOnly => "view only",
        }
    }

    pub fn parse(s: &str) -> Option<License> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enterprise" => Some(License::Enterprise),
            "view only" => Some(License::ViewOnly),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Team {
    pub gid: String,
    pub name: String,
    pub description: String,
    pub workspace_gid: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkspaceMembership {
    pub gid: String,
    pub user_gid: String,
    pub workspace_gid: String,
    pub is_admin: bool,
    pub is_guest: bool,
    pub is_active: bool,
    pub is_view_only: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct TeamMembership {
    pub gid: String,
    pub user_gid: String,
    pub team_gid: String,
    pub is_admin: bool,
    pub is_guest: bool,
    pub is_limited_access: bool,
}

/// What a generated user is; decides email domain, flags and memberships.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// users[0]: the owner of the API token, admin everywhere (`GET /users/me`).
    TokenOwner,
    Admin,
    Guest,
    ViewOnly,
    Deactivated,
    /// Member of one small workspace only, not of the organization.
    Outsider,
    Regular,
}

/// Hands out increasing gids, so every list sorted by gid is also in creation order.
struct Gids(u64);

impl Gids {
    fn next(&mut self) -> String {
        let gid = self.0;
        self.0 += 1;
        gid.to_string()
    }
}

/// Rounded percentage of `n`.
/// The largest team the generator makes: no org of 30k users or fewer
/// reaches it, so their orgs are unchanged.
const MAX_TEAM_SIZE: usize = 1_600;

fn pct(n: usize, p: usize) -> usize {
    (n * p + 50) / 100
}

fn ceil_div(n: usize, d: usize) -> u64 {
    n.div_ceil(d.max(1)) as u64
}

impl Org {
    /// Builds an org deterministically from `spec.seed`.
    pub fn generate(spec: &OrgSpec) -> Org {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let mut gids = Gids(FIRST_GID);

        let workspaces: Vec<Workspace> = (0..spec.workspaces)
            .map(|i| {
                if i == 0 {
                    Workspace { gid: gids.next(), name: names::ORG_NAME.to_string(), is_organization: true, email_domains: vec![names::ORG_DOMAIN.to_string()] }
                } else {
                    let base = names::WORKSPACE_NAMES[(i - 1) % names::WORKSPACE_NAMES.len()];
                    let round = (i - 1) / names::WORKSPACE_NAMES.len();
                    let name = if round == 0 { base.to_string() } else { format!("{base} {}", round + 1) };
                    Workspace { gid: gids.next(), name, is_organization: false, email_domains: vec![] }
                }
            })
            .collect();

        // Roles are drawn as disjoint fixed-size groups so the percentages hold even for
        // small orgs, instead of flipping a coin per user.
        let n = spec.users;
        let mut roles = vec![Role::Regular; n];
        let mut teamless = vec![false; n];
        if n > 0 {
            roles[0] = Role::TokenOwner;
            let mut order: Vec<usize> = (1..n).collect();
            order.shuffle(&mut rng);
            let mut order = order.into_iter();
            let mut assign = |count: usize, role: Role, roles: &mut Vec<Role>| {
                for i in order.by_ref().take(count) {
                    roles[i] = role;
                }
            };
            assign(pct(n, 5), Role::Guest, &mut roles);
            assign(pct(n, 3).saturating_sub(1), Role::Admin, &mut roles);
            assign(pct(n, 10), Role::ViewOnly, &mut roles);
            assign(pct(n, 3), Role::Deactivated, &mut roles);
            if spec.workspaces > 1 {
                assign(pct(n, 2), Role::Outsider, &mut roles);
            }
            // A few ordinary members in no team at all (connectors must still see them).
            for i in order.take(pct(n, 3).max(2)) {
                teamless[i] = true;
            }
        }

        let users = generate_users(&mut rng, &mut gids, &roles);

        // Team placement: one per small workspace when there are enough teams, the rest
        // (the majority) in the organization.
        let mut team_ws: Vec<usize> = Vec::new();
        if !workspaces.is_empty() {
            let small = workspaces.len() - 1;
            if spec.teams >= workspaces.len() {
                team_ws.extend(std::iter::repeat_n(0, spec.teams - small));
                team_ws.extend(1..=small);
            } else {
                team_ws.extend(0..spec.teams);
            }
        }
        let teams: Vec<Team> = team_ws
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let base = names::TEAM_NAMES[i % names::TEAM_NAMES.len()];
                let round = i / names::TEAM_NAMES.len();
                let name = if round == 0 { base.to_string() } else { format!("{base} {}", round + 1) };
                let purpose = names::TEAM_PURPOSES.choose(&mut rng).copied().unwrap_or_default();
                Team { gid: gids.next(), description: format!("{name} team. {purpose}"), name, workspace_gid: workspaces[w].gid.clone() }
            })
            .collect();

        // Members of each workspace, as ascending user indices. Small workspaces share a
        // slice of the organization's members plus their own outsiders.
        let mut members_of: Vec<Vec<usize>> = vec![Vec::new(); workspaces.len()];
        if !workspaces.is_empty() {
            members_of[0] = (0..n).filter(|&i| roles[i] != Role::Outsider).collect();
            let small = workspaces.len() - 1;
            let insiders: Vec<usize> = (1..n).filter(|&i| !matches!(roles[i], Role::Guest | Role::Outsider)).collect();
            let outsiders: Vec<usize> = (0..n).filter(|&i| roles[i] == Role::Outsider).collect();
            for (w, slot) in members_of.iter_mut().enumerate().skip(1) {
                let share = (n / 7).max(3).min(insiders.len());
                let mut members: Vec<usize> = insiders.choose_multiple(&mut rng, share).copied().collect();
                if n > 0 {
                    members.push(0);
                }
                members.extend(outsiders.iter().enumerate().filter(|(k, _)| k % small == w - 1).map(|(_, &i)| i));
                members.sort_unstable();
                members.dedup();
                *slot = members;
            }
        }
        let mut workspace_memberships = Vec::new();
        for (w, members) in members_of.iter().enumerate() {
            let is_org = workspaces[w].is_organization;
            for &i in members {
                let user = &users[i];
                workspace_memberships.push(WorkspaceMembership {
                    gid: gids.next(),
                    user_gid: user.gid.clone(),
                    workspace_gid: workspaces[w].gid.clone(),
                    is_admin: match roles[i] {
                        Role::TokenOwner => true,
                        Role::Admin => is_org,
                        _ => false,
                    },
                    // Only organizations have guests.
                    is_guest: is_org && roles[i] == Role::Guest,
                    is_active: user.active,
                    // Licenses exist only in organizations (Enterprise domains).
                    is_view_only: is_org && user.license == License::ViewOnly,
                });
            }
        }

        let mut team_memberships = Vec::new();
        for (t, team) in teams.iter().enumerate() {
            let w = team_ws[t];
            let pool: Vec<usize> = members_of[w].iter().copied().filter(|&i| !teamless[i]).collect();
            if pool.is_empty() {
                continue;
            }
            // Teams grow with the org up to MAX_TEAM_SIZE (100k users and
            // 2,000 teams make about 2M grants, as issue 9 measures).
            let hi = (12 + n / 20).min(MAX_TEAM_SIZE).min(pool.len());
            let size = rng.random_range(hi.min(3)..=hi);
            let picked = rand::seq::index::sample(&mut rng, pool.len(), size).into_vec();
            // The first pick leads the team; sorting afterwards keeps listings in user order.
            let lead = picked.first().map(|&p| pool[p]);
            let mut members: Vec<usize> = picked.iter().map(|&p| pool[p]).collect();
            members.sort_unstable();
            for i in members {
                let is_admin = Some(i) == lead || rng.random_bool(0.05);
                let is_limited_access = !is_admin && rng.random_bool(0.08);
                team_memberships.push(TeamMembership {
                    gid: gids.next(),
                    user_gid: users[i].gid.clone(),
                    team_gid: team.gid.clone(),
                    is_admin,
                    is_guest: roles[i] == Role::Guest && workspaces[w].is_organization,
                    is_limited_access,
                });
            }
        }

        Org { workspaces, users, teams, workspace_memberships, team_memberships }
    }

    pub fn user(&self, gid: &str) -> Option<&User> {
        find_by_gid(&self.users, gid, |u| &u.gid)
    }

    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users.iter().find(|u| u.email.eq_ignore_ascii_case(email))
    }

    pub fn workspace(&self, gid: &str) -> Option<&Workspace> {
        self.workspaces.iter().find(|w| w.gid == gid)
    }

    pub fn team(&self, gid: &str) -> Option<&Team> {
        find_by_gid(&self.teams, gid, |t| &t.gid)
    }

    /// The organization SCIM provisions into: the first workspace that is one.
    pub fn organization(&self) -> Option<&Workspace> {
        self.workspaces.iter().find(|w| w.is_organization)
    }

    /// The user the API token belongs to (`/users/me`): the first user.
    pub fn token_owner(&self) -> Option<&User> {
        self.users.first()
    }

    pub fn workspace_membership(&self, user_gid: &str, workspace_gid: &str) -> Option<&WorkspaceMembership> {
        self.workspace_memberships.iter().find(|m| m.user_gid == user_gid && m.workspace_gid == workspace_gid)
    }

    /// Requests a perfect connector needs to read the org at `page_size` per page:
    /// ceil(n/page) (at least 1) for GET /workspaces, plus per workspace one listing of its
    /// teams, one of its users and one of its workspace_memberships, plus per team one listing of its
    /// team_memberships. Each listing costs ceil(items/page), at least 1 (an empty list
    /// still takes one request to learn it is empty).
    pub fn minimum_requests(&self, page_size: usize) -> u64 {
        let listing = |items: usize| ceil_div(items, page_size).max(1);
        // Counted in one pass each: at 100k users and millions of team
        // memberships, a filter per team took minutes.
        let teams_of = count_by(self.teams.iter().map(|t| t.workspace_gid.as_str()));
        let members_of = count_by(self.workspace_memberships.iter().map(|m| m.workspace_gid.as_str()));
        let team_members = count_by(self.team_memberships.iter().map(|m| m.team_gid.as_str()));
        let count = |counts: &HashMap<&str, usize>, gid: &str| counts.get(gid).copied().unwrap_or(0);
        let mut total = listing(self.workspaces.len());
        for ws in &self.workspaces {
            total += listing(count(&teams_of, &ws.gid));
            // Its users (`/users?workspace=`, the only spec-valid source of
            // emails) and its memberships (roles and license state).
            total += listing(count(&members_of, &ws.gid)) * 2;
        }
        for team in &self.teams {
            total += listing(count(&team_members, &team.gid));
        }
        total
    }

    /// Requests a sync must make one after another however many it runs
    /// at once: each listing's pages follow each other (an offset token
    /// comes only with the page before), and a workspace's listings wait
    /// for `/workspaces`, a team's for its workspace's teams. At a fixed
    /// latency, this times the latency is a floor on wall time.
    pub fn sequential_requests(&self, page_size: usize) -> u64 {
        let listing = |items: usize| ceil_div(items, page_size).max(1);
        let members_of = count_by(self.workspace_memberships.iter().map(|m| m.workspace_gid.as_str()));
        let team_members = count_by(self.team_memberships.iter().map(|m| m.team_gid.as_str()));
        let count = |counts: &HashMap<&str, usize>, gid: &str| counts.get(gid).copied().unwrap_or(0);
        let longest_under = |ws: &Workspace| {
            let teams: Vec<&Team> = self.teams.iter().filter(|t| t.workspace_gid == ws.gid).collect();
            let team_path = listing(teams.len()) + teams.iter().map(|t| listing(count(&team_members, &t.gid))).max().unwrap_or(0);
            team_path.max(listing(count(&members_of, &ws.gid)))
        };
        listing(self.workspaces.len()) + self.workspaces.iter().map(longest_under).max().unwrap_or(0)
    }
}

/// How many times each gid occurs.
fn count_by<'a>(gids: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for gid in gids {
        *counts.entry(gid).or_default() += 1;
    }
    counts
}

/// Finds by gid in a list kept in gid order (generation and creation both
/// hand out rising gids), so lookups stay fast in orgs of 50k users; falls
/// back to a scan should the order ever not hold.
fn find_by_gid<'a, T>(items: &'a [T], gid: &str, gid_of: impl Fn(&T) -> &String) -> Option<&'a T> {
    // Numeric strings order by length, then text.
    match items.binary_search_by(|item| {
        let candidate = gid_of(item);
        (candidate.len(), candidate.as_str()).cmp(&(gid.len(), gid))
    }) {
        Ok(index) => Some(&items[index]),
        Err(_) => items.iter().find(|item| gid_of(item) == gid),
    }
}

fn generate_users(rng: &mut ChaCha8Rng, gids: &mut Gids, roles: &[Role]) -> Vec<User> {
    let mut taken_emails = HashSet::new();
    roles
        .iter()
        .map(|&role| {
            let first = names::FIRST_NAMES.choose(rng).copied().unwrap_or("Alex");
            let last = names::LAST_NAMES.choose(rng).copied().unwrap_or("Doe");
            let external = matches!(role, Role::Guest | Role::Outsider);
            let domain = if external { names::EXTERNAL_DOMAINS.choose(rng).copied().unwrap_or("gmail.com") } else { names::ORG_DOMAIN };
            let email = unique_email(&mut taken_emails, &format!("{}.{}", email_part(first), email_part(last)), domain);
            let (department, title) = match role {
                Role::TokenOwner => ("IT".to_string(), "IT Administrator".to_string()),
                Role::Guest | Role::Outsider => (names::GUEST_DEPARTMENT.to_string(), names::GUEST_TITLES.choose(rng).copied().unwrap_or_default().to_string()),
                _ => {
                    let (dept, titles) = names::DEPARTMENTS.choose(rng).copied().unwrap_or(("", &[]));
                    (dept.to_string(), titles.choose(rng).copied().unwrap_or_default().to_string())
                }
            };
            User {
                gid: gids.next(),
                name: format!("{first} {last}"),
                email,
                title,
                department,
                active: role != Role::Deactivated,
                license: if role == Role::ViewOnly { License::ViewOnly } else { License::Enterprise },
            }
        })
        .collect()
}

/// Lowercase ASCII letters only, so "O'Brien" becomes "obrien" and "Müller" "mller".
fn email_part(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphabetic()).map(|c| c.to_ascii_lowercase()).collect()
}

fn unique_email(taken: &mut HashSet<String>, local: &str, domain: &str) -> String {
    let mut candidate = format!("{local}@{domain}");
    let mut k = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{local}{k}@{domain}");
        k += 1;
    }
    candidate
}

/// Good enough to reject obvious non-emails in invites and SCIM userNames.
pub(crate) fn valid_email(s: &str) -> bool {
    matches!(s.split_once('@'), Some((local, domain))
        if !local.is_empty() && domain.contains('.') && !domain.contains('@') && !s.contains(char::is_whitespace))
}

/// Display name for a user invited by email only: "jane.doe@x" -> "Jane Doe".
pub(crate) fn name_from_email(email: &str) -> String {
    let local = email.split('@').next().unwrap_or(email);
    local
        .split(['.', '_', '-', '+'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The org plus what is needed to change it: the next free gid, and the
/// lookups of its current state (built on demand, dropped by every method
/// here that adds or removes a user or a membership: the lookups hold
/// positions and gids, never the fields the other writes change).
pub(crate) struct World {
    pub org: Org,
    next_gid: u64,
    index: Option<crate::index::OrgIndex>,
}

impl World {
    pub fn new(org: Org) -> World {
        let max = org
            .workspaces
            .iter()
            .map(|x| &x.gid)
            .chain(org.users.iter().map(|x| &x.gid))
            .chain(org.teams.iter().map(|x| &x.gid))
            .chain(org.workspace_memberships.iter().map(|x| &x.gid))
            .chain(org.team_memberships.iter().map(|x| &x.gid))
            .filter_map(|g| g.parse::<u64>().ok())
            .max();
        World { org, next_gid: max.map_or(FIRST_GID, |m| m + 1), index: None }
    }

    /// The org with its lookups, built now if a write dropped them.
    pub fn indexed(&mut self) -> (&Org, &crate::index::OrgIndex) {
        let index = self.index.get_or_insert_with(|| crate::index::OrgIndex::build(&self.org));
        (&self.org, index)
    }

    fn gid(&mut self) -> String {
        let gid = self.next_gid;
        self.next_gid += 1;
        gid.to_string()
    }

    /// Creates a user with no memberships; returns its index.
    pub fn create_user(&mut self, name: String, email: String, license: License) -> usize {
        self.index = None;
        let gid = self.gid();
        self.org.users.push(User { gid, name, email, title: String::new(), department: String::new(), active: true, license });
        self.org.users.len() - 1
    }

    /// Adds (or returns the existing) workspace membership; returns its index, None if
    /// the user or workspace does not exist.
    pub fn add_workspace_member(&mut self, user_gid: &str, workspace_gid: &str) -> Option<usize> {
        if let Some(i) = self.org.workspace_memberships.iter().position(|m| m.user_gid == user_gid && m.workspace_gid == workspace_gid) {
            return Some(i);
        }
        let user = self.org.user(user_gid)?.clone();
        let ws = self.org.workspace(workspace_gid)?.clone();
        // Organizations treat anyone outside their email domains as a guest.
        let domain = user.email.rsplit('@').next().unwrap_or_default();
        let is_guest = ws.is_organization && !ws.email_domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
        self.index = None;
        let gid = self.gid();
        self.org.workspace_memberships.push(WorkspaceMembership {
            gid,
            user_gid: user.gid,
            workspace_gid: ws.gid,
            is_admin: false,
            is_guest,
            is_active: user.active,
            is_view_only: ws.is_organization && user.license == License::ViewOnly,
        });
        Some(self.org.workspace_memberships.len() - 1)
    }

    /// Removes the user from the workspace and from the workspace's teams.
    pub fn remove_workspace_member(&mut self, user_gid: &str, workspace_gid: &str) {
        self.index = None;
        self.org.workspace_memberships.retain(|m| !(m.user_gid == user_gid && m.workspace_gid == workspace_gid));
        let teams: HashSet<String> = self.org.teams.iter().filter(|t| t.workspace_gid == workspace_gid).map(|t| t.gid.clone()).collect();
        self.org.team_memberships.retain(|m| !(m.user_gid == user_gid && teams.contains(&m.team_gid)));
    }

    /// Adds (or returns the existing) team membership; returns its index.
    pub fn add_team_member(&mut self, user_gid: &str, team_gid: &str, is_guest: bool) -> usize {
        if let Some(i) = self.org.team_memberships.iter().position(|m| m.user_gid == user_gid && m.team_gid == team_gid) {
            return i;
        }
        self.index = None;
        let gid = self.gid();
        self.org.team_memberships.push(TeamMembership {
            gid,
            user_gid: user_gid.to_string(),
            team_gid: team_gid.to_string(),
            is_admin: false,
            is_guest,
            is_limited_access: false,
        });
        self.org.team_memberships.len() - 1
    }

    pub fn remove_team_member(&mut self, user_gid: &str, team_gid: &str) {
        self.index = None;
        self.org.team_memberships.retain(|m| !(m.user_gid == user_gid && m.team_gid == team_gid));
    }

    /// Deactivation keeps memberships but marks them inactive, as Asana's admin view does.
    pub fn deactivate_user(&mut self, user_gid: &str) {
        for u in self.org.users.iter_mut().filter(|u| u.gid == user_gid) {
            u.active = false;
        }
        for m in self.org.workspace_memberships.iter_mut().filter(|m| m.user_gid == user_gid) {
            m.is_active = false;
        }
    }

    /// `license` is the user's license in the organization SCIM provisions into
    /// ([`Org::organization`]); plain workspaces carry none, and other organizations keep
    /// their own.
    pub fn set_license(&mut self, user_gid: &str, license: License) {
        for u in self.org.users.iter_mut().filter(|u| u.gid == user_gid) {
            u.license = license;
        }
        let Some(organization) = self.org.organization().map(|w| w.gid.clone()) else {
            return;
        };
        for m in self.org.workspace_memberships.iter_mut().filter(|m| m.user_gid == user_gid && m.workspace_gid == organization) {
            m.is_view_only = license == License::ViewOnly;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_shaped() {
        let spec = OrgSpec::default();
        let a = Org::generate(&spec);
        let b = Org::generate(&spec);
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        assert_eq!(a.users.len(), 120);
        assert_eq!(a.teams.len(), 8);
        assert_eq!(a.workspaces.len(), 3);
        assert!(a.workspaces[0].is_organization && !a.workspaces[1].is_organization);
        // Every workspace has a team.
        for ws in &a.workspaces {
            assert!(a.teams.iter().any(|t| t.workspace_gid == ws.gid), "{} has no team", ws.name);
        }
        // gids unique across kinds.
        let mut all = HashSet::new();
        let gids = a
            .workspaces
            .iter()
            .map(|x| &x.gid)
            .chain(a.users.iter().map(|x| &x.gid))
            .chain(a.teams.iter().map(|x| &x.gid))
            .chain(a.workspace_memberships.iter().map(|x| &x.gid))
            .chain(a.team_memberships.iter().map(|x| &x.gid));
        for g in gids {
            assert!(g.parse::<u64>().is_ok());
            assert!(all.insert(g.clone()), "duplicate gid {g}");
        }
        let emails: HashSet<_> = a.users.iter().map(|u| &u.email).collect();
        assert_eq!(emails.len(), a.users.len());
        let org = &a.workspaces[0].gid;
        let org_members: Vec<_> = a.workspace_memberships.iter().filter(|m| &m.workspace_gid == org).collect();
        assert!(org_members.len() > a.users.len() * 9 / 10);
        assert_eq!(org_members.iter().filter(|m| m.is_guest).count(), 6);
        assert!(org_members.iter().any(|m| !m.is_active));
        assert!(org_members.iter().any(|m| m.is_view_only));
        // Licenses exist only in organizations.
        assert!(a.workspace_memberships.iter().filter(|m| !a.workspace(&m.workspace_gid).unwrap().is_organization).all(|m| !m.is_view_only));
        assert!(a.users.iter().any(|u| !u.active));
        assert!(a.users.iter().any(|u| u.license == License::ViewOnly));
        // Users shared across workspaces keep one gid.
        let small = &a.workspaces[1].gid;
        assert!(a.workspace_memberships.iter().any(|m| &m.workspace_gid == small && org_members.iter().any(|o| o.user_gid == m.user_gid)));
        // Some users belong to no team.
        let in_team: HashSet<_> = a.team_memberships.iter().map(|m| &m.user_gid).collect();
        assert!(a.users.iter().filter(|u| !in_team.contains(&u.gid)).count() >= 2);
        assert!(a.team_memberships.iter().any(|m| m.is_admin));
        // Team members are members of the team's workspace.
        for m in &a.team_memberships {
            let team = a.team(&m.team_gid).unwrap();
            assert!(a.workspace_membership(&m.user_gid, &team.workspace_gid).is_some());
        }
    }

    #[test]
    fn large_and_degenerate_specs() {
        let start = std::time::Instant::now();
        let big = Org::generate(&OrgSpec { users: 1000, teams: 50, workspaces: 3, seed: 7 });
        assert!(start.elapsed().as_millis() < 500, "generation too slow: {:?}", start.elapsed());
        assert_eq!(big.teams.len(), 50);
        for spec in [
            OrgSpec { users: 0, teams: 0, workspaces: 0, seed: 1 },
            OrgSpec { users: 0, teams: 5, workspaces: 2, seed: 1 },
            OrgSpec { users: 1, teams: 3, workspaces: 5, seed: 1 },
            OrgSpec { users: 5, teams: 1, workspaces: 1, seed: 1 },
        ] {
            let org = Org::generate(&spec);
            assert_eq!(org.users.len(), spec.users);
            assert!(org.minimum_requests(100) >= 1);
        }
    }

    #[test]
    fn minimum_requests_counts_pages() {
        let org = Org::generate(&OrgSpec { users: 250, teams: 4, workspaces: 1, seed: 3 });
        // 1 (workspaces) + 1 (teams) + 3 (250 users) + 3 (250 memberships)
        // + one per team.
        assert_eq!(org.minimum_requests(100), 1 + 1 + 3 + 3 + 4);
    }

    #[test]
    fn sequential_requests_follow_the_longest_chain_of_pages() {
        let org = Org::generate(&OrgSpec { users: 250, teams: 4, workspaces: 1, seed: 3 });
        // /workspaces, then the longest of: 3 pages of memberships (or of
        // users), or 1 page of teams and then one team's single page.
        assert_eq!(org.sequential_requests(100), 1 + 3);
        // Teams of at most 24 members (12 + 250/20) fit on one page each.
        assert_eq!(org.sequential_requests(10), 1 + 25);
        assert!(org.sequential_requests(100) <= org.minimum_requests(100));
    }
}
