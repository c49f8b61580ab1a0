//! What a partition task does to its frame: column selection, boolean filters, partial
//! aggregation, and the other per-partition steps, as serde data that travels in the graph.
//!
//! Steps are fused: a partition's whole pipeline (read the CSV block, filter, select, aggregate)
//! runs in one task, so only its small result leaves the worker, and the CSV reader parses only
//! the columns the pipeline reads.

use std::path::PathBuf;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::FrameError;
use crate::groupby::AggSpec;
use crate::schema::{DType, Schema, lookup};

/// A literal in a filter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Lit {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

macro_rules! lit_from {
    ($($t:ty => $v:ident $(as $c:ty)?),*) => {$(
        impl From<$t> for Lit {
            fn from(x: $t) -> Lit { Lit::$v(x $(as $c)?) }
        }
    )*};
}
lit_from!(i64 => Int, i32 => Int as i64, f64 => Float, bool => Bool, String => Str);

impl From<&str> for Lit {
    fn from(x: &str) -> Lit {
        Lit::Str(x.to_owned())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A boolean filter over a row: comparisons of a column with a literal, combined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Cmp {
        column: String,
        op: CmpOp,
        value: Lit,
    },
    IsNull(String),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

/// `col("x").gt(3.5)`: the start of a filter.
pub fn col(name: &str) -> Col {
    Col(name.to_owned())
}

/// A column named in a filter, waiting for its comparison.
pub struct Col(String);

impl Col {
    fn cmp(self, op: CmpOp, value: impl Into<Lit>) -> Expr {
        Expr::Cmp {
            column: self.0,
            op,
            value: value.into(),
        }
    }
    pub fn eq(self, v: impl Into<Lit>) -> Expr {
        self.cmp(CmpOp::Eq, v)
    }
    pub fn ne(self, v: impl Into<Lit>) -> Expr {
        self.cmp(CmpOp::Ne, v)
    }
    pub fn lt(self, v: impl Into<Lit>) -> Expr {
        self.cmp(CmpOp::Lt, v)
    }
    pub fn le(self, v: impl Into<Lit>) -> Expr {
        self.cmp(CmpOp::Le, v)
    }
    pub fn gt(self, v: impl Into<Lit>) -> Expr {
        self.cmp(CmpOp::Gt, v)
    }
    pub fn ge(self, v: impl Into<Lit>) -> Expr {
        self.cmp(CmpOp::Ge, v)
    }
    pub fn is_null(self) -> Expr {
        Expr::IsNull(self.0)
    }
}

impl Expr {
    pub fn and(self, other: Expr) -> Expr {
        Expr::And(Box::new(self), Box::new(other))
    }
    pub fn or(self, other: Expr) -> Expr {
        Expr::Or(Box::new(self), Box::new(other))
    }
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }

    /// Every column the filter reads.
    pub(crate) fn columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Cmp { column, .. } | Expr::IsNull(column) => {
                if !out.contains(column) {
                    out.push(column.clone());
                }
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.columns(out);
                b.columns(out);
            }
            Expr::Not(a) => a.columns(out),
        }
    }

    /// Checks the filter against a schema: columns exist, literals fit their column's type.
    pub(crate) fn check(&self, schema: &Schema) -> Result<(), String> {
        match self {
            Expr::Cmp { column, op, value } => {
                let t = lookup(schema, column)?;
                let ok = match (t, value) {
                    (DType::Int64 | DType::Float64, Lit::Int(_) | Lit::Float(_)) => true,
                    (DType::Str, Lit::Str(_)) => true,
                    (DType::Bool, Lit::Bool(_)) => matches!(op, CmpOp::Eq | CmpOp::Ne),
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "filter compares column {column:?} of type {t} with {value:?} using {op:?}"
                    ))
                }
            }
            Expr::IsNull(column) => lookup(schema, column).map(|_| ()),
            Expr::And(a, b) | Expr::Or(a, b) => a.check(schema).and_then(|_| b.check(schema)),
            Expr::Not(a) => a.check(schema),
        }
    }

    /// The rows of `df` where the filter holds (a null is `!=` anything and fails every other
    /// comparison, as NaN in pandas).
    pub(crate) fn mask(&self, df: &DataFrame) -> PolarsResult<BooleanChunked> {
        Ok(match self {
            Expr::Cmp { column, op, value } => {
                let s = df.column(column)?.as_materialized_series();
                let m = compare(s, *op, value)?;
                // As pandas with NaN: a null is unequal to everything and compares false.
                m.fill_null_with_values(*op == CmpOp::Ne)?
            }
            Expr::IsNull(column) => df.column(column)?.is_null(),
            Expr::And(a, b) => &a.mask(df)? & &b.mask(df)?,
            Expr::Or(a, b) => &a.mask(df)? | &b.mask(df)?,
            Expr::Not(a) => !&a.mask(df)?,
        })
    }
}

fn compare(s: &Series, op: CmpOp, value: &Lit) -> PolarsResult<BooleanChunked> {
    macro_rules! cmp {
        ($rhs:expr) => {
            match op {
                CmpOp::Eq => s.equal($rhs),
                CmpOp::Ne => s.not_equal($rhs),
                CmpOp::Lt => s.lt($rhs),
                CmpOp::Le => s.lt_eq($rhs),
                CmpOp::Gt => s.gt($rhs),
                CmpOp::Ge => s.gt_eq($rhs),
            }
        };
    }
    match value {
        Lit::Int(v) if s.dtype().is_float() => cmp!(*v as f64),
        Lit::Int(v) => cmp!(*v),
        Lit::Float(v) => {
            let f = s.cast(&DataType::Float64)?;
            let s = &f;
            match op {
                CmpOp::Eq => s.equal(*v),
                CmpOp::Ne => s.not_equal(*v),
                CmpOp::Lt => s.lt(*v),
                CmpOp::Le => s.lt_eq(*v),
                CmpOp::Gt => s.gt(*v),
                CmpOp::Ge => s.gt_eq(*v),
            }
        }
        Lit::Str(v) => cmp!(v.as_str()),
        Lit::Bool(v) => {
            let b = s.bool()?;
            let m = match op {
                CmpOp::Eq if *v => b.clone(),
                CmpOp::Ne if !*v => b.clone(),
                _ => !b,
            };
            Ok(m)
        }
    }
}

/// An arithmetic operator of a [`NumExpr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    /// True division: always `float64`, as in pandas (`1 / 0` is `inf`).
    Div,
}

impl ArithOp {
    fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

/// A number per row computed from numeric columns and literals (`df.x * 2 + df.y`): what
/// [`crate::DataFrame::assign`] stores in a column. Build one with [`NumExpr::col`],
/// [`NumExpr::lit`] and the operators `+ - * /` and unary `-`.
///
/// Types follow pandas: `int64` with `int64` stays `int64` for `+ - *`, anything with a
/// `float64` is `float64`, and `/` is always `float64`; a null in an input gives a null.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NumExpr {
    Col(String),
    Lit(Lit),
    Arith {
        op: ArithOp,
        left: Box<NumExpr>,
        right: Box<NumExpr>,
    },
}

impl NumExpr {
    pub fn col(name: &str) -> NumExpr {
        NumExpr::Col(name.to_owned())
    }

    pub fn lit(value: impl Into<Lit>) -> NumExpr {
        NumExpr::Lit(value.into())
    }

    pub fn arith(self, op: ArithOp, right: NumExpr) -> NumExpr {
        NumExpr::Arith {
            op,
            left: Box::new(self),
            right: Box::new(right),
        }
    }

    /// Every column the expression reads.
    pub(crate) fn columns(&self, out: &mut Vec<String>) {
        match self {
            NumExpr::Col(c) => {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
            NumExpr::Lit(_) => {}
            NumExpr::Arith { left, right, .. } => {
                left.columns(out);
                right.columns(out);
            }
        }
    }

    /// The expression's type over `schema`; an error names a missing column, or the column or
    /// literal that is not a number.
    pub(crate) fn dtype(&self, schema: &Schema) -> Result<DType, String> {
        match self {
            NumExpr::Col(c) => match lookup(schema, c)? {
                t if t.is_numeric() => Ok(t),
                t => Err(format!(
                    "cannot compute with column {c:?} of type {t}: arithmetic needs int64 or \
                     float64 columns"
                )),
            },
            NumExpr::Lit(Lit::Int(_)) => Ok(DType::Int64),
            NumExpr::Lit(Lit::Float(_)) => Ok(DType::Float64),
            NumExpr::Lit(other) => Err(format!(
                "cannot compute with {other:?}: arithmetic needs numbers"
            )),
            NumExpr::Arith { op, left, right } => {
                let (l, r) = (left.dtype(schema)?, right.dtype(schema)?);
                Ok(match op {
                    ArithOp::Div => DType::Float64,
                    _ if l == DType::Int64 && r == DType::Int64 => DType::Int64,
                    _ => DType::Float64,
                })
            }
        }
    }

    /// The expression's values over the rows of `df` (`height` rows; a literal alone fills
    /// them). Inputs are cast to the result's type first, so the kernels never guess one.
    pub(crate) fn eval(&self, df: &DataFrame, schema: &Schema) -> PolarsResult<Series> {
        let out = self
            .dtype(schema)
            .map_err(|e| polars_err!(ComputeError: "{e}"))?;
        match self {
            NumExpr::Col(c) => df.column(c)?.as_materialized_series().cast(&out.polars()),
            NumExpr::Lit(Lit::Int(v)) => {
                Ok(Int64Chunked::full(PlSmallStr::EMPTY, *v, df.height()).into_series())
            }
            NumExpr::Lit(Lit::Float(v)) => {
                Ok(Float64Chunked::full(PlSmallStr::EMPTY, *v, df.height()).into_series())
            }
            NumExpr::Lit(other) => polars_bail!(ComputeError: "{other:?} is not a number"),
            NumExpr::Arith { op, left, right } => {
                let t = out.polars();
                let l = left.eval(df, schema)?.cast(&t)?;
                let r = right.eval(df, schema)?.cast(&t)?;
                match op {
                    ArithOp::Add => &l + &r,
                    ArithOp::Sub => &l - &r,
                    ArithOp::Mul => &l * &r,
                    ArithOp::Div => &l / &r,
                }
            }
        }
    }
}

impl std::fmt::Display for NumExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NumExpr::Col(c) => write!(f, "{c}"),
            NumExpr::Lit(Lit::Int(v)) => write!(f, "{v}"),
            NumExpr::Lit(Lit::Float(v)) => write!(f, "{v:?}"),
            NumExpr::Lit(other) => write!(f, "{other:?}"),
            NumExpr::Arith { op, left, right } => {
                write!(f, "({left} {} {right})", op.symbol())
            }
        }
    }
}

macro_rules! num_op {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl std::ops::$trait for NumExpr {
            type Output = NumExpr;
            fn $method(self, right: NumExpr) -> NumExpr {
                self.arith(ArithOp::$op, right)
            }
        }
    )*};
}
num_op!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

impl std::ops::Neg for NumExpr {
    type Output = NumExpr;
    /// `0 - x` (of `x`'s type).
    fn neg(self) -> NumExpr {
        NumExpr::lit(0).arith(ArithOp::Sub, self)
    }
}

/// `df.assign(name=expr, ...)`: every expression is computed from the frame as it was before the
/// step (as pandas' `assign` does with Series arguments), then stored: in place when the column
/// exists, else at the end.
pub(crate) fn assign(df: &DataFrame, cols: &[(String, NumExpr)]) -> PolarsResult<DataFrame> {
    let schema: Schema = df
        .schema()
        .iter()
        .map(|(name, dt)| (name.to_string(), DType::of(dt)))
        .collect();
    let schema = &schema;
    let values = cols
        .iter()
        .map(|(name, e)| Ok(e.eval(df, schema)?.with_name(name.as_str().into())))
        .collect::<PolarsResult<Vec<Series>>>()?;
    let mut out = df.clone();
    for s in values {
        out.with_column(s.into_column())?;
    }
    Ok(out)
}

/// One step of a partition's pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Op {
    Select(Vec<String>),
    Filter(Expr),
    Head(usize),
    /// Per-partition state of a groupby aggregation (see [`crate::groupby`]).
    Partial(AggSpec),
    /// Computed columns (`assign`).
    Assign(Vec<(String, NumExpr)>),
}

impl Op {
    /// The step's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Op::Select(_) => "select",
            Op::Filter(_) => "filter",
            Op::Head(_) => "head",
            Op::Partial(_) => "groupby",
            Op::Assign(_) => "assign",
        }
    }
}

/// The output of a partition's pipeline: the frame, or a count that ends it (a serde `u64`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) enum Sink {
    #[default]
    Frame,
    /// The number of rows.
    Len,
    /// Write the frame to this path (UTF-8) as CSV; the task returns the rows written.
    Csv(PathBuf),
    /// Write the frame to this path (UTF-8) as Parquet; the task returns the rows written.
    Parquet(PathBuf),
}

/// A partition's fused pipeline.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    pub sink: Sink,
}

impl Plan {
    /// The input columns the pipeline reads, in input order; `None` when it needs all.
    pub fn needed_columns(&self, input: &Schema) -> Option<Vec<String>> {
        let mut used: Vec<String> = Vec::new();
        // Columns made by an `assign` step: a later step reading them reads no input column.
        let mut made: Vec<String> = Vec::new();
        fn read(cols: Vec<String>, made: &[String], used: &mut Vec<String>) {
            for c in cols {
                if !made.contains(&c) && !used.contains(&c) {
                    used.push(c);
                }
            }
        }
        for op in &self.ops {
            match op {
                Op::Filter(e) => {
                    let mut cols = Vec::new();
                    e.columns(&mut cols);
                    read(cols, &made, &mut used);
                }
                Op::Head(_) => {}
                Op::Assign(columns) => {
                    let mut cols = Vec::new();
                    for (_, e) in columns {
                        e.columns(&mut cols);
                    }
                    read(cols, &made, &mut used);
                    made.extend(columns.iter().map(|(n, _)| n.clone()));
                }
                Op::Select(cols) => {
                    read(cols.clone(), &made, &mut used);
                    return Some(in_order(input, &used));
                }
                Op::Partial(spec) => {
                    read(spec.input_columns(), &made, &mut used);
                    return Some(in_order(input, &used));
                }
            }
        }
        match self.sink {
            // The length needs no column, but a frame of no columns has no rows: read one.
            Sink::Len => {
                if used.is_empty() {
                    used.extend(input.first().map(|(n, _)| n.clone()));
                }
                Some(in_order(input, &used))
            }
            _ => None,
        }
    }

    /// Only a count of the input's rows: no step, the length sink.
    pub fn is_len_only(&self) -> bool {
        self.ops.is_empty() && self.sink == Sink::Len
    }

    /// Runs the ops on a frame (the sink is the caller's); an error names the step.
    pub fn apply(&self, mut df: DataFrame) -> Result<DataFrame, FrameError> {
        for op in &self.ops {
            df = match op {
                Op::Select(cols) => df.select(cols.iter().map(|c| c.as_str())),
                Op::Filter(e) => e.mask(&df).and_then(|m| df.filter(&m)),
                Op::Head(n) => Ok(df.head(Some(*n))),
                Op::Partial(spec) => spec.partial(&df),
                Op::Assign(columns) => assign(&df, columns),
            }
            .map_err(|e| FrameError::Compute {
                step: op.name(),
                reason: e.to_string(),
            })?;
        }
        Ok(df)
    }
}

/// `used` in the order of `input`; a name `input` does not have (a task not built by this
/// crate's builders, which check names) is kept at the end, so the reader fails naming it.
fn in_order(input: &Schema, used: &[String]) -> Vec<String> {
    let mut out: Vec<String> = input
        .iter()
        .filter(|(n, _)| used.contains(n))
        .map(|(n, _)| n.clone())
        .collect();
    out.extend(
        used.iter()
            .filter(|u| !input.iter().any(|(n, _)| n == *u))
            .cloned(),
    );
    out
}

/// The schema after the ops (for `columns`/`dtypes` on the client).
pub(crate) fn output_schema(input: &Schema, ops: &[Op]) -> Schema {
    let mut s = input.clone();
    for op in ops {
        match op {
            Op::Select(cols) => {
                s = cols
                    .iter()
                    .filter_map(|c| s.iter().find(|(n, _)| n == c).cloned())
                    .collect()
            }
            Op::Partial(spec) => s = spec.partial_schema(&s),
            Op::Assign(columns) => {
                let before = s.clone();
                for (name, e) in columns {
                    // Checked when the step was made: an error here is a hand-made plan's.
                    let t = e.dtype(&before).unwrap_or(DType::Float64);
                    match s.iter_mut().find(|(n, _)| n == name) {
                        Some(entry) => entry.1 = t,
                        None => s.push((name.clone(), t)),
                    }
                }
            }
            Op::Filter(_) | Op::Head(_) => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> DataFrame {
        df!(
            "i" => [Some(1i64), Some(5), None, Some(9)],
            "f" => [0.5f64, 2.5, 3.0, -1.0],
            "s" => ["a", "b", "a", "c"],
            "b" => [true, false, true, false],
        )
        .unwrap()
    }

    #[test]
    fn a_missing_column_names_the_columns_and_a_likely_separator() {
        let schema: Schema = vec![("a".into(), DType::Int64), ("b".into(), DType::Str)];
        assert_eq!(
            lookup(&schema, "c").unwrap_err(),
            "no column \"c\" (columns: a, b)"
        );
        let tabs: Schema = vec![("a\tb\tc".into(), DType::Str)];
        let e = lookup(&tabs, "b").unwrap_err();
        assert!(
            e.contains("the header looks separated by '\\t': read it with that separator (sep"),
            "{e}"
        );
        // A one-column frame without the name inside: no guess.
        let one: Schema = vec![("a;b".into(), DType::Str)];
        assert!(!lookup(&one, "z").unwrap_err().contains("separated"));
    }

    fn rows(e: Expr) -> Vec<bool> {
        e.mask(&frame())
            .unwrap()
            .iter()
            .map(|v| v.unwrap())
            .collect()
    }

    #[test]
    fn filters_compare_like_pandas() {
        assert_eq!(rows(col("i").gt(1)), [false, true, false, true]);
        assert_eq!(rows(col("i").gt(1.5)), [false, true, false, true]);
        assert_eq!(rows(col("f").le(2.5)), [true, true, false, true]);
        assert_eq!(rows(col("f").lt(3)), [true, true, false, true]);
        assert_eq!(rows(col("s").eq("a")), [true, false, true, false]);
        assert_eq!(rows(col("b").eq(false)), [false, true, false, true]);
        assert_eq!(rows(col("i").is_null()), [false, false, true, false]);
        assert_eq!(
            rows(col("s").eq("a").and(col("f").gt(1.0)).or(col("i").eq(9))),
            [false, false, true, true]
        );
        assert_eq!(rows(col("i").ne(5).not()), [false, true, false, false]);
    }

    #[test]
    fn a_step_that_fails_is_named() {
        let p = Plan {
            ops: vec![Op::Filter(col("i").gt(1)), Op::Select(vec!["nope".into()])],
            sink: Sink::Frame,
        };
        let e = p.apply(frame()).unwrap_err();
        assert!(
            matches!(e, FrameError::Compute { step: "select", .. }),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("select: ") && e.to_string().contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn filters_are_checked_against_the_schema() {
        let schema: Schema = vec![("i".into(), DType::Int64), ("s".into(), DType::Str)];
        assert!(col("i").gt(1.5).check(&schema).is_ok());
        let e = col("s").gt(1).check(&schema).unwrap_err();
        assert!(e.contains("\"s\"") && e.contains("string"), "{e}");
        let e = col("nope").eq(1).check(&schema).unwrap_err();
        assert!(
            e.contains("no column \"nope\"") && e.contains("i, s"),
            "{e}"
        );
    }

    fn num(name: &str) -> NumExpr {
        NumExpr::col(name)
    }

    #[test]
    fn arithmetic_is_typed_like_pandas() {
        let df = frame();
        let schema: Schema = vec![
            ("i".into(), DType::Int64),
            ("f".into(), DType::Float64),
            ("s".into(), DType::Str),
            ("b".into(), DType::Bool),
        ];
        let i2 = num("i") * NumExpr::lit(2) + NumExpr::lit(1);
        assert_eq!(i2.dtype(&schema).unwrap(), DType::Int64);
        let got: Vec<Option<i64>> = i2
            .eval(&df, &schema)
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(got, [Some(3), Some(11), None, Some(19)]);
        // With a float, or a division: float64; 1 / 0 is inf.
        let mixed = num("i") + num("f");
        assert_eq!(mixed.dtype(&schema).unwrap(), DType::Float64);
        let got: Vec<Option<f64>> = mixed
            .eval(&df, &schema)
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(got, [Some(1.5), Some(7.5), None, Some(8.0)]);
        let div = num("i") / (num("i") - num("i"));
        assert_eq!(div.dtype(&schema).unwrap(), DType::Float64);
        let got: Vec<Option<f64>> = div
            .eval(&df, &schema)
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(got[0], Some(f64::INFINITY));
        assert_eq!(got[2], None);
        let neg = -num("f");
        let got: Vec<Option<f64>> = neg
            .eval(&df, &schema)
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(got, [Some(-0.5), Some(-2.5), Some(-3.0), Some(1.0)]);
        assert_eq!((num("f") - NumExpr::lit(1.5)).to_string(), "(f - 1.5)");
        // A literal alone fills every row.
        let ones = NumExpr::lit(1).eval(&df, &schema).unwrap();
        assert_eq!(ones.len(), 4);

        // Strings, booleans and text literals are refused by name.
        let e = (num("s") + NumExpr::lit(1)).dtype(&schema).unwrap_err();
        assert!(e.contains("column \"s\" of type string"), "{e}");
        let e = (num("b") * NumExpr::lit(1)).dtype(&schema).unwrap_err();
        assert!(e.contains("column \"b\" of type bool"), "{e}");
        let e = (num("i") + NumExpr::lit("x")).dtype(&schema).unwrap_err();
        assert!(
            e.contains("Str(\"x\")") && e.contains("needs numbers"),
            "{e}"
        );
        let e = (num("nope") + NumExpr::lit(1)).dtype(&schema).unwrap_err();
        assert!(e.contains("no column \"nope\""), "{e}");
    }

    #[test]
    fn assign_reads_the_frame_before_the_step() {
        let p = Plan {
            ops: vec![Op::Assign(vec![
                ("f".into(), num("f") * NumExpr::lit(10)),
                ("g".into(), num("f") + NumExpr::lit(1)),
            ])],
            sink: Sink::Frame,
        };
        let out = p.apply(frame()).unwrap();
        // `f` replaced in place, `g` added at the end from the old `f`.
        assert_eq!(out.get_column_names(), ["i", "f", "s", "b", "g"]);
        let f: Vec<Option<f64>> = out.column("f").unwrap().f64().unwrap().iter().collect();
        assert_eq!(f, [Some(5.0), Some(25.0), Some(30.0), Some(-10.0)]);
        let g: Vec<Option<f64>> = out.column("g").unwrap().f64().unwrap().iter().collect();
        assert_eq!(g, [Some(1.5), Some(3.5), Some(4.0), Some(0.0)]);
        let schema: Schema = vec![("i".into(), DType::Int64), ("f".into(), DType::Float64)];
        assert_eq!(
            output_schema(&schema, &p.ops),
            vec![
                ("i".into(), DType::Int64),
                ("f".into(), DType::Float64),
                ("g".into(), DType::Float64)
            ]
        );
    }

    #[test]
    fn columns_made_by_assign_are_not_read() {
        let schema: Schema = ["a", "b", "c", "d"]
            .iter()
            .map(|n| (n.to_string(), DType::Int64))
            .collect();
        let p = Plan {
            ops: vec![
                Op::Assign(vec![("z".into(), num("c") * NumExpr::lit(2))]),
                Op::Filter(col("z").gt(1)),
                Op::Select(vec!["a".into(), "z".into()]),
            ],
            sink: Sink::Frame,
        };
        assert_eq!(p.needed_columns(&schema).unwrap(), ["a", "c"]);
        // Assigning over an input column still reads it when its expression does.
        let p = Plan {
            ops: vec![
                Op::Assign(vec![("b".into(), num("b") + NumExpr::lit(1))]),
                Op::Select(vec!["b".into()]),
            ],
            sink: Sink::Frame,
        };
        assert_eq!(p.needed_columns(&schema).unwrap(), ["b"]);
    }

    #[test]
    fn plans_read_only_what_they_use() {
        let schema: Schema = ["a", "b", "c", "d"]
            .iter()
            .map(|n| (n.to_string(), DType::Int64))
            .collect();
        let p = Plan {
            ops: vec![
                Op::Filter(col("d").gt(1)),
                Op::Select(vec!["b".into(), "a".into()]),
                Op::Filter(col("a").gt(1)),
            ],
            sink: Sink::Frame,
        };
        assert_eq!(p.needed_columns(&schema).unwrap(), ["a", "b", "d"]);
        let unknown = Plan {
            ops: vec![Op::Select(vec!["z".into(), "c".into()])],
            sink: Sink::Frame,
        };
        assert_eq!(unknown.needed_columns(&schema).unwrap(), ["c", "z"]);
        let len = Plan {
            ops: vec![],
            sink: Sink::Len,
        };
        assert!(len.is_len_only());
        assert_eq!(len.needed_columns(&schema).unwrap(), ["a"]);
        assert_eq!(Plan::default().needed_columns(&schema), None);
    }
}
