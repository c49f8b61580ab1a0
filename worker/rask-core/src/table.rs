//! A table of values by [`Key`]: the values in one vector of slots, reached by a [`SlotId`] (the
//! slot's number and a generation), and an index from key to slot for where a key arrives from
//! outside (a scheduler's graph, a worker's report, a client's result). The scheduler keeps its
//! tasks in one, a client its held results.
//!
//! A hash map stores its entries in a power-of-two array of buckets at most 7/8 full, so right
//! after it grows half its buckets are empty: with a 300-byte task in the bucket, a million tasks
//! took 673 MB of buckets. Here the values sit in a vector that only ever touches the slots it
//! filled (freed slots are reused), and a bucket of the index is the slot's number, 4 bytes: the
//! key is the slot's, hashed again when the index grows (at a million keys 2,097,152 buckets
//! are 10 MB, where buckets of a key and an id took 50).
//!
//! Reading a value by id is one index into the vector, where a lookup by key hashes the key's
//! text and reads the index's control bytes, bucket and slot first (at a million keys, cache
//! misses each). A slot freed and filled again gets a new generation, so an id kept by mistake
//! past its value's removal finds nothing rather than the slot's next value.

use std::hash::BuildHasher;
use std::mem::size_of;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::Key;

/// A value of a [`Table`]: its slot and the generation its value was given when inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    slot: u32,
    generation: u32,
}

impl SlotId {
    /// The slot's number (reused after its value is removed: see [`SlotId`]'s generation).
    pub fn slot(self) -> u32 {
        self.slot
    }
}

/// Where a key not in the table would go: its hash, taken by [`Table::find`] and used again by
/// [`Table::insert_vacant`], so a key found absent and then added is hashed and probed once.
#[derive(Clone, Copy, Debug)]
pub struct Vacant {
    hash: u64,
}

struct Slot<T> {
    /// The generation of the value in the slot (or of the last one, when empty).
    generation: u32,
    value: Option<(Key, T)>,
}

pub struct Table<T> {
    /// Slot numbers, hashed by their slot's key. A removal leaves its entry (`stale` counts
    /// them): every lookup compares the key in the slot anyway, so an entry naming an empty slot
    /// or one a later key took finds nothing; they go when the index would otherwise grow.
    index: HashTable<u32>,
    /// Entries of `index` left by removals.
    stale: usize,
    /// Values in the table.
    live: usize,
    slots: Vec<Slot<T>>,
    /// Slots whose value was removed, reused first.
    free: Vec<u32>,
    /// The generation the next inserted value gets. It only grows (wrapping after 2³² inserts),
    /// also across [`Table::remove`]'s reset, so an id is never given out twice while the ids
    /// of its time can still be around.
    next_generation: u32,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            index: HashTable::new(),
            stale: 0,
            live: 0,
            slots: Vec::new(),
            free: Vec::new(),
            next_generation: 0,
        }
    }
}

fn hash_of(key: &Key) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// The hash a [`Table`] indexes `key` by: taken once, it serves [`Table::id_hashed`] and, cut
/// short, as a tag that tells keys apart without reading their slots.
pub fn key_hash(key: &Key) -> u64 {
    hash_of(key)
}

/// The key in slot `s` (every slot the index names holds a value).
fn key_in<T>(slots: &[Slot<T>], s: u32) -> Option<&Key> {
    slots
        .get(s as usize)
        .and_then(|slot| slot.value.as_ref())
        .map(|(k, _)| k)
}

/// The hash of slot `s`'s key, for the index to move its buckets when it grows.
fn rehash<T>(slots: &[Slot<T>], s: u32) -> u64 {
    key_in(slots, s).map_or(0, hash_of)
}

impl<T> Table<T> {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Room for `additional` more values without growing.
    pub fn reserve(&mut self, additional: usize) {
        self.index_room(additional);
        self.slots
            .reserve(additional.saturating_sub(self.free.len()));
    }

    /// Room in the index for `additional` more entries. Where it would grow and holds stale
    /// entries, it is built again from the slots without them (with room for twice the values,
    /// as growing would give): a removal thus costs nothing in the index, where finding and
    /// clearing its entry missed the cache twice at a million keys, and a rebuild happens only
    /// where growing would have hashed every entry again anyway (and where growing would have
    /// put every stale entry in one place: an empty slot has no key to hash).
    fn index_room(&mut self, additional: usize) {
        if self.index.capacity() - self.index.len() >= additional {
            return;
        }
        let slots = &self.slots;
        if self.stale > 0 {
            let capacity = (self.live + additional).max(2 * self.live);
            let mut index = HashTable::with_capacity(capacity);
            for (i, slot) in slots.iter().enumerate() {
                if let Some((key, _)) = &slot.value {
                    index.insert_unique(hash_of(key), i as u32, |&s| rehash(slots, s));
                }
            }
            self.index = index;
            self.stale = 0;
        } else {
            self.index.reserve(additional, |&s| rehash(slots, s));
        }
    }

    /// Whether `additional` more values fit besides the ones there (ids number slots in 32 bits).
    pub fn has_room_for(&self, additional: usize) -> bool {
        self.len().saturating_add(additional) <= u32::MAX as usize
    }

    /// `key`'s id, or where it would go ([`Table::insert_vacant`]).
    pub fn find(&self, key: &Key) -> Result<SlotId, Vacant> {
        self.find_hashed(key, hash_of(key))
    }

    /// [`Table::find`] with `key`'s [`key_hash`] taken already.
    fn find_hashed(&self, key: &Key, hash: u64) -> Result<SlotId, Vacant> {
        let slots = &self.slots;
        match self
            .index
            .find(hash, |&s| key_in(slots, s).is_some_and(|k| k == key))
        {
            Some(&s) => Ok(SlotId {
                slot: s,
                generation: slots[s as usize].generation,
            }),
            None => Err(Vacant { hash }),
        }
    }

    /// [`Table::find`] of each key of a batch, one after the other with nothing in between, so
    /// that their cache misses overlap: at a million keys, looking up a new key misses the cache
    /// on the index's control bytes, and a loop that also builds and inserts each value waits
    /// for every miss in turn. A key found stays found until it is removed; one found absent may
    /// have been inserted since (a batch naming a key twice): [`Table::find_again`] before
    /// inserting it, now a lookup in the cache.
    pub fn find_batch<'k>(
        &self,
        keys: impl Iterator<Item = &'k Key>,
    ) -> Vec<Result<SlotId, Vacant>> {
        keys.map(|k| self.find(k)).collect()
    }

    /// [`Table::find`] of `key`, found absent before (`vacant`) with values inserted since.
    pub fn find_again(&self, key: &Key, vacant: Vacant) -> Result<SlotId, Vacant> {
        self.find_hashed(key, vacant.hash)
    }

    /// The id of `key`'s value.
    pub fn id(&self, key: &Key) -> Option<SlotId> {
        self.find(key).ok()
    }

    /// [`Table::id`] with `key`'s [`key_hash`] taken already.
    pub fn id_hashed(&self, key: &Key, hash: u64) -> Option<SlotId> {
        debug_assert_eq!(hash, hash_of(key), "another key's hash");
        self.find_hashed(key, hash).ok()
    }

    /// Whether `id`'s value is there and its key is `key` (a guess at a key's id checked by its
    /// slot alone, without the index).
    pub fn is_key_of(&self, id: SlotId, key: &Key) -> bool {
        self.key(id).is_some_and(|k| k == key)
    }

    /// The id of `key`'s value, looked for first in slot `near` (where the caller expects it:
    /// keys often come back in the order they were added, so after the slot found last). A
    /// right guess reads the slot, as finding it does anyway, and none of the index: at a
    /// million keys that is two cache misses (its control bytes and its bucket) fewer.
    pub fn id_near(&self, key: &Key, near: u32) -> Option<SlotId> {
        self.id_in(key, near).or_else(|| self.id(key))
    }

    /// [`Table::id_near`] at `*cursor`, which then moves to the slot after the one found: a
    /// reader of keys in about the order they were added (a sum's inputs, a release, a peer's
    /// request) keeps one cursor and mostly never touches the index.
    pub fn id_next(&self, key: &Key, cursor: &mut u32) -> Option<SlotId> {
        let id = self.id_near(key, *cursor)?;
        *cursor = id.slot().wrapping_add(1);
        Some(id)
    }

    /// The id of `key`'s value if it is in slot `slot` (a guess checked by the slot alone;
    /// `None` says nothing of other slots).
    pub fn id_in(&self, key: &Key, slot: u32) -> Option<SlotId> {
        let s = self.slots.get(slot as usize)?;
        match &s.value {
            Some((k, _)) if k == key => Some(SlotId {
                slot,
                generation: s.generation,
            }),
            _ => None,
        }
    }

    pub fn contains_key(&self, key: &Key) -> bool {
        self.find(key).is_ok()
    }

    /// The id of the value in slot `slot`, if one is there (lists that keep slot numbers, 4
    /// bytes, rather than ids, check with it what a number names now).
    pub fn id_at(&self, slot: u32) -> Option<SlotId> {
        let s = self.slots.get(slot as usize)?;
        s.value.as_ref().map(|_| SlotId {
            slot,
            generation: s.generation,
        })
    }

    fn slot(&self, id: SlotId) -> Option<&(Key, T)> {
        let slot = self.slots.get(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub fn get(&self, id: SlotId) -> Option<&T> {
        self.slot(id).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, id: SlotId) -> Option<&mut T> {
        self.entry_mut(id).map(|(_, v)| v)
    }

    /// The key of `id`'s value.
    pub fn key(&self, id: SlotId) -> Option<&Key> {
        self.slot(id).map(|(k, _)| k)
    }

    /// The key and value of `id`.
    pub fn entry(&self, id: SlotId) -> Option<(&Key, &T)> {
        self.slot(id).map(|(k, v)| (k, v))
    }

    /// The key and value of `id`, the value to change.
    pub fn entry_mut(&mut self, id: SlotId) -> Option<(&Key, &mut T)> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut().map(|(k, v)| (&*k, v))
    }

    /// Adds `key`'s value, or replaces it if `key` is there; its id (kept when replaced), and the
    /// value replaced. `None` when the table is full ([`Table::has_room_for`]).
    pub fn insert(&mut self, key: Key, value: T) -> Option<(SlotId, Option<T>)> {
        match self.find(&key) {
            Ok(id) => {
                let old = self.get_mut(id)?;
                Some((id, Some(std::mem::replace(old, value))))
            }
            Err(vacant) => self.insert_vacant(vacant, key, value).map(|id| (id, None)),
        }
    }

    /// Adds `key`, which [`Table::find`] found absent (giving `vacant`) with nothing inserted
    /// since: its id, `None` when the table is full ([`Table::has_room_for`]).
    pub fn insert_vacant(&mut self, vacant: Vacant, key: Key, value: T) -> Option<SlotId> {
        debug_assert_eq!(vacant.hash, hash_of(&key), "a vacancy of another key");
        debug_assert!(!self.contains_key(&key), "{key} is in the table already");
        // Before the slot is filled: a rebuild adds the filled slots.
        self.index_room(1);
        let generation = self.next_generation;
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Slot {
                    generation,
                    value: None,
                });
                i
            }
        };
        self.next_generation = generation.wrapping_add(1);
        let s = &mut self.slots[slot as usize];
        s.generation = generation;
        s.value = Some((key, value));
        self.live += 1;
        let slots = &self.slots;
        self.index
            .insert_unique(vacant.hash, slot, |&s| rehash(slots, s));
        Some(SlotId { slot, generation })
    }

    pub fn remove(&mut self, id: SlotId) -> Option<(Key, T)> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let (key, value) = slot.value.take()?;
        // The index's entry stays, naming an empty slot (see `index`).
        self.stale += 1;
        self.live -= 1;
        self.free.push(id.slot);
        if self.live == 0 {
            // Nothing left: give the memory back (a million values' slots and index are hundreds
            // of MB a process at rest should not keep; a map keeps its buckets), and the next
            // values fill the slots in order. The generations go on.
            *self = Table {
                next_generation: self.next_generation,
                ..Table::default()
            };
        }
        Some((key, value))
    }

    /// Every value with its id and key, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (SlotId, &Key, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let (k, v) = s.value.as_ref()?;
            let id = SlotId {
                slot: i as u32,
                generation: s.generation,
            };
            Some((id, k, v))
        })
    }

    /// Every value, the values to change, in slot order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.value.as_mut().map(|(_, v)| v))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots
            .iter()
            .filter_map(|s| s.value.as_ref().map(|(_, v)| v))
    }

    /// Bytes of the table itself (not of what its values own): the index's buckets at its
    /// capacity, and the slots filled so far (a vector's capacity beyond them is address space
    /// nothing has touched) with the free list.
    pub fn bytes(&self) -> usize {
        hash_table_bytes(self.index.capacity(), size_of::<u32>())
            + self.slots.len() * size_of::<Slot<T>>()
            + self.free.capacity() * size_of::<u32>()
    }

    /// Bytes of one slot (a value, its key and generation).
    pub const SLOT_BYTES: usize = size_of::<Slot<T>>();
}

/// Bytes of a hash table (hashbrown's layout) that can hold `capacity` entries of `entry`
/// bytes: a power of two of buckets, 7/8 of them usable, each with one control byte.
pub fn hash_table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (entry + 1) + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Key {
        Key::from(s)
    }

    fn add<T>(t: &mut Table<T>, key: &str, v: T) -> SlotId {
        t.insert(k(key), v).expect("room").0
    }

    #[test]
    fn inserts_replaces_removes_and_reuses_slots() {
        let mut t: Table<u32> = Table::default();
        let a = add(&mut t, "a", 1);
        let b = add(&mut t, "b", 2);
        assert_eq!(t.insert(k("a"), 3), Some((a, Some(1))));
        assert_eq!(t.len(), 2);
        assert_eq!((t.id(&k("a")), t.get(a)), (Some(a), Some(&3)));
        *t.get_mut(b).unwrap() += 10;
        assert_eq!(t.entry(b).map(|(k, v)| (k.as_str(), *v)), Some(("b", 12)));
        assert_eq!(t.key(b).map(|k| k.as_str()), Some("b"));
        assert_eq!(
            t.remove(a).map(|(k, v)| (k.to_string(), v)),
            Some(("a".into(), 3))
        );
        assert_eq!(t.remove(a), None);
        assert!(!t.contains_key(&k("a")));
        assert_eq!((t.id(&k("a")), t.get(a), t.key(a)), (None, None, None));
        // The freed slot is taken by the next key, under a new generation: the old id finds
        // nothing there.
        let c = add(&mut t, "c", 4);
        assert_eq!(t.slots.len(), 2);
        assert_eq!(c.slot(), a.slot());
        assert_ne!(c, a);
        assert_eq!(t.get(a), None);
        assert_eq!(t.get_mut(a), None);
        assert!(t.entry_mut(a).is_none());
        assert_eq!(t.get(c), Some(&4));
        assert_eq!((t.id_at(c.slot()), t.id_at(b.slot())), (Some(c), Some(b)));
        assert_eq!(t.id_at(2), None);
        // A guess right or wrong (or past the end) finds the same.
        for near in [c.slot(), b.slot(), 7] {
            assert_eq!(t.id_near(&k("b"), near), Some(b));
            assert_eq!(t.id_near(&k("a"), near), None);
        }
        // A cursor moves past what it finds, and stays where it was on a miss.
        let mut cursor = 7;
        assert_eq!(t.id_next(&k("c"), &mut cursor), Some(c));
        assert_eq!(cursor, c.slot() + 1);
        assert_eq!(t.id_next(&k("a"), &mut cursor), None);
        assert_eq!(cursor, c.slot() + 1);
        let all: Vec<(SlotId, String, u32)> =
            t.iter().map(|(id, k, v)| (id, k.to_string(), *v)).collect();
        assert_eq!(all, vec![(c, "c".into(), 4), (b, "b".into(), 12)]);
        for v in t.values_mut() {
            *v += 1;
        }
        assert_eq!(t.values().copied().collect::<Vec<_>>(), vec![5, 13]);
        assert!(t.has_room_for(10) && !t.has_room_for(u32::MAX as usize));
    }

    #[test]
    fn a_key_found_absent_is_added_where_it_was_looked_for() {
        let mut t: Table<u32> = Table::default();
        let a = add(&mut t, "a", 1);
        assert_eq!(t.find(&k("a")).ok(), Some(a));
        let Err(vacant) = t.find(&k("b")) else {
            panic!("b is not in the table");
        };
        let b = t.insert_vacant(vacant, k("b"), 2).expect("room");
        assert_eq!((t.id(&k("b")), t.get(b)), (Some(b), Some(&2)));
        assert_eq!(t.id(&k("a")), Some(a));
    }

    #[test]
    fn a_batch_finds_what_is_there_and_a_key_added_since_is_found_again() {
        let mut t: Table<u32> = Table::default();
        let a = add(&mut t, "a", 1);
        let keys = [k("a"), k("b"), k("b")];
        let found = t.find_batch(keys.iter());
        assert_eq!(found[0].ok(), Some(a));
        let (Err(first_b), Err(second_b)) = (found[1], found[2]) else {
            panic!("b is not there yet: {found:?}")
        };
        // The first `b` goes in; the second, looked up before that, is found again.
        let b = t.find_again(&k("b"), first_b).err().unwrap();
        let id = t.insert_vacant(b, k("b"), 2).unwrap();
        assert_eq!(t.find_again(&k("b"), second_b).ok(), Some(id));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn lookups_hold_across_growth_and_removals() {
        // The index keeps only slot numbers: growing it rehashes every slot's key, and a
        // removal finds its bucket by slot number.
        let mut t: Table<usize> = Table::default();
        let ids: Vec<SlotId> = (0..5000)
            .map(|i| add(&mut t, &format!("x-{i}"), i))
            .collect();
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            assert_eq!(t.remove(*id).map(|(_, v)| v), Some(i));
        }
        for (i, id) in ids.iter().enumerate() {
            let found = t.id(&k(&format!("x-{i}")));
            if i % 3 == 0 {
                assert_eq!(found, None, "x-{i} was removed");
            } else {
                assert_eq!(found, Some(*id), "x-{i}");
                assert_eq!(t.get(*id), Some(&i));
            }
        }
        assert_eq!(t.len(), 5000 - 5000usize.div_ceil(3));
    }

    #[test]
    fn removals_leave_stale_entries_that_find_nothing_and_go_when_the_index_would_grow() {
        // Churn: 1,000 values live, 50,000 added and removed in turns, some keys coming back
        // into slots their old entries still name.
        let mut t: Table<usize> = Table::default();
        let mut live: std::collections::VecDeque<(usize, SlotId)> = Default::default();
        for i in 0..50_000 {
            let key = format!("k-{}", i % 7_000);
            if let Some(id) = t.id(&k(&key)) {
                let (_, v) = t.remove(id).expect("there");
                live.retain(|&(j, _)| j != v);
            }
            live.push_back((i, add(&mut t, &key, i)));
            if live.len() > 1_000 {
                let (j, id) = live.pop_front().expect("not empty");
                assert_eq!(t.remove(id).map(|(_, v)| v), Some(j));
                assert_eq!(t.id(&k(&format!("k-{}", j % 7_000))), None);
            }
        }
        assert_eq!(t.len(), live.len());
        for &(i, id) in &live {
            assert_eq!(t.id(&k(&format!("k-{}", i % 7_000))), Some(id));
            assert_eq!(t.get(id), Some(&i));
        }
        // The index did not grow with the removals: at most twice the live values' room,
        // stale entries included.
        assert!(
            t.index.capacity() <= 4 * 1_001,
            "{} for {} values",
            t.index.capacity(),
            t.len()
        );
        assert!(t.index.len() <= t.index.capacity());
    }

    #[test]
    fn an_emptied_table_gives_its_memory_back_and_starts_over() {
        let mut t: Table<u32> = Table::default();
        let ids: Vec<SlotId> = (0..100).map(|i| add(&mut t, &i.to_string(), i)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.remove(*id).map(|(_, v)| v), Some(i as u32));
        }
        assert!(t.is_empty());
        assert_eq!((t.slots.capacity(), t.free.capacity()), (0, 0));
        assert_eq!(t.index.capacity(), 0);
        assert_eq!(t.bytes(), 0);
        let x = add(&mut t, "x", 7);
        assert_eq!(t.get(x), Some(&7));
        // Slot 0 again, but none of the ids given out before the reset reaches it.
        assert_eq!(x.slot(), 0);
        assert!(ids.iter().all(|id| t.get(*id).is_none()));
    }

    #[test]
    fn the_table_costs_less_than_a_map_of_the_values() {
        // A value of 256 bytes, as a task is: the map's buckets would hold it at least once.
        let mut t: Table<[u64; 32]> = Table::default();
        let n = 20_000;
        for i in 0..n {
            add(&mut t, &i.to_string(), [0; 32]);
        }
        let map = hash_table_bytes(n * 8 / 7 + 1, size_of::<Key>() + 256);
        assert!(t.bytes() < map * 3 / 4, "{} against {map}", t.bytes());
        // The slots (the value, its key and generation), and an index of 4 bytes and a control
        // byte per bucket, at most two buckets per value.
        assert!(
            t.bytes() <= n * (256 + size_of::<Key>() + 8 + 2 * 5) + 4096,
            "{} for {n}",
            t.bytes()
        );
    }
}
