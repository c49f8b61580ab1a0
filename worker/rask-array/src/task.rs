//! The array family's tasks: one serde enum, built by [`crate::Array`]'s graph builders and run
//! by [`crate::kernels`], so both sides agree on every argument by type.
//!
//! Each variant is one function (`array.eval`, `array.partial`, ...). Inputs (other tasks'
//! results) enter as typed positions ([`Input`]); everything else travels in the payload.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize};

use rask_core::{Input, KernelTask, Pickled};

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
    /// `array.matmul`: Σ left·right over the pairs of 2-d blocks, with one side of every pair
    /// transposed if `transposed` says so (a Gram product's blocks, `A·Aᵀ` or `Aᵀ·A`, read
    /// `A`'s own blocks). Result: [`Chunk`].
    Matmul {
        pairs: Vec<(Input<Chunk>, Input<Chunk>)>,
        transposed: Transposed,
    },
    /// `array.add`: the elementwise sum of blocks of one shape. Result: [`Chunk`].
    Add { blocks: Vec<Input<Chunk>> },
    /// `array.rechunk`: a chunk of `shape` assembled from pieces of others. Result: [`Chunk`].
    Rechunk {
        shape: Vec<usize>,
        pieces: Vec<RechunkPiece>,
    },
    /// `array.from_pickle`: the chunk of `shape` whose raw values (f64 LE, C order) a Python
    /// task returned as a `bytes` object. Result: [`Chunk`].
    FromPickle {
        source: Input<Pickled>,
        shape: Vec<usize>,
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
        "array.from_pickle",
    ];

    fn func(&self) -> &'static str {
        match self {
            ArrayTask::Eval { .. } => "array.eval",
            ArrayTask::Partial { .. } => "array.partial",
            ArrayTask::Combine(_) => "array.combine",
            ArrayTask::Matmul { .. } => "array.matmul",
            ArrayTask::Add { .. } => "array.add",
            ArrayTask::Rechunk { .. } => "array.rechunk",
            ArrayTask::FromPickle { .. } => "array.from_pickle",
        }
    }
}

/// Which block of each pair of `array.matmul` enters the product transposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Transposed {
    #[default]
    Neither,
    Left,
    Right,
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
    Un(UnOp, #[serde(deserialize_with = "nested")] Box<ChunkExpr>),
    Bin(
        BinOp,
        #[serde(deserialize_with = "nested")] Box<ChunkExpr>,
        #[serde(deserialize_with = "nested")] Box<ChunkExpr>,
    ),
    /// The source (of the reversed shape) with its axes reversed.
    Transpose(#[serde(deserialize_with = "nested")] Box<ChunkExpr>),
    /// `ranges` of the source chunk, which has `source_shape`.
    Slice {
        #[serde(deserialize_with = "nested")]
        source: Box<ChunkExpr>,
        source_shape: Vec<usize>,
        ranges: Vec<Range>,
    },
    /// The source chunk (of `source_shape`) repeated along the chunk's other dimensions: source
    /// dimension `i` is the chunk's dimension `dims[i]` (XLA's `BroadcastInDim`), and has the
    /// chunk's length there or 1.
    BroadcastInDim {
        #[serde(deserialize_with = "nested")]
        source: Box<ChunkExpr>,
        source_shape: Vec<usize>,
        dims: Vec<usize>,
    },
}

/// Expressions nested deeper than this are refused when a payload is read. Builders fuse at
/// most 24 operations (then compute the chunk), so only a corrupt or hostile payload comes near;
/// without a bound, one nested 100,000 deep would overflow the worker thread's stack and take
/// the worker process down with it.
pub(crate) const MAX_EXPR_DEPTH: usize = 256;

thread_local! {
    /// Sub-expressions being read on this thread, outermost first.
    static EXPR_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Reads a sub-expression, refusing one nested deeper than [`MAX_EXPR_DEPTH`].
fn nested<'de, D: Deserializer<'de>>(d: D) -> Result<Box<ChunkExpr>, D::Error> {
    /// Leaves the level on every way out (errors included).
    struct Level;
    impl Drop for Level {
        fn drop(&mut self) {
            EXPR_DEPTH.set(EXPR_DEPTH.get().saturating_sub(1));
        }
    }
    let depth = EXPR_DEPTH.get();
    if depth >= MAX_EXPR_DEPTH {
        return Err(serde::de::Error::custom(format!(
            "chunk expression nested deeper than {MAX_EXPR_DEPTH}"
        )));
    }
    EXPR_DEPTH.set(depth + 1);
    let _level = Level;
    ChunkExpr::deserialize(d).map(Box::new)
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

#[cfg(test)]
mod tests {
    use rask_core::function::{decode_payload, encode_payload};

    use super::*;

    fn negations(depth: usize) -> ChunkExpr {
        (0..depth).fold(ChunkExpr::Full(1.0), |e, _| {
            ChunkExpr::Un(UnOp::Neg, Box::new(e))
        })
    }

    #[test]
    fn tasks_round_trip_through_payloads() {
        let t = ArrayTask::Partial {
            expr: ChunkExpr::Slice {
                source: Box::new(ChunkExpr::Bin(
                    BinOp::Less,
                    Box::new(ChunkExpr::Data(Input::new(1))),
                    Box::new(negations(3)),
                )),
                source_shape: vec![4, 5],
                ranges: vec![Range::new(1, 3), Range::new(0, 5).step(2)],
            },
            shape: vec![2, 3],
            reduction: Reduction::Arg {
                op: ArgOp::Max,
                offset: vec![4, 0],
                array_shape: vec![8, 5],
            },
            axis: Some(1),
        };
        let back: ArrayTask =
            decode_payload("array.partial", &encode_payload(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn payloads_nested_too_deep_are_refused_not_a_stack_overflow() {
        let ok = ArrayTask::Eval {
            expr: negations(MAX_EXPR_DEPTH),
            shape: vec![2],
        };
        let p = encode_payload(&ok).unwrap();
        assert_eq!(decode_payload::<ArrayTask>("array.eval", &p).unwrap(), ok);
        // Built byte by byte (building the tree itself would need the recursion we refuse):
        // Eval (variant 0), then Un (6) of Neg (0) 100,000 times, Full (1) of 1.0, shape [2].
        let mut deep = vec![0u8];
        for _ in 0..100_000 {
            deep.extend_from_slice(&[6, 0]);
        }
        deep.push(1);
        deep.extend_from_slice(&1.0f64.to_le_bytes());
        deep.extend_from_slice(&[1, 2]);
        // The same layout at a legal depth decodes, so the bytes above are what they claim.
        let mut shallow = vec![0u8, 6, 0, 6, 0, 1];
        shallow.extend_from_slice(&1.0f64.to_le_bytes());
        shallow.extend_from_slice(&[1, 2]);
        assert_eq!(
            decode_payload::<ArrayTask>("array.eval", &shallow).unwrap(),
            ArrayTask::Eval {
                expr: negations(2),
                shape: vec![2]
            }
        );
        let err = decode_payload::<ArrayTask>("array.eval", &deep).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("array.eval: arguments cannot be decoded: as ArrayTask"),
            "{err}"
        );
        // The depth count is back to zero after the error: a legal payload still decodes.
        assert_eq!(decode_payload::<ArrayTask>("array.eval", &p).unwrap(), ok);
    }
}
