//! Values that tasks take and return, and their encoding for storage and transport.
//!
//! A result is encoded once, by the worker that computed it, and travels and spills as those bytes
//! ([`Encoded`]); peers and clients decode it only when they need the value itself.

use bytes::Bytes;
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
    #[error("malformed dataframe partition: {0}")]
    Frame(String),
}

/// Format tag in front of every encoded value, so new layouts (raw array chunks, Arrow IPC) can be
/// added without breaking old readers' error messages.
const TAG_POSTCARD: u8 = 0;
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
            TAG_FRAME => crate::frame::FramePart::from_ipc(body)
                .map(Value::Frame)
                .map_err(ValueError::Frame),
            other => Err(ValueError::UnknownTag(other)),
        }
    }
}

impl Value {
    pub fn encode(&self) -> Encoded {
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
            Value::Frame(_) => "frame",
        }
    }

    fn type_error(&self, expected: &'static str) -> ValueError {
        let mut got = format!("{} {:?}", self.kind(), self);
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
    fn conversions_name_the_type() {
        let err = Value::Str("x".into()).as_int().unwrap_err();
        assert_eq!(err.to_string(), "expected int, got str Str(\"x\")");
        assert_eq!(Value::Int(3).as_float().unwrap(), 3.0);
    }
}
