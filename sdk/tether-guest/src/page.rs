//! Records and pages as the contract wants them.

use crate::contract::{Entitlement, Grant, Page, Resource};
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

    pub fn is_empty(&self) -> bool {
        self.page.resources.is_empty() && self.page.entitlements.is_empty() && self.page.grants.is_empty()
    }

    /// The page, with the token of the next one (none on the last page).
    pub fn finish(self, next_token: Option<String>) -> Page {
        Page { next_token, ..self.page }
    }
}

/// A page that is the last and holds nothing.
pub fn empty() -> Page {
    Page { resources: vec![], entitlements: vec![], grants: vec![], next_token: None }
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
}
