//! The key cache's table of ids to keys, for one resource type.
//!
//! A sync looks up a principal's key for every grant: 1.8M lookups at 100k
//! users, each in a table too big for the CPU's caches. A `HashMap` keeps
//! its control bytes and its entries apart, so a lookup missed the cache
//! twice, one miss after the other; here an id of up to 23 bytes (most
//! upstreams' ids: Asana's gids are 16) sits in its slot beside its key, so
//! a lookup reads one cache line. And [`KeyTable::touch`] lets a page's
//! lookups wait for memory together instead of one by one.

use std::hash::BuildHasher;

/// One entry, or none: an id of up to `INLINE` bytes with its key, in 32
/// bytes aligned to 32, so a slot never straddles two cache lines.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Slot {
    /// `EMPTY`, `LONG` (the id is `long_ids[index]`, with the index in the
    /// first 8 bytes of `bytes`), or the length of the id in `bytes`.
    tag: u8,
    bytes: [u8; INLINE],
    key: i64,
}

const INLINE: usize = 23;
const EMPTY: u8 = u8::MAX;
const LONG: u8 = u8::MAX - 1;
const EMPTY_SLOT: Slot = Slot { tag: EMPTY, bytes: [0; INLINE], key: 0 };
/// Slots a table starts with once it holds anything.
const FIRST_SLOTS: usize = 16;

/// Ids of one resource type and their keys, with linear probing. Up to
/// 7/8 of the slots are used, as in `HashMap`, so the table takes no more
/// memory than one: an id found usually sits in its first slot or the
/// next, in the same cache line or the one the CPU fetches beside it.
#[derive(Default)]
pub(super) struct KeyTable {
    slots: Vec<Slot>,
    /// Ids longer than `INLINE` bytes.
    long_ids: Vec<Box<str>>,
    len: usize,
    /// Seeded per table, so a connector cannot aim its ids at one run of
    /// slots (see `sync_file::FastMap`).
    hasher: foldhash::fast::RandomState,
}

impl KeyTable {
    /// Ids held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of ids held, as the key cache bounds them.
    #[cfg(test)]
    pub fn id_bytes(&self) -> usize {
        self.slots.iter().filter(|s| s.tag != EMPTY).map(|s| self.id_of(s).len()).sum()
    }

    pub fn get(&self, id: &str) -> Option<i64> {
        if self.slots.is_empty() {
            return None;
        }
        let probe = Probe::of(id);
        let mut at = self.first_slot(id);
        loop {
            let slot = &self.slots[at];
            if slot.tag == EMPTY {
                return None;
            }
            if self.holds(slot, &probe) {
                return Some(slot.key);
            }
            at = (at + 1) & (self.slots.len() - 1);
        }
    }

    /// Adds `id` with `key`, or gives it `key` if it is held.
    pub fn insert(&mut self, id: &str, key: i64) {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let at = self.slot_for(id);
        if self.slots[at].tag == EMPTY {
            self.slots[at] = self.slot_of(id);
            self.len += 1;
        }
        self.slots[at].key = key;
    }

    /// Reads the first slot of `id`: touched for a page's ids first, the
    /// cache misses of the lookups that follow overlap there (the loads do
    /// not depend on each other) instead of coming one after the other.
    pub fn touch(&self, id: &str) -> u8 {
        if self.slots.is_empty() {
            return EMPTY;
        }
        self.slots[self.first_slot(id)].tag
    }

    fn first_slot(&self, id: &str) -> usize {
        // The low bits of a foldhash are as good as its high ones.
        (self.hasher.hash_one(id) as usize) & (self.slots.len() - 1)
    }

    /// The slot holding `id`, or the empty one where it would go.
    fn slot_for(&self, id: &str) -> usize {
        let probe = Probe::of(id);
        let mut at = self.first_slot(id);
        while self.slots[at].tag != EMPTY && !self.holds(&self.slots[at], &probe) {
            at = (at + 1) & (self.slots.len() - 1);
        }
        at
    }

    fn holds(&self, slot: &Slot, probe: &Probe<'_>) -> bool {
        match probe {
            // A slot's bytes after its id are zeros, so whole arrays compare
            // (without a call to memcmp).
            Probe::Inline { tag, bytes } => slot.tag == *tag && slot.bytes == *bytes,
            Probe::Long(id) => slot.tag == LONG && self.id_of(slot) == *id,
        }
    }

    fn id_of<'s>(&'s self, slot: &'s Slot) -> &'s str {
        match slot.tag {
            LONG => &self.long_ids[long_index(slot)],
            // Copied from a str whole, so a whole UTF-8 sequence.
            len => std::str::from_utf8(&slot.bytes[..usize::from(len)]).unwrap_or_default(),
        }
    }

    /// A new slot for `id` (a long one is kept in `long_ids`).
    fn slot_of(&mut self, id: &str) -> Slot {
        let mut slot = EMPTY_SLOT;
        if id.len() <= INLINE {
            slot.tag = id.len() as u8;
            slot.bytes[..id.len()].copy_from_slice(id.as_bytes());
        } else {
            slot.tag = LONG;
            slot.bytes[..8].copy_from_slice(&(self.long_ids.len() as u64).to_le_bytes());
            self.long_ids.push(id.into());
        }
        slot
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(FIRST_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY_SLOT; slots]);
        for slot in old.into_iter().filter(|s| s.tag != EMPTY) {
            let at = self.slot_for(self.id_of(&slot));
            self.slots[at] = slot;
        }
    }
}

/// An id as a lookup compares it with slots.
enum Probe<'a> {
    Inline { tag: u8, bytes: [u8; INLINE] },
    Long(&'a str),
}

impl<'a> Probe<'a> {
    fn of(id: &'a str) -> Self {
        if id.len() > INLINE {
            return Probe::Long(id);
        }
        let mut bytes = [0; INLINE];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        Probe::Inline { tag: id.len() as u8, bytes }
    }
}

fn long_index(slot: &Slot) -> usize {
    let mut index = [0; 8];
    index.copy_from_slice(&slot.bytes[..8]);
    u64::from_le_bytes(index) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::align_of::<Slot>(), 32);
    }

    #[test]
    fn it_finds_ids_of_every_length() {
        let ids =
            [String::new(), "1200000000000008".into(), "a".repeat(23), "a".repeat(24), "é".repeat(11), format!("{}é", "a".repeat(21)), "x".repeat(70_000)];
        let mut table = KeyTable::default();
        assert_eq!((table.get("a"), table.touch("a")), (None, EMPTY), "an empty table holds nothing");
        for (key, id) in ids.iter().enumerate() {
            table.insert(id, key as i64);
        }
        assert_eq!(table.len(), ids.len());
        assert_eq!(table.id_bytes(), ids.iter().map(String::len).sum::<usize>());
        for (key, id) in ids.iter().enumerate() {
            assert_eq!(table.get(id), Some(key as i64), "{id:?}");
        }
        assert_eq!(table.get("120000000000000"), None, "a prefix is another id");
        assert_eq!(table.get(&"a".repeat(25)), None);
        table.insert(&ids[1], 99);
        assert_eq!((table.get(&ids[1]), table.len()), (Some(99), ids.len()), "inserted again, an id takes its new key");
    }

    #[test]
    fn it_keeps_every_id_as_it_grows() {
        let mut table = KeyTable::default();
        let id = |i: i64| if i % 7 == 0 { format!("{i}{}", "-".repeat(30)) } else { (1_200_000_000_000_000 + i * 7919).to_string() };
        for i in 0..50_000 {
            table.insert(&id(i), i);
        }
        assert_eq!(table.len(), 50_000);
        assert!(table.slots.len() * 7 >= 8 * table.len());
        // Probing never passes an empty slot, so an id held has a full first one.
        assert!((0..50_000).all(|i| table.touch(&id(i)) != EMPTY));
        assert!((0..50_000).all(|i| table.get(&id(i)) == Some(i)));
        assert_eq!(table.get(&id(50_000)), None);
    }
}
