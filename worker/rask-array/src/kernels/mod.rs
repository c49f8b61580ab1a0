//! The array kernels: what a worker runs for each [`ArrayTask`].
//!
//! Elementwise work arrives as a [`crate::task::ChunkExpr`] per chunk: sources (random, constant,
//! arange, carried or computed data, a `.npy` block) under elementwise operations, with
//! transposes and slices materialized where they occur. [`expr`] evaluates it a tile at a time;
//! a materializing task (`array.eval`) writes the tiles into one buffer, a reduction
//! ([`reduce`]) reduces each tile as it comes, so `random(...).mean()` never holds a chunk in
//! memory. Matrix products, sums of blocks and rechunks work on whole chunks ([`blocks`]).

mod blocks;
mod expr;
mod reduce;

use ndarray::{ArrayD, IxDyn};
use rask_core::{Data, Encoded, Input, Inputs, KernelError, KernelTask, Pickled};

use crate::chunk::Chunk;
use crate::task::ArrayTask;
use expr::ChunkInputs;

/// Runs one array task on its inputs. The function's own errors name it (`array.eval: ...`);
/// errors about an input name the input.
pub(crate) fn run(task: ArrayTask, inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
    let func = task.func();
    let mut chunks = ChunkInputs::new(inputs);
    let out = match task {
        ArrayTask::Eval { expr, shape } => {
            expr::materialize(expr, &shape, &mut chunks).map(|c| c.encode())
        }
        ArrayTask::Partial {
            expr,
            shape,
            reduction,
            axis,
        } => reduce::partial(expr, &shape, reduction, axis, &mut chunks),
        ArrayTask::Combine(c) => reduce::combine(c, inputs),
        ArrayTask::Matmul { pairs, transposed } => {
            blocks::matmul(&pairs, transposed, inputs).map(|c| c.encode())
        }
        ArrayTask::Add { blocks } => blocks::add(&blocks, inputs).map(|c| c.encode()),
        ArrayTask::Rechunk { shape, pieces } => {
            blocks::rechunk(&shape, &pieces, inputs).map(|c| c.encode())
        }
        ArrayTask::FromPickle { source, shape } => {
            from_pickle(source, &shape, inputs).map(|c| c.encode())
        }
    };
    out.map_err(|e| match e {
        KernelError::Failed(m) => KernelError::Failed(format!("{func}: {m}")),
        other => other,
    })
}

/// The chunk of `shape` whose raw values a Python task returned as pickled `bytes`.
fn from_pickle(
    source: Input<Pickled>,
    shape: &[usize],
    inputs: &Inputs<'_>,
) -> Result<Chunk, KernelError> {
    let pickle = inputs.get(source)?;
    let raw = pickle
        .bytes_object()
        .map_err(|e| inputs.input_error(source.index(), e))?;
    let len: usize = shape.iter().product();
    if Some(raw.len()) != len.checked_mul(8) {
        return Err(inputs.input_error(
            source.index(),
            format!(
                "{} bytes of values for a chunk of shape {shape:?} ({len} f64 values)",
                raw.len()
            ),
        ));
    }
    let values = raw
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            f64::from_le_bytes(b)
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map(Chunk::new)
        .map_err(|e| KernelError::failed(e.to_string()))
}

#[cfg(test)]
mod tests;
