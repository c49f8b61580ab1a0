//! Watches: a newline-delimited JSON stream of `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` events,
//! replayed from the retained history after the requested resourceVersion and then live, filtered
//! by namespace and selectors (an object that stops matching is sent as `DELETED`, one that starts
//! matching as `ADDED`). A resourceVersion older than the retained history gets a `410 Expired`
//! `ERROR` event, as from the API server's watch cache.

use crate::error::ApiError;
use crate::resources::{ResourceType, present};
use crate::selector::{FieldSelector, LabelSelector};
use crate::shared::Shared;
use crate::store::{EventType, ObjKey};
use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// Synthetic `ADDED` events for the current state, then live (`resourceVersion` unset or `0`).
    CurrentState,
    /// Everything after this resourceVersion.
    After(u64),
}

/// A parsed watch request.
pub(crate) struct WatchSpec {
    pub ty: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub start: Start,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: the current state, then a bookmark marking its end.
    pub send_initial_events: bool,
    /// `Accept: ...;as=PartialObjectMetadata`: events carry metadata only.
    pub metadata_only: bool,
    pub timeout: Duration,
}

impl WatchSpec {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn render(&self, obj: &Value) -> Value {
        let full = present(&self.ty, obj);
        if self.metadata_only {
            partial_metadata(&full)
        } else {
            full
        }
    }
}

/// An object as `meta.k8s.io/v1` `PartialObjectMetadata` (what metadata-only requests get).
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_default()})
}

fn line(kind: &str, obj: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    out.push(b'\n');
    out
}

struct Watcher {
    shared: Arc<Shared>,
    spec: WatchSpec,
    cursor: u64,
    rx: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    pending: Option<Vec<u8>>,
    done: bool,
}

impl Watcher {
    fn bookmark(&self, initial_end: bool) -> Vec<u8> {
        let mut meta = json!({"resourceVersion": self.cursor.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": self.spec.ty.kind, "apiVersion": self.spec.ty.api_version(), "metadata": meta}),
        )
    }

    /// Encodes the changes after the cursor that this watch sees, and advances the cursor.
    fn collect(&mut self) -> Result<Vec<u8>, Vec<u8>> {
        let state = self.shared.lock();
        if self.cursor < state.compacted {
            let status = ApiError::expired(format!(
                "too old resource version: {} ({})",
                self.cursor, state.compacted
            ))
            .to_status();
            return Err(line("ERROR", &status));
        }
        let resource = self.spec.ty.storage_key();
        let first = state.history.partition_point(|c| c.rv <= self.cursor);
        let mut out = Vec::new();
        for change in state.history.range(first..) {
            if change.resource != resource
                || self
                    .spec
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| *ns != change.namespace)
            {
                continue;
            }
            let now = self.spec.matches(&change.obj);
            let before = change.prev.as_ref().map(|p| self.spec.matches(p));
            let (kind, obj) = match (change.kind, before, now) {
                (EventType::Added, _, true) => ("ADDED", change.obj.as_ref().clone()),
                (EventType::Deleted, _, true) => ("DELETED", change.obj.as_ref().clone()),
                (EventType::Modified, Some(true), true) => {
                    ("MODIFIED", change.obj.as_ref().clone())
                }
                (EventType::Modified, Some(false) | None, true) => {
                    ("ADDED", change.obj.as_ref().clone())
                }
                (EventType::Modified, Some(true), false) => {
                    // Stopped matching: the previous state, at the new resourceVersion.
                    let mut prev = change
                        .prev
                        .as_ref()
                        .map(|p| p.as_ref().clone())
                        .unwrap_or_default();
                    prev["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                    ("DELETED", prev)
                }
                _ => continue,
            };
            out.extend(line(kind, &self.spec.render(&obj)));
        }
        self.cursor = self.cursor.max(state.rv);
        Ok(out)
    }

    async fn next(&mut self) -> Option<Vec<u8>> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        if self.done {
            return None;
        }
        let bookmark_every = self.shared.options.bookmark_interval;
        loop {
            self.rx.borrow_and_update();
            match self.collect() {
                Err(gone) => {
                    self.done = true;
                    return Some(gone);
                }
                Ok(out) if !out.is_empty() => return Some(out),
                Ok(_) => {}
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        return None;
                    }
                }
                () = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                    return None;
                }
                () = tokio::time::sleep(bookmark_every), if self.spec.bookmarks => {
                    return Some(self.bookmark(false));
                }
            }
        }
    }
}

/// Starts a watch: the body stream to send.
pub(crate) fn start(
    shared: Arc<Shared>,
    spec: WatchSpec,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let rx = shared.notify.subscribe();
    let (cursor, pending, expired) = {
        let state = shared.lock();
        let initial = spec.send_initial_events || spec.start == Start::CurrentState;
        match spec.start {
            Start::After(rv) if !initial && rv < state.compacted => {
                let status = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    state.compacted
                ))
                .to_status();
                (rv, Some(line("ERROR", &status)), true)
            }
            Start::After(rv) if !initial => (rv, None, false),
            _ => {
                let resource = spec.ty.storage_key();
                let mut out = Vec::new();
                let ns = spec.namespace.as_deref();
                let after: Option<&ObjKey> = None;
                for (_, stored) in state.range(&resource, ns, after) {
                    if spec.matches(&stored.obj) {
                        out.extend(line("ADDED", &spec.render(&stored.obj)));
                    }
                }
                (state.rv, Some(out), false)
            }
        }
    };
    let mut w = Watcher {
        deadline: Instant::now() + spec.timeout,
        shared,
        spec,
        cursor,
        rx,
        pending: pending.filter(|p| !p.is_empty()),
        done: expired,
    };
    if w.spec.send_initial_events && !expired {
        let mut p = w.pending.take().unwrap_or_default();
        p.extend(w.bookmark(true));
        w.pending = Some(p);
    }
    futures::stream::unfold(w, |mut w| async move {
        w.next().await.map(|b| (Bytes::from(b), w))
    })
}
