//! Operations that move values between chunks or axes: transpose, slicing, rechunking, and the
//! matrix product.

use rask_client::delayed::Delayed;
use rask_client::kernel;

use std::sync::Arc;

use super::{Array, Block, Expr, Source};
use crate::chunk::Chunk;
use crate::chunks::{self, ChunkSpec, Grid, Range};
use crate::error::ArrayError;
use crate::ops::{BinOp, UnOp};
use crate::task::{ArrayTask, RechunkPiece, Transposed};

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
        if let Some(gram) = Gram::of(self, other) {
            return self.gram_dot(&gram);
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
                let d = self.sum_of_products(nk, Transposed::Neither, |k| {
                    (&a[i * nk + k], &b[k * nj + j])
                });
                let shape = vec![self.chunks()[0][i], other.chunks()[1][j]];
                blocks.push(Block::new(shape, Expr::Task(d.into())));
            }
        }
        Ok(self.with_blocks(grid, blocks))
    }

    /// One output block of a product: Σ over `k < depth` of the pair `pair(k)`, `split_every`
    /// products per `array.matmul` task, then one `array.add` when there are several.
    fn sum_of_products<'s>(
        &self,
        depth: usize,
        transposed: Transposed,
        pair: impl Fn(usize) -> (&'s Source, &'s Source),
    ) -> Delayed<Chunk> {
        let ks: Vec<usize> = (0..depth).collect();
        let parts: Vec<Delayed<Chunk>> = ks
            .chunks(self.split_every)
            .map(|group| {
                kernel(|deps| ArrayTask::Matmul {
                    pairs: group
                        .iter()
                        .map(|&k| {
                            let (l, r) = pair(k);
                            (deps.input(l), deps.input(r))
                        })
                        .collect(),
                    transposed,
                })
            })
            .collect();
        match <[Delayed<Chunk>; 1]>::try_from(parts) {
            Ok([one]) => one,
            Err(parts) => kernel(|deps| ArrayTask::Add {
                blocks: parts.iter().map(|p| deps.input(p)).collect(),
            }),
        }
    }

    /// `dot` of a Gram form (see [`Gram`]): `α·A·Aᵀ + β·(A's row sums)·1ᵀ`, or
    /// `α·Aᵀ·A + β·1·(A's column sums)ᵀ`. The product is symmetric, so only the blocks on and
    /// above the diagonal are multiplied (a diagonal block only its lower half); a block below
    /// is its mirror's transpose. The scalars follow elementwise, fused into the block.
    fn gram_dot(&self, g: &Gram<'_>) -> Result<Array, ArrayError> {
        let a = g.base;
        let [rows, cols] = [a.grid.blocks_per_dim()[0], a.grid.blocks_per_dim()[1]];
        let (n, depth, chunks) = match g.side {
            Side::Right => (rows, cols, a.chunks()[0].clone()),
            Side::Left => (cols, rows, a.chunks()[1].clone()),
        };
        let src: Vec<Source> = a.blocks.iter().map(Block::task).collect();
        let block_of = |i: usize, k: usize| -> &Source {
            match g.side {
                Side::Right => &src[i * cols + k],
                Side::Left => &src[k * cols + i],
            }
        };
        let transposed = match g.side {
            Side::Right => Transposed::Right,
            Side::Left => Transposed::Left,
        };
        // The blocks on and above the diagonal, row by row: (i, j) for i <= j is at
        // `upper_at(i, j)`.
        let upper_at = |i: usize, j: usize| i * (2 * n + 1 - i) / 2 + (j - i);
        let mut upper = Vec::with_capacity(n * (n + 1) / 2);
        for i in 0..n {
            for j in i..n {
                let d =
                    self.sum_of_products(depth, transposed, |k| (block_of(i, k), block_of(j, k)));
                upper.push(Block::new(vec![chunks[i], chunks[j]], Expr::Task(d.into())));
            }
        }
        let sums = if g.beta != 0.0 {
            let axis = match g.side {
                Side::Right => 1,
                Side::Left => 0,
            };
            Some(&a.sum(Some(axis))? * g.beta)
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                let shape = vec![chunks[i], chunks[j]];
                let mut b = if i <= j {
                    upper[upper_at(i, j)].clone()
                } else {
                    Block::new(
                        shape.clone(),
                        Expr::Transpose(upper[upper_at(j, i)].clone()),
                    )
                };
                if g.alpha != 1.0 {
                    let s = Block::new(shape.clone(), Expr::Full(g.alpha));
                    b = Block::new(shape.clone(), Expr::Bin(BinOp::Mul, b, s));
                }
                if let Some(sums) = &sums {
                    let (k, dims) = match g.side {
                        Side::Right => (i, vec![0]),
                        Side::Left => (j, vec![1]),
                    };
                    let spread = Block::new(
                        shape.clone(),
                        Expr::BroadcastInDim(sums.blocks[k].operand(), dims),
                    );
                    b = Block::new(shape, Expr::Bin(BinOp::Add, b, spread));
                }
                blocks.push(b);
            }
        }
        let size: usize = chunks.iter().sum();
        let grid = Grid::from_chunks(&[size, size], vec![chunks.clone(), chunks])?;
        Ok(self.with_blocks(grid, blocks))
    }
}

/// Which operand of a Gram product is the base array's transpose (under scalars).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    /// `A · (α·Aᵀ + β)`
    Right,
    /// `(α·Aᵀ + β) · A`
    Left,
}

/// A product of an array and its own transpose, the transpose under a scalar multiple and a
/// scalar shift (`x.dot(x.T)`, `x.T.dot(x)`, `x.dot(x.T + 1)`, `x.dot(2 * x.T)`): recognised
/// block by block, each block of the transposed side being the transpose of the base's very block
/// (the same builder node, so the same values) under the same scalars.
struct Gram<'a> {
    base: &'a Array,
    side: Side,
    alpha: f64,
    beta: f64,
}

impl<'a> Gram<'a> {
    fn of(left: &'a Array, right: &'a Array) -> Option<Gram<'a>> {
        // right = α·leftᵀ + β: right's block (k, j) transposes left's block (j, k).
        if let Some((alpha, beta)) = transposed_under_scalars(right, left) {
            return Some(Gram {
                base: left,
                side: Side::Right,
                alpha,
                beta,
            });
        }
        // left = α·rightᵀ + β: left's block (i, k) transposes right's block (k, i).
        transposed_under_scalars(left, right).map(|(alpha, beta)| Gram {
            base: right,
            side: Side::Left,
            alpha,
            beta,
        })
    }
}

/// `(α, β)` when every block of `t` is `α·(its mirror block of a)ᵀ + β`, with one `α` (not 0)
/// and one `β` for all blocks.
fn transposed_under_scalars(t: &Array, a: &Array) -> Option<(f64, f64)> {
    let [p, q] = <[usize; 2]>::try_from(a.grid.blocks_per_dim()).ok()?;
    if t.grid.blocks_per_dim() != [q, p] || t.shape() != [a.shape()[1], a.shape()[0]] {
        return None;
    }
    let mut found: Option<(f64, f64)> = None;
    for k in 0..q {
        for j in 0..p {
            let (source, alpha, beta) = affine_of_transpose(&t.blocks[k * p + j])?;
            if !Arc::ptr_eq(&source.0, &a.blocks[j * q + k].0) {
                return None;
            }
            match found {
                None => found = Some((alpha, beta)),
                Some((x, y)) if x.to_bits() == alpha.to_bits() && y.to_bits() == beta.to_bits() => {
                }
                Some(_) => return None,
            }
        }
    }
    found.filter(|&(alpha, beta)| alpha != 0.0 && alpha.is_finite() && beta.is_finite())
}

/// A block's expression as `α·sᵀ + β` for the block `s` it transposes, when it is one: scalars
/// added, subtracted, multiplied and divided (by a non-zero) onto a transpose, and negation.
fn affine_of_transpose(b: &Block) -> Option<(&Block, f64, f64)> {
    let scalar = |b: &Block| match &b.0.expr {
        Expr::Full(v) => Some(*v),
        _ => None,
    };
    match &b.0.expr {
        Expr::Transpose(s) => Some((s, 1.0, 0.0)),
        Expr::Un(UnOp::Neg, e) => {
            let (s, alpha, beta) = affine_of_transpose(e)?;
            Some((s, -alpha, -beta))
        }
        Expr::Bin(op, l, r) => {
            if let Some(c) = scalar(r) {
                let (s, alpha, beta) = affine_of_transpose(l)?;
                match op {
                    BinOp::Add => Some((s, alpha, beta + c)),
                    BinOp::Sub => Some((s, alpha, beta - c)),
                    BinOp::Mul => Some((s, alpha * c, beta * c)),
                    BinOp::Div if c != 0.0 => Some((s, alpha / c, beta / c)),
                    _ => None,
                }
            } else if let Some(c) = scalar(l) {
                let (s, alpha, beta) = affine_of_transpose(r)?;
                match op {
                    BinOp::Add => Some((s, alpha, c + beta)),
                    BinOp::Sub => Some((s, -alpha, c - beta)),
                    BinOp::Mul => Some((s, c * alpha, c * beta)),
                    _ => None,
                }
            } else {
                None
            }
        }
        _ => None,
    }
}
