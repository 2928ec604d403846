//! The uniform data model every connector's results are written in:
//! resource types, resources (with parent), entitlements on resources, and
//! grants of an entitlement to a principal.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::runtime::bindings::{guest, Pair};
use crate::runtime::instance::{Declared, TypeListings};
use crate::runtime::page::{set_members, GrantSet, Page};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceType {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub listed_under: Option<String>,
    /// The host lists the entitlements of resources of this type (always,
    /// before contract 0.4.0).
    pub lists_entitlements: bool,
    /// The host lists the grants of resources of this type.
    pub lists_grants: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceKey {
    pub resource_type: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resource {
    pub resource_type: String,
    pub id: String,
    pub display_name: String,
    pub parent: Option<ResourceKey>,
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entitlement {
    pub id: String,
    pub resource: ResourceKey,
    pub slug: String,
    pub display_name: String,
    pub description: String,
    pub grantable: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Grant {
    pub id: String,
    pub entitlement_id: String,
    pub principal: ResourceKey,
    pub immutable: bool,
    pub attributes: Map<String, Value>,
}

/// Everything one page of a listing carried. Grants in sets stay in their
/// sets (a string per grant): the file writes them as it would the same
/// grants one by one, after the page's `grants`.
#[derive(Debug, Default, Clone)]
pub struct PageRecords {
    pub resources: Vec<Resource>,
    pub entitlements: Vec<Entitlement>,
    pub grants: Vec<Grant>,
    pub grant_sets: Vec<GrantSet>,
}

impl PageRecords {
    pub fn len(&self) -> usize {
        self.resources.len() + self.entitlements.len() + self.grant_count()
    }

    /// Grants, those in sets included.
    pub fn grant_count(&self) -> usize {
        self.grants.len() + set_members(&self.grant_sets)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first record with an empty id, type or key, described: such a
    /// record cannot be told apart from others (a grant `::` of an empty
    /// entitlement and principal), so a page that holds one is malformed.
    pub fn empty_id(&self) -> Option<&'static str> {
        let empty_key = |k: &ResourceKey| k.resource_type.is_empty() || k.id.is_empty();
        if self.resources.iter().any(|r| r.resource_type.is_empty() || r.id.is_empty()) {
            return Some("a resource with an empty type or id");
        }
        if self.resources.iter().any(|r| r.parent.as_ref().is_some_and(empty_key)) {
            return Some("a resource whose parent has an empty type or id");
        }
        if self.entitlements.iter().any(|e| e.id.is_empty() || empty_key(&e.resource)) {
            return Some("an entitlement with an empty id, or on a resource with an empty type or id");
        }
        if self.grants.iter().any(|g| g.id.is_empty() || g.entitlement_id.is_empty() || empty_key(&g.principal)) {
            return Some("a grant with an empty id, entitlement id, principal type or principal id");
        }
        if self.grant_sets.iter().any(|s| s.entitlement_id.is_empty() || s.principal_type.is_empty() || s.principal_ids.iter().any(String::is_empty)) {
            return Some("a grant set with an empty entitlement id, principal type or principal id");
        }
        None
    }
}

fn attributes(pairs: Vec<Pair>) -> Map<String, Value> {
    pairs.into_iter().map(|p| (p.name, Value::String(p.value))).collect()
}

impl From<crate::runtime::bindings::ResourceRef> for ResourceKey {
    fn from(r: crate::runtime::bindings::ResourceRef) -> Self {
        ResourceKey { resource_type: r.resource_type, id: r.id }
    }
}

impl From<&ResourceKey> for crate::runtime::bindings::ResourceRef {
    fn from(r: &ResourceKey) -> Self {
        crate::runtime::bindings::ResourceRef { resource_type: r.resource_type.clone(), id: r.id.clone() }
    }
}

/// A type as 0.1.0's metadata says it: both listings, as then.
impl From<guest::ResourceType> for ResourceType {
    fn from(t: guest::ResourceType) -> Self {
        let listings = TypeListings::default();
        ResourceType::with_listings(t, listings)
    }
}

impl ResourceType {
    pub fn with_listings(t: guest::ResourceType, listings: TypeListings) -> Self {
        ResourceType {
            id: t.id,
            display_name: t.display_name,
            description: t.description,
            listed_under: t.listed_under,
            lists_entitlements: listings.entitlements,
            lists_grants: listings.grants,
        }
    }
}

/// The connector's resource types with the listings each has.
pub fn resource_types(metadata: &guest::ConnectorMetadata, declared: &Declared) -> Vec<ResourceType> {
    metadata.resource_types.iter().enumerate().map(|(i, t)| ResourceType::with_listings(t.clone(), declared.listings_of(i))).collect()
}

/// A resource as the listings take it (0.4.0 on): attributes back as the
/// pairs they were reported as (a value not stored as a string, from a
/// file written by hand, as its JSON text).
impl From<&Resource> for guest::Resource {
    fn from(r: &Resource) -> Self {
        guest::Resource {
            resource_type: r.resource_type.clone(),
            id: r.id.clone(),
            display_name: r.display_name.clone(),
            parent: r.parent.as_ref().map(Into::into),
            attributes: r
                .attributes
                .iter()
                .map(|(name, value)| Pair { name: name.clone(), value: value.as_str().map_or_else(|| value.to_string(), str::to_string) })
                .collect(),
        }
    }
}

impl From<guest::Resource> for Resource {
    fn from(r: guest::Resource) -> Self {
        Resource {
            resource_type: r.resource_type,
            id: r.id,
            display_name: r.display_name,
            parent: r.parent.map(Into::into),
            attributes: attributes(r.attributes),
        }
    }
}

impl From<guest::Entitlement> for Entitlement {
    fn from(e: guest::Entitlement) -> Self {
        Entitlement { id: e.id, resource: e.resource.into(), slug: e.slug, display_name: e.display_name, description: e.description, grantable: e.grantable }
    }
}

impl From<guest::Grant> for Grant {
    fn from(g: guest::Grant) -> Self {
        Grant { id: g.id, entitlement_id: g.entitlement_id, principal: g.principal.into(), immutable: g.immutable, attributes: attributes(g.attributes) }
    }
}

impl From<Page> for PageRecords {
    fn from(p: Page) -> Self {
        PageRecords {
            resources: p.resources.into_iter().map(Into::into).collect(),
            entitlements: p.entitlements.into_iter().map(Into::into).collect(),
            grants: p.grants.into_iter().map(Into::into).collect(),
            grant_sets: p.grant_sets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_an_empty_id_anywhere_is_named() {
        let key = |t: &str, id: &str| ResourceKey { resource_type: t.into(), id: id.into() };
        let resource = Resource { resource_type: "user".into(), id: "u1".into(), display_name: String::new(), parent: None, attributes: Map::new() };
        let grant = Grant { id: "e:user:u1".into(), entitlement_id: "e".into(), principal: key("user", "u1"), immutable: false, attributes: Map::new() };
        let set = GrantSet { entitlement_id: "e".into(), principal_type: "user".into(), principal_ids: vec!["u2".into()], immutable: false };
        let good = PageRecords { resources: vec![resource.clone()], grants: vec![grant.clone()], grant_sets: vec![set.clone()], ..PageRecords::default() };
        assert_eq!(good.empty_id(), None, "an empty display name is no id");
        let bad = [
            PageRecords { resources: vec![Resource { id: String::new(), ..resource.clone() }], ..PageRecords::default() },
            PageRecords { resources: vec![Resource { parent: Some(key("team", "")), ..resource.clone() }], ..PageRecords::default() },
            PageRecords { grants: vec![Grant { principal: key("", "u1"), ..grant.clone() }], ..PageRecords::default() },
            PageRecords { grants: vec![Grant { id: String::new(), ..grant.clone() }], ..PageRecords::default() },
            PageRecords { grant_sets: vec![GrantSet { principal_ids: vec!["u2".into(), String::new()], ..set.clone() }], ..PageRecords::default() },
            PageRecords { grant_sets: vec![GrantSet { entitlement_id: String::new(), ..set }], ..PageRecords::default() },
        ];
        for page in bad {
            assert!(page.empty_id().is_some(), "{page:?}");
        }
    }
}
