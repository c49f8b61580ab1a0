//! Clients following the progress of keys (`FollowKeys`): each follow counts its tasks per task
//! prefix with the dashboard's [`PrefixCounts`], moved as the state machine moves the tasks, and
//! is reported to its client at most every [`PROGRESS_INTERVAL_S`] (at once when it begins and
//! when it is done). No I/O: the state machine hands the reports to its outbox.

use rustc_hash::FxHashMap;

use crate::dashboard::feed::{Bucket, PrefixCounts};
use rask_core::Key;
use rask_core::protocol::{MAX_UNKNOWN_NAMED, PrefixProgress, ProgressReport};

/// Least time between two reports of one follow while its tasks run, in seconds: a terminal's
/// bars move smoothly, and a graph of a million tasks costs a few messages a second, not one
/// per task.
pub const PROGRESS_INTERVAL_S: f64 = 0.2;

/// A client of the scheduler, as the state machine numbers them (its `ClientId`).
type ClientId = u64;

/// A follow: its client's connection and the client's number for it.
pub type FollowId = (ClientId, u64);

/// Where a followed task is now, as the state machine tells this module (which knows the
/// dashboard's buckets, not the state machine's task states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Now {
    /// The state machine forgot the task.
    Forgotten,
    /// The task is released: its result (if any) is gone, nothing is computing it.
    Released,
    /// Any other state, as the dashboard's progress panel counts it.
    In(Bucket),
}

/// Where a client's follow (`FollowKeys`) counts a task, given where it counted it before
/// (`None`: not yet) and where the task is now: as the dashboard's progress panel does, except
/// that a task that finished or failed stays counted so when its result is released or the task
/// forgotten (an intermediate result its dependents no longer need is still done), and a
/// released task that did not is still to run. A task forgotten before it finished leaves the
/// count (`None`): nothing will compute it.
pub(crate) fn followed_bucket(before: Option<Bucket>, now: Now) -> Option<Bucket> {
    match (now, before) {
        (Now::Forgotten | Now::Released, Some(b @ (Bucket::Memory | Bucket::Erred))) => Some(b),
        (Now::Forgotten, _) => None,
        (Now::Released, _) => Some(Bucket::Waiting),
        (Now::In(b), _) => Some(b),
    }
}

/// One follow's count of one task.
struct Entry {
    follow: FollowId,
    /// Index into the follow's prefixes.
    prefix: u32,
    bucket: Bucket,
}

#[derive(Default)]
struct Follow {
    /// Per task prefix, in order of first appearance.
    prefixes: Vec<(String, PrefixCounts)>,
    prefix_ids: FxHashMap<String, u32>,
    /// Every key it counted (to forget them with the follow).
    keys: Vec<Key>,
    /// Keys of the last `FollowKeys` the scheduler did not know.
    unknown: Vec<Key>,
    /// Its counts changed since the last report.
    dirty: bool,
    /// The next report goes out without waiting for the interval (a new `FollowKeys`).
    urgent: bool,
    last_sent: f64,
    /// The last report said it was done.
    reported_done: bool,
}

impl Follow {
    fn prefix_of(&mut self, key: &Key) -> u32 {
        let name = key.prefix();
        if let Some(&i) = self.prefix_ids.get(name) {
            return i;
        }
        let i = u32::try_from(self.prefixes.len()).unwrap_or(u32::MAX);
        self.prefixes
            .push((name.to_owned(), PrefixCounts::default()));
        self.prefix_ids.insert(name.to_owned(), i);
        i
    }

    fn counts(&mut self, prefix: u32) -> Option<&mut PrefixCounts> {
        self.prefixes.get_mut(prefix as usize).map(|(_, c)| c)
    }

    fn done(&self) -> bool {
        self.prefixes.iter().all(|(_, c)| c.pending() == 0)
    }

    fn report(&self, id: u64) -> ProgressReport {
        ProgressReport {
            id,
            prefixes: self
                .prefixes
                .iter()
                .filter(|(_, c)| c.total() > 0)
                .map(|(name, c)| PrefixProgress {
                    name: name.clone(),
                    waiting: c.waiting + c.released,
                    processing: c.processing,
                    memory: c.memory,
                    erred: c.erred,
                })
                .collect(),
            done: self.done(),
            unknown: self.unknown.clone(),
        }
    }
}

/// Every follow of every client, and for each followed task the follows that count it.
#[derive(Default)]
pub struct Follows {
    follows: FxHashMap<FollowId, Follow>,
    by_key: FxHashMap<Key, Vec<Entry>>,
}

impl Follows {
    pub fn is_empty(&self) -> bool {
        self.follows.is_empty()
    }

    /// Follow `id` gets more keys (made if new): its next report goes out at once.
    pub fn begin(&mut self, id: FollowId) {
        let f = self.follows.entry(id).or_default();
        f.unknown.clear();
        f.urgent = true;
        f.dirty = true;
    }

    /// A key of follow `id`'s last `FollowKeys` is unknown to the scheduler.
    pub fn unknown(&mut self, id: FollowId, key: Key) {
        if let Some(f) = self.follows.get_mut(&id)
            && f.unknown.len() < MAX_UNKNOWN_NAMED
        {
            f.unknown.push(key);
        }
    }

    /// Whether follow `id` counts `key` already.
    pub fn counts_key(&self, id: FollowId, key: &Key) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|es| es.iter().any(|e| e.follow == id))
    }

    /// Follow `id` counts `key`, now in `bucket`.
    pub fn add(&mut self, id: FollowId, key: &Key, bucket: Bucket) {
        let Some(f) = self.follows.get_mut(&id) else {
            return;
        };
        let prefix = f.prefix_of(key);
        if let Some(c) = f.counts(prefix) {
            c.add(bucket);
        }
        f.keys.push(key.clone());
        self.by_key.entry(key.clone()).or_default().push(Entry {
            follow: id,
            prefix,
            bucket,
        });
    }

    /// A followed task moved to `state` (`None`: forgotten). Returns whether any follow still
    /// counts it by its key.
    pub fn task_changed(&mut self, key: &Key, now: Now) -> bool {
        let Some(entries) = self.by_key.get_mut(key) else {
            return false;
        };
        for e in entries.iter_mut() {
            let Some(f) = self.follows.get_mut(&e.follow) else {
                continue;
            };
            let to = followed_bucket(Some(e.bucket), now);
            if to == Some(e.bucket) {
                continue;
            }
            f.dirty = true;
            if let Some(c) = f.counts(e.prefix) {
                match to {
                    Some(to) => c.moved(e.bucket, to),
                    None => c.remove(e.bucket),
                }
            }
            if let Some(to) = to {
                e.bucket = to;
            }
        }
        if now == Now::Forgotten {
            self.by_key.remove(key);
            return false;
        }
        true
    }

    /// Ends follow `id`; returns the keys no follow counts any more.
    pub fn remove(&mut self, id: FollowId) -> Vec<Key> {
        let Some(f) = self.follows.remove(&id) else {
            return Vec::new();
        };
        let mut unfollowed = Vec::new();
        for k in f.keys {
            if let Some(es) = self.by_key.get_mut(&k) {
                es.retain(|e| e.follow != id);
                if es.is_empty() {
                    self.by_key.remove(&k);
                    unfollowed.push(k);
                }
            }
        }
        unfollowed
    }

    /// Ends every follow of `client`; returns the keys no follow counts any more.
    pub fn remove_client(&mut self, client: ClientId) -> Vec<Key> {
        let ids: Vec<FollowId> = self
            .follows
            .keys()
            .filter(|(c, _)| *c == client)
            .copied()
            .collect();
        ids.into_iter().flat_map(|id| self.remove(id)).collect()
    }

    /// The reports due at `now`: of the follows that changed, those last reported at least
    /// [`PROGRESS_INTERVAL_S`] ago, just begun, or just done.
    pub fn due(&mut self, now: f64) -> Vec<(ClientId, ProgressReport)> {
        let mut out = Vec::new();
        for (&(client, id), f) in &mut self.follows {
            if !f.dirty {
                continue;
            }
            let done = f.done();
            let due =
                f.urgent || (done && !f.reported_done) || now - f.last_sent >= PROGRESS_INTERVAL_S;
            if !due {
                continue;
            }
            f.dirty = false;
            f.urgent = false;
            f.last_sent = now;
            f.reported_done = done;
            out.push((client, f.report(id)));
        }
        out
    }
}
