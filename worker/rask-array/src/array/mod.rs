//! [`Array`]: a shape cut into chunks, each chunk a lazy expression or a task; operations build
//! new arrays, and the graph of [`ArrayTask`]s only where a chunk's values are needed.

mod compute;
pub(crate) mod create;
mod elementwise;
mod reduce;
mod structure;

use std::sync::{Arc, OnceLock};

use rask_client::Future;
use rask_client::delayed::{AsInput, Delayed, Deps, InputSource};
use rask_client::kernel;

use crate::chunk::Chunk;
use crate::chunks::{Grid, Range};
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
    task: OnceLock<Source>,
}

/// Where a computed chunk comes from: a task of the graph, or a result on the cluster that a
/// future holds (a persisted array's chunk).
#[derive(Clone)]
pub(crate) enum Source {
    Task(Delayed<Chunk>),
    Held(Future<Chunk>),
}

impl AsInput<Chunk> for Source {
    fn input_source(&self) -> InputSource {
        match self {
            Source::Task(d) => d.input_source(),
            Source::Held(f) => f.input_source(),
        }
    }
}

impl From<Delayed<Chunk>> for Source {
    fn from(d: Delayed<Chunk>) -> Source {
        Source::Task(d)
    }
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
    Task(Source),
    Un(UnOp, Block),
    Bin(BinOp, Block, Block),
    Transpose(Block),
    Slice(Block, Vec<Range>),
    /// The block repeated along this block's other dimensions ([`ChunkExpr::BroadcastInDim`]).
    BroadcastInDim(Block, Vec<usize>),
}

impl Block {
    fn new(shape: Vec<usize>, expr: Expr) -> Block {
        let depth = match &expr {
            Expr::Un(_, a)
            | Expr::Transpose(a)
            | Expr::Slice(a, _)
            | Expr::BroadcastInDim(a, _) => a.0.depth + 1,
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

    /// The task computing this chunk (made on first use, then shared), or the future holding it.
    fn task(&self) -> Source {
        if let Expr::Task(d) = &self.0.expr {
            return d.clone();
        }
        self.0
            .task
            .get_or_init(|| {
                Source::Task(kernel(|deps| ArrayTask::Eval {
                    expr: self.expr(deps),
                    shape: self.shape().to_vec(),
                }))
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
            Expr::BroadcastInDim(a, dims) => ChunkExpr::BroadcastInDim {
                source: boxed(a, deps),
                source_shape: a.shape().to_vec(),
                dims: dims.clone(),
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
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array")
            .field("shape", &self.shape())
            .field("chunks", &self.chunks())
            .finish()
    }
}
