//! Small sets for the task table, where nearly every list has zero or one member: a task's
//! holders (one worker), the clients that want it (one), its dependents (none or one). Each
//! keeps one member inline (in 16 bytes, half an empty `Vec`'s 24 and a pointer more) and
//! allocates only for more.

use std::mem::size_of;
use std::ops::Deref;

use rustc_hash::FxHashSet;

use crate::table::{TaskId, hash_table_bytes};

/// Ids (workers, clients) without duplicates, in insertion order; one inline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Ids {
    #[default]
    Empty,
    One([u64; 1]),
    /// Boxed: an inline `Vec` would make every task's two sets 8 bytes larger each.
    #[allow(
        clippy::box_collection,
        reason = "a pointer here, where a Vec takes 24 bytes in every task"
    )]
    Many(Box<Vec<u64>>),
}

impl Ids {
    /// Adds `id` unless present.
    pub fn insert(&mut self, id: u64) {
        match self {
            Ids::Empty => *self = Ids::One([id]),
            Ids::One([x]) if *x == id => {}
            Ids::One([x]) => *self = Ids::Many(Box::new(vec![*x, id])),
            Ids::Many(v) => {
                if !v.contains(&id) {
                    v.push(id);
                }
            }
        }
    }

    pub fn retain(&mut self, keep: impl FnMut(&u64) -> bool) {
        match self {
            Ids::Empty => {}
            Ids::One([x]) => {
                let mut keep = keep;
                if !keep(x) {
                    *self = Ids::Empty;
                }
            }
            Ids::Many(v) => {
                v.retain(keep);
                match v.len() {
                    0 => *self = Ids::Empty,
                    1 => *self = Ids::One([v[0]]),
                    _ => {}
                }
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Ids::Empty;
    }

    /// Heap bytes (none for up to one id).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Ids::Many(v) => size_of::<Vec<u64>>() + v.capacity() * size_of::<u64>(),
            _ => 0,
        }
    }
}

impl Deref for Ids {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        match self {
            Ids::Empty => &[],
            Ids::One(one) => one,
            Ids::Many(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a Ids {
    type Item = &'a u64;
    type IntoIter = std::slice::Iter<'a, u64>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A set of tasks (a task's dependents); one inline, a hash set beyond, so that removing one of a
/// million dependents stays cheap.
#[derive(Debug, Default)]
pub(crate) enum TaskSet {
    #[default]
    Empty,
    One(TaskId),
    Many(Box<FxHashSet<TaskId>>),
}

impl TaskSet {
    /// Adds `id`; whether it was new.
    pub fn insert(&mut self, id: TaskId) -> bool {
        match self {
            TaskSet::Empty => {
                *self = TaskSet::One(id);
                true
            }
            TaskSet::One(x) if *x == id => false,
            TaskSet::One(x) => {
                let mut set = FxHashSet::default();
                set.insert(*x);
                set.insert(id);
                *self = TaskSet::Many(Box::new(set));
                true
            }
            TaskSet::Many(set) => set.insert(id),
        }
    }

    /// Removes `id`; whether it was there.
    pub fn remove(&mut self, id: TaskId) -> bool {
        match self {
            TaskSet::One(x) if *x == id => {
                *self = TaskSet::Empty;
                true
            }
            TaskSet::Many(set) => {
                let removed = set.remove(&id);
                if set.is_empty() {
                    *self = TaskSet::Empty;
                }
                removed
            }
            _ => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, TaskSet::Empty)
    }

    pub fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        let (one, many) = match self {
            TaskSet::Empty => (None, None),
            TaskSet::One(x) => (Some(*x), None),
            TaskSet::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Heap bytes of the set (none for up to one task).
    pub fn heap_bytes(&self) -> usize {
        match self {
            TaskSet::Many(set) => {
                size_of::<FxHashSet<TaskId>>()
                    + hash_table_bytes(set.capacity(), size_of::<TaskId>())
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;
    use rask_core::Key;

    #[test]
    fn ids_keep_one_inline_and_grow_and_shrink() {
        let mut ids = Ids::default();
        assert!(ids.is_empty());
        ids.insert(3);
        ids.insert(3);
        assert_eq!(ids, Ids::One([3]));
        assert_eq!(ids.heap_bytes(), 0);
        ids.insert(5);
        ids.insert(7);
        assert_eq!(&*ids, &[3, 5, 7]);
        assert!(ids.contains(&5));
        ids.retain(|x| *x == 7);
        assert_eq!(ids, Ids::One([7]));
        ids.retain(|_| false);
        assert_eq!(ids, Ids::Empty);
        ids.insert(1);
        ids.clear();
        assert!(ids.is_empty());
        assert_eq!(size_of::<Ids>(), 16);
    }

    #[test]
    fn task_sets_keep_one_inline_and_grow_and_shrink() {
        let mut t: Table<()> = Table::default();
        let [a, b, c] = ["a", "b", "c"].map(|n| t.insert(Key::from(n), ()).expect("room").0);
        let mut s = TaskSet::default();
        assert!(s.insert(a));
        assert!(!s.insert(a));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![a]);
        assert_eq!(s.heap_bytes(), 0);
        assert!(s.insert(b));
        assert!(s.heap_bytes() > 0);
        let mut all: Vec<TaskId> = s.iter().collect();
        all.sort();
        assert_eq!(all, vec![a, b]);
        assert!(!s.remove(c));
        assert!(s.remove(a));
        assert!(s.remove(b));
        assert!(s.is_empty());
        assert!(!s.remove(b));
        assert_eq!(size_of::<TaskSet>(), 16);
    }
}
