//! [`Array`]: a shape cut into chunks, each chunk a lazy expression or a task; operations build
//! new arrays, and the graph of [`ArrayTask`]s only where a chunk's values are needed.

mod create;
mod reduce;
mod structure;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ndarray::{ArrayD, IxDyn, Slice};
use rask_client::delayed::{Delayed, Deps, graph_of};
use rask_client::visualize::{self, Written};
use rask_client::{Client, kernel};
use rask_core::TaskSpec;

pub use create::{arange, from_ndarray, from_npy, full, ones, random, zeros};

use crate::chunk::Chunk;
use crate::chunks::{Grid, Range};
use crate::error::ArrayError;
use crate::ops::{BinOp, UnOp};
use crate::task::{ArrayTask, ChunkExpr};

/// Tree reductions combine this many partial results per task unless told otherwise.
pub(crate) const DEFAULT_SPLIT_EVERY: usize = 8;

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
    task: OnceLock<Delayed<Chunk>>,
}

/// A chunk as the builder holds it: [`ChunkExpr`] with shared operand blocks (each made into a
/// task at most once) instead of task inputs.
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
    Literal(Chunk),
    Npy {
        path: String,
        offset: Vec<usize>,
    },
    Task(Delayed<Chunk>),
    Un(UnOp, Block),
    Bin(BinOp, Block, Block),
    Transpose(Block),
    Slice(Block, Vec<Range>),
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
    fn task(&self) -> Delayed<Chunk> {
        if let Expr::Task(d) = &self.0.expr {
            return d.clone();
        }
        self.0
            .task
            .get_or_init(|| {
                kernel(|deps| ArrayTask::Eval {
                    expr: self.expr(deps),
                    shape: self.shape().to_vec(),
                })
            })
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

    /// The chunk's expression as a task argument; tasks it reads are registered with `deps`.
    fn expr(&self, deps: &mut Deps) -> ChunkExpr {
        if let Some(d) = self.0.task.get() {
            return ChunkExpr::Data(deps.input(d));
        }
        let boxed = |b: &Block, deps: &mut Deps| Box::new(b.expr(deps));
        match &self.0.expr {
            Expr::Rand { seed, stream } => ChunkExpr::Rand {
                seed: *seed,
                stream: *stream,
            },
            Expr::Full(v) => ChunkExpr::Full(*v),
            Expr::Arange {
                start,
                step,
                offset,
            } => ChunkExpr::Arange {
                start: *start,
                step: *step,
                offset: *offset,
            },
            Expr::Literal(c) => ChunkExpr::Literal(c.clone()),
            Expr::Npy { path, offset } => ChunkExpr::Npy {
                path: path.clone(),
                offset: offset.clone(),
            },
            Expr::Task(d) => ChunkExpr::Data(deps.input(d)),
            Expr::Un(op, a) => ChunkExpr::Un(*op, boxed(a, deps)),
            Expr::Bin(op, a, b) => {
                let a = boxed(a, deps);
                ChunkExpr::Bin(*op, a, boxed(b, deps))
            }
            Expr::Transpose(a) => ChunkExpr::Transpose(boxed(a, deps)),
            Expr::Slice(a, ranges) => ChunkExpr::Slice {
                source: boxed(a, deps),
                source_shape: a.shape().to_vec(),
                ranges: ranges.clone(),
            },
        }
    }
}

impl Array {
    fn from_blocks(grid: Grid, blocks: Vec<Block>) -> Array {
        Array {
            grid,
            blocks,
            split_every: DEFAULT_SPLIT_EVERY,
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.grid.shape()
    }

    /// How the array is cut: its shape and the chunk sizes along each dimension.
    pub fn grid(&self) -> &Grid {
        &self.grid
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

    /// Inputs per node of this array's reduction trees and per `dot` task (at least 2).
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

    /// 1.0 where `self < other`, else 0.0 (NumPy's `less`); likewise the other comparisons.
    pub fn less(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Less, other)
    }

    pub fn less_equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::LessEqual, other)
    }

    pub fn greater(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Greater, other)
    }

    pub fn greater_equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::GreaterEqual, other)
    }

    pub fn equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Equal, other)
    }

    pub fn not_equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::NotEqual, other)
    }

    pub fn sqrt(&self) -> Array {
        self.unary(UnOp::Sqrt)
    }

    pub fn exp(&self) -> Array {
        self.unary(UnOp::Exp)
    }

    /// The natural logarithm.
    pub fn log(&self) -> Array {
        self.unary(UnOp::Log)
    }

    pub fn abs(&self) -> Array {
        self.unary(UnOp::Abs)
    }

    // ----- computing ------------------------------------------------------------------------

    /// The tasks that compute every chunk (one per chunk, C order).
    pub fn to_delayed(&self) -> Vec<Delayed<Chunk>> {
        self.blocks.iter().map(Block::task).collect()
    }

    /// This array's task graph, inputs before their users.
    pub fn graph(&self) -> Vec<TaskSpec> {
        graph_of(&self.to_delayed())
    }

    /// Writes the task graph as Graphviz DOT to `path`, and as SVG beside it when `dot` is
    /// installed (see [`rask_client::visualize`]).
    pub fn visualize(&self, path: impl AsRef<Path>) -> std::io::Result<Written> {
        visualize::write(&self.graph(), path.as_ref())
    }

    /// Computes every chunk on the cluster and assembles them into one array here.
    pub async fn compute(&self, client: &Client) -> Result<ArrayD<f64>, ArrayError> {
        let futures = client.compute_many(&self.to_delayed());
        let chunks = client.gather(&futures).await?;
        drop(futures);
        self.assemble(chunks)
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
