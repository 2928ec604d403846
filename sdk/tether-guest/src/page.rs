//! Records and pages as the contract wants them.

use crate::contract::{Entitlement, Grant, GrantSet, Page, Resource};
use crate::types::{Pair, ResourceRef};

pub fn pair(name: &str, value: impl Into<String>) -> Pair {
    Pair { name: name.into(), value: value.into() }
}

pub fn resource_ref(resource_type: &str, id: &str) -> ResourceRef {
    ResourceRef { resource_type: resource_type.into(), id: id.into() }
}

/// A resource's reference (what a listing's resource points at).
pub fn reference(resource: &Resource) -> ResourceRef {
    resource_ref(&resource.resource_type, &resource.id)
}

/// The value of one attribute of a resource as the host gives it to a
/// listing: as reported (the last report wins where reports differ).
pub fn attribute<'a>(resource: &'a Resource, name: &str) -> Option<&'a str> {
    resource.attributes.iter().rev().find(|p| p.name == name).map(|p| p.value.as_str())
}

/// A page collected record by record.
pub struct PageBuilder {
    page: Page,
}

impl Default for PageBuilder {
    fn default() -> Self {
        PageBuilder { page: empty() }
    }
}

impl PageBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn resource(&mut self, resource: Resource) -> &mut Self {
        self.page.resources.push(resource);
        self
    }

    pub fn entitlement(&mut self, entitlement: Entitlement) -> &mut Self {
        self.page.entitlements.push(entitlement);
        self
    }

    pub fn grant(&mut self, grant: Grant) -> &mut Self {
        self.page.grants.push(grant);
        self
    }

    /// A grant without attributes whose id is
    /// `ENTITLEMENT_ID:PRINCIPAL_TYPE:PRINCIPAL_ID`, in the page's grant
    /// sets (see [`GrantSets`]).
    pub fn member(&mut self, entitlement_id: &str, principal_type: &str, principal_id: String, immutable: bool) -> &mut Self {
        add_member(&mut self.page.grant_sets, entitlement_id, principal_type, principal_id, immutable);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.page.resources.is_empty() && self.page.entitlements.is_empty() && self.page.grants.is_empty() && self.page.grant_sets.is_empty()
    }

    /// The page, with the token of the next one (none on the last page).
    pub fn finish(self, next_token: Option<String>) -> Page {
        Page { next_token, ..self.page }
    }
}

/// A page that is the last and holds nothing.
pub fn empty() -> Page {
    Page { resources: vec![], entitlements: vec![], grant_sets: vec![], grants: vec![], next_token: None }
}

/// Grants without attributes, gathered by entitlement, principal type and
/// mutability into the sets a page carries (contract 0.5.0): a page of 100
/// members gives the host 100 strings, not 400 (each grant's id,
/// entitlement id, principal type and principal id), and the connector
/// formats no grant id. Each grant is `ENTITLEMENT_ID:PRINCIPAL_TYPE:PRINCIPAL_ID`
/// ([`crate::ids::grant_id`]); a grant with attributes goes in `grants`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GrantSets {
    sets: Vec<GrantSet>,
}

impl GrantSets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, entitlement_id: &str, principal_type: &str, principal_id: String, immutable: bool) {
        add_member(&mut self.sets, entitlement_id, principal_type, principal_id, immutable);
    }

    /// Grants in all the sets.
    pub fn len(&self) -> usize {
        self.sets.iter().map(|set| set.principal_ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The sets, for `Page::grant_sets`.
    pub fn into_sets(self) -> Vec<GrantSet> {
        self.sets
    }
}

fn add_member(sets: &mut Vec<GrantSet>, entitlement_id: &str, principal_type: &str, principal_id: String, immutable: bool) {
    // A page of memberships names a few entitlements (a team's roles): the
    // last set used is the likeliest, then the few others.
    let same = |set: &GrantSet| set.entitlement_id == entitlement_id && set.principal_type == principal_type && set.immutable == immutable;
    match sets.iter_mut().rev().find(|set| same(set)) {
        Some(set) => set.principal_ids.push(principal_id),
        None => sets.push(GrantSet {
            entitlement_id: entitlement_id.to_string(),
            principal_type: principal_type.to_string(),
            principal_ids: vec![principal_id],
            immutable,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listings_resource_says_its_attributes_and_its_reference() {
        let workspace = Resource {
            resource_type: "workspace".into(),
            id: "1".into(),
            display_name: "Acme".into(),
            parent: None,
            attributes: vec![pair("is_organization", "false"), pair("is_organization", "true")],
        };
        assert_eq!(attribute(&workspace, "is_organization"), Some("true"));
        assert_eq!(attribute(&workspace, "email"), None);
        assert_eq!(reference(&workspace), resource_ref("workspace", "1"));
    }

    #[test]
    fn a_page_keeps_its_records_in_order() {
        let mut page = PageBuilder::new();
        assert!(page.is_empty());
        for id in ["a", "b"] {
            page.resource(Resource { resource_type: "user".into(), id: id.into(), display_name: id.into(), parent: None, attributes: vec![pair("k", "v")] });
        }
        let page = page.finish(Some("2".into()));
        assert_eq!(page.resources.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(page.next_token.as_deref(), Some("2"));
        assert!(empty().next_token.is_none());
    }

    #[test]
    fn members_gather_into_a_set_per_entitlement_type_and_mutability() {
        let mut sets = GrantSets::new();
        sets.add("team:1:member", "user", "u1".into(), false);
        sets.add("team:1:admin", "user", "u2".into(), true);
        sets.add("team:1:member", "user", "u3".into(), false);
        sets.add("team:1:member", "group", "g1".into(), false);
        sets.add("team:1:member", "user", "u4".into(), true);
        assert_eq!(sets.len(), 5);
        let sets = sets.into_sets();
        let shape: Vec<_> = sets.iter().map(|s| (s.entitlement_id.as_str(), s.principal_type.as_str(), s.immutable, s.principal_ids.join(","))).collect();
        assert_eq!(
            shape,
            [
                ("team:1:member", "user", false, "u1,u3".to_string()),
                ("team:1:admin", "user", true, "u2".to_string()),
                ("team:1:member", "group", false, "g1".to_string()),
                ("team:1:member", "user", true, "u4".to_string()),
            ]
        );
        let mut page = PageBuilder::new();
        page.member("team:2:member", "user", "u9".into(), false);
        assert!(!page.is_empty());
        assert_eq!(page.finish(None).grant_sets[0].principal_ids, ["u9"]);
    }
}
