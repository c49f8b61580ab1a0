//! Short byte strings kept inline: a task's arguments and a scalar's encoded result are a few
//! bytes, and a million of them each in a [`Bytes`] (32 bytes) with a heap block of its own (32
//! or more) cost 64 bytes or more apiece where 24 hold them.

use std::mem::size_of;

use bytes::Bytes;

/// Bytes up to this many are kept inline.
pub const INLINE: usize = 22;

/// Bytes kept inline up to [`INLINE`] long, shared (a [`Bytes`] in a box of its own) beyond: 24
/// bytes either way.
#[derive(Clone, PartialEq, Eq)]
pub enum SmallBytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Shared(Box<Bytes>),
}

impl SmallBytes {
    /// `bytes`, inline when short (the buffer they are part of is then not kept).
    pub fn new(bytes: Bytes) -> Self {
        match Self::inline(&bytes) {
            Some(small) => small,
            None => SmallBytes::Shared(Box::new(bytes)),
        }
    }

    /// A copy of `bytes`: inline when short, else in a [`Bytes`] of its own.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        match Self::inline(bytes) {
            Some(small) => small,
            None => SmallBytes::Shared(Box::new(Bytes::copy_from_slice(bytes))),
        }
    }

    /// `bytes`, copied out of the buffer they are part of unless longer than `keep_over`:
    /// a short slice of a large buffer (a result in a received frame) would keep all of it.
    pub fn unshared(bytes: Bytes, keep_over: usize) -> Self {
        match Self::inline(&bytes) {
            Some(small) => small,
            None if bytes.len() <= keep_over => {
                SmallBytes::Shared(Box::new(Bytes::copy_from_slice(&bytes)))
            }
            None => SmallBytes::Shared(Box::new(bytes)),
        }
    }

    fn inline(bytes: &[u8]) -> Option<Self> {
        let len = bytes.len();
        (len <= INLINE).then(|| {
            let mut buf = [0; INLINE];
            buf[..len].copy_from_slice(bytes);
            SmallBytes::Inline {
                len: len as u8,
                buf,
            }
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, buf } => &buf[..*len as usize],
            SmallBytes::Shared(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as [`Bytes`]: shared when they are, copied when inline.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            SmallBytes::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            SmallBytes::Shared(b) => (**b).clone(),
        }
    }

    /// Heap bytes of its own: none inline; shared, the box and the bytes (which a clone
    /// elsewhere may share).
    pub fn heap_bytes(&self) -> usize {
        match self {
            SmallBytes::Inline { .. } => 0,
            SmallBytes::Shared(b) => size_of::<Bytes>() + b.len(),
        }
    }
}

impl std::ops::Deref for SmallBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Bytes> for SmallBytes {
    fn from(bytes: Bytes) -> Self {
        SmallBytes::new(bytes)
    }
}

/// As bytes, as [`Bytes`] is: the two are the same on the wire.
impl serde::Serialize for SmallBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_slice())
    }
}

/// Short bytes are read straight into the value, without the allocation a [`Bytes`] makes
/// for them (a million tasks' arguments read by the scheduler and freed again left their
/// blocks between the ones it keeps).
impl<'de> serde::Deserialize<'de> for SmallBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SmallBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SmallBytes, E> {
                Ok(SmallBytes::inline(v)
                    .unwrap_or_else(|| SmallBytes::Shared(Box::new(Bytes::copy_from_slice(v)))))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<SmallBytes, E> {
                Ok(SmallBytes::new(Bytes::from(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SmallBytes, E> {
                self.visit_bytes(v.as_bytes())
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SmallBytes, A::Error> {
                let mut v: Vec<u8> = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                self.visit_byte_buf(v)
            }
        }

        deserializer.deserialize_byte_buf(Visitor)
    }
}

impl Default for SmallBytes {
    fn default() -> Self {
        SmallBytes::Inline {
            len: 0,
            buf: [0; INLINE],
        }
    }
}

impl std::fmt::Debug for SmallBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SmallBytes({:?})",
            Bytes::copy_from_slice(self.as_slice())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_bytes_are_inline_and_long_ones_shared() {
        assert_eq!(size_of::<SmallBytes>(), 24);
        for len in [0, 1, INLINE] {
            let b = Bytes::from(vec![7u8; len]);
            let s = SmallBytes::new(b.clone());
            assert!(matches!(s, SmallBytes::Inline { .. }), "{len}");
            assert_eq!(
                (s.as_slice(), s.to_bytes(), s.heap_bytes()),
                (&b[..], b.clone(), 0)
            );
        }
        let long = Bytes::from(vec![3u8; INLINE + 1]);
        let s = SmallBytes::new(long.clone());
        assert!(matches!(s, SmallBytes::Shared(_)));
        assert_eq!(s.to_bytes().as_ptr(), long.as_ptr(), "shared, not copied");
        assert_eq!((s.len(), s.heap_bytes()), (INLINE + 1, 32 + INLINE + 1));
        assert!(SmallBytes::default().is_empty());
    }

    #[test]
    fn small_bytes_are_bytes_on_the_wire() {
        for len in [0, 3, INLINE, INLINE + 1, 5000] {
            let b = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let encoded = postcard::to_allocvec(&b).expect("encodes");
            let small = SmallBytes::new(b.clone());
            assert_eq!(postcard::to_allocvec(&small).expect("encodes"), encoded);
            let read: SmallBytes = postcard::from_bytes(&encoded).expect("decodes");
            assert_eq!(read, small);
            assert_eq!(read.heap_bytes() == 0, len <= INLINE, "{len}");
            let back: Bytes = postcard::from_bytes(&encoded).expect("decodes");
            assert_eq!(back, b);
        }
    }

    #[test]
    fn a_slice_of_a_larger_buffer_is_copied_out_unless_long() {
        let frame = Bytes::from(vec![1u8; 10_000]);
        let short = SmallBytes::unshared(frame.slice(..5), 4096);
        assert_eq!(short.as_slice(), &[1u8; 5]);
        let mid = SmallBytes::unshared(frame.slice(..100), 4096);
        assert_ne!(mid.to_bytes().as_ptr(), frame.as_ptr(), "copied out");
        assert_eq!(mid.len(), 100);
        let long = SmallBytes::unshared(frame.slice(..5000), 4096);
        assert_eq!(long.to_bytes().as_ptr(), frame.as_ptr(), "kept");
    }
}
