//! Computing an array: the tasks of its chunks, their graph and its picture, and the chunks
//! computed on a cluster and assembled into one array here.

use std::path::Path;

use ndarray::{ArrayD, IxDyn, Slice};
use rask_client::delayed::{Delayed, graph_of};
use rask_client::visualize::{self, Written};
use rask_client::{Client, Future, kernel};
use rask_core::TaskSpec;

use super::{Array, Block, Expr, Source};
use crate::chunk::Chunk;
use crate::error::ArrayError;
use crate::task::{ArrayTask, ChunkExpr};

impl Array {
    /// The tasks that compute every chunk (one per chunk, C order). A chunk a future holds (of a
    /// [`Array::persist`]ed array) is read by a task that returns it as it is.
    pub fn to_delayed(&self) -> Vec<Delayed<Chunk>> {
        self.blocks
            .iter()
            .map(|b| match b.task() {
                Source::Task(d) => d,
                Source::Held(f) => kernel(|deps| ArrayTask::Eval {
                    expr: ChunkExpr::Data(deps.input(&f)),
                    shape: b.shape().to_vec(),
                }),
            })
            .collect()
    }

    /// This array's task graph, inputs before their users; chunks held by futures are not in it.
    pub fn graph(&self) -> Vec<TaskSpec> {
        let tasks: Vec<Delayed<Chunk>> = self
            .blocks
            .iter()
            .filter_map(|b| match b.task() {
                Source::Task(d) => Some(d),
                Source::Held(_) => None,
            })
            .collect();
        graph_of(&tasks)
    }

    /// Starts computing every chunk on the cluster: a future of each (C order), chunks already
    /// held by futures as they are. The graph goes in one message.
    pub fn submit(&self, client: &Client) -> Vec<Future<Chunk>> {
        submit_all(std::slice::from_ref(self), client)
    }

    /// [`Array::submit`] for several arrays in one graph (chunks they share computed once): the
    /// futures of each array's chunks in turn.
    pub fn submit_all(arrays: &[Array], client: &Client) -> Vec<Future<Chunk>> {
        submit_all(arrays, client)
    }

    /// The same array with every chunk computed and kept on the cluster (Dask's `persist`):
    /// later operations read the chunks there instead of computing them again. The chunks are
    /// freed when no array holds them any more.
    pub fn persist(&self, client: &Client) -> Array {
        let futures = self.submit(client);
        let blocks = self
            .blocks
            .iter()
            .zip(futures)
            .map(|(b, f)| Block::new(b.shape().to_vec(), Expr::Task(Source::Held(f))))
            .collect();
        self.with_blocks(self.grid.clone(), blocks)
    }

    /// Writes the task graph as Graphviz DOT to `path`, and as SVG beside it when `dot` is
    /// installed (see [`rask_client::visualize`]).
    pub fn visualize(&self, path: impl AsRef<Path>) -> std::io::Result<Written> {
        visualize::write(&self.graph(), path.as_ref())
    }

    /// Computes every chunk on the cluster and assembles them into one array here.
    pub async fn compute(&self, client: &Client) -> Result<ArrayD<f64>, ArrayError> {
        let futures = self.submit(client);
        let chunks = client.gather(&futures).await?;
        drop(futures);
        self.assemble(chunks)
    }

    /// Writes this array's computed chunks (the next [`Array::nblocks`] of `chunks`, C order, as
    /// [`Array::submit`] lists them) into `out` as raw values: C order, 8 native-endian bytes
    /// each, `out` holding exactly the array. No whole-array copy in between, and each chunk is
    /// dropped once placed: what a binding hands to its language's arrays.
    pub fn place_raw(
        &self,
        chunks: &mut impl Iterator<Item = Chunk>,
        out: &mut [u8],
    ) -> Result<(), ArrayError> {
        let size = self.grid.size();
        if out.len() != size * 8 {
            return Err(ArrayError::Result(format!(
                "a buffer of {} bytes for {size} values",
                out.len()
            )));
        }
        for idx in self.grid.block_indices() {
            let shape = self.grid.block_shape(&idx);
            let chunk = chunks.next().ok_or_else(|| {
                ArrayError::Result(format!("no computed chunk for block {idx:?}"))
            })?;
            if chunk.shape() != shape.as_slice() {
                return Err(ArrayError::Result(format!(
                    "chunk {idx:?} has shape {:?}, expected {shape:?}",
                    chunk.shape()
                )));
            }
            place_raw(out, self.shape(), &self.grid.block_offset(&idx), &chunk);
        }
        Ok(())
    }

    /// Computes a single-element array (a full reduction) and returns its value.
    pub async fn compute_scalar(&self, client: &Client) -> Result<f64, ArrayError> {
        let a = self.compute(client).await?;
        match a.len() {
            1 => Ok(a.iter().copied().sum()),
            n => Err(ArrayError::Shape(format!(
                "compute_scalar of an array of shape {:?} ({n} elements)",
                a.shape()
            ))),
        }
    }

    /// Places computed chunks (C order, as [`Array::to_delayed`] lists their tasks) into one
    /// array; a missing chunk or one of the wrong shape is an error.
    pub fn assemble(&self, chunks: Vec<Chunk>) -> Result<ArrayD<f64>, ArrayError> {
        if chunks.len() != self.nblocks() {
            return Err(ArrayError::Result(format!(
                "{} chunks for an array of {} chunks",
                chunks.len(),
                self.nblocks()
            )));
        }
        let mut out = ArrayD::<f64>::zeros(IxDyn(self.shape()));
        for (idx, chunk) in self.grid.block_indices().iter().zip(chunks) {
            let shape = self.grid.block_shape(idx);
            if chunk.shape() != shape.as_slice() {
                return Err(ArrayError::Result(format!(
                    "chunk {idx:?} has shape {:?}, expected {shape:?}",
                    chunk.shape()
                )));
            }
            let mut view = out.view_mut();
            for (d, (&o, &s)) in self.grid.block_offset(idx).iter().zip(&shape).enumerate() {
                view.slice_axis_inplace(ndarray::Axis(d), Slice::from(o..o + s));
            }
            view.assign(chunk.array());
        }
        Ok(out)
    }
}

/// Writes `chunk` (of the block at `offset`) into `out`, the raw values of a whole array of
/// `shape` in C order, each value as its 8 native-endian bytes.
fn place_raw(out: &mut [u8], shape: &[usize], offset: &[usize], chunk: &Chunk) {
    let values = chunk.array().as_standard_layout();
    let Some(values) = values.as_slice() else {
        unreachable!("a standard-layout array is contiguous")
    };
    let Some((&row, outer)) = chunk.shape().split_last() else {
        // A 0-d array: one value.
        if let (Some(dst), Some(v)) = (out.get_mut(..8), values.first()) {
            dst.copy_from_slice(&v.to_ne_bytes());
        }
        return;
    };
    if row == 0 {
        return;
    }
    // Elements per step along each dimension of the whole array (C order).
    let mut strides = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let last = shape.len() - 1;
    let mut idx = vec![0usize; outer.len()];
    for src in values.chunks_exact(row) {
        let start: usize = idx
            .iter()
            .zip(offset)
            .zip(&strides)
            .map(|((i, o), s)| (i + o) * s)
            .sum::<usize>()
            + offset[last];
        let dst = &mut out[start * 8..(start + row) * 8];
        for (d, v) in dst.chunks_exact_mut(8).zip(src) {
            d.copy_from_slice(&v.to_ne_bytes());
        }
        // The next row's index, C order.
        for d in (0..outer.len()).rev() {
            idx[d] += 1;
            if idx[d] < outer[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The futures of every chunk of `arrays` (C order within each array, the arrays in order), their
/// tasks sent as one graph; chunks already held by futures as they are.
fn submit_all(arrays: &[Array], client: &Client) -> Vec<Future<Chunk>> {
    let sources: Vec<Source> = arrays
        .iter()
        .flat_map(|a| a.blocks.iter().map(Block::task))
        .collect();
    let tasks: Vec<Delayed<Chunk>> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Task(d) => Some(d.clone()),
            Source::Held(_) => None,
        })
        .collect();
    let mut sent = client.compute_many(&tasks).into_iter();
    sources
        .into_iter()
        .map(|s| match s {
            Source::Held(f) => f,
            Source::Task(_) => sent
                .next()
                .unwrap_or_else(|| unreachable!("compute_many gives one future per root")),
        })
        .collect()
}
