//! Creating arrays: generated sources (random, constants, ranges), in-memory data, `.npy` files.

use std::path::Path;

use ndarray::{ArrayD, Slice};

use rask_client::delayed::Delayed;
use rask_client::kernel;
use rask_core::Pickled;

use super::{Array, Block, Expr, Source};
use crate::chunk::Chunk;
use crate::chunks::{ChunkSpec, Grid};
use crate::error::ArrayError;
use crate::npy;
use crate::task::ArrayTask;

/// An array of `shape` in `chunks`, chunk `i` (C order, at block index `idx`) made by
/// `make(grid, idx, i)`.
fn from_fn(
    shape: &[usize],
    chunks: impl Into<ChunkSpec>,
    mut make: impl FnMut(&Grid, &[usize], usize) -> Expr,
) -> Result<Array, ArrayError> {
    let grid = Grid::new(shape, &chunks.into(), 8)?;
    let blocks = grid
        .block_indices()
        .iter()
        .enumerate()
        .map(|(i, idx)| Block::new(grid.block_shape(idx), make(&grid, idx, i)))
        .collect();
    Ok(Array::from_blocks(grid, blocks))
}

/// Uniform [0, 1) values; chunk `i` (C order) draws from a stream seeded by `seed` and `i`, so
/// the same seed and chunks give the same array.
pub fn random(
    shape: &[usize],
    chunks: impl Into<ChunkSpec>,
    seed: u64,
) -> Result<Array, ArrayError> {
    from_fn(shape, chunks, |_, _, i| Expr::Rand {
        seed,
        stream: i as u64,
    })
}

/// Every element `value`.
pub fn full(
    shape: &[usize],
    chunks: impl Into<ChunkSpec>,
    value: f64,
) -> Result<Array, ArrayError> {
    from_fn(shape, chunks, |_, _, _| Expr::Full(value))
}

pub fn zeros(shape: &[usize], chunks: impl Into<ChunkSpec>) -> Result<Array, ArrayError> {
    full(shape, chunks, 0.0)
}

pub fn ones(shape: &[usize], chunks: impl Into<ChunkSpec>) -> Result<Array, ArrayError> {
    full(shape, chunks, 1.0)
}

/// `start, start + step, ...` below `stop` (NumPy's `arange`), 1-d.
pub fn arange(
    start: f64,
    stop: f64,
    step: f64,
    chunks: impl Into<ChunkSpec>,
) -> Result<Array, ArrayError> {
    if step == 0.0 || !step.is_finite() || !start.is_finite() || !stop.is_finite() {
        return Err(ArrayError::Shape(format!(
            "arange({start}, {stop}, {step}) needs finite bounds and a non-zero step"
        )));
    }
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    from_fn(&[n], chunks, |g, idx, _| Expr::Arange {
        start,
        step,
        offset: g.block_offset(idx)[0],
    })
}

/// An in-memory array cut into chunks (each chunk travels inside the tasks that read it).
pub fn from_ndarray(a: &ArrayD<f64>, chunks: impl Into<ChunkSpec>) -> Result<Array, ArrayError> {
    from_fn(a.shape(), chunks, |g, idx, _| {
        let mut view = a.view();
        for (d, (&o, &s)) in g
            .block_offset(idx)
            .iter()
            .zip(&g.block_shape(idx))
            .enumerate()
        {
            view.slice_axis_inplace(ndarray::Axis(d), Slice::from(o..o + s));
        }
        Expr::Literal(Chunk::new(view.as_standard_layout().into_owned()))
    })
}

/// A one-chunk array of `shape` whose values a Python task computes (`rask.array.from_delayed`):
/// `source` returns them as a pickled `bytes` object of raw f64 (little-endian, C order).
pub fn from_pickled(source: &Delayed<Pickled>, shape: &[usize]) -> Result<Array, ArrayError> {
    let grid = Grid::from_chunks(shape, shape.iter().map(|&n| vec![n]).collect())?;
    let task = kernel(|deps| ArrayTask::FromPickle {
        source: deps.input(source),
        shape: shape.to_vec(),
    });
    let block = Block::new(shape.to_vec(), Expr::Task(Source::Task(task)));
    Ok(Array::from_blocks(grid, vec![block]))
}

/// The `.npy` file at `path` (f8, f4, i8, i4 or u1, C order), each chunk read by the worker that
/// computes it, so the file must be readable at the same path there. The header is read now.
pub fn from_npy(path: impl AsRef<Path>, chunks: impl Into<ChunkSpec>) -> Result<Array, ArrayError> {
    let path = path.as_ref();
    let header = npy::read_header(path)?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let text = abs
        .to_str()
        .ok_or_else(|| ArrayError::Npy {
            path: path.to_owned(),
            reason: "the path is not UTF-8".into(),
        })?
        .to_owned();
    from_fn(&header.shape, chunks, |g, idx, _| Expr::Npy {
        path: text.clone(),
        offset: g.block_offset(idx),
    })
}
