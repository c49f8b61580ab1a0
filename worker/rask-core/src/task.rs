//! Tasks: what a client builds, the scheduler places and a worker runs.
//!
//! A task names a registered function (`family.function`), the keys of the results it reads (its
//! inputs, in the order the function sees them), the function's arguments as one payload (the
//! family's serde type, encoded by whoever built the task), and the resources it holds while it
//! runs. The scheduler reads the function name, the inputs and the resources; only the worker that
//! runs the task decodes the payload.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::key::Key;
use crate::small_bytes::SmallBytes;

/// The name of a registered function: `family.function` (`array.eval`, `seed.inc`).
///
/// Names written in code (a [`crate::Func`] constant) are borrowed for the program's lifetime, so
/// building a task names its function without allocating; names read off the wire are shared.
#[derive(Clone)]
pub struct FuncName(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl FuncName {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        FuncName(Name::Shared(name.into()))
    }

    /// A name known at compile time: no allocation.
    pub const fn from_static(name: &'static str) -> Self {
        FuncName(Name::Static(name))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(s) => s,
            Name::Shared(s) => s,
        }
    }

    /// The family part: everything before the first `.` (the whole name if there is none).
    pub fn family(&self) -> &str {
        let s = self.as_str();
        s.split_once('.').map_or(s, |(f, _)| f)
    }
}

// Equality, order and hash are the text's, whichever way the name is held; hashing as `str` lets
// maps keyed by `FuncName` be searched with a `&str` (`Borrow`).
impl PartialEq for FuncName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FuncName {}

impl PartialOrd for FuncName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FuncName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for FuncName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for FuncName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for FuncName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FuncName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FuncName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a function name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FuncName, E> {
                Ok(FuncName(Name::Shared(interned(name))))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The names a process has read off the wire, shared: every task names its function, and a
/// process sees only a few functions, so each name is allocated once per thread rather than
/// once per task. Past [`INTERNED_MAX`] names (a client inventing names), new ones are
/// allocated each time instead of growing the table.
fn interned(name: &str) -> Arc<str> {
    thread_local! {
        static NAMES: std::cell::RefCell<Vec<Arc<str>>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(known) = names.iter().find(|n| &***n == name) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(name);
        if names.len() < INTERNED_MAX {
            names.push(new.clone());
        }
        new
    })
}

const INTERNED_MAX: usize = 64;

impl fmt::Debug for FuncName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for FuncName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for FuncName {
    fn from(s: &str) -> Self {
        FuncName::new(s)
    }
}

/// Abstract resources (Dask's worker resources): what a worker offers (`GPU=1,MEM=8e9`) or a
/// task holds while it runs (`GPU=1`). Names are sorted and unique.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources(Vec<(Arc<str>, f64)>);

/// A resource list that cannot be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource {item:?} is not NAME=AMOUNT (e.g. \"GPU=1,MEM=8e9\")")]
    Syntax { item: String },
    #[error("resource {name}: amount {amount:?} is not a non-negative number")]
    Amount { name: String, amount: String },
    #[error("resource {name} is given twice")]
    Duplicate { name: String },
}

impl Resources {
    pub fn none() -> Self {
        Resources(Vec::new())
    }

    /// Builds a list from pairs; a name given twice is an error.
    pub fn from_pairs<N: Into<Arc<str>>>(
        pairs: impl IntoIterator<Item = (N, f64)>,
    ) -> Result<Self, ResourceError> {
        let mut items: Vec<(Arc<str>, f64)> = Vec::new();
        for (name, amount) in pairs {
            let name: Arc<str> = name.into();
            if !(amount.is_finite() && amount >= 0.0) {
                return Err(ResourceError::Amount {
                    name: name.to_string(),
                    amount: amount.to_string(),
                });
            }
            if items.iter().any(|(n, _)| *n == name) {
                return Err(ResourceError::Duplicate {
                    name: name.to_string(),
                });
            }
            items.push((name, amount));
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Resources(items))
    }

    /// Parses Dask's `--resources` text: `GPU=1,MEM=8e9` or `GPU=1 MEM=8e9`.
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        let mut pairs = Vec::new();
        for item in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let (name, amount) = item.split_once('=').ok_or_else(|| ResourceError::Syntax {
                item: item.to_owned(),
            })?;
            let name = name.trim();
            if name.is_empty() {
                return Err(ResourceError::Syntax {
                    item: item.to_owned(),
                });
            }
            let value: f64 = amount.trim().parse().map_err(|_| ResourceError::Amount {
                name: name.to_owned(),
                amount: amount.to_owned(),
            })?;
            pairs.push((name.to_owned(), value));
        }
        Resources::from_pairs(pairs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(n, a)| (&**n, *a))
    }

    /// The amount of `name`, 0 when absent.
    pub fn get(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _)| &**n == name)
            .map_or(0.0, |(_, a)| *a)
    }

    /// Whether every resource `need` names is offered here at all (in any amount ≥ the need).
    pub fn covers(&self, need: &Resources) -> bool {
        need.iter().all(|(n, a)| self.get(n) >= a)
    }

    /// Whether `need` fits in what is left of this total once `used` is taken.
    pub fn fits(&self, used: &Resources, need: &Resources) -> bool {
        need.iter()
            .all(|(n, a)| self.get(n) - used.get(n) >= a - 1e-9)
    }

    /// Adds `other` to these amounts (`sign` -1 subtracts; results never go below 0).
    pub fn add(&mut self, other: &Resources, sign: f64) {
        for (name, amount) in other.iter() {
            match self.0.iter_mut().find(|(n, _)| &**n == name) {
                Some((_, a)) => *a = (*a + sign * amount).max(0.0),
                None if sign > 0.0 => {
                    self.0.push((name.into(), amount));
                    self.0.sort_by(|a, b| a.0.cmp(&b.0));
                }
                None => {}
            }
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, amount)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}={amount}")?;
        }
        Ok(())
    }
}

/// A task: a registered function applied to a payload and to the results of other tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub key: Key,
    /// The function to run (a worker that has it is chosen).
    pub func: FuncName,
    /// The results it reads, in the order the function sees them (an input may repeat).
    pub inputs: Vec<Key>,
    /// The function's arguments, encoded by the task's builder (see [`crate::function`]);
    /// inline when short, as most are (the same bytes on the wire as a [`bytes::Bytes`]).
    pub payload: SmallBytes,
    /// What it holds on its worker while it runs.
    #[serde(default)]
    pub resources: Resources,
}

impl TaskSpec {
    pub fn new(key: Key, func: FuncName, payload: impl Into<SmallBytes>, inputs: Vec<Key>) -> Self {
        TaskSpec {
            key,
            func,
            inputs,
            payload: payload.into(),
            resources: Resources::none(),
        }
    }

    /// The keys this task reads, without duplicates, in first-use order.
    pub fn dependencies(&self) -> Vec<Key> {
        let mut deps = self.inputs.clone();
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
    use bytes::Bytes;

    use super::*;

    fn decoded(name: &str) -> FuncName {
        let bytes = postcard::to_allocvec(&FuncName::new(name)).expect("encodes");
        crate::data::from_postcard(&bytes).expect("decodes")
    }

    #[test]
    fn names_read_off_the_wire_are_shared_and_equal_to_static_ones() {
        let (a, b) = (decoded("seed.inc"), decoded("seed.inc"));
        let (Name::Shared(x), Name::Shared(y)) = (&a.0, &b.0) else {
            panic!("decoded names are shared");
        };
        assert!(Arc::ptr_eq(x, y), "one allocation per name and thread");
        assert_eq!(a, FuncName::from_static("seed.inc"));
        assert_eq!(a.family(), "seed");
        // Past the table's size, names still decode right (allocated each time).
        let many: Vec<FuncName> = (0..INTERNED_MAX + 10)
            .map(|i| decoded(&format!("f{i}.g")))
            .collect();
        for (i, n) in many.iter().enumerate() {
            assert_eq!(n.as_str(), format!("f{i}.g"));
        }
        assert_eq!(decoded("x.y").as_str(), "x.y");
    }

    #[test]
    fn dependencies_are_unique_in_first_use_order() {
        let t = TaskSpec::new(
            "sum-1".into(),
            "seed.sum".into(),
            Bytes::new(),
            vec!["a-1".into(), "b-1".into(), "a-1".into()],
        );
        assert_eq!(t.dependencies(), vec![Key::from("a-1"), Key::from("b-1")]);
        let many: Vec<Key> = (0..40)
            .map(|i| Key::from(format!("k-{}", i % 20)))
            .collect();
        let t = TaskSpec::new("s".into(), "seed.sum".into(), Bytes::new(), many);
        assert_eq!(t.dependencies().len(), 20);
    }

    #[test]
    fn func_name_family() {
        assert_eq!(FuncName::from("array.eval").family(), "array");
        assert_eq!(FuncName::from("plain").family(), "plain");
    }

    #[test]
    fn resources_parse_in_dask_forms() {
        let r = Resources::parse("GPU=1,MEM=8e9").unwrap();
        assert_eq!(r.get("GPU"), 1.0);
        assert_eq!(r.get("MEM"), 8e9);
        assert_eq!(r.get("TPU"), 0.0);
        assert_eq!(Resources::parse("MEM=8e9 GPU=1").unwrap(), r);
        assert_eq!(r.to_string(), "GPU=1,MEM=8000000000");
        assert!(Resources::parse("").unwrap().is_empty());
        assert_eq!(
            Resources::parse("GPU").unwrap_err(),
            ResourceError::Syntax { item: "GPU".into() }
        );
        assert!(matches!(
            Resources::parse("GPU=lots"),
            Err(ResourceError::Amount { .. })
        ));
        assert!(matches!(
            Resources::parse("GPU=-1"),
            Err(ResourceError::Amount { .. })
        ));
        assert!(matches!(
            Resources::parse("GPU=1,GPU=2"),
            Err(ResourceError::Duplicate { .. })
        ));
    }

    #[test]
    fn resources_fit_what_is_left() {
        let total = Resources::parse("GPU=2,MEM=10").unwrap();
        let mut used = Resources::none();
        let need = Resources::parse("GPU=1").unwrap();
        assert!(total.covers(&need));
        assert!(total.fits(&used, &need));
        used.add(&need, 1.0);
        assert!(total.fits(&used, &need));
        used.add(&need, 1.0);
        assert!(!total.fits(&used, &need));
        used.add(&need, -1.0);
        assert!(total.fits(&used, &need));
        assert!(!total.covers(&Resources::parse("TPU=1").unwrap()));
        assert!(!Resources::none().fits(&Resources::none(), &need));
    }
}
