//! Operations that move values between chunks or axes: transpose, slicing, rechunking, and the
//! matrix product.

use rask_client::delayed::Delayed;
use rask_client::kernel;

use super::{Array, Block, Expr, Source};
use crate::chunk::Chunk;
use crate::chunks::{self, ChunkSpec, Grid, Range};
use crate::error::ArrayError;
use crate::task::{ArrayTask, RechunkPiece};

impl Array {
    /// The transpose (axes reversed), like NumPy's `.T`.
    pub fn t(&self) -> Array {
        let grid = self.grid.reversed();
        let blocks = grid
            .block_indices()
            .iter()
            .map(|idx| {
                let old: Vec<usize> = idx.iter().rev().copied().collect();
                let b = &self.blocks[self.grid.linear(&old)];
                let shape: Vec<usize> = b.shape().iter().rev().copied().collect();
                Block::new(shape, Expr::Transpose(b.operand()))
            })
            .collect();
        self.with_blocks(grid, blocks)
    }

    /// NumPy's `transpose()` with no axes given: the same as [`Array::t`].
    pub fn transpose(&self) -> Array {
        self.t()
    }

    /// `self[r0, r1, ...]` with one range per dimension (positive steps). Chunks keep their
    /// boundaries: each output chunk is a slice of one input chunk.
    pub fn slice(&self, ranges: &[Range]) -> Result<Array, ArrayError> {
        if ranges.len() != self.ndim() {
            return Err(ArrayError::Slice(format!(
                "{} ranges for an array of shape {:?}",
                ranges.len(),
                self.shape()
            )));
        }
        let mut pieces = Vec::with_capacity(self.ndim());
        for (d, r) in ranges.iter().enumerate() {
            pieces.push(chunks::slice_dim(&self.chunks()[d], *r, self.shape()[d])?);
        }
        let shape: Vec<usize> = ranges.iter().map(Range::len).collect();
        if shape.contains(&0) {
            let chunks = shape.iter().map(|&n| vec![n]).collect();
            let grid = Grid::from_chunks(&shape, chunks)?;
            let block = Block::new(shape, Expr::Full(0.0));
            return Ok(self.with_blocks(grid, vec![block]));
        }
        let new_chunks: Vec<Vec<usize>> = pieces
            .iter()
            .map(|p| p.iter().map(|s| s.local.len()).collect())
            .collect();
        let grid = Grid::from_chunks(&shape, new_chunks)?;
        let blocks = grid
            .block_indices()
            .iter()
            .map(|idx| {
                let src: Vec<usize> = idx
                    .iter()
                    .enumerate()
                    .map(|(d, &i)| pieces[d][i].block)
                    .collect();
                let local: Vec<Range> = idx
                    .iter()
                    .enumerate()
                    .map(|(d, &i)| pieces[d][i].local)
                    .collect();
                let b = &self.blocks[self.grid.linear(&src)];
                let whole = local
                    .iter()
                    .zip(b.shape())
                    .all(|(r, &n)| *r == Range::full(n));
                if whole {
                    b.clone()
                } else {
                    Block::new(grid.block_shape(idx), Expr::Slice(b.operand(), local))
                }
            })
            .collect();
        Ok(self.with_blocks(grid, blocks))
    }

    /// The same values cut into other chunks. Chunks that do not change are reused as they are.
    pub fn rechunk(&self, chunks: impl Into<ChunkSpec>) -> Result<Array, ArrayError> {
        let grid = Grid::new(self.shape(), &chunks.into(), 8)?;
        if grid == self.grid {
            return Ok(self.clone());
        }
        let per_dim: Vec<_> = (0..self.ndim())
            .map(|d| chunks::rechunk_dim(&self.chunks()[d], &grid.chunks()[d]))
            .collect();
        let blocks = grid
            .block_indices()
            .iter()
            .map(|idx| {
                let shape = grid.block_shape(idx);
                let lists: Vec<&Vec<(usize, Range, usize)>> = idx
                    .iter()
                    .enumerate()
                    .map(|(d, &i)| &per_dim[d][i])
                    .collect();
                let counts: Vec<usize> = lists.iter().map(|l| l.len()).collect();
                let combos = chunks::c_order(&counts);
                if let [only] = combos.as_slice() {
                    let src: Vec<usize> = only
                        .iter()
                        .enumerate()
                        .map(|(d, &k)| lists[d][k].0)
                        .collect();
                    let b = &self.blocks[self.grid.linear(&src)];
                    if b.shape() == shape.as_slice() {
                        return b.clone();
                    }
                }
                let d = kernel(|deps| ArrayTask::Rechunk {
                    shape: shape.clone(),
                    pieces: combos
                        .iter()
                        .map(|combo| {
                            let parts: Vec<&(usize, Range, usize)> = combo
                                .iter()
                                .enumerate()
                                .map(|(d, &k)| &lists[d][k])
                                .collect();
                            let src: Vec<usize> = parts.iter().map(|p| p.0).collect();
                            let b = &self.blocks[self.grid.linear(&src)];
                            RechunkPiece {
                                source: deps.input(&b.task()),
                                ranges: parts.iter().map(|p| p.1.start..p.1.stop).collect(),
                                offset: parts.iter().map(|p| p.2).collect(),
                            }
                        })
                        .collect(),
                });
                Block::new(shape, Expr::Task(d.into()))
            })
            .collect();
        Ok(self.with_blocks(grid, blocks))
    }

    /// Matrix product of two 2-d arrays; the chunks of `self`'s columns must equal those of
    /// `other`'s rows. Each output chunk sums `split_every` block products per task.
    pub fn dot(&self, other: &Array) -> Result<Array, ArrayError> {
        if self.ndim() != 2 || other.ndim() != 2 {
            return Err(ArrayError::Shape(format!(
                "dot of arrays of shapes {:?} and {:?}: both must be 2-d",
                self.shape(),
                other.shape()
            )));
        }
        if self.shape()[1] != other.shape()[0] {
            return Err(ArrayError::Shape(format!(
                "dot of {:?} and {:?}: {} columns against {} rows",
                self.shape(),
                other.shape(),
                self.shape()[1],
                other.shape()[0]
            )));
        }
        if self.chunks()[1] != other.chunks()[0] {
            return Err(ArrayError::Chunks(format!(
                "dot: the left array's column chunks {:?} differ from the right array's row chunks {:?}; rechunk one of them",
                self.chunks()[1],
                other.chunks()[0]
            )));
        }
        let grid = Grid::from_chunks(
            &[self.shape()[0], other.shape()[1]],
            vec![self.chunks()[0].clone(), other.chunks()[1].clone()],
        )?;
        let (ni, nk) = (self.grid.blocks_per_dim()[0], self.grid.blocks_per_dim()[1]);
        let nj = other.grid.blocks_per_dim()[1];
        let a: Vec<Source> = self.blocks.iter().map(Block::task).collect();
        let b: Vec<Source> = other.blocks.iter().map(Block::task).collect();
        let mut blocks = Vec::with_capacity(ni * nj);
        for i in 0..ni {
            for j in 0..nj {
                let ks: Vec<usize> = (0..nk).collect();
                let parts: Vec<Delayed<Chunk>> = ks
                    .chunks(self.split_every)
                    .map(|g| {
                        kernel(|deps| ArrayTask::Matmul {
                            pairs: g
                                .iter()
                                .map(|&k| (deps.input(&a[i * nk + k]), deps.input(&b[k * nj + j])))
                                .collect(),
                        })
                    })
                    .collect();
                let d = match <[Delayed<Chunk>; 1]>::try_from(parts) {
                    Ok([one]) => one,
                    Err(parts) => kernel(|deps| ArrayTask::Add {
                        blocks: parts.iter().map(|p| deps.input(p)).collect(),
                    }),
                };
                let shape = vec![self.chunks()[0][i], other.chunks()[1][j]];
                blocks.push(Block::new(shape, Expr::Task(d.into())));
            }
        }
        Ok(self.with_blocks(grid, blocks))
    }
}
