//! The work of one sync: which listings are handed out and not finished
//! (each with the page it goes on from), which wait for a worker, and how
//! far the queue of resources has been walked. Saved as a version-3
//! checkpoint with every page (or batch of pages) written, so a resume asks every page not yet
//! written once, whatever was in flight.

use std::collections::{BTreeMap, VecDeque};

use super::checkpoint::{Checkpoint, ListingKey, Pending, Position, CHECKPOINT_VERSION};
use super::model::{Resource, ResourceType};
use crate::runtime::bindings::guest;

/// What a listing lists. The resource is as the connector reported it (the
/// sync file's merged record): a 0.4.0 connector gets it whole.
#[derive(Debug, Clone)]
pub enum Listing {
    Resources(String, Option<guest::Resource>),
    Entitlements(guest::Resource),
    Grants(guest::Resource),
}

impl Listing {
    /// Escaped: the ids are the connector's.
    pub fn describe(&self) -> String {
        let text = match self {
            Listing::Resources(t, None) => format!("listing {t} resources"),
            Listing::Resources(t, Some(scope)) => format!("listing {t} resources of {} {}", scope.resource_type, scope.id),
            Listing::Entitlements(r) => format!("listing entitlements of {} {}", r.resource_type, r.id),
            Listing::Grants(r) => format!("listing grants of {} {}", r.resource_type, r.id),
        };
        crate::terminal::escape(&text).into_owned()
    }
}

/// A listing handed out and not finished.
#[derive(Debug, Clone)]
pub struct Job {
    pub listing: Listing,
    /// The depth of the resources it lists.
    pub depth: u32,
    /// The page to ask next.
    pub token: Option<String>,
    /// Pages it brought in this process (against `pages-per-listing`).
    pub pages: u64,
}

/// A pending listing as its checkpoint entry saves it, kept in step with
/// its token: a checkpoint is saved with every commit, and serialising all
/// fifty pending listings each time cost more than the rest of the
/// checkpoint's write (see [`Work::checkpoint_json`]).
#[derive(Debug)]
struct Entry {
    job: Job,
    saved: String,
}

impl Entry {
    fn new(key: ListingKey, job: Job) -> Self {
        let saved = Entry::saved(key, &job);
        Entry { job, saved }
    }

    fn saved(key: ListingKey, job: &Job) -> String {
        serde_json::to_string(&Pending { listing: key, token: job.token.clone() }).expect("a pending listing serialises")
    }
}

/// The listings of one resource, in order: one per type listed under its
/// type, then its entitlements and its grants where its type has them (a
/// type the connector does not declare: both, as before 0.4.0). A
/// checkpoint names a listing by its place here: for one module (one
/// digest) the steps never change.
pub fn steps(types: &[ResourceType], resource: &Resource) -> Vec<Listing> {
    let (entitlements, grants) = own_listings(types, &resource.resource_type);
    let mut children = child_types(types, &resource.resource_type).peekable();
    if children.peek().is_none() && !entitlements && !grants {
        // Most users: nothing to list, nothing to convert.
        return vec![];
    }
    let whole = guest::Resource::from(resource);
    let mut steps: Vec<Listing> = children.map(|child| Listing::Resources(child.id.clone(), Some(whole.clone()))).collect();
    if entitlements {
        steps.push(Listing::Entitlements(whole.clone()));
    }
    if grants {
        steps.push(Listing::Grants(whole));
    }
    steps
}

/// How many listings a resource of `type_id` has (for the progress line's
/// estimate): as many as [`steps`] hands out.
pub fn listings_per_resource(types: &[ResourceType], type_id: &str) -> u64 {
    let (entitlements, grants) = own_listings(types, type_id);
    child_types(types, type_id).count() as u64 + u64::from(entitlements) + u64::from(grants)
}

/// The types listed under resources of `type_id`.
fn child_types<'t>(types: &'t [ResourceType], type_id: &'t str) -> impl Iterator<Item = &'t ResourceType> {
    types.iter().filter(move |t| t.listed_under.as_deref() == Some(type_id))
}

/// Whether resources of `type_id` list their entitlements and their grants
/// (a type the connector does not declare: both, as before 0.4.0).
fn own_listings(types: &[ResourceType], type_id: &str) -> (bool, bool) {
    match types.iter().find(|t| t.id == type_id) {
        Some(t) => (t.lists_entitlements, t.lists_grants),
        None => (true, true),
    }
}

/// The top-level types, in the connector's order.
pub fn top_level(types: &[ResourceType]) -> Vec<&ResourceType> {
    types.iter().filter(|t| t.listed_under.is_none()).collect()
}

#[derive(Debug, Default)]
pub struct Work {
    /// Every resource up to this row has had its listings handed out.
    pub cursor: i64,
    pending: BTreeMap<ListingKey, Entry>,
    /// Pending listings waiting for a worker, oldest first.
    ready: VecDeque<ListingKey>,
    /// Listings finished in this process.
    pub done: u64,
    /// Saved with the checkpoint (see `Checkpoint::settings`).
    pub settings: Option<String>,
}

impl Work {
    pub fn new(cursor: i64) -> Self {
        Work { cursor, ..Work::default() }
    }

    /// Hands out a listing (from `token`), to wait for a worker.
    pub fn add(&mut self, key: ListingKey, listing: Listing, depth: u32, token: Option<String>) {
        self.pending.insert(key, Entry::new(key, Job { listing, depth, token, pages: 0 }));
        self.ready.push_back(key);
    }

    /// The next listing to run, for a worker; it stays pending until its
    /// last page is in.
    pub fn take(&mut self) -> Option<(ListingKey, Job)> {
        let key = self.ready.pop_front()?;
        self.pending.get(&key).map(|entry| (key, entry.job.clone()))
    }

    /// The depth of the resources a pending listing lists.
    pub fn depth_of(&self, key: ListingKey) -> Option<u32> {
        self.pending.get(&key).map(|entry| entry.job.depth)
    }

    /// A pending listing, in words (escaped).
    pub fn describe(&self, key: ListingKey) -> String {
        self.pending.get(&key).map_or_else(|| format!("{key:?}"), |entry| entry.job.listing.describe())
    }

    /// Listings waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// Listings handed out and not finished (waiting or in flight).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A page of `key` came in: it goes on from `next`, or is done. Returns
    /// the listing's pages so far.
    pub fn page_done(&mut self, key: ListingKey, next: Option<String>) -> u64 {
        let Some(entry) = self.pending.get_mut(&key) else { return 0 };
        entry.job.pages += 1;
        let pages = entry.job.pages;
        match next {
            Some(next) => {
                entry.job.token = Some(next);
                entry.saved = Entry::saved(key, &entry.job);
            }
            None => {
                self.pending.remove(&key);
                self.done += 1;
            }
        }
        pages
    }

    /// A listing whose page came in with more to come goes back to wait
    /// for a worker (first in line: it was started already).
    pub fn requeue(&mut self, key: ListingKey) {
        if self.pending.contains_key(&key) {
            self.ready.push_front(key);
        }
    }

    /// The version-3 checkpoint of this state.
    pub fn checkpoint(&self) -> Checkpoint {
        let pending = self.pending.iter().map(|(key, entry)| Pending { listing: *key, token: entry.job.token.clone() }).collect();
        Position::Listings { cursor: self.cursor, pending }.into()
    }

    /// [`Work::checkpoint`] as saved, the JSON `serde_json` writes for it,
    /// put together from each pending listing's entry as last serialised.
    pub fn checkpoint_json(&self) -> String {
        let entries: Vec<&str> = self.pending.values().map(|entry| entry.saved.as_str()).collect();
        let settings = self.settings.as_deref().map(|s| format!(r#","settings":"{s}""#)).unwrap_or_default();
        format!(r#"{{"version":{CHECKPOINT_VERSION},"position":{{"phase":"listings","cursor":{},"pending":[{}]}}{settings}}}"#, self.cursor, entries.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str) -> guest::Resource {
        guest::Resource { resource_type: "team".into(), id: id.into(), display_name: id.into(), parent: None, attributes: vec![] }
    }

    fn t(id: &str, under: Option<&str>, lists_entitlements: bool, lists_grants: bool) -> ResourceType {
        ResourceType {
            id: id.into(),
            display_name: id.into(),
            description: String::new(),
            listed_under: under.map(str::to_string),
            lists_entitlements,
            lists_grants,
        }
    }

    fn resource(resource_type: &str, id: &str, attributes: &[(&str, &str)]) -> Resource {
        Resource {
            resource_type: resource_type.into(),
            id: id.into(),
            display_name: format!("{resource_type} {id}"),
            parent: None,
            attributes: attributes.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect(),
        }
    }

    /// Issue 9: the host asks for no listing a type says it has none of;
    /// every listing gets the resource with its attributes.
    #[test]
    fn steps_follow_the_types_listing_flags_and_carry_the_resource() {
        let types = [t("workspace", None, true, true), t("team", Some("workspace"), true, true), t("user", Some("workspace"), false, false)];
        let workspace = resource("workspace", "w1", &[("is_organization", "true")]);
        let steps = work_names(&steps(&types, &workspace));
        assert_eq!(steps, ["resources team", "resources user", "entitlements", "grants"]);
        for step in super::steps(&types, &workspace) {
            let whole = match step {
                Listing::Resources(_, Some(r)) | Listing::Entitlements(r) | Listing::Grants(r) => r,
                Listing::Resources(_, None) => panic!("a child listing has its scope"),
            };
            let attributes: Vec<(&str, &str)> = whole.attributes.iter().map(|p| (p.name.as_str(), p.value.as_str())).collect();
            assert_eq!(attributes, [("is_organization", "true")]);
            assert_eq!(whole.display_name, "workspace w1");
        }
        assert!(super::steps(&types, &resource("user", "u1", &[])).is_empty(), "a user lists nothing");
        assert_eq!(listings_per_resource(&types, "user"), 0);
        assert_eq!(listings_per_resource(&types, "workspace"), 4);
        let grants_only = [t("group", None, false, true)];
        assert_eq!(work_names(&super::steps(&grants_only, &resource("group", "g", &[]))), ["grants"]);
        // A type the connector does not declare: both, as before 0.4.0.
        assert_eq!(work_names(&super::steps(&grants_only, &resource("other", "o", &[]))), ["entitlements", "grants"]);
    }

    fn work_names(steps: &[Listing]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Listing::Resources(t, _) => format!("resources {t}"),
                Listing::Entitlements(_) => "entitlements".into(),
                Listing::Grants(_) => "grants".into(),
            })
            .collect()
    }

    #[test]
    fn the_checkpoint_holds_what_is_pending_with_its_next_page() {
        let mut work = Work::new(0);
        let a = ListingKey::Resource { row: 1, step: 0 };
        let b = ListingKey::Resource { row: 1, step: 1 };
        work.add(a, Listing::Entitlements(r("1")), 1, None);
        work.add(b, Listing::Grants(r("1")), 1, None);
        work.cursor = 1;
        let (first, _) = work.take().unwrap();
        let (second, _) = work.take().unwrap();
        assert_eq!((first, second), (a, b));
        assert!(work.take().is_none());
        assert_eq!(work.page_done(b, Some("p2".into())), 1);
        work.requeue(b);
        assert_eq!(work.page_done(a, None), 1);
        assert_eq!((work.pending(), work.waiting(), work.done), (1, 1, 1));
        let checkpoint = work.checkpoint();
        assert_eq!(checkpoint.position, Position::Listings { cursor: 1, pending: vec![Pending { listing: b, token: Some("p2".into()) }] });
        let text = serde_json::to_string(&checkpoint).unwrap();
        assert_eq!(Checkpoint::parse(&text).unwrap(), checkpoint);
        assert_eq!(work.checkpoint_json(), text);
        assert_eq!(work.take().unwrap().1.token.as_deref(), Some("p2"));
    }

    /// The checkpoint saved is put together from entries kept in step with
    /// each listing's token: it must be exactly what serialising the whole
    /// checkpoint gives, whatever the tokens hold and however they change.
    #[test]
    fn the_saved_checkpoint_is_the_checkpoint_serialised() {
        let mut work = Work::new(7);
        assert_eq!(work.checkpoint_json(), serde_json::to_string(&work.checkpoint()).unwrap());
        let top = ListingKey::TopLevel { index: 2 };
        let a = ListingKey::Resource { row: 9, step: 3 };
        let b = ListingKey::Resource { row: 4, step: 0 };
        work.add(top, Listing::Resources("workspace".into(), None), 0, Some("quote \" and \\ and é and \u{1}".into()));
        work.add(a, Listing::Grants(r("9")), 1, None);
        work.add(b, Listing::Entitlements(r("4")), 1, Some("x".into()));
        for (key, next) in [(a, Some("eyJvZmZzZXQiOjEwMH0=")), (b, Some("y")), (top, None), (a, Some("z\n"))] {
            work.page_done(key, next.map(str::to_string));
            let whole = serde_json::to_string(&work.checkpoint()).unwrap();
            assert_eq!(work.checkpoint_json(), whole);
            assert_eq!(Checkpoint::parse(&work.checkpoint_json()).unwrap(), work.checkpoint());
        }
        assert_eq!(work.pending(), 2);
    }
}
