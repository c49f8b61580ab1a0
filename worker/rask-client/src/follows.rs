//! The client's follows as its connection sees them: each follow's latest report, updated by
//! the reader task as reports arrive. [`crate::progress`] builds the public API on it.

use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use tokio::sync::watch;

use rask_core::Key;
use rask_core::protocol::{PrefixProgress, ProgressReport};

/// Where a follow's tasks stand, as last reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgressSnapshot {
    /// Per task prefix, in order of first appearance.
    pub prefixes: Vec<PrefixProgress>,
    /// Every followed task finished or failed (as of the last report).
    pub done: bool,
    /// Keys the scheduler did not know when they were followed (at most a few named); they are
    /// not counted.
    pub unknown: Vec<Key>,
    /// Reports received so far: 0 before the first.
    pub reports: u64,
    /// Why the connection to the scheduler was lost, if it was: no report will come.
    pub lost: Option<String>,
}

impl ProgressSnapshot {
    /// Tasks followed.
    pub fn total(&self) -> u64 {
        self.prefixes.iter().map(PrefixProgress::total).sum()
    }

    /// Tasks finished (in memory, or computed and since released).
    pub fn memory(&self) -> u64 {
        self.prefixes.iter().map(|p| p.memory).sum()
    }

    /// Tasks failed (or depending on one that failed).
    pub fn erred(&self) -> u64 {
        self.prefixes.iter().map(|p| p.erred).sum()
    }

    fn apply(&mut self, report: ProgressReport) {
        self.prefixes = report.prefixes;
        self.done = report.done;
        self.unknown = report.unknown;
        self.reports += 1;
    }
}

/// The client's side of its follows.
#[derive(Default)]
pub(crate) struct Follows {
    next: AtomicU64,
    open: std::sync::Mutex<FxHashMap<u64, Follower>>,
}

struct Follower {
    tx: watch::Sender<ProgressSnapshot>,
    /// Follows every graph the client sends from now on (`Client::follow_submissions`).
    submissions: bool,
}

impl Follows {
    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Follower>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn open(&self, submissions: bool) -> (u64, watch::Receiver<ProgressSnapshot>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(ProgressSnapshot::default());
        self.lock().insert(id, Follower { tx, submissions });
        (id, rx)
    }

    pub(crate) fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The follows that take every graph sent.
    pub(crate) fn of_submissions(&self) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|(_, f)| f.submissions)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A report arrived.
    pub(crate) fn on_report(&self, report: ProgressReport) {
        if let Some(f) = self.lock().get(&report.id) {
            f.tx.send_modify(|s| s.apply(report));
        } else {
            tracing::debug!(
                follow = report.id,
                "progress report of a follow no longer open"
            );
        }
    }

    /// The connection is gone: every follow says why.
    pub(crate) fn on_lost(&self, reason: &str) {
        for f in self.lock().values() {
            f.tx.send_modify(|s| s.lost = Some(reason.to_owned()));
        }
    }
}
