//! The uniform data model every connector's results are written in:
//! resource types, resources (with parent), entitlements on resources, and
//! grants of an entitlement to a principal.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::runtime::bindings::{guest, Pair};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceType {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub listed_under: Option<String>,
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

/// Everything one page of a listing carried.
#[derive(Debug, Default, Clone)]
pub struct PageRecords {
    pub resources: Vec<Resource>,
    pub entitlements: Vec<Entitlement>,
    pub grants: Vec<Grant>,
}

impl PageRecords {
    pub fn len(&self) -> usize {
        self.resources.len() + self.entitlements.len() + self.grants.len()
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

impl From<guest::ResourceType> for ResourceType {
    fn from(t: guest::ResourceType) -> Self {
        ResourceType { id: t.id, display_name: t.display_name, description: t.description, listed_under: t.listed_under }
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

impl From<guest::Page> for PageRecords {
    fn from(p: guest::Page) -> Self {
        PageRecords {
            resources: p.resources.into_iter().map(Into::into).collect(),
            entitlements: p.entitlements.into_iter().map(Into::into).collect(),
            grants: p.grants.into_iter().map(Into::into).collect(),
        }
    }
}
