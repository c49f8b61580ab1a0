//! The array family's tasks: one serde enum, built by [`crate::Array`]'s graph builders and run
//! by [`crate::kernels`], so both sides agree on every argument by type.
//!
//! Each variant is one function (`array.eval`, `array.partial`, ...). Inputs (other tasks'
//! results) enter as typed positions ([`Input`]); everything else travels in the payload.

use serde::{Deserialize, Serialize};

use rask_core::{Input, KernelTask};

use crate::chunk::Chunk;
use crate::chunks::Range;
use crate::ops::{BinOp, UnOp};

/// A range of indices along one dimension, `start..end` (step 1).
pub(crate) type Span = std::ops::Range<usize>;

/// An array task. The result of each is named on its variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum ArrayTask {
    /// `array.eval`: the chunk of `shape` an expression describes. Result: [`Chunk`].
    Eval { expr: ChunkExpr, shape: Vec<usize> },
    /// `array.partial`: a chunk's expression reduced over all axes (`axis: None`, streamed in
    /// tiles) or along one. Result: [`Reduction::Sum`], `Min`, `Max` give a [`Chunk`],
    /// `Moments` give [`Moments`], `Arg` gives [`ArgPartial`].
    Partial {
        expr: ChunkExpr,
        shape: Vec<usize>,
        reduction: Reduction,
        axis: Option<usize>,
    },
    /// `array.combine`: one node of a reduction tree.
    Combine(Combine),
    /// `array.matmul`: Σ left·right over the pairs of 2-d blocks. Result: [`Chunk`].
    Matmul {
        pairs: Vec<(Input<Chunk>, Input<Chunk>)>,
    },
    /// `array.add`: the elementwise sum of blocks of one shape. Result: [`Chunk`].
    Add { blocks: Vec<Input<Chunk>> },
    /// `array.rechunk`: a chunk of `shape` assembled from pieces of others. Result: [`Chunk`].
    Rechunk {
        shape: Vec<usize>,
        pieces: Vec<RechunkPiece>,
    },
}

impl KernelTask for ArrayTask {
    const FUNCTIONS: &'static [&'static str] = &[
        "array.eval",
        "array.partial",
        "array.combine",
        "array.matmul",
        "array.add",
        "array.rechunk",
    ];

    fn func(&self) -> &'static str {
        match self {
            ArrayTask::Eval { .. } => "array.eval",
            ArrayTask::Partial { .. } => "array.partial",
            ArrayTask::Combine(_) => "array.combine",
            ArrayTask::Matmul { .. } => "array.matmul",
            ArrayTask::Add { .. } => "array.add",
            ArrayTask::Rechunk { .. } => "array.rechunk",
        }
    }
}

/// A chunk's values as an expression: sources under elementwise operations, transposes and
/// slices. Evaluated in tiles where it can be (see [`crate::kernels`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum ChunkExpr {
    /// Uniform [0, 1) values from stream `stream` of the array seeded with `seed`.
    Rand {
        seed: u64,
        stream: u64,
    },
    /// Every value the same (also a scalar operand).
    Full(f64),
    /// `start + step * (offset + i)` for flat position `i` (1-d).
    Arange {
        start: f64,
        step: f64,
        offset: usize,
    },
    /// Values carried in the task itself ([`crate::from_ndarray`]).
    Literal(#[serde(with = "crate::chunk::raw")] Chunk),
    /// Another task's result; a 0-d chunk stands for a scalar operand.
    Data(Input<Chunk>),
    /// The block at `offset` of the `.npy` file at `path`, read by the worker.
    Npy {
        path: String,
        offset: Vec<usize>,
    },
    Un(UnOp, Box<ChunkExpr>),
    Bin(BinOp, Box<ChunkExpr>, Box<ChunkExpr>),
    /// The source (of the reversed shape) with its axes reversed.
    Transpose(Box<ChunkExpr>),
    /// `ranges` of the source chunk, which has `source_shape`.
    Slice {
        source: Box<ChunkExpr>,
        source_shape: Vec<usize>,
        ranges: Vec<Range>,
    },
}

/// What a partial result holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Reduction {
    Sum,
    Min,
    Max,
    /// (count, mean, M2), for mean, var and std.
    Moments,
    /// The extreme value and its index in the whole array: the flat C-order index for a
    /// reduction over all axes, the index along the axis otherwise. The chunk sits at `offset`
    /// in an array of `array_shape`.
    Arg {
        op: ArgOp,
        offset: Vec<usize>,
        array_shape: Vec<usize>,
    },
}

/// Which extreme an `arg` reduction looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ArgOp {
    Min,
    Max,
}

impl ArgOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ArgOp::Min => "argmin",
            ArgOp::Max => "argmax",
        }
    }
}

/// One node of a reduction tree: partials of one kind, and what to make of them. Below the root
/// a node gives a partial of the same kind; the root gives the reduction's [`Chunk`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Combine {
    /// The sum of the parts, divided by `divisor` if given (the root of a mean).
    Sum {
        parts: Vec<Input<Chunk>>,
        divisor: Option<f64>,
    },
    Min {
        parts: Vec<Input<Chunk>>,
    },
    Max {
        parts: Vec<Input<Chunk>>,
    },
    /// Moments merged with Chan's formula; at the root of `var`/`std`, the spread.
    Moments {
        parts: Vec<Input<Moments>>,
        spread: Option<Spread>,
    },
    /// The best of (value, index) partials (ties to the lower index); at the root, the indices.
    Arg {
        op: ArgOp,
        parts: Vec<Input<ArgPartial>>,
        root: bool,
    },
}

/// What the root of a moments tree gives: M2 / (count - ddof), or its square root.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Spread {
    Var { ddof: f64 },
    Std { ddof: f64 },
}

/// A partial result of `var`/`std`: element counts, means and sums of squared deviations (M2),
/// per output element. Chunks travel as raw bytes inside it (see [`crate::chunk::raw`]), so a
/// partial along an axis of a large chunk is no slower to send than a chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Moments {
    pub count: f64,
    #[serde(with = "crate::chunk::raw")]
    pub mean: Chunk,
    #[serde(with = "crate::chunk::raw")]
    pub m2: Chunk,
}

/// A partial result of `argmin`/`argmax`: the best values, and their indices in the whole array
/// (as f64, exact below 2^53).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ArgPartial {
    #[serde(with = "crate::chunk::raw")]
    pub values: Chunk,
    #[serde(with = "crate::chunk::raw")]
    pub indices: Chunk,
}

/// One piece of a rechunked chunk: `ranges` of `source`, written at `offset`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RechunkPiece {
    pub source: Input<Chunk>,
    pub ranges: Vec<Span>,
    pub offset: Vec<usize>,
}
