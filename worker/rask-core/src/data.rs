//! Results as bytes: a result is encoded once, by the worker that computed it, and is stored,
//! spilled and sent between processes as those bytes ([`Encoded`]); whoever needs the value
//! decodes it with the type it expects ([`Data`]).
//!
//! The first byte of an encoding is a format tag, so a reader that expects one kind of data and
//! gets another says so instead of misreading it. Tag 0 is postcard, used by every serde type (the
//! blanket [`Data`] impl); other tags belong to the families that define them (1: array chunks,
//! 2: dataframe partitions, 3: pickled Python objects). A family's tag is a constant of that
//! family; the engine's binary checks that no two families share one.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The tag of postcard-encoded serde values.
pub const TAG_SERDE: u8 = 0;

/// The tag of pickled Python objects (the `python` family's results): the body is a pickle, as
/// `pickle.loads` reads it.
pub const TAG_PICKLE: u8 = 3;

/// The bytes of an encoded result: a format tag, then the body.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// Wraps bytes that hold an encoding (a tag and a body), as read from a store or a peer.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Encoded(bytes)
    }

    /// An encoding of `tag` with `body` after it.
    pub fn with_tag(tag: u8, body: &[u8]) -> Self {
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(tag);
        out.extend_from_slice(body);
        Encoded(Bytes::from(out))
    }

    /// The tag and body in one buffer the caller built (`bytes[0]` is the tag).
    pub fn from_tagged_vec(bytes: Vec<u8>) -> Self {
        Encoded(Bytes::from(bytes))
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The format tag, or `None` for an empty (corrupt) encoding.
    pub fn tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The body after the tag, checking the tag first.
    pub fn body(&self, tag: u8, kind: &'static str) -> Result<&[u8], DataError> {
        match self.0.split_first() {
            None => Err(DataError::Empty),
            Some((&t, body)) if t == tag => Ok(body),
            Some((&t, _)) => Err(DataError::WrongKind {
                expected: kind,
                tag: t,
            }),
        }
    }

    /// The body after the tag as a shared slice of the same buffer (no copy).
    pub fn body_bytes(&self, tag: u8, kind: &'static str) -> Result<Bytes, DataError> {
        self.body(tag, kind)?;
        Ok(self.0.slice(1..))
    }

    /// Decodes the value as `T`.
    pub fn decode<T: Data>(&self) -> Result<T, DataError> {
        T::decode(self)
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tag() {
            Some(t) => write!(f, "Encoded(tag {t}, {} bytes)", self.len()),
            None => write!(f, "Encoded(empty)"),
        }
    }
}

/// Why bytes could not be decoded as the value wanted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    #[error("encoded value is empty")]
    Empty,
    #[error("expected {expected}, got data of another kind (format tag {tag})")]
    WrongKind { expected: &'static str, tag: u8 },
    #[error("cannot decode {kind}: {reason}")]
    Malformed { kind: &'static str, reason: String },
}

/// A type that results are made of: encoded by the worker that computes it, decoded by whoever
/// reads it. Every serde type is one (postcard, tag 0); array chunks, dataframe partitions and
/// Python objects have encodings of their own.
pub trait Data: Sized + Send + 'static {
    fn encode(&self) -> Encoded;
    fn decode(e: &Encoded) -> Result<Self, DataError>;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Data for T {
    fn encode(&self) -> Encoded {
        // Most results are a few bytes (a number, a short list): encoded on the stack and copied
        // into one allocation of their size. A growing `Vec` handed to `Bytes` took three (the
        // vector, its growth, and `Bytes`' own header for a vector with spare capacity).
        let mut small = [0u8; 64];
        small[0] = TAG_SERDE;
        if let Ok(used) = postcard::to_slice(self, &mut small[1..]) {
            let len = 1 + used.len();
            return Encoded(Bytes::copy_from_slice(&small[..len]));
        }
        let out = vec![TAG_SERDE];
        match postcard::to_extend(self, out) {
            Ok(v) => Encoded(Bytes::from(v)),
            // postcard fails only on serde features it does not support (unknown-length
            // sequences from a custom `Serialize`); a result type that uses them is a bug of
            // that type, found the first time it is returned.
            Err(e) => panic!(
                "result type {} cannot be encoded with postcard: {e}",
                std::any::type_name::<T>()
            ),
        }
    }

    fn decode(e: &Encoded) -> Result<Self, DataError> {
        let kind = "a serde value";
        from_postcard(e.body(TAG_SERDE, kind)?).map_err(|reason| DataError::Malformed {
            kind,
            reason: format!("as {}: {reason}", short_type_name::<T>()),
        })
    }
}

/// Any encoded value, undecoded (a task that only passes data along, or a caller that decodes
/// later).
impl Data for Encoded {
    fn encode(&self) -> Encoded {
        self.clone()
    }

    fn decode(e: &Encoded) -> Result<Self, DataError> {
        Ok(e.clone())
    }
}

/// A pickled Python object, opaque to the engine: what users' Python functions return, kept and
/// moved as the bytes of its pickle (format tag [`TAG_PICKLE`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Pickled(pub Bytes);

impl std::fmt::Debug for Pickled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pickled({} bytes)", self.0.len())
    }
}

impl Pickled {
    /// The contents of the one `bytes` object this pickles (what `pickle.dumps(b, protocol=4 or
    /// 5)` writes); an error naming what else it holds. A Python task returns `bytes` for a
    /// native kernel to read this way, without Python.
    pub fn bytes_object(&self) -> Result<&[u8], String> {
        crate::pickled::bytes_object(&self.0)
    }
}

impl Data for Pickled {
    fn encode(&self) -> Encoded {
        Encoded::with_tag(TAG_PICKLE, &self.0)
    }

    /// The pickle's bytes, sharing the encoding's buffer.
    fn decode(e: &Encoded) -> Result<Self, DataError> {
        e.body_bytes(TAG_PICKLE, "a pickled Python object")
            .map(Pickled)
    }
}

/// Decodes all of `bytes` as `T`: postcard does not describe types, so bytes left over are the
/// sign of a value of another type.
pub(crate) fn from_postcard<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!(
            "{} bytes left over (a value of another type?)",
            rest.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `alloc::vec::Vec<rask_core::value::Value>` → `Vec<Value>`, for error messages.
pub(crate) fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(&word));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_serde_values_encode_alike() {
        // Below and above the stack buffer's 63 bytes of body: the same bytes as postcard's own.
        for n in [0usize, 1, 30, 62, 63, 64, 1000] {
            let v: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let e = v.encode();
            let expected = postcard::to_extend(&v, vec![TAG_SERDE]).unwrap();
            assert_eq!(e.bytes().as_ref(), expected.as_slice(), "{n} elements");
            assert_eq!(e.decode::<Vec<u8>>().unwrap(), v);
        }
    }

    #[test]
    fn serde_values_round_trip_with_tag_zero() {
        let e = (1i64, "x".to_owned()).encode();
        assert_eq!(e.tag(), Some(TAG_SERDE));
        let back: (i64, String) = e.decode().unwrap();
        assert_eq!(back, (1, "x".to_owned()));
    }

    #[test]
    fn wrong_kind_and_corrupt_bytes_are_errors() {
        let other = Encoded::with_tag(7, b"abc");
        let err = other.decode::<i64>().unwrap_err();
        assert_eq!(
            err,
            DataError::WrongKind {
                expected: "a serde value",
                tag: 7
            }
        );
        assert_eq!(
            Encoded::from_bytes(Bytes::new())
                .decode::<i64>()
                .unwrap_err(),
            DataError::Empty
        );
        let err = Encoded::with_tag(TAG_SERDE, &[0xff])
            .decode::<String>()
            .unwrap_err();
        assert!(err.to_string().contains("as String"), "{err}");
    }

    #[test]
    fn pickles_keep_their_bytes_under_their_tag() {
        let p = Pickled(Bytes::from_static(b"\x80\x05K\x01."));
        let e = p.encode();
        assert_eq!(e.tag(), Some(TAG_PICKLE));
        assert_eq!(e.decode::<Pickled>().unwrap(), p);
        let err = 1i64.encode().decode::<Pickled>().unwrap_err();
        assert_eq!(
            err,
            DataError::WrongKind {
                expected: "a pickled Python object",
                tag: TAG_SERDE
            }
        );
        assert!(e.decode::<i64>().is_err());
    }

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name::<Vec<String>>(), "Vec<String>");
        assert_eq!(short_type_name::<(i64, f64)>(), "(i64, f64)");
    }
}
