//! Values that tasks take and return, and their encoding for storage and transport.
//!
//! A result is encoded once, by the worker that computed it, and travels and spills as those bytes
//! ([`Encoded`]); peers and clients decode it only when they need the value itself.

use std::sync::Arc;

use bytes::Bytes;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// A task's argument or result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Bytes),
    List(Vec<Value>),
    /// An n-d chunk of f64, encoded as its shape and raw little-endian data (never per element).
    Array(#[serde(with = "array_serde")] Arc<ArrayD<f64>>),
    /// A dataframe partition (see [`crate::frame`]); encoded on its own as Arrow IPC.
    Frame(crate::frame::FramePart),
}

/// Why a value could not be decoded or converted.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("encoded value is empty")]
    Empty,
    #[error("unknown value encoding tag {0}")]
    UnknownTag(u8),
    #[error("malformed encoded value: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("expected {expected}, got {got}")]
    Type { expected: &'static str, got: String },
    #[error("malformed array chunk: {0}")]
    Array(String),
    #[error("malformed dataframe partition: {0}")]
    Frame(String),
}

/// Format tag in front of every encoded value, so new layouts (raw array chunks, Arrow IPC) can be
/// added without breaking old readers' error messages.
const TAG_POSTCARD: u8 = 0;
/// An f64 array chunk: `ndim` (u32 LE), each dimension (u64 LE), then the data (f64 LE, C order).
const TAG_ARRAY: u8 = 1;
/// A dataframe partition at top level: Arrow IPC file bytes (no postcard framing, no copy).
const TAG_FRAME: u8 = 2;

/// The bytes of an encoded [`Value`]: what is stored, spilled and sent between processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

impl Encoded {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn decode(&self) -> Result<Value, ValueError> {
        let (&tag, body) = self.0.split_first().ok_or(ValueError::Empty)?;
        match tag {
            TAG_POSTCARD => Ok(postcard::from_bytes(body)?),
            TAG_ARRAY => Ok(Value::Array(Arc::new(array_from_bytes(body)?))),
            TAG_FRAME => crate::frame::FramePart::from_ipc(body)
                .map(Value::Frame)
                .map_err(ValueError::Frame),
            other => Err(ValueError::UnknownTag(other)),
        }
    }
}

impl Value {
    pub fn encode(&self) -> Encoded {
        if let Value::Array(a) = self {
            let mut out = Vec::with_capacity(1 + array_encoded_len(a));
            out.push(TAG_ARRAY);
            array_to_bytes(a, &mut out);
            return Encoded(Bytes::from(out));
        }
        if let Value::Frame(f) = self {
            let mut out = vec![TAG_FRAME];
            f.write_ipc(&mut out);
            return Encoded(Bytes::from(out));
        }
        let out = vec![TAG_POSTCARD];
        // Serializing an in-memory Value into a Vec cannot fail: every variant is supported.
        match postcard::to_extend(self, out) {
            Ok(v) => Encoded(Bytes::from(v)),
            Err(e) => unreachable!("postcard cannot fail on Value into Vec: {e}"),
        }
    }

    /// Short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "none",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Array(_) => "array",
            Value::Frame(_) => "frame",
        }
    }

    fn type_error(&self, expected: &'static str) -> ValueError {
        let mut got = match self {
            Value::Array(a) => format!("array of shape {:?}", a.shape()),
            _ => format!("{} {:?}", self.kind(), self),
        };
        if got.len() > 80 {
            got.truncate(77);
            got.push_str("...");
        }
        ValueError::Type { expected, got }
    }

    pub fn as_int(&self) -> Result<i64, ValueError> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => Err(other.type_error("int")),
        }
    }

    pub fn as_float(&self) -> Result<f64, ValueError> {
        match self {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(other.type_error("float")),
        }
    }

    pub fn as_str(&self) -> Result<&str, ValueError> {
        match self {
            Value::Str(s) => Ok(s),
            other => Err(other.type_error("str")),
        }
    }

    pub fn as_list(&self) -> Result<&[Value], ValueError> {
        match self {
            Value::List(v) => Ok(v),
            other => Err(other.type_error("list")),
        }
    }

    pub fn as_array(&self) -> Result<&Arc<ArrayD<f64>>, ValueError> {
        match self {
            Value::Array(a) => Ok(a),
            other => Err(other.type_error("array")),
        }
    }
}

/// Bytes [`array_to_bytes`] writes for `a`.
fn array_encoded_len(a: &ArrayD<f64>) -> usize {
    4 + 8 * a.ndim() + 8 * a.len()
}

/// Appends `a`'s shape and data (C order, little-endian) to `out`.
fn array_to_bytes(a: &ArrayD<f64>, out: &mut Vec<u8>) {
    out.reserve(array_encoded_len(a));
    out.extend_from_slice(&(a.ndim() as u32).to_le_bytes());
    for &d in a.shape() {
        out.extend_from_slice(&(d as u64).to_le_bytes());
    }
    match a.as_slice() {
        Some(data) => data
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        None => a
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Reads what [`array_to_bytes`] wrote; any length mismatch is an error, never a panic.
fn array_from_bytes(body: &[u8]) -> Result<ArrayD<f64>, ValueError> {
    let bad = |m: String| ValueError::Array(m);
    let (ndim, rest) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| bad(format!("{} bytes, too short for a header", body.len())))?;
    let ndim = u32::from_le_bytes(*ndim) as usize;
    if ndim > 32 {
        return Err(bad(format!("{ndim} dimensions (at most 32)")));
    }
    let dims_len = 8 * ndim;
    if rest.len() < dims_len {
        return Err(bad(format!(
            "{} bytes after the header, too short for {ndim} dimensions",
            rest.len()
        )));
    }
    let (dims, data) = rest.split_at(dims_len);
    let mut shape = Vec::with_capacity(ndim);
    let mut len: usize = 1;
    for d in dims.chunks_exact(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(d);
        let d = usize::try_from(u64::from_le_bytes(b))
            .map_err(|_| bad("a dimension does not fit in memory".into()))?;
        len = len
            .checked_mul(d)
            .ok_or_else(|| bad(format!("shape {shape:?}×{d} overflows")))?;
        shape.push(d);
    }
    if Some(data.len()) != len.checked_mul(8) {
        return Err(bad(format!(
            "shape {shape:?} needs {len} values, got {} bytes of data",
            data.len()
        )));
    }
    let values: Vec<f64> = data
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            f64::from_le_bytes(b)
        })
        .collect();
    ArrayD::from_shape_vec(shape, values).map_err(|e| bad(e.to_string()))
}

/// Serde for array chunks inside other values (lists, task arguments): one byte string.
mod array_serde {
    use std::sync::Arc;

    use ndarray::ArrayD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Arc<ArrayD<f64>>, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        super::array_to_bytes(a, &mut out);
        s.serialize_bytes(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<ArrayD<f64>>, D::Error> {
        let bytes = serde_bytes_buf(d)?;
        super::array_from_bytes(&bytes)
            .map(Arc::new)
            .map_err(serde::de::Error::custom)
    }

    fn serde_bytes_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        // `bytes::Bytes` deserializes from a byte string in every format serde supports.
        Ok(bytes::Bytes::deserialize(d)?.to_vec())
    }
}

macro_rules! from_impl {
    ($($t:ty => $variant:ident $(as $cast:ty)?),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v $(as $cast)?)
            }
        })*
    };
}

from_impl!(i64 => Int, i32 => Int as i64, u32 => Int as i64, f64 => Float, bool => Bool, String => Str, Bytes => Bytes);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Self {
        Value::None
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::None => write!(f, "None"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Value::Array(a) if a.len() == 1 => write!(f, "{}", a.iter().sum::<f64>()),
            Value::Array(a) => write!(f, "<array of shape {:?}>", a.shape()),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Frame(p) => write!(f, "<frame {}>", p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_variant() {
        let v = Value::List(vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(2.5),
            Value::Str("load".into()),
            Value::Bytes(Bytes::from_static(b"\x00\x01")),
            Value::List(vec![Value::Int(1)]),
        ]);
        assert_eq!(v.encode().decode().unwrap(), v);
    }

    #[test]
    fn corrupt_bytes_are_an_error_not_a_panic() {
        assert!(matches!(
            Encoded(Bytes::new()).decode(),
            Err(ValueError::Empty)
        ));
        assert!(matches!(
            Encoded(Bytes::from_static(&[9, 1])).decode(),
            Err(ValueError::UnknownTag(9))
        ));
        assert!(matches!(
            Encoded(Bytes::from_static(&[0, 200])).decode(),
            Err(ValueError::Malformed(_))
        ));
    }

    #[test]
    fn arrays_round_trip_as_raw_bytes_alone_and_nested() {
        let a = Arc::new(
            ArrayD::from_shape_vec(vec![2, 3], vec![1.0, -2.5, 3.0, f64::MAX, 0.0, 1e-300])
                .unwrap(),
        );
        let v = Value::Array(a.clone());
        let e = v.encode();
        assert_eq!(e.0[0], TAG_ARRAY);
        assert_eq!(e.len(), 1 + 4 + 2 * 8 + 6 * 8);
        assert_eq!(e.decode().unwrap(), v);
        let nested = Value::List(vec![Value::Float(1.0), v.clone()]);
        assert_eq!(nested.encode().decode().unwrap(), nested);
        // A transposed (non-contiguous) view encodes in C order of its logical shape.
        let t = Value::Array(Arc::new(a.t().to_owned()));
        assert_eq!(t.encode().decode().unwrap(), t);
        let scalar = Value::Array(Arc::new(ArrayD::from_elem(vec![], 4.0)));
        assert_eq!(scalar.encode().decode().unwrap(), scalar);
    }

    #[test]
    fn corrupt_array_bytes_are_errors_naming_the_problem() {
        let good = Value::Array(Arc::new(ArrayD::zeros(vec![2, 2]))).encode().0;
        for cut in [1, 3, 5, 12, good.len() - 1] {
            let err = Encoded(good.slice(..cut)).decode().unwrap_err();
            assert!(matches!(err, ValueError::Array(_)), "cut at {cut}: {err}");
        }
        let mut long = good.to_vec();
        long.push(0);
        let err = Encoded(Bytes::from(long)).decode().unwrap_err();
        assert!(err.to_string().contains("needs 4 values"), "{err}");
        // A shape whose element count overflows.
        let mut huge = vec![TAG_ARRAY];
        huge.extend_from_slice(&2u32.to_le_bytes());
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = Encoded(Bytes::from(huge)).decode().unwrap_err();
        assert!(
            err.to_string().contains("overflow") || err.to_string().contains("memory"),
            "{err}"
        );
        let mut many = vec![TAG_ARRAY];
        many.extend_from_slice(&1000u32.to_le_bytes());
        assert!(Encoded(Bytes::from(many)).decode().is_err());
    }

    #[test]
    fn conversions_name_the_type() {
        let err = Value::Str("x".into()).as_int().unwrap_err();
        assert_eq!(err.to_string(), "expected int, got str Str(\"x\")");
        assert_eq!(Value::Int(3).as_float().unwrap(), 3.0);
    }
}
