//! Reductions: a chunk's partial result (`array.partial`), fused with the chunk's expression and
//! streamed in tiles when it reduces over all axes; and the nodes of the tree that combines the
//! partials (`array.combine`).

use ndarray::{ArrayD, Axis, Zip};
use rask_core::{Data, Encoded, Input, Inputs, KernelError};

use super::expr::{ChunkInputs, materialize, prepare};
use crate::chunk::Chunk;
use crate::ops::{nan_max, nan_min};
use crate::task::{ArgOp, ArgPartial, ChunkExpr, Combine, Moments, Reduction, Spread};

/// `array.partial`: the chunk `expr` describes, reduced over all axes (`axis: None`) or one.
pub(super) fn partial(
    expr: ChunkExpr,
    shape: &[usize],
    reduction: Reduction,
    axis: Option<usize>,
    inputs: &mut ChunkInputs<'_, '_>,
) -> Result<Encoded, KernelError> {
    if let Reduction::Arg {
        offset,
        array_shape,
        ..
    } = &reduction
        && (offset.len() != shape.len() || array_shape.len() != shape.len())
    {
        return Err(KernelError::failed(format!(
            "a chunk of shape {shape:?} at {offset:?} in an array of shape {array_shape:?}"
        )));
    }
    match axis {
        None => partial_all(expr, shape, reduction, inputs),
        Some(ax) if ax >= shape.len() => Err(KernelError::failed(format!(
            "axis {ax} of a chunk of shape {shape:?}"
        ))),
        Some(ax) => partial_axis(expr, shape, reduction, ax, inputs),
    }
}

/// A partial over every axis, streamed: only a tile of the chunk exists at a time.
fn partial_all(
    expr: ChunkExpr,
    shape: &[usize],
    reduction: Reduction,
    inputs: &mut ChunkInputs<'_, '_>,
) -> Result<Encoded, KernelError> {
    let n: usize = shape.iter().product();
    let mut node = prepare(expr, shape, inputs)?;
    Ok(match reduction {
        Reduction::Sum => {
            let mut s = 0.0;
            node.stream(n, |t| s += sum_slice(t));
            Chunk::scalar(s).encode()
        }
        Reduction::Min | Reduction::Max => {
            let min = reduction == Reduction::Min;
            if n == 0 {
                return Err(empty(if min { "min" } else { "max" }, "chunk"));
            }
            let (init, pick): (f64, fn(f64, f64) -> f64) = if min {
                (f64::INFINITY, nan_min)
            } else {
                (f64::NEG_INFINITY, nan_max)
            };
            let mut m = init;
            node.stream(n, |t| m = t.iter().fold(m, |m, &x| pick(m, x)));
            Chunk::scalar(m).encode()
        }
        Reduction::Moments => {
            let mut acc = (0.0, 0.0, 0.0);
            node.stream(n, |t| acc = merge_moments(acc, tile_moments(t)));
            Moments {
                count: acc.0,
                mean: Chunk::scalar(acc.1),
                m2: Chunk::scalar(acc.2),
            }
            .encode()
        }
        Reduction::Arg {
            op,
            offset,
            array_shape,
        } => {
            if n == 0 {
                return Err(empty(op.name(), "chunk"));
            }
            let (mut best, mut at) = (op.worst(), 0);
            let mut pos = 0;
            node.stream(n, |t| {
                for (i, &x) in t.iter().enumerate() {
                    if op.better(x, best) {
                        best = x;
                        at = pos + i;
                    }
                }
                pos += t.len();
            });
            ArgPartial {
                values: Chunk::scalar(best),
                indices: Chunk::scalar(global_flat(at, shape, &offset, &array_shape) as f64),
            }
            .encode()
        }
    })
}

/// A partial along axis `ax` of the materialized chunk.
fn partial_axis(
    expr: ChunkExpr,
    shape: &[usize],
    reduction: Reduction,
    ax: usize,
    inputs: &mut ChunkInputs<'_, '_>,
) -> Result<Encoded, KernelError> {
    let a = materialize(expr, shape, inputs)?;
    let len = shape[ax];
    Ok(match reduction {
        Reduction::Sum => Chunk::new(a.sum_axis(Axis(ax))).encode(),
        Reduction::Min | Reduction::Max => {
            let min = reduction == Reduction::Min;
            if len == 0 {
                return Err(empty(if min { "min" } else { "max" }, "axis"));
            }
            let r = if min {
                a.fold_axis(Axis(ax), f64::INFINITY, |&m, &x| nan_min(m, x))
            } else {
                a.fold_axis(Axis(ax), f64::NEG_INFINITY, |&m, &x| nan_max(m, x))
            };
            Chunk::new(r).encode()
        }
        Reduction::Moments => {
            let nf = len as f64;
            let mean = a.sum_axis(Axis(ax)) / nf;
            let m2 = (a.array() - &mean.view().insert_axis(Axis(ax)))
                .mapv(|d| d * d)
                .sum_axis(Axis(ax));
            Moments {
                count: nf,
                mean: Chunk::new(mean),
                m2: Chunk::new(m2),
            }
            .encode()
        }
        Reduction::Arg { op, offset, .. } => {
            if len == 0 {
                return Err(empty(op.name(), "axis"));
            }
            let best = a.map_axis(Axis(ax), |lane| {
                let (mut v, mut at) = (op.worst(), 0);
                for (i, &x) in lane.iter().enumerate() {
                    if op.better(x, v) {
                        v = x;
                        at = i;
                    }
                }
                (v, at)
            });
            ArgPartial {
                values: Chunk::new(best.mapv(|(v, _)| v)),
                indices: Chunk::new(best.mapv(|(_, i)| (offset[ax] + i) as f64)),
            }
            .encode()
        }
    })
}

fn empty(what: &str, of: &str) -> KernelError {
    KernelError::failed(format!("{what}() of an empty {of} has no identity"))
}

/// The flat C-order index, in an array of `array_shape`, of flat position `local` of a chunk of
/// `shape` placed at `offset`.
fn global_flat(
    mut local: usize,
    shape: &[usize],
    offset: &[usize],
    array_shape: &[usize],
) -> usize {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = local % shape[d];
        local /= shape[d];
    }
    index
        .iter()
        .zip(offset)
        .zip(array_shape)
        .fold(0, |flat, ((&i, &o), &n)| flat * n + o + i)
}

impl ArgOp {
    /// The value every other beats (ties keep the first position, so an array of it gives 0).
    fn worst(self) -> f64 {
        match self {
            ArgOp::Min => f64::INFINITY,
            ArgOp::Max => f64::NEG_INFINITY,
        }
    }

    /// Whether `x` replaces `best`: strictly better, or the first NaN (NumPy's arg reductions
    /// return the first NaN's index).
    #[inline]
    fn better(self, x: f64, best: f64) -> bool {
        let strictly = match self {
            ArgOp::Min => x < best,
            ArgOp::Max => x > best,
        };
        strictly || (x.is_nan() && !best.is_nan())
    }

    /// Whether (x, i) replaces (best, at) between partials: better, or as good at a lower index.
    #[inline]
    fn better_at(self, (x, i): (f64, f64), (best, at): (f64, f64)) -> bool {
        let tie = x == best || (x.is_nan() && best.is_nan());
        self.better(x, best) || (tie && i < at)
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

/// `array.combine`: one node of a reduction tree.
pub(super) fn combine(c: Combine, inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
    match c {
        Combine::Sum { parts, divisor } => {
            let mut acc = fold(&parts, inputs, |acc, p| *acc += p)?;
            if let Some(n) = divisor {
                acc.mapv_inplace(|s| s / n);
            }
            Ok(Chunk::new(acc).encode())
        }
        Combine::Min { parts } => {
            let acc = fold(&parts, inputs, |acc, p| {
                acc.zip_mut_with(p, |m, &x| *m = nan_min(*m, x))
            })?;
            Ok(Chunk::new(acc).encode())
        }
        Combine::Max { parts } => {
            let acc = fold(&parts, inputs, |acc, p| {
                acc.zip_mut_with(p, |m, &x| *m = nan_max(*m, x))
            })?;
            Ok(Chunk::new(acc).encode())
        }
        Combine::Moments { parts, spread } => combine_moments(&parts, spread, inputs),
        Combine::Arg { op, parts, root } => combine_arg(op, &parts, root, inputs),
    }
}

/// The first part, owned, with every other folded into it by `f` (after a shape check).
fn fold(
    parts: &[Input<Chunk>],
    inputs: &Inputs<'_>,
    f: impl Fn(&mut ArrayD<f64>, &ArrayD<f64>),
) -> Result<ArrayD<f64>, KernelError> {
    let (first, rest) = parts.split_first().ok_or_else(no_parts)?;
    let mut acc = inputs.get(*first)?.into_array();
    for p in rest {
        let part = inputs.get(*p)?;
        same_shape(acc.shape(), part.shape(), *p, inputs)?;
        f(&mut acc, part.array());
    }
    Ok(acc)
}

fn no_parts() -> KernelError {
    KernelError::failed("a combine of no partial results")
}

/// Checks that partial `p` has the shape of those before it.
fn same_shape<T>(
    acc: &[usize],
    part: &[usize],
    p: Input<T>,
    inputs: &Inputs<'_>,
) -> Result<(), KernelError> {
    if acc == part {
        Ok(())
    } else {
        Err(inputs.input_error(
            p.index(),
            format!("a partial result of shape {part:?} does not combine with shape {acc:?}"),
        ))
    }
}

fn combine_moments(
    parts: &[Input<Moments>],
    spread: Option<Spread>,
    inputs: &Inputs<'_>,
) -> Result<Encoded, KernelError> {
    let (first, rest) = parts.split_first().ok_or_else(no_parts)?;
    let Moments {
        mut count,
        mean,
        m2,
    } = inputs.get(*first)?;
    let (mut mean, mut m2) = (mean.into_array(), m2.into_array());
    same_shape(mean.shape(), m2.shape(), *first, inputs)?;
    for p in rest {
        let part = inputs.get(*p)?;
        same_shape(mean.shape(), part.mean.shape(), *p, inputs)?;
        same_shape(mean.shape(), part.m2.shape(), *p, inputs)?;
        let nb = part.count;
        Zip::from(&mut mean)
            .and(&mut m2)
            .and(part.mean.array())
            .and(part.m2.array())
            .for_each(|ma, qa, &mb, &qb| {
                let (_, m, q) = merge_moments((count, *ma, *qa), (nb, mb, qb));
                *ma = m;
                *qa = q;
            });
        count += nb;
    }
    Ok(match spread {
        None => Moments {
            count,
            mean: Chunk::new(mean),
            m2: Chunk::new(m2),
        }
        .encode(),
        Some(spread) => {
            let (ddof, sqrt) = match spread {
                Spread::Var { ddof } => (ddof, false),
                Spread::Std { ddof } => (ddof, true),
            };
            let denom = count - ddof;
            m2.mapv_inplace(|q| {
                let v = if denom > 0.0 { q / denom } else { f64::NAN };
                if sqrt { v.sqrt() } else { v }
            });
            Chunk::new(m2).encode()
        }
    })
}

fn combine_arg(
    op: ArgOp,
    parts: &[Input<ArgPartial>],
    root: bool,
    inputs: &Inputs<'_>,
) -> Result<Encoded, KernelError> {
    let (first, rest) = parts.split_first().ok_or_else(no_parts)?;
    let ArgPartial { values, indices } = inputs.get(*first)?;
    let (mut values, mut indices) = (values.into_array(), indices.into_array());
    same_shape(values.shape(), indices.shape(), *first, inputs)?;
    for p in rest {
        let part = inputs.get(*p)?;
        same_shape(values.shape(), part.values.shape(), *p, inputs)?;
        same_shape(values.shape(), part.indices.shape(), *p, inputs)?;
        Zip::from(&mut values)
            .and(&mut indices)
            .and(part.values.array())
            .and(part.indices.array())
            .for_each(|v, i, &x, &j| {
                if op.better_at((x, j), (*v, *i)) {
                    *v = x;
                    *i = j;
                }
            });
    }
    Ok(if root {
        Chunk::new(indices).encode()
    } else {
        ArgPartial {
            values: Chunk::new(values),
            indices: Chunk::new(indices),
        }
        .encode()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_flat_places_a_chunk_in_its_array() {
        // A 2x3 chunk at (2, 3) of a 5x7 array: its position 4 is local (1, 1), global (3, 4).
        assert_eq!(global_flat(4, &[2, 3], &[2, 3], &[5, 7]), 3 * 7 + 4);
        assert_eq!(global_flat(0, &[], &[], &[]), 0);
    }

    #[test]
    fn arg_ties_keep_the_lower_index_and_nan_wins() {
        assert!(ArgOp::Min.better(1.0, 2.0));
        assert!(!ArgOp::Min.better(2.0, 2.0));
        assert!(ArgOp::Max.better(f64::NAN, 2.0));
        assert!(!ArgOp::Max.better(f64::NAN, f64::NAN));
        assert!(ArgOp::Min.better_at((2.0, 1.0), (2.0, 5.0)));
        assert!(!ArgOp::Min.better_at((2.0, 7.0), (2.0, 5.0)));
        assert!(ArgOp::Min.better_at((f64::NAN, 1.0), (f64::NAN, 5.0)));
        assert!(!ArgOp::Min.better_at((0.0, 1.0), (f64::NAN, 5.0)));
    }
}
