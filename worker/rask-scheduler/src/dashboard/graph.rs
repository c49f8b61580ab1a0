//! The graph panel's data: the task graph of the current computation and each task's state, as
//! the state machine records it. No I/O, no clock of its own.
//!
//! Recording costs nothing while no page is open: the state machine turns the recorder on when a
//! page asks for an update ([`GraphRecorder::watch`]) and off again [`GRAPH_WATCH_S`] after the
//! last one (`tick`). While it is on, each task of the graph holds its node's index, and a state
//! change is one write into [`GraphRecorder::states`]. A graph of more than [`GRAPH_LIMIT`] tasks
//! is not recorded at all: only its size is, for the page to say it is too large to draw.
//!
//! A page is sent the structure (each node's prefix, the edges) once per [`GraphRecorder::version`]
//! and then only the nodes whose state changed since its cursor.

use rask_core::Key;
use serde::Serialize;

use super::task::{Bucket, PrefixId};

/// The most tasks the graph panel draws: Dask's graph panel also stops at a few thousand.
pub const GRAPH_LIMIT: usize = 5_000;

/// How long, in seconds, the graph keeps being recorded after a page last asked for an update.
pub const GRAPH_WATCH_S: f64 = 10.0;

/// A task with no node in the recorded graph.
pub const NO_NODE: u32 = u32::MAX;

/// A node's state on the page: one digit each, in this order.
fn code(b: Bucket) -> u8 {
    match b {
        Bucket::Released => 0,
        Bucket::Waiting => 1,
        Bucket::Processing => 2,
        Bucket::Memory => 3,
        Bucket::Erred => 4,
    }
}

/// The graph of the current computation while a page watches.
#[derive(Default)]
pub struct GraphRecorder {
    /// Until when (seconds since the epoch) a page is taken to be watching; recording is on
    /// while `active`.
    watched_until: f64,
    active: bool,
    /// Bumped whenever the structure changes (a new graph, nodes added, too large): a page
    /// whose cursor holds another version is sent the whole graph.
    version: u64,
    /// Per node: its task's key (to take its index back from the task when the graph is
    /// dropped), prefix, state code and the change number of its last state change.
    keys: Vec<Key>,
    prefixes: Vec<PrefixId>,
    states: Vec<u8>,
    changed: Vec<u64>,
    /// Edges, dependency first.
    edges: Vec<(u32, u32)>,
    /// State changes recorded (the last one's number).
    seq: u64,
    /// Tasks of the current graph when it is too large to draw.
    too_large: Option<u64>,
}

/// The graph panel's part of an update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GraphUpdate {
    /// The structure's version: the page keeps the structure it was sent with this number.
    pub version: u64,
    /// With a new version: each node's prefix id, in node order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<PrefixId>>,
    /// With a new version: the edges as a flat list, `[dependency, dependent, ...]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<u32>>,
    /// With a new version: every node's state, one digit a node (0 released, 1 waiting,
    /// 2 processing, 3 memory, 4 erred).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub states: Option<String>,
    /// Otherwise: the nodes whose state changed, `[node, state, ...]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<u32>,
    /// Tasks in the current graph when it is too large to draw (more than [`GRAPH_LIMIT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub too_large: Option<u64>,
}

/// Where a page stands in the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphCursor {
    /// The structure version it has (0: none).
    pub version: u64,
    /// The last state change it has.
    pub seq: u64,
}

impl GraphRecorder {
    /// Whether tasks are recorded now.
    pub fn active(&self) -> bool {
        self.active
    }

    /// A page asked for an update at `now`: recording stays on for [`GRAPH_WATCH_S`]. Returns
    /// true when recording was off (the caller then records the tasks it already has).
    pub fn watch(&mut self, now: f64) -> bool {
        self.watched_until = now + GRAPH_WATCH_S;
        let started = !self.active;
        self.active = true;
        started
    }

    /// Whether no page has asked for an update since [`GRAPH_WATCH_S`] before `now`.
    pub fn unwatched(&self, now: f64) -> bool {
        self.active && now > self.watched_until
    }

    /// Stops recording and frees what was recorded; returns the keys whose tasks hold a node.
    pub fn stop(&mut self) -> Vec<Key> {
        self.active = false;
        self.too_large = None;
        self.version += 1;
        self.prefixes = Vec::new();
        self.states = Vec::new();
        self.changed = Vec::new();
        self.edges = Vec::new();
        std::mem::take(&mut self.keys)
    }

    /// Starts a new graph (the previous computation is over); returns the keys whose tasks hold
    /// a node of the old one.
    pub fn clear(&mut self) -> Vec<Key> {
        self.too_large = None;
        self.version += 1;
        self.prefixes.clear();
        self.states.clear();
        self.changed.clear();
        self.edges.clear();
        std::mem::take(&mut self.keys)
    }

    /// Nodes in the current graph.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `n` more tasks fit; when not, the graph becomes too large to draw and the keys
    /// whose tasks hold a node are returned in the error. A graph that is too large stays so
    /// (counting its tasks) until [`GraphRecorder::clear`].
    pub fn make_room(&mut self, n: usize) -> Result<(), Vec<Key>> {
        if let Some(t) = &mut self.too_large {
            *t += n as u64;
            self.version += 1;
            return Err(Vec::new());
        }
        if self.keys.len() + n <= GRAPH_LIMIT {
            return Ok(());
        }
        let total = (self.keys.len() + n) as u64;
        let keys = self.clear();
        self.too_large = Some(total);
        Err(keys)
    }

    /// Adds a node for `key`'s task; returns its index (for the task to hold).
    pub fn add_node(&mut self, key: Key, prefix: PrefixId, state: Bucket) -> u32 {
        let id = self.keys.len() as u32;
        self.keys.push(key);
        self.prefixes.push(prefix);
        self.states.push(code(state));
        self.changed.push(self.seq);
        self.version += 1;
        id
    }

    /// `dependency` is an input of `dependent` (both nodes).
    pub fn add_edge(&mut self, dependency: u32, dependent: u32) {
        let n = self.keys.len() as u32;
        if dependency < n && dependent < n {
            self.edges.push((dependency, dependent));
        }
    }

    /// Node `node`'s task moved to `state`.
    pub fn set(&mut self, node: u32, state: Bucket) {
        let Some(s) = self.states.get_mut(node as usize) else {
            return;
        };
        let c = code(state);
        if *s != c {
            *s = c;
            self.seq += 1;
            self.changed[node as usize] = self.seq;
        }
    }

    /// The prefixes of the graph's nodes, for the update to name them (only when the structure
    /// is sent).
    pub fn prefixes_to_send(&self, cursor: GraphCursor) -> &[PrefixId] {
        if cursor.version == self.version {
            &[]
        } else {
            &self.prefixes
        }
    }

    /// What a page at `cursor` is sent (`None`: nothing changed, or not recording), and its
    /// next cursor.
    pub fn update(&self, cursor: GraphCursor) -> (Option<GraphUpdate>, GraphCursor) {
        let next = GraphCursor {
            version: self.version,
            seq: self.seq,
        };
        if !self.active || cursor == next {
            return (None, cursor);
        }
        if cursor.version != self.version {
            let update = GraphUpdate {
                version: self.version,
                nodes: Some(self.prefixes.clone()),
                edges: Some(self.edges.iter().flat_map(|&(a, b)| [a, b]).collect()),
                states: Some(self.states.iter().map(|&c| char::from(b'0' + c)).collect()),
                changes: Vec::new(),
                too_large: self.too_large,
            };
            return (Some(update), next);
        }
        let changes = self
            .changed
            .iter()
            .enumerate()
            .filter(|&(_, &seq)| seq > cursor.seq)
            .flat_map(|(node, _)| [node as u32, u32::from(self.states[node])])
            .collect();
        let update = GraphUpdate {
            version: self.version,
            changes,
            ..GraphUpdate::default()
        };
        (Some(update), next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Key {
        Key::from(s)
    }

    #[test]
    fn the_structure_is_sent_once_then_only_state_changes() {
        let mut g = GraphRecorder::default();
        assert_eq!(g.update(GraphCursor::default()).0, None, "not recording");
        assert!(g.watch(1.0));
        assert!(!g.watch(2.0), "already recording");
        g.make_room(3).unwrap();
        let a = g.add_node(k("a-1"), 0, Bucket::Released);
        let b = g.add_node(k("a-2"), 0, Bucket::Released);
        let c = g.add_node(k("sum-1"), 1, Bucket::Released);
        g.add_edge(a, c);
        g.add_edge(b, c);
        g.add_edge(c, 7); // not a node: ignored
        g.set(a, Bucket::Processing);
        let (u, cur) = g.update(GraphCursor::default());
        let u = u.unwrap();
        assert_eq!(u.nodes.as_deref(), Some(&[0, 0, 1][..]));
        assert_eq!(u.edges.as_deref(), Some(&[0, 2, 1, 2][..]));
        assert_eq!(u.states.as_deref(), Some("200"));
        assert!(u.changes.is_empty());
        assert_eq!(g.prefixes_to_send(GraphCursor::default()), [0, 0, 1]);
        assert!(g.prefixes_to_send(cur).is_empty());
        // Nothing changed: nothing sent.
        assert_eq!(g.update(cur), (None, cur));
        g.set(a, Bucket::Memory);
        g.set(b, Bucket::Processing);
        g.set(b, Bucket::Processing); // no change, no entry
        let (u, cur2) = g.update(cur);
        let u = u.unwrap();
        assert_eq!((&u.nodes, &u.edges, &u.states), (&None, &None, &None));
        assert_eq!(u.changes, [0, 3, 1, 2]);
        let json = serde_json::to_value(&u).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"version": u.version, "changes": [0, 3, 1, 2]})
        );
        // A second page, from scratch, gets the whole graph with the current states.
        let (u, _) = g.update(GraphCursor::default());
        assert_eq!(u.unwrap().states.as_deref(), Some("320"));
        assert_eq!(g.update(cur2).0, None);
    }

    #[test]
    fn a_graph_over_the_limit_is_only_counted() {
        let mut g = GraphRecorder::default();
        g.watch(0.0);
        g.make_room(2).unwrap();
        g.add_node(k("a-1"), 0, Bucket::Released);
        g.add_node(k("a-2"), 0, Bucket::Released);
        let dropped = g.make_room(GRAPH_LIMIT - 1).unwrap_err();
        assert_eq!(dropped, [k("a-1"), k("a-2")]);
        assert!(g.is_empty());
        let (u, cur) = g.update(GraphCursor::default());
        let u = u.unwrap();
        assert_eq!(u.too_large, Some(GRAPH_LIMIT as u64 + 1));
        assert_eq!(u.nodes.as_deref(), Some(&[][..]));
        // More tasks join the count, and the page is told.
        assert_eq!(g.make_room(4).unwrap_err(), Vec::<Key>::new());
        let (u, _) = g.update(cur);
        assert_eq!(u.unwrap().too_large, Some(GRAPH_LIMIT as u64 + 5));
        // A new graph is drawn again.
        g.clear();
        g.make_room(1).unwrap();
        g.add_node(k("b-1"), 1, Bucket::Waiting);
        let (u, _) = g.update(cur);
        let u = u.unwrap();
        assert_eq!(u.too_large, None);
        assert_eq!(u.states.as_deref(), Some("1"));
    }

    #[test]
    fn recording_stops_when_no_page_asks_and_frees_the_graph() {
        let mut g = GraphRecorder::default();
        g.watch(100.0);
        g.add_node(k("a-1"), 0, Bucket::Released);
        assert!(!g.unwatched(100.0 + GRAPH_WATCH_S - 1.0));
        assert!(g.unwatched(100.0 + GRAPH_WATCH_S + 1.0));
        assert_eq!(g.stop(), [k("a-1")]);
        assert!(!g.active() && g.is_empty());
        assert!(!g.unwatched(1e9));
        // A state change for a node of the dropped graph is ignored.
        g.set(0, Bucket::Memory);
        assert_eq!(g.update(GraphCursor::default()).0, None);
    }
}
