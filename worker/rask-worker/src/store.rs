//! The worker's result store: encoded results in memory, spilled to disk when memory runs short.
//!
//! The policy follows Dask's worker: keep the bytes held in memory at or below a *target* of 60% of
//! the memory limit by writing the least recently used results to disk, one file per result. A
//! result larger than the target goes straight to disk.
//!
//! Recency is a counter bumped on every `put` and `get`; in-memory entries are indexed by it in a
//! `BTreeMap`, so finding the next victim is O(log n) however many results the worker holds.
//!
//! The entries sit in a [`Table`]: slots in the order results arrived, with an index of 4-byte
//! buckets. Results are mostly read, served and freed in about the order they were stored (a
//! wide task's inputs, a peer's request, the scheduler's release), so each lookup first tries
//! the slot after the last one found: at a million results a right guess reads one slot where a
//! hash lookup misses the cache two or three times.
//!
//! Each store spills into a directory of its own that it holds an exclusive lock on (`flock`)
//! while it lives. A worker killed without a chance to clean up (`SIGKILL`, the OOM killer)
//! leaves its directory behind unlocked: the next store made under the same `spill_dir` removes
//! such directories, as Dask's worker does with its scratch space.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use rask_core::table::{SlotId, Table};
use rask_core::{Encoded, Key};

/// Share of the memory limit that in-memory results may use before spilling starts (Dask's
/// `distributed.worker.memory.target`).
const TARGET_FRACTION_PERCENT: u128 = 60;

/// The name of every store's own directory starts with this.
const SPILL_PREFIX: &str = "rask-spill-";

/// An unlocked spill directory unchanged for this long is a stopped worker's. The age keeps a
/// store from removing another's directory in the moment between its creation and its lock.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// What went wrong storing, spilling or reading back a result.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create spill directory under {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot spill key {key:?} to {path} (it stays in memory): {source}")]
    Spill {
        key: Key,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read spilled key {key:?} from {path}: {source}")]
    Read {
        key: Key,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot store another result: the store holds {len}, as many as it can number")]
    Full { len: usize },
    #[error("spill file {path} of key {key:?} holds {actual} bytes, expected {expected}")]
    Length {
        key: Key,
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
}

/// Where an entry's bytes are.
#[derive(Debug)]
enum Place {
    /// In memory, and in the spill order ([`Entry::older`], [`Entry::newer`]).
    Memory { data: Encoded },
    /// In the spill file numbered `file` (see [`Store::spill_path`]).
    Disk { file: u64 },
}

#[derive(Debug)]
struct Entry {
    nbytes: u64,
    place: Place,
    /// In memory: the slots of the entries used just before and just after it ([`NO_SLOT`] at
    /// either end of the spill order).
    older: u32,
    newer: u32,
}

/// The end of the spill order.
const NO_SLOT: u32 = u32::MAX;

/// How the store was used since it was made: reads served from memory, reads and writes of
/// spill files (Dask's `SpillBuffer.cumulative_metrics`, without its pickling: results are stored
/// encoded, so spilling writes them as they are).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpillActivity {
    pub memory_read_count: u64,
    pub memory_read_bytes: u64,
    pub disk_read_count: u64,
    pub disk_read_bytes: u64,
    pub disk_read_seconds: f64,
    pub disk_write_count: u64,
    pub disk_write_bytes: u64,
    pub disk_write_seconds: f64,
}

/// Results of finished tasks, by key, within a memory budget.
pub struct Store {
    entries: Table<Entry>,
    /// The slot a lookup tries first: the one after the last found.
    near: Cell<u32>,
    /// The spill order, a list through the in-memory entries by last use: its oldest and newest
    /// slots ([`NO_SLOT`] when none is in memory). A use moves an entry to the newest end at
    /// the cost of its neighbours' links (an ordered map of use counts cost two tree walks, a
    /// fifth of the time a worker took to fetch and read a million-input task's inputs).
    oldest: u32,
    newest: u32,
    /// Entries in memory.
    in_memory: usize,
    /// In-memory bytes to stay at or below; `None` when there is no limit.
    target: Option<u64>,
    memory_bytes: u64,
    spilled_bytes: u64,
    /// This store's own directory; removed with everything in it when the store is dropped.
    spill_dir: tempfile::TempDir,
    /// The directory opened and exclusively locked while the store lives: how other stores
    /// tell it from a stopped worker's (see [`remove_stale_spill_dirs`]).
    _lock: File,
    /// Number of the next spill file. Files are named by number, never by key, since keys may
    /// contain `/`, `..` or anything else.
    next_file: u64,
    activity: SpillActivity,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.spill_dir.path())
            .field("in_memory", &(self.memory_count(), self.memory_bytes))
            .field("spilled", &(self.spilled_count(), self.spilled_bytes))
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn new(nbytes: u64, place: Place) -> Self {
        Entry {
            nbytes,
            place,
            older: NO_SLOT,
            newer: NO_SLOT,
        }
    }
}

impl Store {
    /// A store that keeps at most 60% of `memory_limit` bytes in memory (0 means no limit: never
    /// spill). Spill files go in a new directory of its own under `spill_dir`, which is created if
    /// missing, so stores sharing a `spill_dir` never collide.
    pub fn new(memory_limit: u64, spill_dir: &Path) -> Result<Store, StoreError> {
        let target = (memory_limit > 0)
            .then(|| (u128::from(memory_limit) * TARGET_FRACTION_PERCENT / 100) as u64);
        Store::with_target(target, spill_dir)
    }

    /// A store that keeps at most `target` bytes in memory (`None`: never spill on its own).
    pub fn with_target(target: Option<u64>, spill_dir: &Path) -> Result<Store, StoreError> {
        let create_err = |source| StoreError::CreateDir {
            path: spill_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(spill_dir).map_err(create_err)?;
        remove_stale_spill_dirs(spill_dir);
        let own_dir = tempfile::Builder::new()
            .prefix(SPILL_PREFIX)
            .tempdir_in(spill_dir)
            .map_err(create_err)?;
        let lock = File::open(own_dir.path())
            .and_then(|dir| dir.try_lock().map(|()| dir).map_err(io::Error::from))
            .map_err(|source| StoreError::CreateDir {
                path: own_dir.path().to_owned(),
                source,
            })?;
        Ok(Store {
            entries: Table::default(),
            near: Cell::new(0),
            oldest: NO_SLOT,
            newest: NO_SLOT,
            in_memory: 0,
            target,
            memory_bytes: 0,
            spilled_bytes: 0,
            spill_dir: own_dir,
            _lock: lock,
            next_file: 0,
            activity: SpillActivity::default(),
        })
    }

    /// Stores `data` under `key`, replacing any previous entry, then spills least recently used
    /// entries until memory is back at or below the target. Data larger than the target itself
    /// goes straight to disk.
    ///
    /// The data is stored even when this returns an error: a failed spill keeps the entry it was
    /// writing in memory (over the target) and reports which key and file failed. Only a store
    /// holding 2³² results ([`StoreError::Full`]) keeps nothing.
    pub fn put(&mut self, key: Key, data: Encoded) -> Result<(), StoreError> {
        let nbytes = data.len() as u64;
        if self.target.is_some_and(|target| nbytes > target) {
            let file = self.take_file_number();
            let started = Instant::now();
            match write_spill_file(&key, &self.spill_path(file), &data) {
                Ok(()) => {
                    self.wrote(nbytes, started);
                    self.spilled_bytes += nbytes;
                    let place = Place::Disk { file };
                    self.insert(key, Entry::new(nbytes, place))?;
                    return Ok(());
                }
                Err(e) => {
                    self.insert_in_memory(key, data)?;
                    return Err(e);
                }
            }
        }
        self.insert_in_memory(key, data)?;
        self.spill_to_target()
    }

    /// The id of `key`'s entry, looked for first in the slot after the last found.
    fn id(&self, key: &Key) -> Option<SlotId> {
        let mut near = self.near.get();
        let id = self.entries.id_next(key, &mut near);
        self.near.set(near);
        id
    }

    /// Adds `key`'s entry, replacing (and releasing) one stored before.
    fn insert(&mut self, key: Key, entry: Entry) -> Result<SlotId, StoreError> {
        let len = self.entries.len();
        let (id, replaced) = self
            .entries
            .insert(key.clone(), entry)
            .ok_or(StoreError::Full { len })?;
        if let Some(old) = replaced {
            self.release(&key, old);
        }
        Ok(id)
    }

    /// Accounts for `old`, `key`'s entry taken out of the store: its memory, or its spill file.
    fn release(&mut self, key: &Key, old: Entry) {
        match old.place {
            Place::Memory { .. } => {
                self.unlink(old.older, old.newer);
                self.memory_bytes -= old.nbytes;
            }
            Place::Disk { file } => {
                self.spilled_bytes -= old.nbytes;
                delete_spill_file(key, &self.spill_path(file));
            }
        }
    }

    /// The data stored under `key`, read back from its spill file if it was spilled, and marks
    /// it as just used.
    ///
    /// A spilled entry is moved back into memory (and its file deleted) only if it fits under
    /// the target without spilling anything else. Spilling others would turn every read under
    /// memory pressure into a write too, and most spilled results are read once, to feed one
    /// dependent or one peer; but when memory has been freed since, the next read is served from
    /// memory and the disk space is given back.
    ///
    /// An unreadable, missing or wrongly sized spill file is an error naming the key and file;
    /// the entry stays in the store, spilled, so the caller can `remove` it.
    pub fn get(&mut self, key: &Key) -> Result<Option<Encoded>, StoreError> {
        let Some(id) = self.id(key) else {
            return Ok(None);
        };
        let Some(entry) = self.entries.get(id) else {
            return Ok(None);
        };
        let (nbytes, file) = match &entry.place {
            Place::Memory { data } => {
                let data = data.clone();
                let (older, newer, nbytes) = (entry.older, entry.newer, entry.nbytes);
                if newer != NO_SLOT {
                    self.unlink(older, newer);
                    self.link_newest(id);
                }
                self.activity.memory_read_count += 1;
                self.activity.memory_read_bytes += nbytes;
                return Ok(Some(data));
            }
            Place::Disk { file } => (entry.nbytes, *file),
        };
        let path = self.spill_path(file);
        let started = Instant::now();
        let bytes = std::fs::read(&path).map_err(|source| StoreError::Read {
            key: key.clone(),
            path: path.clone(),
            source,
        })?;
        self.activity.disk_read_count += 1;
        self.activity.disk_read_bytes += bytes.len() as u64;
        self.activity.disk_read_seconds += started.elapsed().as_secs_f64();
        if bytes.len() as u64 != nbytes {
            return Err(StoreError::Length {
                key: key.clone(),
                path,
                expected: nbytes,
                actual: bytes.len() as u64,
            });
        }
        let data = Encoded::from_bytes(Bytes::from(bytes));
        let fits = self
            .target
            .is_none_or(|target| self.memory_bytes + nbytes <= target);
        if fits && let Some(entry) = self.entries.get_mut(id) {
            entry.place = Place::Memory { data: data.clone() };
            self.link_newest(id);
            self.spilled_bytes -= nbytes;
            self.memory_bytes += nbytes;
            delete_spill_file(key, &path);
        }
        Ok(Some(data))
    }

    /// Makes room for `additional` more results without growing.
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    /// Whether `key` is stored, in memory or on disk.
    pub fn contains(&self, key: &Key) -> bool {
        self.id(key).is_some()
    }

    /// Forgets `key`, freeing its memory or deleting its spill file; returns its size in bytes,
    /// or `None` if it was not stored.
    pub fn remove(&mut self, key: &Key) -> Option<u64> {
        let id = self.id(key)?;
        let (_, entry) = self.entries.remove(id)?;
        let nbytes = entry.nbytes;
        self.release(key, entry);
        Some(nbytes)
    }

    /// Size in bytes of the data stored under `key`.
    pub fn nbytes(&self, key: &Key) -> Option<u64> {
        self.entries.get(self.id(key)?).map(|e| e.nbytes)
    }

    /// Bytes of results held in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// Bytes of results spilled to disk.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Number of results held in memory.
    pub fn memory_count(&self) -> usize {
        self.in_memory
    }

    /// Number of results spilled to disk.
    pub fn spilled_count(&self) -> usize {
        self.entries.len() - self.in_memory
    }

    /// Reads and writes since the store was made.
    pub fn activity(&self) -> SpillActivity {
        self.activity
    }

    /// Number of results stored, in memory or on disk.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no results are stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys of all stored results, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.iter().map(|(_, key, _)| key)
    }

    /// Puts `id`'s entry (in memory, not in the spill order) at its newest end.
    fn link_newest(&mut self, id: SlotId) {
        let newest = self.newest;
        if let Some(e) = self.entries.get_mut(id) {
            e.older = newest;
            e.newer = NO_SLOT;
        }
        self.set_link(newest, |e| &mut e.newer, id.slot());
        if newest == NO_SLOT {
            self.oldest = id.slot();
        }
        self.newest = id.slot();
        self.in_memory += 1;
    }

    /// Puts `id`'s entry (in memory, not in the spill order) at its oldest end: an entry that
    /// failed to spill is the first tried again.
    fn link_oldest(&mut self, id: SlotId) {
        let oldest = self.oldest;
        if let Some(e) = self.entries.get_mut(id) {
            e.older = NO_SLOT;
            e.newer = oldest;
        }
        self.set_link(oldest, |e| &mut e.older, id.slot());
        if oldest == NO_SLOT {
            self.newest = id.slot();
        }
        self.oldest = id.slot();
        self.in_memory += 1;
    }

    /// Takes out of the spill order the entry between `older` and `newer`.
    fn unlink(&mut self, older: u32, newer: u32) {
        if older == NO_SLOT {
            self.oldest = newer;
        } else {
            self.set_link(older, |e| &mut e.newer, newer);
        }
        if newer == NO_SLOT {
            self.newest = older;
        } else {
            self.set_link(newer, |e| &mut e.older, older);
        }
        self.in_memory -= 1;
    }

    /// Sets one link of the entry in `slot` (none for [`NO_SLOT`]).
    fn set_link(&mut self, slot: u32, link: fn(&mut Entry) -> &mut u32, to: u32) {
        if slot == NO_SLOT {
            return;
        }
        if let Some(e) = self
            .entries
            .id_at(slot)
            .and_then(|id| self.entries.get_mut(id))
        {
            *link(e) = to;
        }
    }

    fn take_file_number(&mut self) -> u64 {
        let n = self.next_file;
        self.next_file += 1;
        n
    }

    fn spill_path(&self, file: u64) -> PathBuf {
        self.spill_dir.path().join(format!("{file:016x}"))
    }

    fn insert_in_memory(&mut self, key: Key, data: Encoded) -> Result<(), StoreError> {
        let nbytes = data.len() as u64;
        let place = Place::Memory { data };
        let id = self.insert(key, Entry::new(nbytes, place))?;
        self.link_newest(id);
        self.memory_bytes += nbytes;
        Ok(())
    }

    /// Spills least recently used entries until memory is at or below the target. Stops at the
    /// first failure, leaving that entry in memory.
    fn spill_to_target(&mut self) -> Result<(), StoreError> {
        match self.target {
            Some(target) => self.spill_to(target),
            None => Ok(()),
        }
    }

    /// Spills least recently used entries until at most `bytes` stay in memory (the worker asks
    /// when the whole process is over its spill threshold). Stops at the first failure, leaving
    /// that entry in memory.
    pub fn spill_to(&mut self, bytes: u64) -> Result<(), StoreError> {
        while self.memory_bytes > bytes {
            let Some(id) = self.entries.id_at(self.oldest) else {
                break;
            };
            let Some(e) = self.entries.get(id) else {
                break;
            };
            self.unlink(NO_SLOT, e.newer);
            let file = self.take_file_number();
            let path = self.spill_path(file);
            // Every entry in the spill order is in memory.
            let Some((key, entry)) = self.entries.entry_mut(id) else {
                continue;
            };
            let Place::Memory { data, .. } = &entry.place else {
                continue;
            };
            let started = Instant::now();
            if let Err(e) = write_spill_file(key, &path, data) {
                self.link_oldest(id);
                return Err(e);
            }
            entry.place = Place::Disk { file };
            let nbytes = entry.nbytes;
            self.memory_bytes -= nbytes;
            self.spilled_bytes += nbytes;
            self.wrote(nbytes, started);
        }
        Ok(())
    }

    fn wrote(&mut self, nbytes: u64, started: Instant) {
        self.activity.disk_write_count += 1;
        self.activity.disk_write_bytes += nbytes;
        self.activity.disk_write_seconds += started.elapsed().as_secs_f64();
    }
}

/// Writes a whole spill file; on failure removes whatever part of it was written.
fn write_spill_file(key: &Key, path: &Path, data: &Encoded) -> Result<(), StoreError> {
    std::fs::write(path, data.bytes()).map_err(|source| {
        // A partial file would only waste disk until the store is dropped; the write error is the
        // one worth reporting.
        let _ = std::fs::remove_file(path);
        StoreError::Spill {
            key: key.clone(),
            path: path.to_owned(),
            source,
        }
    })
}

/// Deletes a spill file that is no longer needed. A failure only leaves a stray file in the
/// store's own directory, which goes when the store is dropped, so it is logged, not returned.
fn delete_spill_file(key: &Key, path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(%key, path = %path.display(), error = %e, "cannot delete spill file");
    }
}

/// Removes the spill directories under `spill_dir` that stopped workers left: named like a
/// store's, unchanged for [`STALE_AFTER`], and locked by no one. Returns how many it removed;
/// what it cannot read or remove is logged and left.
fn remove_stale_spill_dirs(spill_dir: &Path) -> usize {
    let entries = match std::fs::read_dir(spill_dir) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(dir = %spill_dir.display(), %error, "cannot list the spill directory");
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPILL_PREFIX)
        {
            continue;
        }
        // `DirEntry::metadata` does not follow a symbolic link: only real directories go.
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        let path = entry.path();
        // A lock that cannot be had is a live store's; the lock is held until the removal ends.
        let unlocked = || File::open(&path).ok().filter(|dir| dir.try_lock().is_ok());
        let Some(_held) = stale.then(unlocked).flatten() else {
            continue;
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(dir = %path.display(), "removed a stopped worker's spill directory");
            }
            Err(error) => tracing::warn!(
                dir = %path.display(),
                %error,
                "cannot remove a stopped worker's spill directory"
            ),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Store {
        /// `key`'s entry (which must be there).
        fn entry(&self, key: &Key) -> &Entry {
            self.entries.get(self.id(key).unwrap()).unwrap()
        }
    }

    fn data(len: usize, fill: u8) -> Encoded {
        Encoded::from_bytes(Bytes::from(vec![fill; len]))
    }

    fn key(i: usize) -> Key {
        Key::from(format!("x-{i}"))
    }

    fn spill_files(store: &Store) -> usize {
        std::fs::read_dir(store.spill_dir.path()).unwrap().count()
    }

    const KIB: usize = 1024;
    const MIB: u64 = 1024 * 1024;

    #[test]
    fn put_get_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(0, dir.path()).unwrap();
        assert!(store.is_empty());
        let k = Key::from("inc-1");
        store.put(k.clone(), data(10, 7)).unwrap();
        assert!(store.contains(&k));
        assert_eq!(store.len(), 1);
        assert_eq!(store.nbytes(&k), Some(10));
        assert_eq!(store.memory_bytes(), 10);
        assert_eq!(store.get(&k).unwrap(), Some(data(10, 7)));
        assert_eq!(store.keys().collect::<Vec<_>>(), vec![&k]);

        store.put(k.clone(), data(4, 1)).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.memory_bytes(), 4);
        assert_eq!(store.get(&k).unwrap(), Some(data(4, 1)));

        assert_eq!(store.remove(&k), Some(4));
        assert_eq!(store.remove(&k), None);
        assert_eq!(store.get(&k).unwrap(), None);
        assert!(!store.contains(&k));
        assert_eq!(store.memory_bytes(), 0);
        assert!(store.is_empty());
    }

    #[test]
    fn results_over_the_limit_spill_and_read_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(MIB, dir.path()).unwrap();
        let target = store.target.unwrap();
        for i in 0..50 {
            store.put(key(i), data(100 * KIB, i as u8)).unwrap();
            assert!(store.memory_bytes() <= target, "over target after put {i}");
            assert_eq!(
                store.memory_bytes() + store.spilled_bytes(),
                (i as u64 + 1) * 100 * KIB as u64
            );
        }
        assert!(store.spilled_bytes() > 0);
        assert_eq!(store.len(), 50);
        assert_eq!(
            spill_files(&store) as u64 * 100 * KIB as u64,
            store.spilled_bytes()
        );
        for i in 0..50 {
            assert_eq!(store.get(&key(i)).unwrap(), Some(data(100 * KIB, i as u8)));
            assert!(store.memory_bytes() <= target);
        }
        for i in 0..50 {
            assert_eq!(store.remove(&key(i)), Some(100 * KIB as u64));
        }
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (0, 0));
        assert_eq!(spill_files(&store), 0);
    }

    #[test]
    fn least_recently_used_entries_spill_first() {
        let dir = tempfile::tempdir().unwrap();
        // Target 600 bytes: room for six 100-byte entries.
        let mut store = Store::new(1000, dir.path()).unwrap();
        for i in 0..6 {
            store.put(key(i), data(100, 0)).unwrap();
        }
        assert_eq!(store.spilled_bytes(), 0);
        // Reading x-0 makes x-1 the oldest.
        store.get(&key(0)).unwrap();
        store.put(key(6), data(100, 0)).unwrap();
        let on_disk = |s: &Store, i| matches!(s.entry(&key(i)).place, Place::Disk { .. });
        assert!(on_disk(&store, 1));
        assert!(!on_disk(&store, 0));
        store.put(key(7), data(100, 0)).unwrap();
        assert!(on_disk(&store, 2));
        assert!(!on_disk(&store, 0));
        assert_eq!(store.spilled_bytes(), 200);
    }

    impl Store {
        /// The in-memory keys from the oldest use to the newest, walking the spill order both
        /// ways (which must agree).
        fn spill_order(&self) -> Vec<Key> {
            let walk = |from: u32, next: fn(&Entry) -> u32| {
                let mut keys = Vec::new();
                let mut slot = from;
                while slot != NO_SLOT {
                    let id = self.entries.id_at(slot).unwrap();
                    let (k, e) = self.entries.entry(id).unwrap();
                    assert!(matches!(e.place, Place::Memory { .. }), "{k} is on disk");
                    keys.push(k.clone());
                    slot = next(e);
                }
                keys
            };
            let forward = walk(self.oldest, |e| e.newer);
            let mut backward = walk(self.newest, |e| e.older);
            backward.reverse();
            assert_eq!(forward, backward);
            assert_eq!(forward.len(), self.memory_count());
            forward
        }
    }

    #[test]
    fn the_spill_order_follows_every_put_read_removal_and_spill() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(0, dir.path()).unwrap();
        // What the order must be: keys by last use, oldest first.
        let mut model: Vec<Key> = Vec::new();
        let mut x: u64 = 7;
        for step in 0..3000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = key((x >> 33) as usize % 40);
            match (x >> 20) % 8 {
                0..=2 => {
                    store.put(k.clone(), data(10, 1)).unwrap();
                    model.retain(|m| *m != k);
                    model.push(k);
                }
                3..=5 => {
                    let got = store.get(&k).unwrap();
                    assert_eq!(got.is_some(), model.contains(&k), "step {step}: {k}");
                    if got.is_some() {
                        model.retain(|m| *m != k);
                        model.push(k);
                    }
                }
                6 => {
                    store.remove(&k);
                    model.retain(|m| *m != k);
                }
                _ => {
                    // Spills the oldest down to half; they leave the order (and the model).
                    let keep = model.len() / 2;
                    store.spill_to(keep as u64 * 10).unwrap();
                    let spilled = model.len() - keep;
                    let oldest: Vec<Key> = model.drain(..spilled).collect();
                    for k in oldest {
                        assert!(matches!(store.entry(&k).place, Place::Disk { .. }));
                        // Read back (it fits: no target), it is the newest again.
                        store.get(&k).unwrap();
                        model.push(k);
                    }
                }
            }
            assert_eq!(store.spill_order(), model, "step {step}");
        }
    }

    #[test]
    fn spilled_entry_comes_back_to_memory_only_when_it_fits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(1000, dir.path()).unwrap();
        for i in 0..7 {
            store.put(key(i), data(100, i as u8)).unwrap();
        }
        // Memory is full: reading x-0 serves it from disk and leaves it there.
        assert_eq!(store.get(&key(0)).unwrap(), Some(data(100, 0)));
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (600, 100));
        assert_eq!(spill_files(&store), 1);
        // With room again, the next read unspills it and deletes its file.
        store.remove(&key(6));
        assert_eq!(store.get(&key(0)).unwrap(), Some(data(100, 0)));
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (600, 0));
        assert_eq!(spill_files(&store), 0);
    }

    #[test]
    fn activity_counts_memory_reads_and_spill_file_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(1000, dir.path()).unwrap();
        assert_eq!(store.activity(), SpillActivity::default());
        for i in 0..7 {
            store.put(key(i), data(100, i as u8)).unwrap();
        }
        // The seventh put spilled x-0; one more straight to disk.
        store.put(key(7), data(2000, 7)).unwrap();
        assert_eq!((store.memory_count(), store.spilled_count()), (6, 2));
        store.get(&key(3)).unwrap();
        store.get(&key(3)).unwrap();
        store.get(&key(0)).unwrap();
        let a = store.activity();
        assert_eq!((a.memory_read_count, a.memory_read_bytes), (2, 200));
        assert_eq!((a.disk_read_count, a.disk_read_bytes), (1, 100));
        assert_eq!((a.disk_write_count, a.disk_write_bytes), (2, 2100));
        assert!(
            a.disk_read_seconds > 0.0 && a.disk_write_seconds > 0.0,
            "{a:?}"
        );
        // A read of a missing key counts nothing.
        store.get(&key(99)).unwrap();
        assert_eq!(store.activity(), a);
    }

    #[test]
    fn entry_bigger_than_the_target_goes_straight_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(1000, dir.path()).unwrap();
        store.put(key(0), data(100, 1)).unwrap();
        store.put(key(1), data(2000, 2)).unwrap();
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (100, 2000));
        assert_eq!(store.get(&key(1)).unwrap(), Some(data(2000, 2)));
        // Still too big to unspill.
        assert_eq!(store.spilled_bytes(), 2000);
        // Replacing it with a small value frees the disk.
        store.put(key(1), data(10, 3)).unwrap();
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (110, 0));
        assert_eq!(spill_files(&store), 0);
    }

    #[test]
    fn spill_to_brings_memory_down_oldest_first_and_data_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(0, dir.path()).unwrap();
        for i in 0..10 {
            store.put(key(i), data(100, i as u8)).unwrap();
        }
        assert_eq!(store.memory_bytes(), 1000);
        store.spill_to(450).unwrap();
        assert!(store.memory_bytes() <= 450, "{}", store.memory_bytes());
        assert_eq!(store.memory_bytes() + store.spilled_bytes(), 1000);
        assert_eq!(spill_files(&store), 6);
        // The oldest went first; every entry reads back intact.
        assert!(store.spilled_bytes() >= 500);
        for i in 0..10 {
            assert_eq!(
                store.get(&key(i)).unwrap(),
                Some(data(100, i as u8)),
                "key {i}"
            );
        }
    }

    #[test]
    fn limit_zero_never_spills() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(0, dir.path()).unwrap();
        for i in 0..20 {
            store.put(key(i), data(100 * KIB, 0)).unwrap();
        }
        assert_eq!(store.memory_bytes(), 2000 * KIB as u64);
        assert_eq!(store.spilled_bytes(), 0);
        assert_eq!(spill_files(&store), 0);
    }

    #[test]
    fn keys_with_path_characters_are_safe() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(10, dir.path()).unwrap();
        let keys = ["../../etc/passwd", "a/b", "('x', 0, 1)", "", "\0"].map(Key::from);
        for (i, k) in keys.iter().enumerate() {
            store.put(k.clone(), data(100, i as u8)).unwrap();
        }
        assert_eq!(spill_files(&store), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(store.get(k).unwrap(), Some(data(100, i as u8)));
        }
    }

    #[test]
    fn truncated_or_deleted_spill_file_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(10, dir.path()).unwrap();
        let (short, gone) = (Key::from("short/1"), Key::from("gone-2"));
        store.put(short.clone(), data(100, 1)).unwrap();
        store.put(gone.clone(), data(100, 2)).unwrap();
        let path_of = |s: &Store, k: &Key| match s.entry(k).place {
            Place::Disk { file } => s.spill_path(file),
            Place::Memory { .. } => panic!("{k} not spilled"),
        };
        let short_path = path_of(&store, &short);
        std::fs::write(&short_path, [1u8; 40]).unwrap();
        std::fs::remove_file(path_of(&store, &gone)).unwrap();

        let err = store.get(&short).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Length {
                expected: 100,
                actual: 40,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("\"short/1\""), "{msg}");
        assert!(msg.contains(&short_path.display().to_string()), "{msg}");

        let err = store.get(&gone).unwrap_err();
        assert!(matches!(err, StoreError::Read { .. }));
        assert!(err.to_string().contains("\"gone-2\""), "{err}");

        // Accounting is unchanged and the broken entries can still be removed.
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (0, 200));
        assert_eq!(store.remove(&gone), Some(100));
        assert_eq!(store.remove(&short), Some(100));
        assert_eq!((store.len(), store.spilled_bytes()), (0, 0));
    }

    #[test]
    fn unusable_spill_dir_is_an_error_at_new() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let err = Store::new(MIB, &file.join("spill")).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }));
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[test]
    fn failed_spill_keeps_the_entry_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(1000, dir.path()).unwrap();
        for i in 0..6 {
            store.put(key(i), data(100, i as u8)).unwrap();
        }
        // Replace the store's directory with a file, so nothing can be written in it (this works
        // even as root, unlike permissions).
        let own = store.spill_dir.path().to_owned();
        std::fs::remove_dir(&own).unwrap();
        std::fs::write(&own, b"").unwrap();

        let err = store.put(key(6), data(100, 6)).unwrap_err();
        assert!(matches!(err, StoreError::Spill { .. }));
        assert!(err.to_string().contains("\"x-0\""), "{err}");
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (700, 0));
        for i in 0..7 {
            assert_eq!(store.get(&key(i)).unwrap(), Some(data(100, i as u8)));
        }

        let err = store.put(key(7), data(5000, 7)).unwrap_err();
        assert!(err.to_string().contains("\"x-7\""), "{err}");
        assert_eq!(store.get(&key(7)).unwrap(), Some(data(5000, 7)));
        assert_eq!((store.memory_bytes(), store.spilled_bytes()), (5700, 0));

        // Once the disk works again, the next put catches up.
        std::fs::remove_file(&own).unwrap();
        std::fs::create_dir(&own).unwrap();
        store.remove(&key(7));
        store.put(key(8), data(100, 8)).unwrap();
        assert!(store.memory_bytes() <= 600);
        assert_eq!(store.memory_bytes() + store.spilled_bytes(), 800);
    }

    #[test]
    fn spill_directory_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::new(10, dir.path()).unwrap();
        let mut b = Store::new(10, dir.path()).unwrap();
        assert_ne!(a.spill_dir.path(), b.spill_dir.path());
        b.put(key(0), data(100, 0)).unwrap();
        let own = b.spill_dir.path().to_owned();
        assert_eq!(spill_files(&b), 1);
        drop(b);
        assert!(!own.exists());
        assert!(a.spill_dir.path().exists());
        drop(a);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Sets a directory's modification time `age` in the past.
    fn age(dir: &Path, age: Duration) {
        let at = std::time::SystemTime::now() - age;
        File::open(dir).unwrap().set_modified(at).unwrap();
    }

    #[test]
    fn a_stopped_workers_spill_directory_is_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str, old: bool| {
            let p = dir.path().join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("0000000000000000"), b"spilled").unwrap();
            if old {
                age(&p, Duration::from_secs(120));
            }
            p
        };
        let killed = mk("rask-spill-killed", true);
        let live = mk("rask-spill-live", true);
        let just_made = mk("rask-spill-new", false);
        let other = mk("not-rask", true);
        // A live worker holds its directory's lock (another open file here: `flock` locks
        // conflict between open files, in one process as across processes).
        let held = File::open(&live).unwrap();
        held.lock().unwrap();
        let live_store = Store::new(10, dir.path()).unwrap();
        age(live_store.spill_dir.path(), Duration::from_secs(120));

        let store = Store::new(10, dir.path()).unwrap();
        assert!(!killed.exists(), "the killed worker's directory is removed");
        assert!(live.exists() && just_made.exists() && other.exists());
        assert!(
            live_store.spill_dir.path().exists(),
            "a live store's directory is kept"
        );
        drop(held);
        drop(store);
        assert_eq!(
            remove_stale_spill_dirs(dir.path()),
            1,
            "the unlocked old one"
        );
        assert!(!live.exists() && live_store.spill_dir.path().exists());
    }

    #[test]
    fn an_unreadable_spill_dir_removes_nothing() {
        assert_eq!(remove_stale_spill_dirs(Path::new("/nonexistent/rask")), 0);
    }
}
