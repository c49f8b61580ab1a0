//! Small sets for the task table, where nearly every list has zero or one member: a task's
//! holders (one worker), the clients that want it (one), its dependents (none or one). Each
//! keeps one member inline (in 16 bytes, half an empty `Vec`'s 24 and a pointer more) and
//! allocates only for more.

use std::collections::VecDeque;
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

/// The tasks a worker holds or a client wants, for the rare walks over all of them (a worker
/// lost or retiring, a client gone), as slot numbers in the order added: 4 bytes a task where a
/// hash set of ids took 19 at a million (twice the buckets, 9 bytes each), and adding one
/// appends rather than touching a random bucket.
///
/// The task's own list (`who_has`, `wanted_by`) is the truth. A task dropped from it stays here
/// until [`Holdings::compact`] (entries naming a slot whose task no longer lists the holder, or
/// a slot a later task took) and is only counted out by [`Holdings::removed`]; a walk
/// ([`Holdings::ids`]) checks each entry with the truth. Compacting when more than half the
/// entries are stale keeps it linear: each compaction looks at entries that at least as many
/// removals made stale.
#[derive(Debug, Default)]
pub(crate) struct Holdings {
    slots: Vec<u32>,
    /// Tasks held (entries that the truth would keep, each once).
    live: usize,
}

impl Holdings {
    /// The holder gained `id` (which was not in its task's list before).
    pub fn added(&mut self, id: TaskId) {
        self.slots.push(id.slot());
        self.live += 1;
    }

    /// The holder lost one task (its task's list no longer names it). Once nothing is held
    /// the memory goes back; `true` when enough is stale to [`Holdings::compact`].
    pub fn removed(&mut self) -> bool {
        self.live = self.live.saturating_sub(1);
        if self.live == 0 {
            *self = Holdings::default();
            return false;
        }
        self.stale_enough()
    }

    /// Whether more than half the entries are stale (and a few beyond): time to
    /// [`Holdings::compact`]. A caller removing many at once compacts after the last.
    pub fn stale_enough(&self) -> bool {
        self.slots.len() > 2 * self.live + 64
    }

    /// Tasks held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Keeps the entries whose slot's task `holds` (by the truth), each once, and counts them.
    pub fn compact(&mut self, holds: impl FnMut(u32) -> Option<TaskId>) {
        let ids = self.ids(holds);
        self.live = ids.len();
        self.slots = ids.iter().map(|id| id.slot()).collect();
    }

    /// The tasks held: each entry's task, where `holds` (given its slot) finds one held, each
    /// once, in slot order.
    pub fn ids(&self, holds: impl FnMut(u32) -> Option<TaskId>) -> Vec<TaskId> {
        let mut slots = self.slots.clone();
        slots.sort_unstable();
        slots.dedup();
        slots.into_iter().filter_map(holds).collect()
    }

    /// Heap bytes (the entries' vector at its capacity).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<u32>()
    }
}

/// How far into a worker's [`Sent`] queue a report is looked for.
const SENT_WINDOW: usize = 8;

/// The tasks sent to one worker, in the order sent, each with a tag of its key's hash (the
/// table's [`rask_core::table::key_hash`], cut to 32 bits). A worker runs its tasks in about
/// the order it got them, so the task a report names is nearly always among the first few
/// here: found by its tag and then its slot's key, which the report's handling reads anyway,
/// without the key index (whose control bytes and bucket miss the cache at a million tasks).
/// A report found here is the one the index would find (a key names one task); one not found
/// goes to the index.
///
/// Entries go when found, or once they reach the front and `live` says their task is no longer
/// on the worker; [`Sent::push`] drops every such entry when the queue grows past twice the
/// tasks on the worker (plus a little), which keeps it linear in those tasks.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    queue: VecDeque<(TaskId, u32)>,
}

/// A key's tag: the low half of its hash.
pub(crate) fn tag_of(hash: u64) -> u32 {
    hash as u32
}

impl Sent {
    /// `id` was sent; `on_worker` tasks are on the worker now, and `live` says whether an
    /// entry's task is still one of them.
    pub fn push(
        &mut self,
        id: TaskId,
        hash: u64,
        on_worker: usize,
        live: impl FnMut(TaskId) -> bool,
    ) {
        if self.queue.len() > 2 * on_worker + 64 {
            let mut live = live;
            self.queue.retain(|&(id, _)| live(id));
        }
        self.queue.push_back((id, tag_of(hash)));
    }

    /// The entry of the key with `hash` that `is_key` confirms, taken out; entries at the front
    /// whose task `live` says is no longer on the worker are dropped first.
    pub fn take(
        &mut self,
        hash: u64,
        mut is_key: impl FnMut(TaskId) -> bool,
        mut live: impl FnMut(TaskId) -> bool,
    ) -> Option<TaskId> {
        let tag = tag_of(hash);
        let mut checked_front = false;
        let mut i = 0;
        while i < self.queue.len().min(SENT_WINDOW) {
            let (id, t) = self.queue[i];
            if t == tag && is_key(id) {
                self.queue.remove(i);
                return Some(id);
            }
            if i == 0 && !checked_front {
                checked_front = true;
                if !live(id) {
                    self.queue.pop_front();
                    checked_front = false;
                    continue;
                }
            }
            i += 1;
        }
        None
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Heap bytes (the queue at its capacity).
    pub fn heap_bytes(&self) -> usize {
        self.queue.capacity() * size_of::<(TaskId, u32)>()
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

    #[test]
    fn holdings_walk_what_the_truth_holds_and_compact() {
        let mut t: Table<bool> = Table::default();
        let ids: Vec<TaskId> = (0..200)
            .map(|i| t.insert(Key::from(format!("k-{i}")), true).expect("room").0)
            .collect();
        let mut h = Holdings::default();
        for &id in &ids {
            h.added(id);
        }
        assert_eq!(h.len(), 200);
        // The truth: the table's flag. Drop the first 150; the entries stay until compacted.
        let mut compact_due = false;
        for &id in &ids[..150] {
            *t.get_mut(id).unwrap() = false;
            compact_due = h.removed();
        }
        assert!(
            compact_due,
            "{} entries for {} held",
            h.slots.len(),
            h.len()
        );
        let holds = |t: &Table<bool>, s: u32| t.id_at(s).filter(|&id| t.get(id) == Some(&true));
        assert_eq!(h.ids(|s| holds(&t, s)), ids[150..].to_vec());
        h.compact(|s| holds(&t, s));
        assert_eq!((h.len(), h.slots.len()), (50, 50));
        // A slot taken by another task after its entry went stale, held again: one entry each.
        let (old, _) = t.remove(ids[199]).unwrap();
        h.removed();
        let again = t.insert(old, true).expect("room").0;
        assert_eq!(again.slot(), ids[199].slot());
        h.added(again);
        assert_eq!(h.ids(|s| holds(&t, s)).len(), 50);
        for &id in &ids[150..199] {
            *t.get_mut(id).unwrap() = false;
            h.removed();
        }
        *t.get_mut(again).unwrap() = false;
        h.removed();
        // Nothing held: the memory goes back.
        assert_eq!((h.len(), h.heap_bytes()), (0, 0));
    }

    #[test]
    fn sent_tasks_are_found_in_order_out_of_order_and_stale_ones_go() {
        use crate::table::key_hash;
        // The truth: the table's flag says the task is still on the worker.
        let mut t: Table<bool> = Table::default();
        let keys: Vec<Key> = (0..300).map(|i| Key::from(format!("k-{i}"))).collect();
        let ids: Vec<TaskId> = keys
            .iter()
            .map(|k| t.insert(k.clone(), true).expect("room").0)
            .collect();
        let mut sent = Sent::default();
        for (&id, k) in ids.iter().zip(&keys).take(10) {
            sent.push(id, key_hash(k), 10, |_| true);
        }
        let take = |sent: &mut Sent, t: &Table<bool>, i: usize| {
            let k = &keys[i];
            sent.take(
                key_hash(k),
                |id| t.is_key_of(id, k),
                |id| t.get(id) == Some(&true),
            )
        };
        // In order, then one a little out of order.
        assert_eq!(take(&mut sent, &t, 0), Some(ids[0]));
        assert_eq!(take(&mut sent, &t, 2), Some(ids[2]));
        assert_eq!(take(&mut sent, &t, 1), Some(ids[1]));
        assert_eq!(sent.len(), 7);
        // Beyond the window, or never sent: not found here (the index finds it).
        assert_eq!(take(&mut sent, &t, 9 + 3), None);
        assert_eq!(take(&mut sent, &t, 200), None);
        // Tasks 3 to 5 left the worker unreported (withdrawn, say): once at the front they go.
        for &id in &ids[3..6] {
            *t.get_mut(id).unwrap() = false;
        }
        assert_eq!(take(&mut sent, &t, 7), Some(ids[7]));
        assert_eq!(sent.len(), 3);
        // Reports that never match (a worker out of order): the queue stays within twice the
        // tasks on the worker, plus a little.
        for (&id, k) in ids.iter().zip(&keys).skip(10) {
            *t.get_mut(id).unwrap() = false;
            sent.push(id, key_hash(k), 1, |id| t.get(id) == Some(&true));
        }
        assert!(sent.len() <= 2 + 64 + 1, "{} entries", sent.len());
    }
}
