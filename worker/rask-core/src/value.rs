//! A dynamic value: what the seed's scalar functions (`inc`, `add`, `sum`, ...) take and return,
//! and what `rask run` prints. It is a serde type, so it is stored and sent as any other
//! ([`crate::data::Data`], postcard).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A scalar, a string, bytes, or a list of those.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Bytes),
    List(Vec<Value>),
}

/// A value of another type than the one asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected {expected}, got {got}")]
pub struct ValueError {
    pub expected: &'static str,
    pub got: String,
}

impl Value {
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
        }
    }

    fn type_error(&self, expected: &'static str) -> ValueError {
        let mut got = format!("{} {:?}", self.kind(), self);
        if got.len() > 80 {
            got.truncate(77);
            got.push_str("...");
        }
        ValueError { expected, got }
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Data, Encoded};

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
        assert_eq!(Value::decode(&v.encode()).unwrap(), v);
    }

    #[test]
    fn corrupt_bytes_are_an_error_not_a_panic() {
        assert!(Value::decode(&Encoded::from_bytes(Bytes::new())).is_err());
        assert!(Value::decode(&Encoded::from_bytes(Bytes::from_static(&[9, 1]))).is_err());
        assert!(Value::decode(&Encoded::from_bytes(Bytes::from_static(&[0, 200]))).is_err());
    }

    #[test]
    fn conversions_name_the_type() {
        let err = Value::Str("x".into()).as_int().unwrap_err();
        assert_eq!(err.to_string(), "expected int, got str Str(\"x\")");
        assert_eq!(Value::Int(3).as_float().unwrap(), 3.0);
    }
}
