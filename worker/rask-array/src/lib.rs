//! Chunked n-d arrays of f64 (Dask's `dask.array`): a shape cut into chunks, each chunk computed
//! by tasks on the cluster.
//!
//! ```no_run
//! # async fn demo(client: &rask::client::Client) -> Result<(), rask::array::ArrayError> {
//! use rask::array::{self, ChunkSpec};
//! let x = array::random(&[800, 800, 800], ChunkSpec::Size(200), 42)?;
//! let mean = x.mean(None)?.compute_scalar(client).await?;
//! let y = array::random(&[2000, 2000], ChunkSpec::Size(1000), 1)?;
//! let z = y.dot(&(&y.t() + 1.0))?.sub(&y.mean(None)?)?.std(None, 0.0)?;
//! println!("{mean} {}", z.compute_scalar(client).await?);
//! # Ok(()) }
//! ```
//!
//! Building an array builds no tasks yet: each chunk is a small expression (a source such as a
//! seeded random stream, under elementwise operations, transposes and slices). Operations that
//! need a chunk's values — `dot`, `rechunk`, `compute` — turn its expression into one task
//! (`array_eval`), shared by every later user of that chunk. Reductions fuse the expression into
//! their per-chunk task (`array_partial`), which streams it in cache-sized tiles, so
//! `random(..).mean()` never holds a whole chunk in memory; partial results are combined in a tree
//! (`array_combine`, `split_every` inputs per node).

pub mod chunks;
pub mod kernels;
pub mod npy;
pub mod random;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ndarray::{ArrayD, IxDyn, Slice};

use crate::client::delayed::{DArg, Delayed, delayed, graph_of};
use crate::client::{Client, ClientError};
use crate::graph::TaskSpec;
use crate::value::Value;
pub use chunks::{ChunkSpec, Grid, Range};
pub use kernels::{BinOp, UnOp};
use kernels::{Finalize, Reduction};

/// Why an array could not be built or computed.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    #[error("bad chunks: {0}")]
    Chunks(String),
    #[error("bad slice: {0}")]
    Slice(String),
    #[error("shapes do not match: {0}")]
    Shape(String),
    #[error("axis {axis} is out of range for an array of {ndim} dimensions")]
    Axis { axis: usize, ndim: usize },
    #[error("{}: {reason}", path.display())]
    Npy { path: PathBuf, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("a computed chunk is wrong: {0}")]
    Result(String),
}

/// Tree reductions combine this many partial results per task unless told otherwise.
pub const DEFAULT_SPLIT_EVERY: usize = 8;

/// Elementwise operations deeper than this are computed (one task) before going further, so
/// expressions stay small.
const MAX_FUSED_DEPTH: usize = 24;

/// A chunked n-d array of f64. Cheap to clone (chunks are shared).
#[derive(Clone)]
pub struct Array {
    grid: Grid,
    /// One per chunk, in C order of the chunk grid.
    blocks: Vec<Block>,
    split_every: usize,
}

/// One chunk: its shape, its expression, and its task once something needed its values.
#[derive(Clone)]
struct Block(Arc<BlockNode>);

struct BlockNode {
    shape: Vec<usize>,
    expr: Expr,
    depth: usize,
    task: OnceLock<Delayed>,
}

enum Expr {
    Rand {
        seed: u64,
        stream: u64,
    },
    Full(f64),
    Arange {
        start: f64,
        step: f64,
        offset: usize,
    },
    Literal(Arc<ArrayD<f64>>),
    Npy {
        path: String,
        offset: Vec<usize>,
    },
    Task(Delayed),
    Un(UnOp, Block),
    Bin(BinOp, Block, Block),
    Transpose(Block),
    Slice(Block, Vec<Range>),
}

fn shape_arg(shape: &[usize]) -> DArg {
    DArg::List(shape.iter().map(|&d| DArg::from(d as i64)).collect())
}

fn list(items: Vec<DArg>) -> DArg {
    DArg::List(items)
}

impl Block {
    fn new(shape: Vec<usize>, expr: Expr) -> Block {
        let depth = match &expr {
            Expr::Un(_, a) | Expr::Transpose(a) | Expr::Slice(a, _) => a.0.depth + 1,
            Expr::Bin(_, a, b) => a.0.depth.max(b.0.depth) + 1,
            _ => 0,
        };
        Block(Arc::new(BlockNode {
            shape,
            expr,
            depth,
            task: OnceLock::new(),
        }))
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The task computing this chunk (made on first use, then shared).
    fn task(&self) -> Delayed {
        if let Expr::Task(d) = &self.0.expr {
            return d.clone();
        }
        self.0
            .task
            .get_or_init(|| delayed("array_eval", vec![self.expr_arg(), shape_arg(self.shape())]))
            .clone()
    }

    /// This chunk as a task result, for operands that must not be fused further.
    fn computed(&self) -> Block {
        match &self.0.expr {
            Expr::Task(_) => self.clone(),
            _ => Block::new(self.shape().to_vec(), Expr::Task(self.task())),
        }
    }

    /// Operand for a new elementwise node: fused, unless the expression is already deep.
    fn operand(&self) -> Block {
        if self.0.depth >= MAX_FUSED_DEPTH {
            self.computed()
        } else {
            self.clone()
        }
    }

    /// The chunk's expression as a task argument (see `kernels::prepare` for the format).
    fn expr_arg(&self) -> DArg {
        if let Some(d) = self.0.task.get() {
            return list(vec!["data".into(), d.into()]);
        }
        match &self.0.expr {
            Expr::Rand { seed, stream } => list(vec![
                "rand".into(),
                (*seed as i64).into(),
                (*stream as i64).into(),
            ]),
            Expr::Full(v) => list(vec!["full".into(), (*v).into()]),
            Expr::Arange {
                start,
                step,
                offset,
            } => list(vec![
                "arange".into(),
                (*start).into(),
                (*step).into(),
                (*offset as i64).into(),
            ]),
            Expr::Literal(a) => list(vec!["data".into(), DArg::Value(Value::Array(a.clone()))]),
            Expr::Npy { path, offset } => {
                list(vec!["npy".into(), path.as_str().into(), shape_arg(offset)])
            }
            Expr::Task(d) => list(vec!["data".into(), d.into()]),
            Expr::Un(op, a) => list(vec!["un".into(), op.name().into(), a.expr_arg()]),
            Expr::Bin(op, a, b) => list(vec![
                "bin".into(),
                op.name().into(),
                a.expr_arg(),
                b.expr_arg(),
            ]),
            Expr::Transpose(a) => list(vec!["T".into(), a.expr_arg()]),
            Expr::Slice(a, ranges) => list(vec![
                "slice".into(),
                a.expr_arg(),
                shape_arg(a.shape()),
                list(
                    ranges
                        .iter()
                        .map(|r| shape_arg(&[r.start, r.stop, r.step]))
                        .collect(),
                ),
            ]),
        }
    }
}

// ----- creation ------------------------------------------------------------------------------

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
    Ok(Array {
        grid,
        blocks,
        split_every: DEFAULT_SPLIT_EVERY,
    })
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

/// An in-memory array cut into chunks (each chunk travels inside the graph).
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
        Expr::Literal(Arc::new(view.as_standard_layout().into_owned()))
    })
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

// ----- the array -----------------------------------------------------------------------------

impl Array {
    pub fn shape(&self) -> &[usize] {
        self.grid.shape()
    }

    pub fn chunks(&self) -> &[Vec<usize>] {
        self.grid.chunks()
    }

    pub fn ndim(&self) -> usize {
        self.grid.ndim()
    }

    pub fn nblocks(&self) -> usize {
        self.blocks.len()
    }

    /// Inputs per node of this array's reduction trees (at least 2).
    pub fn split_every(mut self, n: usize) -> Array {
        self.split_every = n.max(2);
        self
    }

    fn with_blocks(&self, grid: Grid, blocks: Vec<Block>) -> Array {
        Array {
            grid,
            blocks,
            split_every: self.split_every,
        }
    }

    fn map_blocks(&self, f: impl Fn(&Block) -> Block) -> Array {
        self.with_blocks(self.grid.clone(), self.blocks.iter().map(f).collect())
    }

    // ----- elementwise ----------------------------------------------------------------------

    pub fn unary(&self, op: UnOp) -> Array {
        self.map_blocks(|b| Block::new(b.shape().to_vec(), Expr::Un(op, b.operand())))
    }

    /// `self op value` (or `value op self` when `scalar_first`).
    pub fn scalar_op(&self, op: BinOp, value: f64, scalar_first: bool) -> Array {
        self.map_blocks(|b| {
            let s = Block::new(b.shape().to_vec(), Expr::Full(value));
            let (l, r) = if scalar_first {
                (s, b.operand())
            } else {
                (b.operand(), s)
            };
            Block::new(b.shape().to_vec(), Expr::Bin(op, l, r))
        })
    }

    /// `self op other`, for arrays of the same shape and chunks, or where one is 0-d.
    pub fn elementwise(&self, op: BinOp, other: &Array) -> Result<Array, ArrayError> {
        if other.ndim() == 0 && self.ndim() > 0 {
            let s = other.blocks[0].computed();
            return Ok(self.map_blocks(|b| {
                Block::new(b.shape().to_vec(), Expr::Bin(op, b.operand(), s.clone()))
            }));
        }
        if self.ndim() == 0 && other.ndim() > 0 {
            let s = self.blocks[0].computed();
            return Ok(other.map_blocks(|b| {
                Block::new(b.shape().to_vec(), Expr::Bin(op, s.clone(), b.operand()))
            }));
        }
        if self.shape() != other.shape() {
            return Err(ArrayError::Shape(format!(
                "{} of arrays of shapes {:?} and {:?}",
                op.name(),
                self.shape(),
                other.shape()
            )));
        }
        if self.chunks() != other.chunks() {
            return Err(ArrayError::Chunks(format!(
                "{} of arrays with different chunks {:?} and {:?}; rechunk one of them",
                op.name(),
                self.chunks(),
                other.chunks()
            )));
        }
        let blocks = self
            .blocks
            .iter()
            .zip(&other.blocks)
            .map(|(a, b)| Block::new(a.shape().to_vec(), Expr::Bin(op, a.operand(), b.operand())))
            .collect();
        Ok(self.with_blocks(self.grid.clone(), blocks))
    }

    pub fn add(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Add, other)
    }

    pub fn sub(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Sub, other)
    }

    pub fn mul(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Mul, other)
    }

    pub fn div(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Div, other)
    }

    pub fn sqrt(&self) -> Array {
        self.unary(UnOp::Sqrt)
    }

    pub fn abs(&self) -> Array {
        self.unary(UnOp::Abs)
    }

    // ----- structure ------------------------------------------------------------------------

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
                let pieces = combos
                    .iter()
                    .map(|combo| {
                        let parts: Vec<&(usize, Range, usize)> = combo
                            .iter()
                            .enumerate()
                            .map(|(d, &k)| &lists[d][k])
                            .collect();
                        let src: Vec<usize> = parts.iter().map(|p| p.0).collect();
                        let b = &self.blocks[self.grid.linear(&src)];
                        list(vec![
                            b.task().into(),
                            list(
                                parts
                                    .iter()
                                    .map(|p| shape_arg(&[p.1.start, p.1.stop]))
                                    .collect(),
                            ),
                            shape_arg(&parts.iter().map(|p| p.2).collect::<Vec<_>>()),
                        ])
                    })
                    .collect();
                let d = delayed("array_rechunk", vec![shape_arg(&shape), list(pieces)]);
                Block::new(shape, Expr::Task(d))
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
        let a: Vec<Delayed> = self.blocks.iter().map(Block::task).collect();
        let b: Vec<Delayed> = other.blocks.iter().map(Block::task).collect();
        let mut blocks = Vec::with_capacity(ni * nj);
        for i in 0..ni {
            for j in 0..nj {
                let ks: Vec<usize> = (0..nk).collect();
                let parts: Vec<Delayed> = ks
                    .chunks(self.split_every)
                    .map(|g| {
                        let left =
                            DArg::List(g.iter().map(|&k| DArg::from(&a[i * nk + k])).collect());
                        let right =
                            DArg::List(g.iter().map(|&k| DArg::from(&b[k * nj + j])).collect());
                        delayed("array_matmul", vec![left, right])
                    })
                    .collect();
                let d = match <[Delayed; 1]>::try_from(parts) {
                    Ok([one]) => one,
                    Err(parts) => delayed("array_add", vec![parts.into()]),
                };
                let shape = vec![self.chunks()[0][i], other.chunks()[1][j]];
                blocks.push(Block::new(shape, Expr::Task(d)));
            }
        }
        Ok(self.with_blocks(grid, blocks))
    }

    // ----- reductions -----------------------------------------------------------------------

    pub fn sum(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(Reduction::Sum, axis, |_| Finalize::Keep)
    }

    pub fn min(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(Reduction::Min, axis, |_| Finalize::Keep)
    }

    pub fn max(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(Reduction::Max, axis, |_| Finalize::Keep)
    }

    pub fn mean(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(Reduction::Sum, axis, |n| Finalize::Mean(n as f64))
    }

    /// Variance with `ddof` delta degrees of freedom (NumPy's default is 0).
    pub fn var(&self, axis: Option<usize>, ddof: f64) -> Result<Array, ArrayError> {
        self.reduce(Reduction::Moments, axis, |_| Finalize::Var(ddof))
    }

    pub fn std(&self, axis: Option<usize>, ddof: f64) -> Result<Array, ArrayError> {
        self.reduce(Reduction::Moments, axis, |_| Finalize::Std(ddof))
    }

    /// A tree reduction over all axes (`None`) or one; `finalize` gets the number of elements
    /// reduced into each result.
    fn reduce(
        &self,
        op: Reduction,
        axis: Option<usize>,
        finalize: impl Fn(usize) -> Finalize,
    ) -> Result<Array, ArrayError> {
        if let Some(axis) = axis
            && axis >= self.ndim()
        {
            return Err(ArrayError::Axis {
                axis,
                ndim: self.ndim(),
            });
        }
        let axis_arg = || match axis {
            Some(a) => DArg::from(a as i64),
            None => DArg::Value(Value::None),
        };
        let partial = |b: &Block| {
            delayed(
                "array_partial",
                vec![
                    b.expr_arg(),
                    shape_arg(b.shape()),
                    op.name().into(),
                    axis_arg(),
                ],
            )
        };
        match axis {
            None => {
                let parts: Vec<Delayed> = self.blocks.iter().map(partial).collect();
                let root = self.tree(op, parts, finalize(self.grid.size()));
                let grid = Grid::from_chunks(&[], vec![])?;
                Ok(self.with_blocks(grid, vec![Block::new(vec![], Expr::Task(root))]))
            }
            Some(ax) => {
                let grid = self.grid.without(ax);
                let counts = self.grid.blocks_per_dim();
                let fin = finalize(self.shape()[ax]);
                let blocks = grid
                    .block_indices()
                    .iter()
                    .map(|idx| {
                        let parts = (0..counts[ax])
                            .map(|k| {
                                let mut full = idx.clone();
                                full.insert(ax, k);
                                partial(&self.blocks[self.grid.linear(&full)])
                            })
                            .collect();
                        Block::new(grid.block_shape(idx), Expr::Task(self.tree(op, parts, fin)))
                    })
                    .collect();
                Ok(self.with_blocks(grid, blocks))
            }
        }
    }

    /// Combines `parts` `split_every` at a time until one remains, finalizing at the root.
    fn tree(&self, op: Reduction, mut parts: Vec<Delayed>, fin: Finalize) -> Delayed {
        let combine = |group: Vec<Delayed>, fin: Finalize| {
            delayed(
                "array_combine",
                vec![op.name().into(), group.into(), DArg::Value(fin.to_value())],
            )
        };
        while parts.len() > self.split_every {
            parts = parts
                .chunks(self.split_every)
                .map(|g| combine(g.to_vec(), Finalize::Keep))
                .collect();
        }
        combine(parts, fin)
    }

    // ----- computing ------------------------------------------------------------------------

    /// The tasks that compute every chunk (one per chunk, C order).
    pub fn to_delayed(&self) -> Vec<Delayed> {
        self.blocks.iter().map(Block::task).collect()
    }

    /// This array's task graph, inputs before their users.
    pub fn graph(&self) -> Vec<TaskSpec> {
        graph_of(&self.to_delayed())
    }

    /// Writes the task graph as Graphviz DOT to `path`, and as SVG beside it when `dot` is
    /// installed (see [`crate::client::visualize`]).
    pub fn visualize(
        &self,
        path: impl AsRef<Path>,
    ) -> std::io::Result<crate::client::visualize::Written> {
        crate::client::visualize::write(&self.graph(), path.as_ref())
    }

    /// Computes every chunk on the cluster and assembles them into one array here.
    pub async fn compute(&self, client: &Client) -> Result<ArrayD<f64>, ArrayError> {
        let futures = client.compute_many(&self.to_delayed());
        let values = client.gather(&futures).await?;
        drop(futures);
        self.assemble(values)
    }

    /// Places computed chunks (C order) into one array.
    fn assemble(&self, values: Vec<Value>) -> Result<ArrayD<f64>, ArrayError> {
        let mut out = ArrayD::<f64>::zeros(IxDyn(self.shape()));
        for (idx, v) in self.grid.block_indices().iter().zip(values) {
            let chunk = v
                .as_array()
                .map_err(|e| ArrayError::Result(e.to_string()))?;
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
            view.assign(&**chunk);
        }
        Ok(out)
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
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array")
            .field("shape", &self.shape())
            .field("chunks", &self.chunks())
            .finish()
    }
}

macro_rules! scalar_ops {
    ($($tr:ident $method:ident $op:ident),*) => {$(
        impl std::ops::$tr<f64> for &Array {
            type Output = Array;
            fn $method(self, v: f64) -> Array {
                self.scalar_op(BinOp::$op, v, false)
            }
        }
        impl std::ops::$tr<&Array> for f64 {
            type Output = Array;
            fn $method(self, a: &Array) -> Array {
                a.scalar_op(BinOp::$op, self, true)
            }
        }
    )*};
}

scalar_ops!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

impl std::ops::Neg for &Array {
    type Output = Array;
    fn neg(self) -> Array {
        self.unary(UnOp::Neg)
    }
}

#[cfg(test)]
mod tests;
