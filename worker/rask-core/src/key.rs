//! Keys: the names of tasks and of their results.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name of a task and of its result, unique within a scheduler (Dask's "key").
#[derive(Clone, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Key(Arc<str>);

/// Reads the text straight into the key's own allocation: serde's `Arc<str>` goes through a
/// `String` first, two allocations for every key read off the wire.
impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key (a string)")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(Key(Arc::from(s)))
            }

            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Key, E> {
                Ok(Key(Arc::from(s)))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_from_postcard_and_json() {
        let key = Key::from("inc-ab12-3");
        let wire = postcard::to_allocvec(&key).unwrap();
        assert_eq!(postcard::from_bytes::<Key>(&wire).unwrap(), key);
        // JSON with an escape hands the visitor a string of its own, not a borrowed one.
        let odd = Key::from("a\"b");
        let json = serde_json::to_string(&odd).unwrap();
        assert_eq!(serde_json::from_str::<Key>(&json).unwrap(), odd);
        assert!(serde_json::from_str::<Key>("3").is_err());
    }

    #[test]
    fn prefix_is_the_function_part() {
        assert_eq!(Key::from("inc-ab12-3").prefix(), "inc");
        assert_eq!(Key::from("plain").prefix(), "plain");
        assert_eq!(Key::from("-odd").prefix(), "-odd");
    }
}
