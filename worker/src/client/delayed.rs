//! Delayed graphs: lazy calls that build a task graph, computed in one message.
//!
//! ```
//! use rask::client::delayed::{delayed, Delayed};
//! let parts: Vec<Delayed> = (0..6).map(|x| {
//!     delayed("add", vec![delayed("inc", vec![x.into()]).into(), delayed("custom_op", vec![x.into()]).into()])
//! }).collect();
//! let total = delayed("sum", vec![parts.into()]);
//! assert_eq!(total.graph().len(), 19);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashSet;

use crate::graph::{Arg, Key, TaskSpec};
use crate::value::Value;

/// A lazy call of a registered function; cheap to clone.
#[derive(Clone)]
pub struct Delayed(Arc<Node>);

struct Node {
    key: Key,
    func: Arc<str>,
    args: Vec<DArg>,
}

/// An argument of a delayed call.
#[derive(Clone)]
pub enum DArg {
    Value(Value),
    Delayed(Delayed),
    List(Vec<DArg>),
}

impl<T: Into<Value>> From<T> for DArg {
    fn from(v: T) -> Self {
        DArg::Value(v.into())
    }
}

impl From<Delayed> for DArg {
    fn from(d: Delayed) -> Self {
        DArg::Delayed(d)
    }
}

impl From<&Delayed> for DArg {
    fn from(d: &Delayed) -> Self {
        DArg::Delayed(d.clone())
    }
}

impl From<Vec<Delayed>> for DArg {
    fn from(ds: Vec<Delayed>) -> Self {
        DArg::List(ds.into_iter().map(DArg::Delayed).collect())
    }
}

/// Unique key for a new task of `func`: `func-<process token>-<counter>`.
pub(crate) fn new_key(func: &str) -> Key {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Key::new(format!("{func}-{}-{n}", process_token()))
}

/// A random token for this process, so keys from different clients never collide.
pub(crate) fn process_token() -> &'static str {
    use std::hash::{BuildHasher, Hasher};
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        format!("{:08x}", h.finish() as u32)
    })
}

/// A lazy call of the registered function `func` on `args`.
pub fn delayed(func: &str, args: Vec<DArg>) -> Delayed {
    Delayed(Arc::new(Node {
        key: new_key(func),
        func: func.into(),
        args,
    }))
}

impl Delayed {
    pub fn key(&self) -> &Key {
        &self.0.key
    }

    /// The task graph needed for this value, inputs before their users (the order in which the
    /// scheduler prefers to run them). Linear in the size of the graph.
    pub fn graph(&self) -> Vec<TaskSpec> {
        graph_of(std::slice::from_ref(self))
    }
}

/// The union of the graphs of `roots`, each task once, in depth-first post-order.
pub fn graph_of(roots: &[Delayed]) -> Vec<TaskSpec> {
    let mut out = Vec::new();
    let mut seen: FxHashSet<*const Node> = FxHashSet::default();
    // (node, children pushed yet?)
    let mut stack: Vec<(&Delayed, bool)> = roots.iter().rev().map(|d| (d, false)).collect();
    while let Some((d, expanded)) = stack.pop() {
        let ptr = Arc::as_ptr(&d.0);
        if expanded {
            out.push(TaskSpec {
                key: d.0.key.clone(),
                func: d.0.func.clone(),
                args: d.0.args.iter().map(to_arg).collect(),
            });
            continue;
        }
        if !seen.insert(ptr) {
            continue;
        }
        stack.push((d, true));
        let mut children = Vec::new();
        for a in &d.0.args {
            collect_children(a, &mut children);
        }
        for c in children.into_iter().rev() {
            if !seen.contains(&Arc::as_ptr(&c.0)) {
                stack.push((c, false));
            }
        }
    }
    out
}

fn collect_children<'a>(a: &'a DArg, out: &mut Vec<&'a Delayed>) {
    match a {
        DArg::Value(_) => {}
        DArg::Delayed(d) => out.push(d),
        DArg::List(items) => items.iter().for_each(|i| collect_children(i, out)),
    }
}

fn to_arg(a: &DArg) -> Arg {
    match a {
        DArg::Value(v) => Arg::Value(v.clone()),
        DArg::Delayed(d) => Arg::Key(d.0.key.clone()),
        DArg::List(items) => Arg::List(items.iter().map(to_arg).collect()),
    }
}

impl Drop for Node {
    /// Drops long chains without recursing once per link (a 100,000-long chain would overflow
    /// the stack otherwise).
    fn drop(&mut self) {
        let mut stack: Vec<DArg> = std::mem::take(&mut self.args);
        while let Some(a) = stack.pop() {
            match a {
                DArg::Value(_) => {}
                DArg::List(items) => stack.extend(items),
                DArg::Delayed(d) => {
                    if let Ok(mut node) = Arc::try_unwrap(d.0) {
                        stack.extend(std::mem::take(&mut node.args));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_is_post_order_and_shares_nodes() {
        let a = delayed("inc", vec![1.into()]);
        let b = delayed("add", vec![a.clone().into(), a.clone().into()]);
        let c = delayed(
            "sum",
            vec![DArg::List(vec![a.clone().into(), b.clone().into()])],
        );
        let g = c.graph();
        let keys: Vec<&Key> = g.iter().map(|t| &t.key).collect();
        assert_eq!(keys, vec![a.key(), b.key(), c.key()]);
        assert_eq!(
            g[2].args,
            vec![Arg::List(vec![
                Arg::Key(a.key().clone()),
                Arg::Key(b.key().clone())
            ])]
        );
    }

    #[test]
    fn long_chains_build_collect_and_drop_without_recursion() {
        let mut x = delayed("inc", vec![0.into()]);
        for _ in 0..200_000 {
            x = delayed("inc", vec![x.into()]);
        }
        assert_eq!(x.graph().len(), 200_001);
        drop(x);
    }

    #[test]
    fn wide_sum_graph_is_linear() {
        let parts: Vec<Delayed> = (0..100_000)
            .map(|i| delayed("inc", vec![i.into()]))
            .collect();
        let total = delayed("sum", vec![parts.into()]);
        let g = total.graph();
        assert_eq!(g.len(), 100_001);
        assert_eq!(g.last().map(|t| t.dependencies().len()), Some(100_000));
    }

    #[test]
    fn keys_are_unique_and_prefixed_by_function() {
        let a = delayed("custom_op", vec![1.into()]);
        let b = delayed("custom_op", vec![1.into()]);
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key().prefix(), "custom_op");
    }
}
