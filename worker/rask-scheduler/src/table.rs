//! The scheduler's task table: values by key, kept in one vector of slots with only a slot
//! number in the hash map.
//!
//! A hash map stores its entries in a power-of-two array of buckets at most 7/8 full, so right
//! after it grows half its buckets are empty: with the task (300 bytes) in the bucket, a million
//! tasks took 673 MB of buckets. Here a bucket is a key and a slot number (24 bytes), the values
//! sit in a vector that only ever touches the slots it filled, and freed slots are reused.

use std::mem::size_of;

use rustc_hash::FxHashMap;

use rask_core::Key;

pub(crate) struct Table<T> {
    index: FxHashMap<Key, usize>,
    slots: Vec<Option<T>>,
    /// Slots whose value was removed, reused first.
    free: Vec<usize>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
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

    pub fn contains_key(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &Key) -> Option<&T> {
        let &i = self.index.get(key)?;
        self.slots.get(i)?.as_ref()
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut T> {
        let &i = self.index.get(key)?;
        self.slots.get_mut(i)?.as_mut()
    }

    /// The table's own copy of the key, and its value.
    /// The table's own copy of `key` if it has one, else `key`: a clone of it shares the
    /// table's allocation, so keeping it costs no text and comparing it compares pointers.
    pub fn canonical(&self, key: Key) -> Key {
        match self.index.get_key_value(&key) {
            Some((k, _)) => k.clone(),
            None => key,
        }
    }

    pub fn get_key_value(&self, key: &Key) -> Option<(&Key, &T)> {
        let (k, &i) = self.index.get_key_value(key)?;
        Some((k, self.slots.get(i)?.as_ref()?))
    }

    /// Adds or replaces `key`'s value; the value replaced, if any.
    pub fn insert(&mut self, key: Key, value: T) -> Option<T> {
        if let Some(&i) = self.index.get(&key)
            && let Some(slot) = self.slots.get_mut(i)
        {
            return slot.replace(value);
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(value);
                i
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
        None
    }

    pub fn remove(&mut self, key: &Key) -> Option<T> {
        let i = self.index.remove(key)?;
        let value = self.slots.get_mut(i)?.take();
        self.free.push(i);
        if self.index.is_empty() {
            // Nothing left: give the memory back (a million tasks' slots and index are hundreds
            // of MB an idle scheduler should not keep; a map kept its buckets), and the next
            // graph fills the slots in order.
            *self = Table::default();
        }
        value
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &T)> {
        self.index
            .iter()
            .filter_map(|(k, &i)| Some((k, self.slots.get(i)?.as_ref()?)))
    }

    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// Bytes of the table itself (not of what its values own): the index's buckets at its
    /// capacity, and the slots filled so far (a vector's capacity beyond them is address space
    /// nothing has touched) with the free list.
    pub fn bytes(&self) -> usize {
        hash_table_bytes(self.index.capacity(), size_of::<(Key, usize)>())
            + self.slots.len() * size_of::<Option<T>>()
            + self.free.capacity() * size_of::<usize>()
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

    #[test]
    fn inserts_replaces_removes_and_reuses_slots() {
        let mut t: Table<u32> = Table::default();
        assert_eq!(t.insert(k("a"), 1), None);
        assert_eq!(t.insert(k("b"), 2), None);
        assert_eq!(t.insert(k("a"), 3), Some(1));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&k("a")), Some(&3));
        *t.get_mut(&k("b")).unwrap() += 10;
        assert_eq!(t.get(&k("b")), Some(&12));
        assert_eq!(t.remove(&k("a")), Some(3));
        assert_eq!(t.remove(&k("a")), None);
        assert!(!t.contains_key(&k("a")));
        assert_eq!(t.get(&k("a")), None);
        // The freed slot is taken by the next key.
        t.insert(k("c"), 4);
        assert_eq!(t.slots.len(), 2);
        let mut all: Vec<(String, u32)> = t.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        all.sort();
        assert_eq!(all, vec![("b".into(), 12), ("c".into(), 4)]);
        assert_eq!(
            t.get_key_value(&k("c")).map(|(k, v)| (k.as_str(), *v)),
            Some(("c", 4))
        );
        // A copy of a key read elsewhere comes back as the table's own; an unknown one as is.
        let ours = t.get_key_value(&k("c")).unwrap().0.as_str().as_ptr();
        let theirs = k("c");
        let theirs_ptr = theirs.as_str().as_ptr();
        let back = t.canonical(theirs);
        assert_eq!(back.as_str().as_ptr(), ours);
        assert_ne!(back.as_str().as_ptr(), theirs_ptr);
        let unknown = k("zz");
        let unknown_ptr = unknown.as_str().as_ptr();
        assert_eq!(t.canonical(unknown).as_str().as_ptr(), unknown_ptr);
    }

    #[test]
    fn an_emptied_table_gives_its_memory_back_and_starts_over() {
        let mut t: Table<u32> = Table::default();
        for i in 0..100 {
            t.insert(k(&i.to_string()), i);
        }
        for i in 0..100 {
            assert_eq!(t.remove(&k(&i.to_string())), Some(i));
        }
        assert!(t.is_empty());
        assert_eq!((t.slots.capacity(), t.free.capacity()), (0, 0));
        assert_eq!(t.index.capacity(), 0);
        assert_eq!(t.bytes(), 0);
        t.insert(k("x"), 7);
        assert_eq!(t.get(&k("x")), Some(&7));
    }

    #[test]
    fn the_table_costs_less_than_a_map_of_the_values() {
        // A value of 256 bytes, as a task is: the map's buckets would hold it at least once.
        let mut t: Table<[u64; 32]> = Table::default();
        let n = 20_000;
        for i in 0..n {
            t.insert(k(&i.to_string()), [0; 32]);
        }
        let map = hash_table_bytes(n * 8 / 7 + 1, 16 + 256);
        assert!(t.bytes() < map * 3 / 4, "{} against {map}", t.bytes());
        assert!(
            t.bytes() <= n * (256 + 2 * 25) + 4096,
            "{} for {n}",
            t.bytes()
        );
    }
}
