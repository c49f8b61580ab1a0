//! Column names and types: what a frame's partitions hold, known on the client before any task
//! runs.

use polars::prelude::{DataType, Field};
use serde::{Deserialize, Serialize};

/// A column's type in a rask frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    Int64,
    Float64,
    Str,
    Bool,
}

impl DType {
    pub fn polars(self) -> DataType {
        match self {
            DType::Int64 => DataType::Int64,
            DType::Float64 => DataType::Float64,
            DType::Str => DataType::String,
            DType::Bool => DataType::Boolean,
        }
    }

    /// The rask type of a Polars type (anything else is read as text).
    pub fn of(dt: &DataType) -> DType {
        match dt {
            DataType::Int64 | DataType::Int32 | DataType::UInt32 => DType::Int64,
            DataType::Float64 | DataType::Float32 => DType::Float64,
            DataType::Boolean => DType::Bool,
            _ => DType::Str,
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, DType::Int64 | DType::Float64)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::Int64 => "int64",
            DType::Float64 => "float64",
            DType::Str => "string",
            DType::Bool => "bool",
        })
    }
}

/// Column names and types, in order.
pub type Schema = Vec<(String, DType)>;

pub(crate) fn to_polars_schema(schema: &Schema) -> polars::prelude::Schema {
    schema
        .iter()
        .map(|(n, t)| Field::new(n.as_str().into(), t.polars()))
        .collect()
}

pub(crate) fn lookup(schema: &Schema, column: &str) -> Result<DType, String> {
    schema
        .iter()
        .find(|(n, _)| n == column)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
            let mut msg = format!("no column {column:?} (columns: {})", names.join(", "));
            // One column whose name holds the wanted one: the file is split by another
            // separator than the one read with.
            if let [only] = names.as_slice()
                && only.contains(column)
                && let Some(sep) = ['\t', ';', '|', ',']
                    .into_iter()
                    .find(|&c| only.contains(c))
            {
                msg.push_str(&format!(
                    "; the header looks separated by {sep:?}: read it with that separator (sep, or \
                     --sep in `rask run`)"
                ));
            }
            msg
        })
}
