//! A page of a listing in the host's shape, whatever the contract version
//! of the module that sent it, and what it weighs against the page limits.
//! Pages of 0.1.0 to 0.4.0 have no grant sets; 0.5.0's may carry them.

use crate::runtime::api_version::Convert;
use crate::runtime::bindings::{guest, v0_5, Pair, ResourceRef};

/// Grants of one entitlement to principals of one type, without attributes
/// (0.5.0 on): each is `ENTITLEMENT_ID:PRINCIPAL_TYPE:PRINCIPAL_ID`.
pub use v0_5::guest::GrantSet;

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub resources: Vec<guest::Resource>,
    pub entitlements: Vec<guest::Entitlement>,
    pub grants: Vec<guest::Grant>,
    pub grant_sets: Vec<GrantSet>,
    pub next_token: Option<String>,
}

impl From<guest::Page> for Page {
    fn from(p: guest::Page) -> Self {
        Page { resources: p.resources, entitlements: p.entitlements, grants: p.grants, grant_sets: Vec::new(), next_token: p.next_token }
    }
}

/// Pages of 0.2.0 to 0.4.0 had 0.1.0's shape.
macro_rules! pages_shaped_like_v0_1 {
    ($($version:ident),*) => {$(
        impl From<crate::runtime::bindings::$version::guest::Page> for Page {
            fn from(p: crate::runtime::bindings::$version::guest::Page) -> Self {
                Page::from(Convert::<guest::Page>::convert(p))
            }
        }
    )*};
}

pages_shaped_like_v0_1!(v0_2, v0_3, v0_4);

impl From<v0_5::guest::Page> for Page {
    fn from(p: v0_5::guest::Page) -> Self {
        Page {
            resources: p.resources.convert(),
            entitlements: p.entitlements.convert(),
            grants: p.grants.convert(),
            grant_sets: p.grant_sets,
            next_token: p.next_token,
        }
    }
}

impl Page {
    /// Records the page carries: each grant of a set counts as one, as it
    /// would in `grants`.
    pub fn records(&self) -> usize {
        self.resources.len() + self.entitlements.len() + self.grants.len() + set_members(&self.grant_sets)
    }

    /// Bytes of strings the page carries, in all and in its largest record.
    /// A grant of a set weighs what the same grant in `grants` would (its
    /// id is its entitlement, type and principal joined): that is what the
    /// file stores and every export and report writes out, so a set is no
    /// way past the limits.
    pub fn bytes(&self) -> PageBytes {
        let resources = self.resources.iter().map(resource_bytes);
        let entitlements = self.entitlements.iter().map(entitlement_bytes);
        let grants = self.grants.iter().map(grant_bytes);
        let members = self.grant_sets.iter().flat_map(|set| set.principal_ids.iter().map(move |id| member_bytes(set, id)));
        let records = resources.chain(entitlements).chain(grants).chain(members);
        let (total, largest_record) = records.fold((0, 0), |(total, largest), bytes| (total + bytes, largest.max(bytes)));
        PageBytes { total: total + self.next_token.as_ref().map_or(0, String::len), largest_record }
    }
}

/// Grants in `sets`, in all.
pub fn set_members(sets: &[GrantSet]) -> usize {
    sets.iter().map(|set| set.principal_ids.len()).sum()
}

/// Bytes of strings a page carries, in all and in its largest record.
pub struct PageBytes {
    pub total: usize,
    pub largest_record: usize,
}

fn pairs_bytes(pairs: &[Pair]) -> usize {
    pairs.iter().map(|p| p.name.len() + p.value.len()).sum()
}

// Every string of a record counts: one left out (a reference's type) was
// a way to send pages of any size past the limits.
fn resource_bytes(r: &guest::Resource) -> usize {
    r.resource_type.len() + r.id.len() + r.display_name.len() + r.parent.as_ref().map_or(0, ref_bytes) + pairs_bytes(&r.attributes)
}

fn entitlement_bytes(e: &guest::Entitlement) -> usize {
    e.id.len() + e.slug.len() + e.display_name.len() + e.description.len() + ref_bytes(&e.resource)
}

fn grant_bytes(g: &guest::Grant) -> usize {
    g.id.len() + g.entitlement_id.len() + ref_bytes(&g.principal) + pairs_bytes(&g.attributes)
}

/// A set's grant as the plain grant it stands for: its id
/// `ENTITLEMENT:TYPE:ID`, then the entitlement, type and principal again.
fn member_bytes(set: &GrantSet, principal_id: &str) -> usize {
    let strings = set.entitlement_id.len() + set.principal_type.len() + principal_id.len();
    2 * strings + 2
}

fn ref_bytes(r: &ResourceRef) -> usize {
    r.resource_type.len() + r.id.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entitlement_id: &str, ids: &[&str]) -> GrantSet {
        GrantSet {
            entitlement_id: entitlement_id.into(),
            principal_type: "user".into(),
            principal_ids: ids.iter().map(|id| id.to_string()).collect(),
            immutable: false,
        }
    }

    #[test]
    fn each_grant_of_a_set_counts_as_a_record() {
        let page = Page { grant_sets: vec![set("team:1:member", &["a", "b", "c"]), set("team:2:member", &[])], ..Page::default() };
        assert_eq!(page.records(), 3);
    }

    #[test]
    fn a_sets_grants_weigh_what_the_same_grants_one_by_one_would() {
        let long = "x".repeat(100);
        let set = set("team:1:member", &["a", &long]);
        let as_grants: Vec<guest::Grant> = set
            .principal_ids
            .iter()
            .map(|id| guest::Grant {
                id: format!("team:1:member:user:{id}"),
                entitlement_id: "team:1:member".into(),
                principal: ResourceRef { resource_type: "user".into(), id: id.clone() },
                immutable: false,
                attributes: vec![],
            })
            .collect();
        let by_set = Page { grant_sets: vec![set], next_token: Some("n".into()), ..Page::default() }.bytes();
        let one_by_one = Page { grants: as_grants, next_token: Some("n".into()), ..Page::default() }.bytes();
        assert_eq!((by_set.total, by_set.largest_record), (one_by_one.total, one_by_one.largest_record));
        assert_eq!(by_set.largest_record, 2 * ("team:1:member".len() + "user".len() + 100) + 2);
    }
}
