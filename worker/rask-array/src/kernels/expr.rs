//! Chunk expressions evaluated in tiles: [`prepare`] turns a [`ChunkExpr`] into a [`Node`] tree
//! that writes the chunk's values in C order one tile at a time, so reductions never hold a
//! chunk of a generated source in memory; [`materialize`] writes every tile into one buffer.

use std::path::Path;

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use rask_core::{Input, Inputs, KernelError};

use crate::chunk::Chunk;
use crate::npy;
use crate::ops::{BinOp, UnOp};
use crate::random::ChunkRng;
use crate::task::ChunkExpr;

/// Elements per tile when streaming a chunk (64 KiB of f64: stays in L2 beside its scratch).
pub(super) const TILE: usize = 8192;

/// A chunk expression prepared for evaluation, producing values in C order, one tile at a time.
pub(super) enum Node {
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
    Dense(Chunk),
    Un(UnOp, Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>, Vec<f64>),
}

/// The chunk inputs of an expression, each decoded once however often the expression reads it
/// (`x * x`). Chunks read here are shared, so whoever needs to own one copies it.
pub(super) struct ChunkInputs<'a, 'b> {
    inputs: &'a Inputs<'b>,
    decoded: Vec<Option<Chunk>>,
}

impl<'a, 'b> ChunkInputs<'a, 'b> {
    pub(super) fn new(inputs: &'a Inputs<'b>) -> Self {
        ChunkInputs {
            inputs,
            decoded: vec![None; inputs.len()],
        }
    }

    fn get(&mut self, i: Input<Chunk>) -> Result<Chunk, KernelError> {
        if let Some(Some(c)) = self.decoded.get(i.index()) {
            return Ok(c.clone());
        }
        let c: Chunk = self.inputs.get(i)?;
        if let Some(slot) = self.decoded.get_mut(i.index()) {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    /// An error about input `i` (its shape, its rank).
    fn error(&self, i: Input<Chunk>, reason: impl std::fmt::Display) -> KernelError {
        self.inputs.input_error(i.index(), reason)
    }
}

/// Prepares `expr` for a chunk of `shape`.
pub(super) fn prepare(
    expr: ChunkExpr,
    shape: &[usize],
    inputs: &mut ChunkInputs<'_, '_>,
) -> Result<Node, KernelError> {
    Ok(match expr {
        ChunkExpr::Rand { seed, stream } => Node::Rand {
            rng: ChunkRng::new(seed, stream),
            pos: 0,
        },
        ChunkExpr::Full(v) => Node::Full(v),
        ChunkExpr::Arange {
            start,
            step,
            offset,
        } => Node::Arange {
            start,
            step,
            offset,
        },
        ChunkExpr::Literal(c) => {
            dense(c, shape).map_err(|e| KernelError::failed(format!("carried data: {e}")))?
        }
        ChunkExpr::Data(i) => {
            let c = inputs.get(i)?;
            dense(c, shape).map_err(|e| inputs.error(i, e))?
        }
        ChunkExpr::Npy { path, offset } => {
            let a =
                npy::read_block(Path::new(&path), &offset, shape).map_err(KernelError::failed)?;
            Node::Dense(Chunk::new(a))
        }
        ChunkExpr::Un(op, a) => Node::Un(op, Box::new(prepare(*a, shape, inputs)?)),
        ChunkExpr::Bin(op, a, b) => {
            let a = prepare(*a, shape, inputs)?;
            let b = prepare(*b, shape, inputs)?;
            Node::Bin(op, Box::new(a), Box::new(b), Vec::new())
        }
        ChunkExpr::Transpose(a) => {
            let source: Vec<usize> = shape.iter().rev().copied().collect();
            let a = materialize(*a, &source, inputs)?;
            let t = a.view().reversed_axes();
            Node::Dense(Chunk::new(t.as_standard_layout().into_owned()))
        }
        ChunkExpr::Slice {
            source,
            source_shape,
            ranges,
        } => {
            if ranges.len() != source_shape.len() {
                return Err(KernelError::failed(format!(
                    "{} slice ranges for a chunk of shape {source_shape:?}",
                    ranges.len()
                )));
            }
            let a = materialize(*source, &source_shape, inputs)?;
            let mut view = a.view();
            for (d, r) in ranges.iter().enumerate() {
                if r.start > r.stop || r.stop > source_shape[d] || r.step == 0 {
                    return Err(KernelError::failed(format!(
                        "slice {}..{} step {} of a dimension of {}",
                        r.start, r.stop, r.step, source_shape[d]
                    )));
                }
                view.slice_axis_inplace(
                    Axis(d),
                    Slice::new(r.start as isize, Some(r.stop as isize), r.step as isize),
                );
            }
            if view.shape() != shape {
                return Err(KernelError::failed(format!(
                    "slice gives shape {:?}, expected {shape:?}",
                    view.shape()
                )));
            }
            Node::Dense(Chunk::new(view.as_standard_layout().into_owned()))
        }
        ChunkExpr::BroadcastInDim {
            source,
            source_shape,
            dims,
        } => {
            let expanded = broadcast_shape(&source_shape, &dims, shape)
                .map_err(|e| KernelError::failed(format!("broadcast_in_dim: {e}")))?;
            let a = materialize(*source, &source_shape, inputs)?;
            let a = a
                .view()
                .into_shape_with_order(IxDyn(&expanded))
                .map_err(|e| KernelError::failed(format!("broadcast_in_dim: {e}")))?;
            let b = a.broadcast(IxDyn(shape)).ok_or_else(|| {
                KernelError::failed(format!(
                    "broadcast_in_dim: shape {expanded:?} does not broadcast to {shape:?}"
                ))
            })?;
            Node::Dense(Chunk::new(b.as_standard_layout().into_owned()))
        }
    })
}

/// The source's shape with a 1 inserted for each of the chunk's dimensions it does not map to,
/// after checking that source dimension `i` maps to chunk dimension `dims[i]` (in increasing
/// order) with the chunk's length there or 1.
fn broadcast_shape(
    source_shape: &[usize],
    dims: &[usize],
    shape: &[usize],
) -> Result<Vec<usize>, String> {
    if dims.len() != source_shape.len() {
        return Err(format!(
            "{} dimensions named for a source of shape {source_shape:?}",
            dims.len()
        ));
    }
    let mut expanded = vec![1; shape.len()];
    let mut last = None;
    for (&d, &n) in dims.iter().zip(source_shape) {
        if d >= shape.len() || last.is_some_and(|l| d <= l) {
            return Err(format!(
                "dimensions {dims:?} are not increasing positions in a chunk of shape {shape:?}"
            ));
        }
        if n != 1 && n != shape[d] {
            return Err(format!(
                "a source of shape {source_shape:?} does not broadcast to {shape:?} along {dims:?}"
            ));
        }
        expanded[d] = n;
        last = Some(d);
    }
    Ok(expanded)
}

/// Data as a node: a 0-d chunk is a scalar operand; otherwise its shape must be the chunk's.
fn dense(c: Chunk, shape: &[usize]) -> Result<Node, String> {
    if c.ndim() == 0 {
        Ok(Node::Full(c.iter().next().copied().unwrap_or(f64::NAN)))
    } else if c.shape() != shape {
        Err(format!(
            "a chunk of shape {:?} where shape {shape:?} was expected",
            c.shape()
        ))
    } else if c.is_standard_layout() {
        Ok(Node::Dense(c))
    } else {
        Ok(Node::Dense(Chunk::new(c.as_standard_layout().into_owned())))
    }
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
                op.apply_all(out);
            }
            Node::Bin(op, a, b, scratch) => {
                if let Node::Full(v) = **b {
                    a.fill(off, out);
                    op.apply_right(out, v);
                } else if let Node::Full(v) = **a {
                    b.fill(off, out);
                    op.apply_left(v, out);
                } else {
                    a.fill(off, out);
                    scratch.resize(out.len(), 0.0);
                    b.fill(off, scratch);
                    op.apply_zip(out, scratch);
                }
            }
        }
    }

    /// Calls `f` on consecutive tiles of the chunk's `n` values.
    pub(super) fn stream(&mut self, n: usize, mut f: impl FnMut(&[f64])) {
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

/// Evaluates `expr` into a chunk of `shape`.
pub(super) fn materialize(
    expr: ChunkExpr,
    shape: &[usize],
    inputs: &mut ChunkInputs<'_, '_>,
) -> Result<Chunk, KernelError> {
    let mut node = prepare(expr, shape, inputs)?;
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
        .map(Chunk::new)
        .map_err(KernelError::failed)
}
