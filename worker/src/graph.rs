//! Task graphs: keys, task specifications and their arguments.
//!
//! This layer knows nothing of sockets or workers; collections build graphs out of these types and
//! the scheduler executes them.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// The name of a task and of its result, unique within a scheduler (Dask's "key").
#[derive(Clone, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(Arc<str>);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        // Most comparisons are of clones of one key (the scheduler's maps hold the graph's
        // keys), where the pointers match and the bytes need no comparing.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::hash::Hash for Key {
    /// Hashes the text, so equal keys hash alike whether or not they share an allocation.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Key {
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Key(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's prefix: everything before the first `-` (Dask groups task statistics by it),
    /// e.g. `inc` for `inc-3f2a-17`.
    pub fn prefix(&self) -> &str {
        let s = self.as_str();
        match s.find('-') {
            Some(i) if i > 0 => &s[..i],
            _ => s,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::new(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key::new(s)
    }
}

/// One argument of a task: a literal, the result of another task, or a list of those.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Arg {
    Value(Value),
    Key(Key),
    List(Vec<Arg>),
}

impl Arg {
    /// Calls `f` on every key this argument refers to, depth first.
    pub fn for_each_key(&self, f: &mut impl FnMut(&Key)) {
        match self {
            Arg::Value(_) => {}
            Arg::Key(k) => f(k),
            Arg::List(items) => items.iter().for_each(|a| a.for_each_key(f)),
        }
    }
}

impl<T: Into<Value>> From<T> for Arg {
    fn from(v: T) -> Self {
        Arg::Value(v.into())
    }
}

/// A task: a registered function applied to arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub key: Key,
    /// Name of a function in the [`crate::registry`] (shared: a graph repeats a few names).
    pub func: Arc<str>,
    pub args: Vec<Arg>,
}

impl TaskSpec {
    pub fn new(key: impl Into<Key>, func: impl Into<Arc<str>>, args: Vec<Arg>) -> Self {
        TaskSpec {
            key: key.into(),
            func: func.into(),
            args,
        }
    }

    /// The keys this task reads, without duplicates, in first-use order.
    pub fn dependencies(&self) -> Vec<Key> {
        let mut deps: Vec<Key> = Vec::new();
        for a in &self.args {
            a.for_each_key(&mut |k| deps.push(k.clone()));
        }
        if deps.len() <= 16 {
            // Few keys (the common case): a quadratic dedup is cheaper than a hash set.
            let mut unique: Vec<Key> = Vec::with_capacity(deps.len());
            for k in deps {
                if !unique.contains(&k) {
                    unique.push(k);
                }
            }
            return unique;
        }
        let mut seen = rustc_hash::FxHashSet::default();
        deps.retain(|k| seen.insert(k.clone()));
        deps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_unique_and_nested() {
        let t = TaskSpec::new(
            "sum-1",
            "sum",
            vec![
                Arg::List(vec![
                    Arg::Key("a-1".into()),
                    Arg::Key("b-1".into()),
                    Arg::Key("a-1".into()),
                ]),
                Arg::from(3),
            ],
        );
        assert_eq!(t.dependencies(), vec![Key::from("a-1"), Key::from("b-1")]);
    }

    #[test]
    fn prefix_is_the_function_part() {
        assert_eq!(Key::from("inc-ab12-3").prefix(), "inc");
        assert_eq!(Key::from("plain").prefix(), "plain");
        assert_eq!(Key::from("-odd").prefix(), "-odd");
    }
}
