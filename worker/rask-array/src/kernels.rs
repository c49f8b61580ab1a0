//! The array task functions (the registry's array table) and the chunk kernels behind them.
//!
//! Elementwise work arrives as a small expression per chunk (see [`super::Array`]): sources
//! (random, constant, arange, stored data, a `.npy` block) under elementwise operations, with
//! transposes and slices materialized where they occur. A reduction task streams its expression in
//! tiles that fit in cache and reduces each tile as it goes, so `random(...).mean()` never holds a
//! chunk in memory; a materializing task writes the tiles into one buffer.

use std::path::Path;
use std::sync::Arc;

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::npy;
use super::random::ChunkRng;
use crate::registry::Table;
use crate::value::Value;

/// The array functions. Names start with `array_` so they never clash with other tables.
pub const TABLE: Table = &[
    ("array_eval", eval_task),
    ("array_partial", partial_task),
    ("array_combine", combine_task),
    ("array_matmul", matmul_task),
    ("array_add", add_task),
    ("array_rechunk", rechunk_task),
];

/// Elements per tile when streaming a chunk (64 KiB of f64: stays in L2 beside its scratch).
const TILE: usize = 8192;

type KResult<T> = Result<T, String>;

// ----- argument helpers ----------------------------------------------------------------------

fn arg<'a>(args: &'a [Value], i: usize, func: &str) -> KResult<&'a Value> {
    args.get(i).ok_or_else(|| {
        format!(
            "{func}() takes at least {} argument(s), got {}",
            i + 1,
            args.len()
        )
    })
}

fn usize_of(v: &Value, what: &str) -> KResult<usize> {
    let i = v.as_int().map_err(|e| format!("{what}: {e}"))?;
    usize::try_from(i).map_err(|_| format!("{what}: {i} is negative"))
}

fn shape_of(v: &Value, what: &str) -> KResult<Vec<usize>> {
    v.as_list()
        .map_err(|e| format!("{what}: {e}"))?
        .iter()
        .map(|d| usize_of(d, what))
        .collect()
}

fn list<'a>(v: &'a Value, what: &str) -> KResult<&'a [Value]> {
    v.as_list().map_err(|e| format!("{what}: {e}"))
}

fn array<'a>(v: &'a Value, what: &str) -> KResult<&'a Arc<ArrayD<f64>>> {
    v.as_array().map_err(|e| format!("{what}: {e}"))
}

fn float(v: &Value, what: &str) -> KResult<f64> {
    v.as_float().map_err(|e| format!("{what}: {e}"))
}

fn to_value(a: ArrayD<f64>) -> Value {
    Value::Array(Arc::new(a))
}

// ----- expressions ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Abs,
    Sqrt,
    Exp,
    Log,
    Square,
}

impl UnOp {
    pub fn name(self) -> &'static str {
        match self {
            UnOp::Neg => "neg",
            UnOp::Abs => "abs",
            UnOp::Sqrt => "sqrt",
            UnOp::Exp => "exp",
            UnOp::Log => "log",
            UnOp::Square => "square",
        }
    }

    fn parse(s: &str) -> KResult<UnOp> {
        [
            UnOp::Neg,
            UnOp::Abs,
            UnOp::Sqrt,
            UnOp::Exp,
            UnOp::Log,
            UnOp::Square,
        ]
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| format!("unknown unary operation {s:?}"))
    }

    #[inline]
    fn apply(self, x: f64) -> f64 {
        match self {
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Exp => x.exp(),
            UnOp::Log => x.ln(),
            UnOp::Square => x * x,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
}

impl BinOp {
    pub fn name(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
            BinOp::Pow => "pow",
            BinOp::Maximum => "maximum",
            BinOp::Minimum => "minimum",
        }
    }

    fn parse(s: &str) -> KResult<BinOp> {
        [
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Pow,
            BinOp::Maximum,
            BinOp::Minimum,
        ]
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| format!("unknown binary operation {s:?}"))
    }

    #[inline]
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Pow => a.powf(b),
            BinOp::Maximum => nan_max(a, b),
            BinOp::Minimum => nan_min(a, b),
        }
    }
}

/// Minimum that propagates NaN, as NumPy's.
#[inline]
fn nan_min(m: f64, x: f64) -> f64 {
    if x < m || x.is_nan() { x } else { m }
}

#[inline]
fn nan_max(m: f64, x: f64) -> f64 {
    if x > m || x.is_nan() { x } else { m }
}

/// A chunk expression prepared for evaluation, producing values in C order, one tile at a time.
enum Node {
    Rand {
        rng: ChunkRng,
        pos: usize,
    },
    Full(f64),
    Arange {
        start: f64,
        step: f64,
        offset: usize,
    },
    /// Data in standard (C) layout.
    Dense(Arc<ArrayD<f64>>),
    Un(UnOp, Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>, Vec<f64>),
}

/// Prepares the expression `v` for a chunk of `shape`.
fn prepare(v: &Value, shape: &[usize]) -> KResult<Node> {
    let items = list(v, "chunk expression")?;
    let (head, rest) = items.split_first().ok_or("empty chunk expression")?;
    let head = head
        .as_str()
        .map_err(|e| format!("chunk expression: {e}"))?;
    let at = |i: usize| {
        rest.get(i)
            .ok_or_else(|| format!("chunk expression {head:?} is missing argument {i}"))
    };
    Ok(match head {
        "rand" => {
            let seed = at(0)?.as_int().map_err(|e| format!("rand seed: {e}"))? as u64;
            let stream = at(1)?.as_int().map_err(|e| format!("rand stream: {e}"))? as u64;
            Node::Rand {
                rng: ChunkRng::new(seed, stream),
                pos: 0,
            }
        }
        "full" => Node::Full(float(at(0)?, "full")?),
        "arange" => Node::Arange {
            start: float(at(0)?, "arange start")?,
            step: float(at(1)?, "arange step")?,
            offset: usize_of(at(2)?, "arange offset")?,
        },
        "data" => {
            let a = array(at(0)?, "data")?;
            if a.ndim() == 0 {
                Node::Full(a.iter().next().copied().unwrap_or(f64::NAN))
            } else if a.shape() != shape {
                return Err(format!(
                    "a chunk of shape {:?} where shape {shape:?} was expected",
                    a.shape()
                ));
            } else if a.is_standard_layout() {
                Node::Dense(a.clone())
            } else {
                Node::Dense(Arc::new(a.as_standard_layout().into_owned()))
            }
        }
        "npy" => {
            let path = at(0)?.as_str().map_err(|e| format!("npy path: {e}"))?;
            let offset = shape_of(at(1)?, "npy offset")?;
            let a = npy::read_block(Path::new(path), &offset, shape).map_err(|e| e.to_string())?;
            Node::Dense(Arc::new(a))
        }
        "un" => {
            let op = UnOp::parse(at(0)?.as_str().map_err(|e| format!("unary op: {e}"))?)?;
            Node::Un(op, Box::new(prepare(at(1)?, shape)?))
        }
        "bin" => {
            let op = BinOp::parse(at(0)?.as_str().map_err(|e| format!("binary op: {e}"))?)?;
            let a = prepare(at(1)?, shape)?;
            let b = prepare(at(2)?, shape)?;
            Node::Bin(op, Box::new(a), Box::new(b), Vec::new())
        }
        "T" => {
            let child: Vec<usize> = shape.iter().rev().copied().collect();
            let a = materialize(at(0)?, &child)?;
            let t = Arc::unwrap_or_clone(a).reversed_axes();
            Node::Dense(Arc::new(t.as_standard_layout().into_owned()))
        }
        "slice" => {
            let child = shape_of(at(1)?, "slice source shape")?;
            let ranges = list(at(2)?, "slice ranges")?;
            if ranges.len() != child.len() {
                return Err(format!(
                    "{} slice ranges for a chunk of shape {child:?}",
                    ranges.len()
                ));
            }
            let a = materialize(at(0)?, &child)?;
            let mut view = a.view();
            for (d, r) in ranges.iter().enumerate() {
                let r = shape_of(r, "slice range")?;
                let [start, stop, step] = r[..] else {
                    return Err(format!("slice range {r:?} is not [start, stop, step]"));
                };
                if start > stop || stop > child[d] || step == 0 {
                    return Err(format!(
                        "slice {start}..{stop} step {step} of a dimension of {}",
                        child[d]
                    ));
                }
                view.slice_axis_inplace(
                    Axis(d),
                    Slice::new(start as isize, Some(stop as isize), step as isize),
                );
            }
            if view.shape() != shape {
                return Err(format!(
                    "slice gives shape {:?}, expected {shape:?}",
                    view.shape()
                ));
            }
            Node::Dense(Arc::new(view.as_standard_layout().into_owned()))
        }
        other => return Err(format!("unknown chunk expression {other:?}")),
    })
}

impl Node {
    /// Writes the values at flat positions `off..off + out.len()` into `out`. Positions must be
    /// visited in increasing order (random streams only move forward).
    fn fill(&mut self, off: usize, out: &mut [f64]) {
        match self {
            Node::Rand { rng, pos } => {
                if off > *pos {
                    rng.skip(off - *pos);
                }
                rng.fill(out);
                *pos = off + out.len();
            }
            Node::Full(v) => out.fill(*v),
            Node::Arange {
                start,
                step,
                offset,
            } => {
                for (i, x) in out.iter_mut().enumerate() {
                    *x = *start + *step * (*offset + off + i) as f64;
                }
            }
            Node::Dense(a) => {
                // Prepared nodes are standard layout, so the slice exists.
                if let Some(s) = a.as_slice() {
                    out.copy_from_slice(&s[off..off + out.len()]);
                }
            }
            Node::Un(op, a) => {
                a.fill(off, out);
                let op = *op;
                out.iter_mut().for_each(|x| *x = op.apply(*x));
            }
            Node::Bin(op, a, b, scratch) => {
                let op = *op;
                if let Node::Full(v) = **b {
                    a.fill(off, out);
                    out.iter_mut().for_each(|x| *x = op.apply(*x, v));
                } else if let Node::Full(v) = **a {
                    b.fill(off, out);
                    out.iter_mut().for_each(|x| *x = op.apply(v, *x));
                } else {
                    a.fill(off, out);
                    scratch.resize(out.len(), 0.0);
                    b.fill(off, scratch);
                    out.iter_mut()
                        .zip(scratch.iter())
                        .for_each(|(x, y)| *x = op.apply(*x, *y));
                }
            }
        }
    }

    /// Calls `f` on consecutive tiles of the chunk's `n` values.
    fn stream(&mut self, n: usize, mut f: impl FnMut(&[f64])) {
        if let Node::Dense(a) = self
            && let Some(s) = a.as_slice()
        {
            s.chunks(TILE).for_each(f);
            return;
        }
        let mut tile = vec![0.0; TILE.min(n)];
        let mut off = 0;
        while off < n {
            let len = TILE.min(n - off);
            self.fill(off, &mut tile[..len]);
            f(&tile[..len]);
            off += len;
        }
    }
}

/// Evaluates the expression `v` into a chunk of `shape`.
fn materialize(v: &Value, shape: &[usize]) -> KResult<Arc<ArrayD<f64>>> {
    let mut node = prepare(v, shape)?;
    if let Node::Dense(a) = node {
        return Ok(a);
    }
    let n: usize = shape.iter().product();
    let mut data = vec![0.0; n];
    let mut off = 0;
    for tile in data.chunks_mut(TILE) {
        node.fill(off, tile);
        off += tile.len();
    }
    ArrayD::from_shape_vec(IxDyn(shape), data)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// `array_eval(expr, shape)`: the chunk an expression describes.
fn eval_task(args: &[Value]) -> KResult<Value> {
    let shape = shape_of(arg(args, 1, "array_eval")?, "array_eval shape")?;
    Ok(Value::Array(materialize(
        arg(args, 0, "array_eval")?,
        &shape,
    )?))
}

// ----- reductions ----------------------------------------------------------------------------

/// The reductions; `Mean`, `Var` and `Std` share partial results (count, mean, M2) except that
/// `Mean` needs only sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Sum,
    Min,
    Max,
    Moments,
}

impl Reduction {
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Sum => "sum",
            Reduction::Min => "min",
            Reduction::Max => "max",
            Reduction::Moments => "moments",
        }
    }

    fn parse(s: &str) -> KResult<Reduction> {
        [
            Reduction::Sum,
            Reduction::Min,
            Reduction::Max,
            Reduction::Moments,
        ]
        .into_iter()
        .find(|r| r.name() == s)
        .ok_or_else(|| format!("unknown reduction {s:?}"))
    }
}

/// Sum with eight accumulators (vectorizes, and is more accurate than one running sum).
#[inline]
fn sum_slice(x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for v in rest {
        s += v;
    }
    s
}

/// Count, mean and sum of squared deviations of a tile (two passes: it is in cache).
fn tile_moments(x: &[f64]) -> (f64, f64, f64) {
    let n = x.len() as f64;
    let mean = sum_slice(x) / n;
    let mut acc = [0.0f64; 4];
    let chunks = x.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..4 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let mut m2 = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for v in rest {
        m2 += (v - mean) * (v - mean);
    }
    (n, mean, m2)
}

/// Chan et al.'s pairwise update of (count, mean, M2).
#[inline]
fn merge_moments(a: (f64, f64, f64), b: (f64, f64, f64)) -> (f64, f64, f64) {
    let (na, ma, qa) = a;
    let (nb, mb, qb) = b;
    if na == 0.0 {
        return b;
    }
    if nb == 0.0 {
        return a;
    }
    let n = na + nb;
    let d = mb - ma;
    (n, ma + d * nb / n, qa + qb + d * d * na * nb / n)
}

fn scalar(x: f64) -> Arc<ArrayD<f64>> {
    Arc::new(ArrayD::from_elem(IxDyn(&[]), x))
}

fn moments_value(n: f64, mean: Arc<ArrayD<f64>>, m2: Arc<ArrayD<f64>>) -> Value {
    Value::List(vec![Value::Float(n), Value::Array(mean), Value::Array(m2)])
}

/// `array_partial(expr, shape, reduction, axis | None)`: one chunk reduced over all axes
/// (streamed) or along one.
fn partial_task(args: &[Value]) -> KResult<Value> {
    let f = "array_partial";
    let expr = arg(args, 0, f)?;
    let shape = shape_of(arg(args, 1, f)?, "array_partial shape")?;
    let op = Reduction::parse(arg(args, 2, f)?.as_str().map_err(|e| format!("{f}: {e}"))?)?;
    let axis = match arg(args, 3, f)? {
        Value::None => None,
        v => Some(usize_of(v, "array_partial axis")?),
    };
    let n: usize = shape.iter().product();
    match axis {
        None => {
            let mut node = prepare(expr, &shape)?;
            Ok(match op {
                Reduction::Sum => {
                    let mut s = 0.0;
                    node.stream(n, |t| s += sum_slice(t));
                    Value::Array(scalar(s))
                }
                Reduction::Min | Reduction::Max => {
                    if n == 0 {
                        return Err(format!("{}() of an empty chunk has no identity", op.name()));
                    }
                    let (init, pick): (f64, fn(f64, f64) -> f64) = match op {
                        Reduction::Min => (f64::INFINITY, nan_min),
                        _ => (f64::NEG_INFINITY, nan_max),
                    };
                    let mut m = init;
                    node.stream(n, |t| m = t.iter().fold(m, |m, &x| pick(m, x)));
                    Value::Array(scalar(m))
                }
                Reduction::Moments => {
                    let mut acc = (0.0, 0.0, 0.0);
                    node.stream(n, |t| acc = merge_moments(acc, tile_moments(t)));
                    moments_value(acc.0, scalar(acc.1), scalar(acc.2))
                }
            })
        }
        Some(ax) => {
            if ax >= shape.len() {
                return Err(format!("axis {ax} of a chunk of shape {shape:?}"));
            }
            let a = materialize(expr, &shape)?;
            let len = shape[ax];
            Ok(match op {
                Reduction::Sum => to_value(a.sum_axis(Axis(ax))),
                Reduction::Min | Reduction::Max => {
                    if len == 0 {
                        return Err(format!(
                            "{}() along an empty axis has no identity",
                            op.name()
                        ));
                    }
                    let r = match op {
                        Reduction::Min => {
                            a.fold_axis(Axis(ax), f64::INFINITY, |&m, &x| nan_min(m, x))
                        }
                        _ => a.fold_axis(Axis(ax), f64::NEG_INFINITY, |&m, &x| nan_max(m, x)),
                    };
                    to_value(r)
                }
                Reduction::Moments => {
                    let nf = len as f64;
                    let mean = a.sum_axis(Axis(ax)) / nf;
                    let m2 = (&*a - &mean.view().insert_axis(Axis(ax)))
                        .mapv(|d| d * d)
                        .sum_axis(Axis(ax));
                    moments_value(nf, Arc::new(mean), Arc::new(m2))
                }
            })
        }
    }
}

/// What a combined reduction turns into at the end of the tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Finalize {
    /// Keep the combined value (sum, min, max, or moments for a further combine).
    Keep,
    /// Sum divided by this many elements.
    Mean(f64),
    /// M2 / (n - ddof).
    Var(f64),
    /// sqrt(M2 / (n - ddof)).
    Std(f64),
}

impl Finalize {
    pub fn to_value(self) -> Value {
        let (name, x) = match self {
            Finalize::Keep => ("keep", 0.0),
            Finalize::Mean(n) => ("mean", n),
            Finalize::Var(d) => ("var", d),
            Finalize::Std(d) => ("std", d),
        };
        Value::List(vec![Value::from(name), Value::Float(x)])
    }

    fn parse(v: &Value) -> KResult<Finalize> {
        let items = list(v, "finalize")?;
        let (Some(name), Some(x)) = (items.first(), items.get(1)) else {
            return Err("finalize is not [name, number]".into());
        };
        let x = float(x, "finalize")?;
        match name.as_str().map_err(|e| format!("finalize: {e}"))? {
            "keep" => Ok(Finalize::Keep),
            "mean" => Ok(Finalize::Mean(x)),
            "var" => Ok(Finalize::Var(x)),
            "std" => Ok(Finalize::Std(x)),
            other => Err(format!("unknown finalize {other:?}")),
        }
    }
}

fn same_shape(a: &ArrayD<f64>, b: &ArrayD<f64>) -> KResult<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(format!(
            "partial results of shapes {:?} and {:?} do not combine",
            a.shape(),
            b.shape()
        ))
    }
}

/// `array_combine(reduction, [partials], finalize)`: one node of a reduction tree.
fn combine_task(args: &[Value]) -> KResult<Value> {
    let f = "array_combine";
    let op = Reduction::parse(arg(args, 0, f)?.as_str().map_err(|e| format!("{f}: {e}"))?)?;
    let parts = list(arg(args, 1, f)?, "array_combine partials")?;
    let fin = Finalize::parse(arg(args, 2, f)?)?;
    let (first, rest) = parts.split_first().ok_or("array_combine of no partials")?;
    match op {
        Reduction::Sum | Reduction::Min | Reduction::Max => {
            let mut acc = array(first, "partial")?.as_ref().clone();
            for p in rest {
                let p = array(p, "partial")?;
                same_shape(&acc, p)?;
                match op {
                    Reduction::Sum => acc += &**p,
                    Reduction::Min => acc.zip_mut_with(p, |m, &x| *m = nan_min(*m, x)),
                    _ => acc.zip_mut_with(p, |m, &x| *m = nan_max(*m, x)),
                }
            }
            match fin {
                Finalize::Keep => {}
                Finalize::Mean(n) => acc.mapv_inplace(|s| s / n),
                Finalize::Var(_) | Finalize::Std(_) => {
                    return Err(format!("{} partials cannot give a variance", op.name()));
                }
            }
            Ok(to_value(acc))
        }
        Reduction::Moments => {
            type Moments = (f64, Arc<ArrayD<f64>>, Arc<ArrayD<f64>>);
            let unpack = |v: &Value| -> KResult<Moments> {
                let l = list(v, "moments partial")?;
                match l {
                    [n, mean, m2] => Ok((
                        float(n, "count")?,
                        array(mean, "mean")?.clone(),
                        array(m2, "M2")?.clone(),
                    )),
                    _ => Err(format!("moments partial has {} parts, not 3", l.len())),
                }
            };
            let (mut n, mean, m2) = unpack(first)?;
            let mut mean = Arc::unwrap_or_clone(mean);
            let mut m2 = Arc::unwrap_or_clone(m2);
            for p in rest {
                let (nb, mb, qb) = unpack(p)?;
                same_shape(&mean, &mb)?;
                same_shape(&m2, &qb)?;
                ndarray::Zip::from(&mut mean)
                    .and(&mut m2)
                    .and(&*mb)
                    .and(&*qb)
                    .for_each(|ma, qa, &mb, &qb| {
                        let (_, m, q) = merge_moments((n, *ma, *qa), (nb, mb, qb));
                        *ma = m;
                        *qa = q;
                    });
                n += nb;
            }
            match fin {
                Finalize::Keep => Ok(moments_value(n, Arc::new(mean), Arc::new(m2))),
                Finalize::Mean(_) => Ok(to_value(mean)),
                Finalize::Var(ddof) | Finalize::Std(ddof) => {
                    let denom = n - ddof;
                    let sqrt = matches!(fin, Finalize::Std(_));
                    m2.mapv_inplace(|q| {
                        let v = if denom > 0.0 { q / denom } else { f64::NAN };
                        if sqrt { v.sqrt() } else { v }
                    });
                    Ok(to_value(m2))
                }
            }
        }
    }
}

// ----- matmul, sums of blocks, rechunk -------------------------------------------------------

fn matrix<'a>(v: &'a Value, what: &str) -> KResult<ndarray::ArrayView2<'a, f64>> {
    let a = array(v, what)?;
    a.view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| format!("{what}: a chunk of shape {:?} is not a matrix", a.shape()))
}

/// `array_matmul([a blocks], [b blocks])`: Σ a_k · b_k, with ndarray's (matrixmultiply's) gemm.
fn matmul_task(args: &[Value]) -> KResult<Value> {
    let a = list(arg(args, 0, "array_matmul")?, "array_matmul left blocks")?;
    let b = list(arg(args, 1, "array_matmul")?, "array_matmul right blocks")?;
    if a.len() != b.len() || a.is_empty() {
        return Err(format!(
            "array_matmul of {} left and {} right blocks",
            a.len(),
            b.len()
        ));
    }
    let mut out: Option<ndarray::Array2<f64>> = None;
    for (x, y) in a.iter().zip(b) {
        let x = matrix(x, "left block")?;
        let y = matrix(y, "right block")?;
        if x.ncols() != y.nrows() {
            return Err(format!(
                "blocks of shapes {:?} and {:?} do not multiply",
                x.shape(),
                y.shape()
            ));
        }
        let c = out.get_or_insert_with(|| ndarray::Array2::zeros((x.nrows(), y.ncols())));
        if c.dim() != (x.nrows(), y.ncols()) {
            return Err(format!(
                "block products of shapes {:?} and {:?} do not add",
                c.shape(),
                [x.nrows(), y.ncols()]
            ));
        }
        ndarray::linalg::general_mat_mul(1.0, &x, &y, 1.0, c);
    }
    out.map(|c| to_value(c.into_dyn()))
        .ok_or_else(|| "array_matmul of no blocks".into())
}

/// `array_add([blocks])`: their elementwise sum.
fn add_task(args: &[Value]) -> KResult<Value> {
    let parts = list(arg(args, 0, "array_add")?, "array_add blocks")?;
    let (first, rest) = parts.split_first().ok_or("array_add of no blocks")?;
    let mut acc = array(first, "block")?.as_ref().clone();
    for p in rest {
        let p = array(p, "block")?;
        same_shape(&acc, p)?;
        acc += &**p;
    }
    Ok(to_value(acc))
}

/// `array_rechunk(shape, [[block, [[start, stop], ...], [dst offset, ...]], ...])`: a new chunk
/// assembled from pieces of old ones.
fn rechunk_task(args: &[Value]) -> KResult<Value> {
    let shape = shape_of(arg(args, 0, "array_rechunk")?, "array_rechunk shape")?;
    let pieces = list(arg(args, 1, "array_rechunk")?, "array_rechunk pieces")?;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&shape));
    for p in pieces {
        let [src, ranges, dst] = list(p, "rechunk piece")? else {
            return Err("rechunk piece is not [block, ranges, offsets]".into());
        };
        let src = array(src, "rechunk source")?;
        let ranges = list(ranges, "rechunk ranges")?;
        let dst = shape_of(dst, "rechunk offsets")?;
        if ranges.len() != shape.len() || dst.len() != shape.len() || src.ndim() != shape.len() {
            return Err(format!(
                "rechunk piece of {} dimensions for a chunk of shape {shape:?}",
                ranges.len()
            ));
        }
        let mut from = src.view();
        let mut to = out.view_mut();
        for (d, r) in ranges.iter().enumerate() {
            let r = shape_of(r, "rechunk range")?;
            let [start, stop] = r[..] else {
                return Err(format!("rechunk range {r:?} is not [start, stop]"));
            };
            let len = stop.saturating_sub(start);
            if start > stop || stop > src.shape()[d] || dst[d] + len > shape[d] {
                return Err(format!(
                    "rechunk range {start}..{stop} at {} out of bounds",
                    dst[d]
                ));
            }
            from.slice_axis_inplace(Axis(d), Slice::from(start..stop));
            to.slice_axis_inplace(Axis(d), Slice::from(dst[d]..dst[d] + len));
        }
        to.assign(&from);
    }
    Ok(to_value(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(items: Vec<Value>) -> Value {
        Value::List(items)
    }

    fn rand(seed: i64, stream: i64) -> Value {
        expr(vec!["rand".into(), seed.into(), stream.into()])
    }

    #[test]
    fn streaming_and_materialized_reductions_agree() {
        let shape = vec![7, 5, 300];
        let e = expr(vec![
            "bin".into(),
            "mul".into(),
            rand(1, 2),
            expr(vec!["full".into(), 3.0.into()]),
        ]);
        let a = materialize(&e, &shape).unwrap();
        let sv = |v: Value| v.as_array().unwrap().iter().next().copied().unwrap();
        let shape_v = Value::from(shape.iter().map(|&d| d as i64).collect::<Vec<_>>());
        let s = partial_task(&[e.clone(), shape_v.clone(), "sum".into(), Value::None]).unwrap();
        assert!((sv(s) - a.sum()).abs() < 1e-9 * a.sum());
        let mx = partial_task(&[e.clone(), shape_v.clone(), "max".into(), Value::None]).unwrap();
        assert_eq!(sv(mx), a.iter().copied().fold(f64::MIN, f64::max));
        let m = partial_task(&[e.clone(), shape_v.clone(), "moments".into(), Value::None]).unwrap();
        let fin = combine_task(&[
            "moments".into(),
            Value::List(vec![m]),
            Finalize::Var(0.0).to_value(),
        ])
        .unwrap();
        let var = a.var(0.0);
        assert!((sv(fin) - var).abs() < 1e-12 * var.max(1.0));
        let ax = partial_task(&[e, shape_v, "sum".into(), Value::Int(1)]).unwrap();
        assert_eq!(ax.as_array().unwrap().shape(), &[7, 300]);
    }

    #[test]
    fn bad_expressions_and_arguments_are_errors() {
        assert!(
            eval_task(&[expr(vec!["nope".into()]), Value::from(vec![2i64])])
                .unwrap_err()
                .contains("unknown")
        );
        assert!(eval_task(&[expr(vec![]), Value::from(vec![2i64])]).is_err());
        let data = Value::Array(Arc::new(ArrayD::zeros(IxDyn(&[3]))));
        let e = expr(vec!["data".into(), data]);
        assert!(
            eval_task(&[e, Value::from(vec![2i64])])
                .unwrap_err()
                .contains("shape [3]")
        );
        assert!(eval_task(&[rand(1, 1)]).unwrap_err().contains("at least 2"));
        let m = Value::Array(Arc::new(ArrayD::zeros(IxDyn(&[2, 3]))));
        assert!(
            matmul_task(&[Value::List(vec![m.clone()]), Value::List(vec![m])])
                .unwrap_err()
                .contains("do not multiply")
        );
    }
}
