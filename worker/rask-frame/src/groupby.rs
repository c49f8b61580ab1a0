//! `groupby(keys).agg({column: mean|sum|count|min|max})` as partial aggregates.
//!
//! Each partition reduces its rows to one row per group holding the aggregation's *state*
//! (a sum and a count for a mean; a sum; a count; a min; a max), the states of several
//! partitions are combined in a tree (sums and counts add, mins and maxes take the extreme),
//! and the root turns states into results (mean = sum / count) sorted by the keys.
//!
//! Semantics follow pandas (and so Dask): rows whose key is null are dropped; nulls in a value
//! column are skipped; `count` counts non-null values; the mean, min and max of a group with no
//! values are null and its sum is 0.

use polars::prelude::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::FrameError;
use crate::schema::{DType, Schema, lookup};

/// An aggregation of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Agg {
    Mean,
    Sum,
    Count,
    Min,
    Max,
}

/// `"mean"`, `"sum"`, `"count"`, `"min"` or `"max"`, as pandas names them.
impl std::str::FromStr for Agg {
    type Err = FrameError;

    fn from_str(s: &str) -> Result<Agg, FrameError> {
        Ok(match s {
            "mean" => Agg::Mean,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "min" => Agg::Min,
            "max" => Agg::Max,
            other => {
                return Err(FrameError::Invalid(format!(
                    "unknown aggregation {other:?} (one of mean, sum, count, min, max)"
                )));
            }
        })
    }
}

impl Agg {
    fn name(self) -> &'static str {
        match self {
            Agg::Mean => "mean",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::Min => "min",
            Agg::Max => "max",
        }
    }
}

/// One aggregated column: its input, aggregation, output name and input type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AggCol {
    pub column: String,
    pub agg: Agg,
    pub output: String,
    pub dtype: DType,
}

/// A whole groupby aggregation, checked against the input schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AggSpec {
    pub keys: Vec<String>,
    pub aggs: Vec<AggCol>,
}

/// How a state column is combined across partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sum,
    Count,
    Min,
    Max,
}

impl AggSpec {
    /// Checks `keys` and `aggs` against `schema`. An output is named after its column, or
    /// `column_agg` when the column is aggregated more than once.
    pub fn new(schema: &Schema, keys: &[&str], aggs: &[(&str, Agg)]) -> Result<AggSpec, String> {
        if keys.is_empty() {
            return Err("groupby needs at least one key column".into());
        }
        if aggs.is_empty() {
            return Err("agg needs at least one (column, aggregation)".into());
        }
        for k in keys {
            lookup(schema, k)?;
        }
        let mut out = Vec::new();
        for (column, agg) in aggs {
            let dtype = lookup(schema, column)?;
            if keys.contains(column) {
                return Err(format!(
                    "column {column:?} is a groupby key; it cannot be aggregated"
                ));
            }
            if !dtype.is_numeric() && *agg != Agg::Count {
                return Err(format!(
                    "cannot take the {} of column {column:?} of type {dtype}",
                    agg.name()
                ));
            }
            let repeated = aggs.iter().filter(|(c, _)| c == column).count() > 1;
            let output = if repeated {
                format!("{column}_{}", agg.name())
            } else {
                column.to_string()
            };
            if out.iter().any(|a: &AggCol| a.output == output) {
                return Err(format!(
                    "aggregation {} of {column:?} is given twice",
                    agg.name()
                ));
            }
            out.push(AggCol {
                column: column.to_string(),
                agg: *agg,
                output,
                dtype,
            });
        }
        Ok(AggSpec {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            aggs: out,
        })
    }

    /// Columns a partition must read.
    pub fn input_columns(&self) -> Vec<String> {
        let mut v = self.keys.clone();
        for a in &self.aggs {
            if !v.contains(&a.column) {
                v.push(a.column.clone());
            }
        }
        v
    }

    /// The state columns: (name, kind, type).
    fn states(&self) -> Vec<(String, Kind, DType)> {
        let mut out = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let sum_t = if a.dtype == DType::Int64 && a.agg == Agg::Sum {
                DType::Int64
            } else {
                DType::Float64
            };
            match a.agg {
                Agg::Mean => {
                    out.push((format!("__{i}_sum"), Kind::Sum, DType::Float64));
                    out.push((format!("__{i}_count"), Kind::Count, DType::Int64));
                }
                Agg::Sum => out.push((format!("__{i}_sum"), Kind::Sum, sum_t)),
                Agg::Count => out.push((format!("__{i}_count"), Kind::Count, DType::Int64)),
                Agg::Min => out.push((format!("__{i}_min"), Kind::Min, a.dtype)),
                Agg::Max => out.push((format!("__{i}_max"), Kind::Max, a.dtype)),
            }
        }
        out
    }

    fn key_schema(&self, input: &Schema) -> Schema {
        self.keys
            .iter()
            .map(|k| (k.clone(), lookup(input, k).unwrap_or(DType::Str)))
            .collect()
    }

    /// The schema of a partition's state.
    pub fn partial_schema(&self, input: &Schema) -> Schema {
        let mut s = self.key_schema(input);
        s.extend(self.states().into_iter().map(|(n, _, t)| (n, t)));
        s
    }

    /// The schema of the final result.
    pub fn result_schema(&self, input: &Schema) -> Schema {
        let mut s = self.key_schema(input);
        for a in &self.aggs {
            let t = match a.agg {
                Agg::Mean => DType::Float64,
                Agg::Count => DType::Int64,
                Agg::Sum if a.dtype == DType::Int64 => DType::Int64,
                Agg::Sum => DType::Float64,
                Agg::Min | Agg::Max => a.dtype,
            };
            s.push((a.output.clone(), t));
        }
        s
    }

    /// One partition's state: a row per group of `df`.
    pub fn partial(&self, df: &DataFrame) -> PolarsResult<DataFrame> {
        let groups = Groups::of(df, &self.keys)?;
        let mut cols = groups.key_columns(df, &self.keys)?;
        for (i, a) in self.aggs.iter().enumerate() {
            let s = df.column(&a.column)?.as_materialized_series();
            let n = groups.len();
            match a.agg {
                Agg::Mean => {
                    let (sum, count) = sum_count_f64(&groups.ids, n, &s.cast(&DataType::Float64)?)?;
                    cols.push(Column::new(format!("__{i}_sum").into(), sum));
                    cols.push(Column::new(format!("__{i}_count").into(), count));
                }
                Agg::Sum if a.dtype == DType::Int64 => {
                    let v = fold_i64(&groups.ids, n, s.i64()?, Kind::Sum);
                    let v: Vec<i64> = v.into_iter().map(|x| x.unwrap_or(0)).collect();
                    cols.push(Column::new(format!("__{i}_sum").into(), v));
                }
                Agg::Sum => {
                    let (sum, _) = sum_count_f64(&groups.ids, n, &s.cast(&DataType::Float64)?)?;
                    cols.push(Column::new(format!("__{i}_sum").into(), sum));
                }
                Agg::Count => {
                    let mut count = vec![0i64; n];
                    for (g, valid) in groups
                        .ids
                        .iter()
                        .zip(s.is_not_null().iter().map(|v| v.unwrap_or(false)))
                    {
                        if *g != NULL_GROUP && valid {
                            count[*g as usize] += 1;
                        }
                    }
                    cols.push(Column::new(format!("__{i}_count").into(), count));
                }
                Agg::Min | Agg::Max => {
                    let kind = if a.agg == Agg::Min {
                        Kind::Min
                    } else {
                        Kind::Max
                    };
                    let name = format!("__{i}_{}", a.agg.name());
                    cols.push(extreme(&groups.ids, n, s, kind, name)?);
                }
            }
        }
        DataFrame::new_infer_height(cols)
    }

    /// Combines partition states (each laid out by [`AggSpec::partial`]) into one.
    pub fn combine(&self, parts: &[&DataFrame]) -> PolarsResult<DataFrame> {
        let mut all = match parts.first() {
            Some(first) => (*first).clone(),
            None => polars_bail!(ComputeError: "combine of no partial aggregates"),
        };
        for p in &parts[1..] {
            all.vstack_mut(p)?;
        }
        let groups = Groups::of(&all, &self.keys)?;
        let n = groups.len();
        let mut cols = groups.key_columns(&all, &self.keys)?;
        for (name, kind, t) in self.states() {
            let s = all.column(&name)?.as_materialized_series();
            let col = match (kind, t) {
                (Kind::Sum | Kind::Count, DType::Int64) => {
                    let v = fold_i64(&groups.ids, n, s.i64()?, Kind::Sum);
                    let v: Vec<i64> = v.into_iter().map(|x| x.unwrap_or(0)).collect();
                    Column::new(name.into(), v)
                }
                (Kind::Sum | Kind::Count, _) => {
                    let (sum, _) = sum_count_f64(&groups.ids, n, s)?;
                    Column::new(name.into(), sum)
                }
                (Kind::Min | Kind::Max, _) => extreme(&groups.ids, n, s, kind, name)?,
            };
            cols.push(col);
        }
        DataFrame::new_infer_height(cols)
    }

    /// Turns a combined state into the result: keys and one column per aggregation, sorted by
    /// the keys.
    pub fn finish(&self, state: &DataFrame) -> PolarsResult<DataFrame> {
        let mut cols: Vec<Column> = self
            .keys
            .iter()
            .map(|k| state.column(k).cloned())
            .collect::<PolarsResult<_>>()?;
        for (i, a) in self.aggs.iter().enumerate() {
            let get = |suffix: &str| -> PolarsResult<Series> {
                Ok(state
                    .column(&format!("__{i}_{suffix}"))?
                    .as_materialized_series()
                    .clone())
            };
            let s = match a.agg {
                Agg::Mean => {
                    let sum = get("sum")?;
                    let count = get("count")?;
                    let v: Float64Chunked = sum
                        .f64()?
                        .iter()
                        .zip(count.i64()?.iter())
                        .map(|(s, c)| match (s, c) {
                            (Some(s), Some(c)) if c > 0 => Some(s / c as f64),
                            _ => None,
                        })
                        .collect();
                    v.into_series()
                }
                Agg::Sum => get("sum")?,
                Agg::Count => get("count")?,
                Agg::Min => get("min")?,
                Agg::Max => get("max")?,
            };
            cols.push(s.with_name(a.output.as_str().into()).into());
        }
        let df = DataFrame::new_infer_height(cols)?;
        df.sort(self.keys.clone(), SortMultipleOptions::default())
    }
}

/// Rows whose key has a null: in no group.
const NULL_GROUP: u32 = u32::MAX;

/// Each row's group (in order of first appearance) and each group's first row.
struct Groups {
    ids: Vec<u32>,
    first: Vec<IdxSize>,
}

impl Groups {
    fn len(&self) -> usize {
        self.first.len()
    }

    fn of(df: &DataFrame, keys: &[String]) -> PolarsResult<Groups> {
        let cols: Vec<&Series> = keys
            .iter()
            .map(|k| df.column(k).map(|c| c.as_materialized_series()))
            .collect::<PolarsResult<_>>()?;
        let mut g = Groups {
            ids: Vec::with_capacity(df.height()),
            first: Vec::new(),
        };
        if let [one] = cols.as_slice()
            && one.dtype() == &DataType::Int64
        {
            let mut map: FxHashMap<i64, u32> = FxHashMap::default();
            for (row, v) in one.i64()?.iter().enumerate() {
                let id = match v {
                    None => NULL_GROUP,
                    Some(v) => *map.entry(v).or_insert_with(|| {
                        g.first.push(row as IdxSize);
                        (g.first.len() - 1) as u32
                    }),
                };
                g.ids.push(id);
            }
            return Ok(g);
        }
        // Any other keys: each row's key encoded as bytes (type tag, value), hashed.
        let mut encoders: Vec<Box<dyn Iterator<Item = Option<Vec<u8>>> + '_>> = Vec::new();
        for s in &cols {
            encoders.push(match s.dtype() {
                DataType::Int64 => {
                    Box::new(s.i64()?.iter().map(|v| v.map(|v| v.to_le_bytes().to_vec())))
                }
                DataType::Float64 => Box::new(s.f64()?.iter().map(|v| {
                    // -0.0 and 0.0 are one key, as are all NaNs.
                    v.map(|v| {
                        let v = if v == 0.0 {
                            0.0
                        } else if v.is_nan() {
                            f64::NAN
                        } else {
                            v
                        };
                        v.to_bits().to_le_bytes().to_vec()
                    })
                })),
                DataType::Boolean => {
                    Box::new(s.bool()?.iter().map(|v| v.map(|b| vec![u8::from(b)])))
                }
                DataType::String => Box::new(s.str()?.iter().map(|v| {
                    v.map(|s| {
                        let mut b = (s.len() as u64).to_le_bytes().to_vec();
                        b.extend_from_slice(s.as_bytes());
                        b
                    })
                })),
                other => polars_bail!(ComputeError: "cannot group by a column of type {other}"),
            });
        }
        let mut map: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        let mut key = Vec::new();
        for row in 0..df.height() {
            key.clear();
            let mut null = false;
            for e in encoders.iter_mut() {
                match e.next().flatten() {
                    Some(b) => key.extend_from_slice(&b),
                    None => null = true,
                }
            }
            let id = if null {
                NULL_GROUP
            } else if let Some(id) = map.get(&key) {
                *id
            } else {
                g.first.push(row as IdxSize);
                let id = (g.first.len() - 1) as u32;
                map.insert(key.clone(), id);
                id
            };
            g.ids.push(id);
        }
        Ok(g)
    }

    /// The key columns of the groups: each group's first row.
    fn key_columns(&self, df: &DataFrame, keys: &[String]) -> PolarsResult<Vec<Column>> {
        let idx = IdxCa::from_vec("".into(), self.first.clone());
        keys.iter()
            .map(|k| Ok(df.column(k)?.as_materialized_series().take(&idx)?.into()))
            .collect()
    }
}

fn sum_count_f64(ids: &[u32], n: usize, s: &Series) -> PolarsResult<(Vec<f64>, Vec<i64>)> {
    let mut sum = vec![0.0; n];
    let mut count = vec![0i64; n];
    for (g, v) in ids.iter().zip(s.f64()?.iter()) {
        if let (true, Some(v)) = (*g != NULL_GROUP, v) {
            sum[*g as usize] += v;
            count[*g as usize] += 1;
        }
    }
    Ok((sum, count))
}

fn fold_i64(ids: &[u32], n: usize, ca: &Int64Chunked, kind: Kind) -> Vec<Option<i64>> {
    let mut acc: Vec<Option<i64>> = vec![None; n];
    for (g, v) in ids.iter().zip(ca.iter()) {
        if let (true, Some(v)) = (*g != NULL_GROUP, v) {
            let a = &mut acc[*g as usize];
            *a = Some(match (*a, kind) {
                (None, _) => v,
                (Some(x), Kind::Sum | Kind::Count) => x.wrapping_add(v),
                (Some(x), Kind::Min) => x.min(v),
                (Some(x), Kind::Max) => x.max(v),
            });
        }
    }
    acc
}

/// Per-group min or max of a numeric column, null for a group without values (NaN skipped).
fn extreme(ids: &[u32], n: usize, s: &Series, kind: Kind, name: String) -> PolarsResult<Column> {
    Ok(match s.dtype() {
        DataType::Int64 => Column::new(name.into(), fold_i64(ids, n, s.i64()?, kind)),
        _ => {
            let f = s.cast(&DataType::Float64)?;
            let mut acc: Vec<Option<f64>> = vec![None; n];
            for (g, v) in ids.iter().zip(f.f64()?.iter()) {
                if let (true, Some(v)) = (*g != NULL_GROUP, v) {
                    if v.is_nan() {
                        continue;
                    }
                    let a = &mut acc[*g as usize];
                    *a = Some(match (*a, kind) {
                        (None, _) => v,
                        (Some(x), Kind::Min) => x.min(v),
                        (Some(x), _) => x.max(v),
                    });
                }
            }
            Column::new(name.into(), acc)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        vec![
            ("k".into(), DType::Int64),
            ("s".into(), DType::Str),
            ("x".into(), DType::Float64),
            ("n".into(), DType::Int64),
        ]
    }

    #[test]
    fn specs_are_checked() {
        let s = schema();
        let e = AggSpec::new(&s, &["k"], &[("s", Agg::Mean)]).unwrap_err();
        assert!(e.contains("mean of column \"s\""), "{e}");
        let e = AggSpec::new(&s, &["nope"], &[("x", Agg::Mean)]).unwrap_err();
        assert!(e.contains("no column \"nope\""), "{e}");
        assert!(AggSpec::new(&s, &[], &[("x", Agg::Mean)]).is_err());
        assert!(AggSpec::new(&s, &["k"], &[]).is_err());
        assert!(AggSpec::new(&s, &["k"], &[("k", Agg::Sum)]).is_err());
        let spec = AggSpec::new(
            &s,
            &["k"],
            &[("x", Agg::Mean), ("x", Agg::Max), ("s", Agg::Count)],
        )
        .unwrap();
        let names: Vec<_> = spec.aggs.iter().map(|a| a.output.as_str()).collect();
        assert_eq!(names, ["x_mean", "x_max", "s"]);
        assert_eq!("max".parse::<Agg>().unwrap(), Agg::Max);
        assert_eq!(
            "median".parse::<Agg>().unwrap_err().to_string(),
            "unknown aggregation \"median\" (one of mean, sum, count, min, max)"
        );
    }

    #[test]
    fn partial_combine_finish_matches_one_pass() {
        let df = df!(
            "k" => [Some(2i64), Some(1), Some(2), None, Some(1), Some(3)],
            "s" => ["a", "b", "a", "c", "b", "a"],
            "x" => [Some(1.0f64), Some(2.0), None, Some(4.0), Some(6.0), None],
            "n" => [1i64, 2, 3, 4, 5, 6],
        )
        .unwrap();
        let spec = AggSpec::new(
            &schema(),
            &["k"],
            &[
                ("x", Agg::Mean),
                ("n", Agg::Sum),
                ("x", Agg::Count),
                ("n", Agg::Min),
                ("x", Agg::Max),
            ],
        )
        .unwrap();
        let a = spec.partial(&df.slice(0, 2)).unwrap();
        let b = spec.partial(&df.slice(2, 0)).unwrap();
        let c = spec.partial(&df.slice(2, 4)).unwrap();
        let state = spec.combine(&[&a, &b, &c]).unwrap();
        let out = spec.finish(&state).unwrap();
        let expected = df!(
            "k" => [1i64, 2, 3],
            "x_mean" => [Some(4.0f64), Some(1.0), None],
            "n_sum" => [7i64, 4, 6],
            "x_count" => [2i64, 1, 0],
            "n_min" => [2i64, 1, 6],
            "x_max" => [Some(6.0f64), Some(1.0), None],
        )
        .unwrap();
        assert!(out.equals_missing(&expected), "{out}\n{expected}");
    }

    #[test]
    fn string_and_multi_keys() {
        let df = df!(
            "k" => [1i64, 1, 2, 2],
            "s" => [Some("a"), Some("b"), Some("a"), None],
            "x" => [1.0f64, 2.0, 3.0, 4.0],
            "n" => [0i64, 0, 0, 0],
        )
        .unwrap();
        let spec = AggSpec::new(&schema(), &["s", "k"], &[("x", Agg::Sum)]).unwrap();
        let out = spec
            .finish(&spec.combine(&[&spec.partial(&df).unwrap()]).unwrap())
            .unwrap();
        let expected =
            df!("s" => ["a", "a", "b"], "k" => [1i64, 2, 1], "x" => [1.0f64, 3.0, 2.0]).unwrap();
        assert!(out.equals_missing(&expected), "{out}");
    }
}
