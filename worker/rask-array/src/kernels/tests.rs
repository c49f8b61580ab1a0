//! The kernels called as a worker calls them: a function name, an encoded payload and encoded
//! inputs, through the array family in a registry. Results agree with direct computation, and
//! every bad payload or input is a `KernelError` that names the function and what was wrong.

use ndarray::{ArrayD, Axis, Dimension, IxDyn};
use rask_core::function::encode_payload;
use rask_core::{Data, Encoded, Input, KernelError, KernelTask, Value};

use crate::chunk::Chunk;
use crate::chunks::Range;
use crate::ops::BinOp;
use crate::task::{
    ArgOp, ArgPartial, ArrayTask, ChunkExpr, Combine, Moments, Reduction, Spread, Transposed,
};
use crate::tests::registry;

/// `start..end` (a function, so a one-range list reads as one).
fn span(start: usize, end: usize) -> crate::task::Span {
    start..end
}

fn call(task: &ArrayTask, inputs: &[Encoded]) -> Result<Encoded, KernelError> {
    let payload = encode_payload(task).unwrap();
    registry().call(task.func(), &payload, inputs)
}

fn chunk(shape: &[usize]) -> Chunk {
    Chunk::new(ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        (0..ix.ndim()).map(|d| ix[d] * (d + 2)).sum::<usize>() as f64
    }))
}

fn scalar_of(e: &Encoded) -> f64 {
    let c = Chunk::decode(e).unwrap();
    assert_eq!(c.ndim(), 0);
    c.iter().copied().sum()
}

fn failed(err: KernelError) -> String {
    match err {
        KernelError::Failed(m) => m,
        other => panic!("expected the function's own failure, got {other:?}"),
    }
}

/// The input error's index and reason.
fn input_error(err: KernelError) -> (String, usize, String) {
    match err {
        KernelError::Input {
            func,
            index,
            reason,
        } => (func, index, reason),
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn streaming_and_materialized_reductions_agree() {
    let shape = vec![7, 5, 300];
    let expr = ChunkExpr::Bin(
        BinOp::Mul,
        Box::new(ChunkExpr::Rand { seed: 1, stream: 2 }),
        Box::new(ChunkExpr::Full(3.0)),
    );
    let eval = ArrayTask::Eval {
        expr: expr.clone(),
        shape: shape.clone(),
    };
    let a = Chunk::decode(&call(&eval, &[]).unwrap()).unwrap();
    let partial = |reduction, axis| ArrayTask::Partial {
        expr: expr.clone(),
        shape: shape.clone(),
        reduction,
        axis,
    };
    let s = scalar_of(&call(&partial(Reduction::Sum, None), &[]).unwrap());
    assert!((s - a.sum()).abs() < 1e-9 * a.sum());
    let mx = scalar_of(&call(&partial(Reduction::Max, None), &[]).unwrap());
    assert_eq!(mx, a.iter().copied().fold(f64::MIN, f64::max));
    let m = call(&partial(Reduction::Moments, None), &[]).unwrap();
    assert_eq!(Moments::decode(&m).unwrap().count, 7.0 * 5.0 * 300.0);
    let var = ArrayTask::Combine(Combine::Moments {
        parts: vec![Input::new(0)],
        spread: Some(Spread::Var { ddof: 0.0 }),
    });
    let v = scalar_of(&call(&var, &[m]).unwrap());
    assert!((v - a.var(0.0)).abs() < 1e-12 * a.var(0.0).max(1.0));
    let ax = call(&partial(Reduction::Sum, Some(1)), &[]).unwrap();
    let ax = Chunk::decode(&ax).unwrap();
    assert_eq!(ax.shape(), &[7, 300]);
    let want = a.sum_axis(Axis(1));
    assert!(ax.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-9));
    // The expression reading a computed chunk twice gives its square.
    let data = ChunkExpr::Data(Input::new(0));
    let square = ArrayTask::Eval {
        expr: ChunkExpr::Bin(BinOp::Mul, Box::new(data.clone()), Box::new(data)),
        shape: shape.clone(),
    };
    let sq = Chunk::decode(&call(&square, &[a.encode()]).unwrap()).unwrap();
    assert_eq!(sq.array(), &a.mapv(|x| x * x));
}

#[test]
fn a_payload_of_another_function_is_refused() {
    let eval = ArrayTask::Eval {
        expr: ChunkExpr::Full(1.0),
        shape: vec![2],
    };
    let payload = encode_payload(&eval).unwrap();
    let err = registry().call("array.matmul", &payload, &[]).unwrap_err();
    assert!(matches!(err, KernelError::Arguments { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "array.matmul: arguments cannot be decoded: the payload is a array.eval task"
    );
    // Every variant's function is registered, and only those.
    for f in ArrayTask::FUNCTIONS {
        assert!(registry().get(f).is_some(), "{f}");
    }
    let err = registry().call("array.nope", &payload, &[]).unwrap_err();
    assert!(err.to_string().contains("array 0.1"), "{err}");
}

#[test]
fn corrupt_payloads_are_argument_errors() {
    let good = encode_payload(&ArrayTask::Eval {
        expr: ChunkExpr::Rand { seed: 3, stream: 9 },
        shape: vec![4, 4],
    })
    .unwrap();
    let mut long = good.to_vec();
    long.push(7);
    let variants = u8::try_from(ArrayTask::FUNCTIONS.len()).unwrap();
    for payload in [
        Vec::new(),
        vec![variants],
        vec![0xff, 0xff, 0xff],
        good[..good.len() - 1].to_vec(),
        long,
    ] {
        let err = registry().call("array.eval", &payload, &[]).unwrap_err();
        assert!(matches!(err, KernelError::Arguments { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("array.eval: arguments cannot be decoded: as ArrayTask"),
            "{payload:?}: {err}"
        );
    }
}

#[test]
fn inputs_of_the_wrong_kind_name_the_input() {
    let read = |i: u32| ArrayTask::Eval {
        expr: ChunkExpr::Un(
            crate::ops::UnOp::Neg,
            Box::new(ChunkExpr::Data(Input::new(i))),
        ),
        shape: vec![2],
    };
    // A serde value where a chunk is expected.
    let (func, index, reason) =
        input_error(call(&read(0), &[Value::Float(1.5).encode()]).unwrap_err());
    assert_eq!((func.as_str(), index), ("array.eval", 0));
    assert!(
        reason.contains("expected an array chunk") && reason.contains("format tag 0"),
        "{reason}"
    );
    // A missing input.
    let (_, index, reason) = input_error(call(&read(1), &[chunk(&[2]).encode()]).unwrap_err());
    assert_eq!(index, 1);
    assert!(reason.contains("only 1 inputs"), "{reason}");
    // A chunk of another shape than the expression's.
    let (_, _, reason) = input_error(call(&read(0), &[chunk(&[3]).encode()]).unwrap_err());
    assert!(
        reason.contains("a chunk of shape [3] where shape [2] was expected"),
        "{reason}"
    );
    // A chunk where moments are expected, and moments where arg partials are.
    let moments = ArrayTask::Combine(Combine::Moments {
        parts: vec![Input::new(0)],
        spread: None,
    });
    let (func, _, reason) = input_error(call(&moments, &[chunk(&[2]).encode()]).unwrap_err());
    assert_eq!(func, "array.combine");
    assert!(reason.contains("format tag 1"), "{reason}");
    let m = Moments {
        count: 2.0,
        mean: chunk(&[2]),
        m2: chunk(&[2]),
    };
    let args = ArrayTask::Combine(Combine::Arg {
        op: ArgOp::Min,
        parts: vec![Input::new(0)],
        root: true,
    });
    let (_, _, reason) = input_error(call(&args, &[m.encode()]).unwrap_err());
    assert!(reason.contains("as ArgPartial"), "{reason}");
    // Partials that do not combine, blocks that do not add, a block that is not a matrix.
    let sum = ArrayTask::Combine(Combine::Sum {
        parts: vec![Input::new(0), Input::new(1)],
        divisor: None,
    });
    let (_, index, reason) =
        input_error(call(&sum, &[chunk(&[2]).encode(), chunk(&[3]).encode()]).unwrap_err());
    assert_eq!(index, 1);
    assert!(
        reason.contains("shape [3] does not combine with shape [2]"),
        "{reason}"
    );
    let arg_parts = ArgPartial {
        values: chunk(&[2]),
        indices: chunk(&[3]),
    };
    let (_, index, _) = input_error(call(&args, &[arg_parts.encode()]).unwrap_err());
    assert_eq!(index, 0);
    let add = ArrayTask::Add {
        blocks: vec![Input::new(0), Input::new(1)],
    };
    let (_, index, reason) =
        input_error(call(&add, &[chunk(&[2, 2]).encode(), chunk(&[2, 3]).encode()]).unwrap_err());
    assert_eq!(index, 1);
    assert!(reason.contains("does not add"), "{reason}");
    let matmul = ArrayTask::Matmul {
        pairs: vec![(Input::new(0), Input::new(1))],
        transposed: Transposed::Neither,
    };
    let (_, index, reason) =
        input_error(call(&matmul, &[chunk(&[2, 2]).encode(), chunk(&[2]).encode()]).unwrap_err());
    assert_eq!(index, 1);
    assert!(reason.contains("shape [2] is not a matrix"), "{reason}");
    let rechunk = ArrayTask::Rechunk {
        shape: vec![2, 2],
        pieces: vec![crate::task::RechunkPiece {
            source: Input::new(0),
            ranges: vec![0..2, 0..2],
            offset: vec![0, 0],
        }],
    };
    let (_, _, reason) = input_error(call(&rechunk, &[chunk(&[4]).encode()]).unwrap_err());
    assert!(reason.contains("not a piece of shape [2, 2]"), "{reason}");
}

#[test]
fn bad_arguments_are_failures_naming_the_function() {
    let cases: Vec<(ArrayTask, Vec<Encoded>, &str)> = vec![
        (
            ArrayTask::Eval {
                expr: ChunkExpr::Literal(chunk(&[3])),
                shape: vec![2],
            },
            vec![],
            "array.eval: carried data: a chunk of shape [3] where shape [2] was expected",
        ),
        (
            ArrayTask::Eval {
                expr: ChunkExpr::Slice {
                    source: Box::new(ChunkExpr::Full(0.0)),
                    source_shape: vec![4],
                    ranges: vec![Range::new(1, 6)],
                },
                shape: vec![5],
            },
            vec![],
            "array.eval: slice 1..6 step 1 of a dimension of 4",
        ),
        (
            ArrayTask::Eval {
                expr: ChunkExpr::Slice {
                    source: Box::new(ChunkExpr::Full(0.0)),
                    source_shape: vec![4, 4],
                    ranges: vec![Range::new(0, 1)],
                },
                shape: vec![1],
            },
            vec![],
            "array.eval: 1 slice ranges for a chunk of shape [4, 4]",
        ),
        (
            ArrayTask::Eval {
                expr: ChunkExpr::Npy {
                    path: "/nonexistent/x.npy".into(),
                    offset: vec![0],
                },
                shape: vec![2],
            },
            vec![],
            "array.eval: /nonexistent/x.npy:",
        ),
        (
            ArrayTask::Partial {
                expr: ChunkExpr::Full(1.0),
                shape: vec![2, 2],
                reduction: Reduction::Sum,
                axis: Some(2),
            },
            vec![],
            "array.partial: axis 2 of a chunk of shape [2, 2]",
        ),
        (
            ArrayTask::Partial {
                expr: ChunkExpr::Full(1.0),
                shape: vec![0, 2],
                reduction: Reduction::Min,
                axis: Some(0),
            },
            vec![],
            "array.partial: min() of an empty axis has no identity",
        ),
        (
            ArrayTask::Partial {
                expr: ChunkExpr::Full(1.0),
                shape: vec![2, 2],
                reduction: Reduction::Arg {
                    op: ArgOp::Max,
                    offset: vec![0],
                    array_shape: vec![4, 4],
                },
                axis: None,
            },
            vec![],
            "array.partial: a chunk of shape [2, 2] at [0] in an array of shape [4, 4]",
        ),
        (
            ArrayTask::Combine(Combine::Min { parts: vec![] }),
            vec![],
            "array.combine: a combine of no partial results",
        ),
        (
            ArrayTask::Matmul {
                pairs: vec![],
                transposed: Transposed::Neither,
            },
            vec![],
            "array.matmul: a product of no blocks",
        ),
        (
            ArrayTask::Matmul {
                pairs: vec![(Input::new(0), Input::new(0))],
                transposed: Transposed::Neither,
            },
            vec![chunk(&[2, 3]).encode()],
            "array.matmul: blocks of shapes [2, 3] and [2, 3] (inputs 0 and 0) do not multiply",
        ),
        (
            ArrayTask::Add { blocks: vec![] },
            vec![],
            "array.add: a sum of no blocks",
        ),
        (
            ArrayTask::Rechunk {
                shape: vec![2],
                pieces: vec![crate::task::RechunkPiece {
                    source: Input::new(0),
                    ranges: vec![span(1, 3)],
                    offset: vec![0],
                }],
            },
            vec![chunk(&[2]).encode()],
            "array.rechunk: piece 1..3 of a dimension of 2 at 0 is out of bounds for 2",
        ),
        (
            ArrayTask::Rechunk {
                shape: vec![2],
                pieces: vec![crate::task::RechunkPiece {
                    source: Input::new(0),
                    ranges: vec![0..1, 0..1],
                    offset: vec![0],
                }],
            },
            vec![chunk(&[2]).encode()],
            "array.rechunk: a piece of 2 ranges at [0] for a chunk of shape [2]",
        ),
    ];
    for (task, inputs, want) in cases {
        let msg = failed(call(&task, &inputs).unwrap_err());
        assert!(msg.starts_with(want), "{task:?}: {msg}");
    }
}

/// A `rows`×`cols` matrix of values in [-1, 1) with both signs, from `seed`.
fn signed(rows: usize, cols: usize, seed: usize) -> ndarray::Array2<f64> {
    ndarray::Array2::from_shape_fn((rows, cols), |(i, j)| {
        ((i * 7919 + j * 104_729 + seed * 15_485_863) % 2003) as f64 / 1001.5 - 1.0
    })
}

/// Asserts `got` is `c0 + a·b` as the naive triple loop sums it, each value within 1e-12 of the
/// bound of its rounding error (Σ|a||b| + |c0|): the sums' order may differ, nothing else.
fn assert_naive_product(
    got: &[f64],
    c0: &ndarray::Array2<f64>,
    a: ndarray::ArrayView2<'_, f64>,
    b: ndarray::ArrayView2<'_, f64>,
    what: &str,
) {
    let (m, n) = (a.nrows(), b.ncols());
    assert_eq!(got.len(), m * n, "{what}");
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut bound) = (c0[[i, j]], c0[[i, j]].abs());
            for k in 0..a.ncols() {
                want += a[[i, k]] * b[[k, j]];
                bound += (a[[i, k]] * b[[k, j]]).abs();
            }
            let g = got[i * n + j];
            assert!(
                (g - want).abs() <= 1e-12 * bound,
                "{what}: [{i}, {j}] is {g}, the naive loop gives {want}"
            );
        }
    }
}

#[test]
fn block_products_match_the_naive_triple_loop() {
    use super::blocks::mul_add;
    // Shapes from one value to beyond faer's small-matrix kernels, none a multiple of a tile.
    let shapes = [
        (1, 1, 1),
        (7, 13, 5),
        (1, 9, 1),
        (9, 1, 9),
        (3, 0, 4),
        (0, 3, 4),
        (67, 131, 45),
        (130, 257, 67),
    ];
    for (case, &(m, k, n)) in shapes.iter().enumerate() {
        let (a, b) = (signed(m, k, case), signed(k, n, case + 100));
        let c0 = signed(m, n, case + 200);
        let what = format!("{m}x{k} · {k}x{n}");
        // Contiguous inputs, accumulating into nonzero values.
        let mut c = c0.iter().copied().collect::<Vec<f64>>();
        mul_add(&mut c, a.view(), b.view());
        assert_naive_product(&c, &c0, a.view(), b.view(), &what);
        // The same again is the same bits.
        let mut again = c0.iter().copied().collect::<Vec<f64>>();
        mul_add(&mut again, a.view(), b.view());
        assert!(
            c.iter()
                .zip(&again)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{what}: two runs differ"
        );
        // Transposed (column-major) inputs: the transposes of row-major k×m and n×k matrices.
        let (at, bt) = (a.t().to_owned(), b.t().to_owned());
        let mut c = c0.iter().copied().collect::<Vec<f64>>();
        mul_add(&mut c, at.t(), bt.t());
        assert_naive_product(&c, &c0, at.t(), bt.t(), &format!("{what}, transposed"));
        // Strided views: every other row of a taller matrix, and columns read backwards.
        let tall = signed(2 * m, k, case + 300);
        let every_other = tall.slice_axis(Axis(0), ndarray::Slice::new(0, None, 2));
        let backwards = b.slice_axis(Axis(1), ndarray::Slice::new(0, None, -1));
        let mut c = c0.iter().copied().collect::<Vec<f64>>();
        mul_add(&mut c, every_other, backwards);
        assert_naive_product(&c, &c0, every_other, backwards, &format!("{what}, strided"));
    }
    // Through the kernel: two pairs sum in order, from zero.
    let (a, b) = (signed(7, 13, 1), signed(13, 5, 2));
    let (a2, b2) = (signed(7, 4, 3), signed(4, 5, 4));
    let matmul = ArrayTask::Matmul {
        pairs: vec![
            (Input::new(0), Input::new(1)),
            (Input::new(2), Input::new(3)),
        ],
        transposed: Transposed::Neither,
    };
    let inputs = [&a, &b, &a2, &b2].map(|m| Chunk::new(m.clone().into_dyn()).encode());
    let got = Chunk::decode(&call(&matmul, &inputs).unwrap()).unwrap();
    assert_eq!(got.shape(), &[7, 5]);
    let first = ndarray::Array2::zeros((7, 5));
    let mut want = first.iter().copied().collect::<Vec<f64>>();
    mul_add(&mut want, a.view(), b.view());
    let partial = ndarray::Array2::from_shape_vec((7, 5), want).unwrap();
    let got: Vec<f64> = got.iter().copied().collect();
    assert_naive_product(&got, &partial, a2.view(), b2.view(), "two pairs");
}

#[test]
fn matmul_with_one_side_transposed_and_gram_blocks() {
    let (a, b) = (signed(6, 9, 5), signed(4, 9, 6));
    let (a2, b2) = (signed(6, 3, 7), signed(4, 3, 8));
    let enc = |m: &ndarray::Array2<f64>| Chunk::new(m.clone().into_dyn()).encode();
    let got = |task: &ArrayTask, inputs: &[Encoded]| -> Vec<f64> {
        Chunk::decode(&call(task, inputs).unwrap())
            .unwrap()
            .iter()
            .copied()
            .collect()
    };
    // A·Bᵀ over two pairs, the right block of each transposed.
    let right = ArrayTask::Matmul {
        pairs: vec![
            (Input::new(0), Input::new(1)),
            (Input::new(2), Input::new(3)),
        ],
        transposed: Transposed::Right,
    };
    let c = got(&right, &[enc(&a), enc(&b), enc(&a2), enc(&b2)]);
    let first = a.dot(&b.t());
    assert_naive_product(&c, &first, a2.view(), b2.t(), "A·Bᵀ, two pairs");
    // Aᵀ·B, the left block transposed.
    let left = ArrayTask::Matmul {
        pairs: vec![(Input::new(0), Input::new(1))],
        transposed: Transposed::Left,
    };
    let (p, q) = (signed(9, 6, 9), signed(9, 4, 10));
    let c = got(&left, &[enc(&p), enc(&q)]);
    let zero = ndarray::Array2::zeros((6, 4));
    assert_naive_product(&c, &zero, p.t(), q.view(), "Aᵀ·B");
    // A block against its own transpose: the lower half computed, the result exactly symmetric.
    for (transposed, what) in [(Transposed::Right, "A·Aᵀ"), (Transposed::Left, "Aᵀ·A")] {
        let gram = ArrayTask::Matmul {
            pairs: vec![
                (Input::new(0), Input::new(0)),
                (Input::new(1), Input::new(1)),
            ],
            transposed,
        };
        let (m1, m2) = match transposed {
            Transposed::Left => (signed(9, 6, 11), signed(5, 6, 12)),
            _ => (signed(6, 9, 11), signed(6, 5, 12)),
        };
        let c = got(&gram, &[enc(&m1), enc(&m2)]);
        let (l1, r1, l2, r2) = match transposed {
            Transposed::Left => (m1.t(), m1.view(), m2.t(), m2.view()),
            _ => (m1.view(), m1.t(), m2.view(), m2.t()),
        };
        let first = l1.dot(&r1);
        assert_naive_product(&c, &first, l2, r2, what);
        let n = first.nrows();
        for i in 0..n {
            for j in 0..n {
                assert_eq!(
                    c[i * n + j].to_bits(),
                    c[j * n + i].to_bits(),
                    "{what}: ({i}, {j})"
                );
            }
        }
    }
    // Shapes that do not multiply once transposed are named as such.
    let bad = ArrayTask::Matmul {
        pairs: vec![(Input::new(0), Input::new(1))],
        transposed: Transposed::Right,
    };
    let e = call(&bad, &[enc(&signed(2, 3, 1)), enc(&signed(3, 2, 1))]).unwrap_err();
    assert!(
        e.to_string()
            .contains("blocks of shapes [2, 3] and [2, 3] (inputs 0 and 1, the right one transposed) do not multiply"),
        "{e}"
    );
}

#[test]
fn broadcast_in_dim_repeats_a_source_along_the_other_dimensions() {
    let eval = |expr: ChunkExpr, shape: &[usize]| {
        call(
            &ArrayTask::Eval {
                expr,
                shape: shape.to_vec(),
            },
            &[chunk(&[3]).encode()],
        )
    };
    // A column repeated along dimension 1, then a row repeated along dimension 0.
    let source = chunk(&[3]);
    for (dims, shape) in [(vec![0], [3, 2]), (vec![1], [2, 3])] {
        let expr = ChunkExpr::BroadcastInDim {
            source: Box::new(ChunkExpr::Data(Input::new(0))),
            source_shape: vec![3],
            dims: dims.clone(),
        };
        let got = Chunk::decode(&eval(expr, &shape).unwrap()).unwrap();
        for ((i, j), v) in got
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap()
            .indexed_iter()
        {
            let along = if dims == [0] { i } else { j };
            assert_eq!(*v, source.view()[[along]], "dims {dims:?} at ({i}, {j})");
        }
    }
    // Refused: a length that is neither the chunk's nor 1, dimensions out of order or range, a
    // count of dimensions that is not the source's.
    for (source_shape, dims, shape, reason) in [
        (
            vec![3],
            vec![0],
            vec![4, 3],
            "does not broadcast to [4, 3] along [0]",
        ),
        (
            vec![3, 1],
            vec![1, 0],
            vec![3, 3],
            "are not increasing positions",
        ),
        (vec![3], vec![2], vec![3, 3], "are not increasing positions"),
        (
            vec![3],
            vec![0, 1],
            vec![3, 3],
            "2 dimensions named for a source of shape [3]",
        ),
    ] {
        let expr = ChunkExpr::BroadcastInDim {
            source: Box::new(ChunkExpr::Full(1.0)),
            source_shape,
            dims,
        };
        let e = eval(expr, &shape).unwrap_err().to_string();
        assert!(
            e.contains("array.eval: broadcast_in_dim: ") && e.contains(reason),
            "{e}"
        );
    }
}
