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
