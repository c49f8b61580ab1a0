//! The array kernels: what a worker runs for each [`ArrayTask`].
//!
//! Elementwise work arrives as a [`crate::task::ChunkExpr`] per chunk: sources (random, constant,
//! arange, carried or computed data, a `.npy` block) under elementwise operations, with
//! transposes and slices materialized where they occur ([`expr`]). A reduction task streams its
//! expression in tiles that fit in cache and reduces each tile as it goes, so
//! `random(...).mean()` never holds a chunk in memory; a materializing task writes the tiles into
//! one buffer ([`reduce`]). Matrix products, sums of blocks and rechunks work on whole chunks
//! ([`blocks`]).

mod blocks;
mod expr;
mod reduce;

use rask_core::{Data, Encoded, Input, Inputs, KernelError, KernelTask};

use crate::chunk::Chunk;
use crate::task::ArrayTask;

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
        ArrayTask::Matmul { pairs } => blocks::matmul(&pairs, inputs).map(|c| c.encode()),
        ArrayTask::Add { blocks } => blocks::add(&blocks, inputs).map(|c| c.encode()),
        ArrayTask::Rechunk { shape, pieces } => {
            blocks::rechunk(&shape, &pieces, inputs).map(|c| c.encode())
        }
    };
    out.map_err(|e| match e {
        KernelError::Failed(m) => KernelError::Failed(format!("{func}: {m}")),
        other => other,
    })
}

/// The chunk inputs of an expression, each decoded once however often the expression reads it
/// (`x * x`). Chunks read here are shared, so whoever needs to own one copies it.
pub(crate) struct ChunkInputs<'a, 'b> {
    inputs: &'a Inputs<'b>,
    decoded: Vec<Option<Chunk>>,
}

impl<'a, 'b> ChunkInputs<'a, 'b> {
    fn new(inputs: &'a Inputs<'b>) -> Self {
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

#[cfg(test)]
mod tests;
