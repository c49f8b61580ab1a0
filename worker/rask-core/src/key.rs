//! Keys: the names of tasks and of their results.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Key text up to this many bytes is kept inline: a client's keys (`inc-1a2b3c4d-1234567`) are
/// about 20 bytes, and a million of them each in an allocation of its own cost 48 bytes apiece
/// in the scheduler and again in the client, where 24 hold them.
pub(crate) const INLINE_KEY: usize = 22;

/// The name of a task and of its result, unique within a scheduler (Dask's "key"). Short text is
/// kept inline, longer text shared (clones share one allocation): 24 bytes either way. A key's
/// form follows from its length alone, so equal keys have the same form.
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    /// Text of at most [`INLINE_KEY`] bytes.
    Inline { len: u8, buf: [u8; INLINE_KEY] },
    /// Text of more than [`INLINE_KEY`] bytes.
    Shared(Arc<str>),
}

/// A string. For the engine's binary wire format (postcard, not human-readable), the text goes
/// as bytes: postcard writes a `str` and a byte string alike (length, bytes) and reads it back
/// as a `str` (checking it), but [`Key::as_str`] would check the UTF-8 of every key sent again,
/// a tenth of encoding a million-task graph.
impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.as_str())
        } else {
            serializer.serialize_bytes(self.as_bytes())
        }
    }
}

/// Reads the text straight into the key (inline, or its own allocation): serde's `Arc<str>`
/// goes through a `String` first, two allocations for every key read off the wire.
impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key (a string)")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(Key::new(s))
            }

            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Key, E> {
                Ok(Key::new(s))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            // Many comparisons of long keys are of clones of one key (the scheduler's maps
            // hold the graph's keys), where the pointers match and the bytes need no comparing.
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The text's order (UTF-8's byte order is its characters' order).
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Key {
    /// Hashes as the text (`str`'s hash), whichever form the key has.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl Key {
    pub fn new(s: impl AsRef<str> + Into<Arc<str>>) -> Self {
        let text = s.as_ref().as_bytes();
        let len = text.len();
        if len <= INLINE_KEY {
            let mut buf = [0; INLINE_KEY];
            buf[..len].copy_from_slice(text);
            Key(Repr::Inline {
                len: len as u8,
                buf,
            })
        } else {
            Key(Repr::Shared(s.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a `str` in `new`: valid UTF-8, so the empty fallback is not reached.
            Repr::Inline { len, buf } => std::str::from_utf8(&buf[..*len as usize]).unwrap_or(""),
            Repr::Shared(s) => s,
        }
    }

    /// The key's text as bytes (no UTF-8 check).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Shared(s) => s.as_bytes(),
        }
    }

    /// Heap bytes of the key's text: none inline; shared, the allocation's two counters and the
    /// text (which clones share).
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Shared(s) => 16 + s.len().next_multiple_of(8),
        }
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
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn postcard_writes_a_key_as_its_text() {
        for text in [
            "",
            "inc-1a2b3c4d-123456789",
            "x-\u{e9}-\u{1F600}-long-enough-to-share",
        ] {
            let key = Key::from(text);
            assert_eq!(
                postcard::to_allocvec(&key).unwrap(),
                postcard::to_allocvec(text).unwrap()
            );
            let wire = postcard::to_allocvec(&key).unwrap();
            assert_eq!(postcard::from_bytes::<Key>(&wire).unwrap(), key);
        }
        // Bytes that are not UTF-8 are not a key.
        let bad = postcard::to_allocvec(&serde_bytes_like(&[0xff, 0xfe])).unwrap();
        assert!(postcard::from_bytes::<Key>(&bad).is_err());
    }

    /// A byte string as serde writes one.
    fn serde_bytes_like(b: &[u8]) -> impl Serialize + '_ {
        struct B<'a>(&'a [u8]);
        impl Serialize for B<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        B(b)
    }

    #[test]
    fn short_keys_are_inline_and_long_ones_shared() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        let short = Key::from("inc-1a2b3c4d-123456789");
        assert_eq!(short.as_str().len(), INLINE_KEY);
        assert_eq!(short.heap_bytes(), 0);
        let long = Key::from("inc-1a2b3c4d-1234567890");
        assert_eq!(long.heap_bytes(), 16 + 24);
        assert_eq!(long.clone().as_str().as_ptr(), long.as_str().as_ptr());
        // Equal text, equal keys, hashes and order, whatever their origin.
        use std::hash::BuildHasher;
        let h = std::collections::hash_map::RandomState::new();
        for text in [
            "",
            "a",
            "inc-1a2b3c4d-123456789",
            "x-\u{e9}-\u{1F600}-long-enough-to-share",
        ] {
            let (a, b) = (Key::from(text), Key::from(text.to_owned()));
            assert_eq!(a, b);
            assert_eq!(h.hash_one(&a), h.hash_one(text));
            assert_eq!(a.as_str(), text);
            assert_eq!(a.cmp(&b), std::cmp::Ordering::Equal);
        }
        assert!(Key::from("a-1") < Key::from("a-10-and-much-longer-than-that"));
        assert!(Key::from("b") > Key::from("a-10-and-much-longer-than-that"));
    }

    #[test]
    fn prefix_is_the_function_part() {
        assert_eq!(Key::from("inc-ab12-3").prefix(), "inc");
        assert_eq!(Key::from("plain").prefix(), "plain");
        assert_eq!(Key::from("-odd").prefix(), "-odd");
    }
}
