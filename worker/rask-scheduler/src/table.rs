//! The scheduler's task table: values in one vector of slots, reached by a [`TaskId`] (the slot's
//! number and a generation), with a hash map from key to id used only where a key arrives from
//! outside (a client's graph and held keys, a worker's report).
//!
//! A hash map stores its entries in a power-of-two array of buckets at most 7/8 full, so right
//! after it grows half its buckets are empty: with the task (300 bytes) in the bucket, a million
//! tasks took 673 MB of buckets. Here a bucket is a key and an id (24 bytes), the values sit in a
//! vector that only ever touches the slots it filled, and freed slots are reused.
//!
//! Inside the scheduler tasks refer to each other by id: reading a task by id is one index into
//! the vector, where a lookup by key hashes the key's text and reads the map's control bytes and
//! bucket first (at a million tasks, two or three cache misses each time). A slot freed and
//! filled again gets a new generation, so an id kept by mistake past its task's removal finds
//! nothing rather than the slot's next task.

use std::mem::size_of;

use rustc_hash::FxHashMap;

use rask_core::Key;

/// A task of the [`Table`]: its slot and the generation its value was given when inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskId {
    slot: u32,
    generation: u32,
}

struct Slot<T> {
    /// The generation of the value in the slot (or of the last one, when empty).
    generation: u32,
    value: Option<(Key, T)>,
}

pub(crate) struct Table<T> {
    index: FxHashMap<Key, TaskId>,
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
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            next_generation: 0,
        }
    }
}

impl<T> Table<T> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Room for `additional` more values without growing.
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.slots
            .reserve(additional.saturating_sub(self.free.len()));
    }

    /// Whether `additional` more values fit besides the ones there (ids number slots in 32 bits).
    pub fn has_room_for(&self, additional: usize) -> bool {
        self.len().saturating_add(additional) <= u32::MAX as usize
    }

    /// The id of `key`'s value.
    pub fn id(&self, key: &Key) -> Option<TaskId> {
        self.index.get(key).copied()
    }

    pub fn contains_key(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    fn slot(&self, id: TaskId) -> Option<&(Key, T)> {
        let slot = self.slots.get(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub fn get(&self, id: TaskId) -> Option<&T> {
        self.slot(id).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, id: TaskId) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut().map(|(_, v)| v)
    }

    /// The key of `id`'s value.
    pub fn key(&self, id: TaskId) -> Option<&Key> {
        self.slot(id).map(|(k, _)| k)
    }

    /// The key and value of `id`.
    pub fn entry(&self, id: TaskId) -> Option<(&Key, &T)> {
        self.slot(id).map(|(k, v)| (k, v))
    }

    /// The key and value of `id`, the value to change.
    pub fn entry_mut(&mut self, id: TaskId) -> Option<(&Key, &mut T)> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut().map(|(k, v)| (&*k, v))
    }

    /// Adds `key`'s value, or replaces it if `key` is there; its id (kept when replaced), and the
    /// value replaced. `None` when the table is full ([`Table::has_room_for`]).
    pub fn insert(&mut self, key: Key, value: T) -> Option<(TaskId, Option<T>)> {
        if let Some(&id) = self.index.get(&key)
            && let Some(slot) = self.slots.get_mut(id.slot as usize)
            && let Some((_, old)) = slot.value.as_mut()
        {
            return Some((id, Some(std::mem::replace(old, value))));
        }
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
        let id = TaskId { slot, generation };
        let s = &mut self.slots[slot as usize];
        s.generation = generation;
        s.value = Some((key.clone(), value));
        self.index.insert(key, id);
        Some((id, None))
    }

    pub fn remove(&mut self, id: TaskId) -> Option<(Key, T)> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let (key, value) = slot.value.take()?;
        self.index.remove(&key);
        self.free.push(id.slot);
        if self.index.is_empty() {
            // Nothing left: give the memory back (a million tasks' slots and index are hundreds
            // of MB an idle scheduler should not keep; a map kept its buckets), and the next
            // graph fills the slots in order. The generations go on.
            *self = Table {
                next_generation: self.next_generation,
                ..Table::default()
            };
        }
        Some((key, value))
    }

    /// Every value with its id and key, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (TaskId, &Key, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let (k, v) = s.value.as_ref()?;
            let id = TaskId {
                slot: i as u32,
                generation: s.generation,
            };
            Some((id, k, v))
        })
    }

    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots
            .iter()
            .filter_map(|s| s.value.as_ref().map(|(_, v)| v))
    }

    /// Bytes of the table itself (not of what its values own): the index's buckets at its
    /// capacity, and the slots filled so far (a vector's capacity beyond them is address space
    /// nothing has touched) with the free list.
    pub fn bytes(&self) -> usize {
        hash_table_bytes(self.index.capacity(), size_of::<(Key, TaskId)>())
            + self.slots.len() * size_of::<Slot<T>>()
            + self.free.capacity() * size_of::<u32>()
    }
}

/// Bytes of a hash table (hashbrown's layout) that can hold `capacity` entries of `entry`
/// bytes: a power of two of buckets, 7/8 of them usable, each with one control byte.
pub(crate) fn hash_table_bytes(capacity: usize, entry: usize) -> usize {
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

    fn add<T>(t: &mut Table<T>, key: &str, v: T) -> TaskId {
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
        assert_eq!(c.slot, a.slot);
        assert_ne!(c, a);
        assert_eq!(t.get(a), None);
        assert_eq!(t.get_mut(a), None);
        assert!(t.entry_mut(a).is_none());
        assert_eq!(t.get(c), Some(&4));
        let all: Vec<(TaskId, String, u32)> =
            t.iter().map(|(id, k, v)| (id, k.to_string(), *v)).collect();
        assert_eq!(all, vec![(c, "c".into(), 4), (b, "b".into(), 12)]);
        assert!(t.has_room_for(10) && !t.has_room_for(u32::MAX as usize));
    }

    #[test]
    fn an_emptied_table_gives_its_memory_back_and_starts_over() {
        let mut t: Table<u32> = Table::default();
        let ids: Vec<TaskId> = (0..100).map(|i| add(&mut t, &i.to_string(), i)).collect();
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
        assert_eq!(x.slot, 0);
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
        let map = hash_table_bytes(n * 8 / 7 + 1, 16 + 256);
        assert!(t.bytes() < map * 3 / 4, "{} against {map}", t.bytes());
        assert!(
            t.bytes() <= n * (256 + 24 + 2 * 25) + 4096,
            "{} for {n}",
            t.bytes()
        );
    }
}
