//! One chunk of an array as data: what array tasks return and read, stored and sent as raw bytes.
//!
//! A chunk's encoding ([`TAG`]) is its shape and its raw values: `ndim` (u32 LE), each dimension
//! (u64 LE), then the values (f64 LE, C order). Decoding checks every length, so corrupt bytes
//! are an error naming the problem, never a panic or a misread array.
//!
//! Inside task arguments and partial results (serde types), a chunk is one byte string of the
//! same layout ([`raw`]), never a list of numbers.

use std::fmt;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use rask_core::{Data, DataError, Encoded};

/// The format tag of array chunks (see [`rask_core::data`]).
pub const TAG: u8 = 1;

/// What decode errors call a chunk.
const KIND: &str = "an array chunk";

/// At most this many dimensions are read (NumPy's own limit is 64; more is a corrupt header).
const MAX_NDIM: usize = 64;

/// An n-d chunk of f64 values; cheap to clone (the values are shared).
#[derive(Clone, PartialEq)]
pub struct Chunk(Arc<ArrayD<f64>>);

impl Chunk {
    pub fn new(a: ArrayD<f64>) -> Chunk {
        Chunk(Arc::new(a))
    }

    /// A 0-d chunk holding `x` (a full reduction's result).
    pub fn scalar(x: f64) -> Chunk {
        Chunk::new(ArrayD::from_elem(IxDyn(&[]), x))
    }

    pub fn array(&self) -> &ArrayD<f64> {
        &self.0
    }

    /// The values, copied only if another clone of this chunk still holds them.
    pub fn into_array(self) -> ArrayD<f64> {
        Arc::unwrap_or_clone(self.0)
    }

    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }
}

impl From<ArrayD<f64>> for Chunk {
    fn from(a: ArrayD<f64>) -> Chunk {
        Chunk::new(a)
    }
}

impl From<Arc<ArrayD<f64>>> for Chunk {
    fn from(a: Arc<ArrayD<f64>>) -> Chunk {
        Chunk(a)
    }
}

impl std::ops::Deref for Chunk {
    type Target = ArrayD<f64>;

    fn deref(&self) -> &ArrayD<f64> {
        &self.0
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunk(shape {:?})", self.shape())
    }
}

impl Data for Chunk {
    fn encode(&self) -> Encoded {
        let mut out = Vec::with_capacity(1 + encoded_len(&self.0));
        out.push(TAG);
        write_raw(&self.0, &mut out);
        Encoded::from_tagged_vec(out)
    }

    fn decode(e: &Encoded) -> Result<Chunk, DataError> {
        let body = e.body(TAG, KIND)?;
        read_raw(body)
            .map(Chunk::new)
            .map_err(|reason| DataError::Malformed { kind: KIND, reason })
    }
}

/// Bytes [`write_raw`] writes for `a`.
fn encoded_len(a: &ArrayD<f64>) -> usize {
    4 + 8 * a.ndim() + 8 * a.len()
}

/// Appends `a`'s shape and values (C order, little-endian) to `out`.
fn write_raw(a: &ArrayD<f64>, out: &mut Vec<u8>) {
    out.reserve(encoded_len(a));
    out.extend_from_slice(&(a.ndim() as u32).to_le_bytes());
    for &d in a.shape() {
        out.extend_from_slice(&(d as u64).to_le_bytes());
    }
    match a.as_slice() {
        Some(values) => values
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        None => a
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Reads what [`write_raw`] wrote; any length mismatch is an error naming it.
fn read_raw(body: &[u8]) -> Result<ArrayD<f64>, String> {
    let (ndim, rest) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| format!("{} bytes, too short for a header", body.len()))?;
    let ndim = u32::from_le_bytes(*ndim) as usize;
    if ndim > MAX_NDIM {
        return Err(format!("{ndim} dimensions (at most {MAX_NDIM})"));
    }
    let dims_len = 8 * ndim;
    if rest.len() < dims_len {
        return Err(format!(
            "{} bytes after the header, too short for {ndim} dimensions",
            rest.len()
        ));
    }
    let (dims, values) = rest.split_at(dims_len);
    let mut shape = Vec::with_capacity(ndim);
    let mut len: usize = 1;
    for d in dims.chunks_exact(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(d);
        let d = usize::try_from(u64::from_le_bytes(b))
            .map_err(|_| "a dimension does not fit in memory".to_owned())?;
        len = len
            .checked_mul(d)
            .ok_or_else(|| format!("shape {shape:?}×{d} overflows"))?;
        shape.push(d);
    }
    if Some(values.len()) != len.checked_mul(8) {
        return Err(format!(
            "shape {shape:?} needs {len} values, got {} bytes of data",
            values.len()
        ));
    }
    let values: Vec<f64> = values
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            f64::from_le_bytes(b)
        })
        .collect();
    ArrayD::from_shape_vec(shape, values).map_err(|e| e.to_string())
}

/// Serde for chunks inside task arguments and partial results: one byte string in the raw
/// layout (`#[serde(with = "crate::chunk::raw")]`).
pub(crate) mod raw {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{Chunk, read_raw, write_raw};

    pub(crate) fn serialize<S: Serializer>(c: &Chunk, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        write_raw(c.array(), &mut out);
        s.serialize_bytes(&out)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Chunk, D::Error> {
        d.deserialize_bytes(RawVisitor)
    }

    struct RawVisitor;

    impl<'de> Visitor<'de> for RawVisitor {
        type Value = Chunk;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array chunk as bytes")
        }

        /// Reads straight from the serialized bytes (postcard lends them), without a copy
        /// in between.
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Chunk, E> {
            read_raw(v)
                .map(Chunk::new)
                .map_err(|e| E::custom(format!("malformed array chunk: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    fn sample() -> Chunk {
        Chunk::new(
            ArrayD::from_shape_vec(vec![2, 3], vec![1.0, -2.5, 3.0, f64::MAX, 0.0, 1e-300])
                .unwrap(),
        )
    }

    #[test]
    fn chunks_round_trip_as_raw_bytes() {
        let a = sample();
        let e = a.encode();
        assert_eq!(e.tag(), Some(TAG));
        assert_eq!(e.len(), 1 + 4 + 2 * 8 + 6 * 8);
        assert_eq!(&e.bytes()[1..5], &2u32.to_le_bytes());
        assert_eq!(&e.bytes()[5..13], &2u64.to_le_bytes());
        assert_eq!(&e.bytes()[21..29], &1.0f64.to_le_bytes());
        assert_eq!(Chunk::decode(&e).unwrap(), a);
        // A transposed (non-contiguous) array encodes in C order of its logical shape.
        let t = Chunk::new(a.t().to_owned());
        assert_eq!(Chunk::decode(&t.encode()).unwrap(), t);
        let s = Chunk::scalar(4.0);
        assert_eq!(s.encode().len(), 1 + 4 + 8);
        assert_eq!(Chunk::decode(&s.encode()).unwrap(), s);
        let empty = Chunk::new(ArrayD::zeros(IxDyn(&[3, 0])));
        assert_eq!(Chunk::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn corrupt_chunk_bytes_are_errors_naming_the_problem() {
        let good = Chunk::new(ArrayD::zeros(vec![2, 2])).encode().into_bytes();
        for cut in [1, 3, 5, 12, good.len() - 1] {
            let err = Chunk::decode(&Encoded::from_bytes(good.slice(..cut))).unwrap_err();
            assert!(
                matches!(err, DataError::Malformed { kind: KIND, .. }),
                "cut at {cut}: {err}"
            );
        }
        let mut long = good.to_vec();
        long.push(0);
        let err = Chunk::decode(&Encoded::from_tagged_vec(long)).unwrap_err();
        assert!(err.to_string().contains("needs 4 values"), "{err}");
        // A shape whose element count overflows.
        let mut huge = vec![TAG];
        huge.extend_from_slice(&2u32.to_le_bytes());
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = Chunk::decode(&Encoded::from_tagged_vec(huge)).unwrap_err();
        assert!(
            err.to_string().contains("overflow") || err.to_string().contains("memory"),
            "{err}"
        );
        let mut many = vec![TAG];
        many.extend_from_slice(&1000u32.to_le_bytes());
        let err = Chunk::decode(&Encoded::from_tagged_vec(many)).unwrap_err();
        assert!(err.to_string().contains("1000 dimensions"), "{err}");
        assert_eq!(
            Chunk::decode(&Encoded::from_tagged_vec(Vec::new())).unwrap_err(),
            DataError::Empty
        );
    }

    #[test]
    fn other_data_is_not_read_as_a_chunk() {
        let err = Chunk::decode(&1.5f64.encode()).unwrap_err();
        assert_eq!(
            err,
            DataError::WrongKind {
                expected: KIND,
                tag: 0
            }
        );
        assert!(err.to_string().contains("an array chunk"), "{err}");
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Holder {
        n: f64,
        #[serde(with = "raw")]
        c: Chunk,
    }

    #[test]
    fn chunks_nest_in_serde_values_as_one_byte_string() {
        let h = Holder {
            n: 2.0,
            c: sample(),
        };
        let e = Data::encode(&h);
        // tag, the f64, a varint length, then the raw layout
        assert_eq!(e.len(), 1 + 8 + 1 + 4 + 2 * 8 + 6 * 8);
        assert_eq!(Holder::decode(&e).unwrap(), h);
        // ndim 9 with too few bytes behind it: an error naming the type (postcard keeps no
        // message of ours), not a panic.
        let mut bad = e.bytes().to_vec();
        bad[10] = 9;
        let err = Holder::decode(&Encoded::from_tagged_vec(bad)).unwrap_err();
        assert!(
            matches!(err, DataError::Malformed { .. }) && err.to_string().contains("as Holder"),
            "{err}"
        );
    }
}
