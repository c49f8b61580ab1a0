//! Arrays against a direct single-process ndarray computation, over many shapes and chunkings
//! (seeded loops), with every graph run here by the array family in a [`Registry`]: each task's
//! result is encoded and decoded as it would be between workers.

use std::sync::OnceLock;

use ndarray::{ArrayD, Axis, Dimension, IxDyn, Slice};
use rask_client::delayed::graph_of;
use rask_core::{Data, Registry};

use super::*;
use crate::random::ChunkRng;

/// A registry holding the array family, as a worker's would.
pub(crate) fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::new();
        r.register(family()).unwrap();
        r
    })
}

/// Computes an array here: its whole graph through the registry, then the chunks assembled.
fn local(a: &Array) -> ArrayD<f64> {
    let roots = a.to_delayed();
    let done = registry()
        .compute_local(&graph_of(&roots), &[])
        .unwrap_or_else(|(key, e)| panic!("{key} failed: {e}"));
    let chunks = roots
        .iter()
        .map(|d| Chunk::decode(&done[d.key()]).unwrap())
        .collect();
    a.assemble(chunks).unwrap()
}

/// What `random` must give: each chunk's own stream, placed at its offset.
fn reference_random(a: &Array, seed: u64) -> ArrayD<f64> {
    let mut out = ArrayD::zeros(IxDyn(a.shape()));
    for (i, idx) in a.grid().block_indices().iter().enumerate() {
        let shape = a.grid().block_shape(idx);
        let mut data = vec![0.0; shape.iter().product()];
        ChunkRng::new(seed, i as u64).fill(&mut data);
        let block = ArrayD::from_shape_vec(shape.clone(), data).unwrap();
        let mut view = out.view_mut();
        for (d, (&o, &s)) in a.grid().block_offset(idx).iter().zip(&shape).enumerate() {
            view.slice_axis_inplace(Axis(d), Slice::from(o..o + s));
        }
        view.assign(&block);
    }
    out
}

fn close(got: &ArrayD<f64>, want: &ArrayD<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (g, w) in got.iter().zip(want.iter()) {
        let tol = 1e-9 * w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what}: {g} != {w}"
        );
    }
}

fn scalar(x: f64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), x)
}

/// Small deterministic generator for test cases.
struct Cases(ChunkRng);

impl Cases {
    fn below(&mut self, n: usize) -> usize {
        let mut x = [0.0];
        self.0.fill(&mut x);
        (x[0] * n as f64) as usize
    }

    /// A shape of 1..=3 dimensions of 1..=9 and chunks of 1..=dim (1-element and uneven last
    /// chunks included).
    fn shape_and_chunks(&mut self) -> (Vec<usize>, Vec<usize>) {
        let ndim = 1 + self.below(3);
        let shape: Vec<usize> = (0..ndim).map(|_| 1 + self.below(9)).collect();
        let chunks = shape.iter().map(|&d| 1 + self.below(d)).collect();
        (shape, chunks)
    }
}

fn var_axis(a: &ArrayD<f64>, axis: usize, ddof: f64) -> ArrayD<f64> {
    a.var_axis(Axis(axis), ddof)
}

#[test]
fn reductions_match_ndarray_for_many_shapes_and_chunks() {
    let mut cases = Cases(ChunkRng::new(99, 0));
    for case in 0..60 {
        let (shape, chunks) = cases.shape_and_chunks();
        let seed = case as u64;
        let x = random(&shape, chunks.as_slice(), seed)
            .unwrap()
            .split_every(2 + case % 4);
        let r = reference_random(&x, seed);
        let what = |op: &str| format!("case {case}: {op} of {shape:?} in chunks {chunks:?}");
        close(&local(&x), &r, &what("values"));
        close(
            &local(&x.sum(None).unwrap()),
            &scalar(r.sum()),
            &what("sum"),
        );
        close(
            &local(&x.mean(None).unwrap()),
            &scalar(r.mean().unwrap()),
            &what("mean"),
        );
        close(
            &local(&x.var(None, 0.0).unwrap()),
            &scalar(r.var(0.0)),
            &what("var"),
        );
        close(
            &local(&x.std(None, 0.0).unwrap()),
            &scalar(r.std(0.0)),
            &what("std"),
        );
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        close(&local(&x.min(None).unwrap()), &scalar(min), &what("min"));
        close(&local(&x.max(None).unwrap()), &scalar(max), &what("max"));
        for (ax, &len) in shape.iter().enumerate() {
            close(
                &local(&x.sum(Some(ax)).unwrap()),
                &r.sum_axis(Axis(ax)),
                &what(&format!("sum axis {ax}")),
            );
            close(
                &local(&x.mean(Some(ax)).unwrap()),
                &r.mean_axis(Axis(ax)).unwrap(),
                &what(&format!("mean axis {ax}")),
            );
            if len > 1 {
                close(
                    &local(&x.std(Some(ax), 1.0).unwrap()),
                    &var_axis(&r, ax, 1.0).mapv(f64::sqrt),
                    &what(&format!("std axis {ax}")),
                );
            }
            close(
                &local(&x.var(Some(ax), 0.0).unwrap()),
                &var_axis(&r, ax, 0.0),
                &what(&format!("var axis {ax}")),
            );
            let mn = r.fold_axis(Axis(ax), f64::INFINITY, |&m, &v| m.min(v));
            let mx = r.fold_axis(Axis(ax), f64::NEG_INFINITY, |&m, &v| m.max(v));
            close(
                &local(&x.min(Some(ax)).unwrap()),
                &mn,
                &what(&format!("min axis {ax}")),
            );
            close(
                &local(&x.max(Some(ax)).unwrap()),
                &mx,
                &what(&format!("max axis {ax}")),
            );
            close(
                &local(&x.argmin(Some(ax)).unwrap()),
                &r.map_axis(Axis(ax), |lane| first_best(lane.iter(), |a, b| a < b)),
                &what(&format!("argmin axis {ax}")),
            );
            close(
                &local(&x.argmax(Some(ax)).unwrap()),
                &r.map_axis(Axis(ax), |lane| first_best(lane.iter(), |a, b| a > b)),
                &what(&format!("argmax axis {ax}")),
            );
        }
        close(
            &local(&x.argmin(None).unwrap()),
            &scalar(first_best(r.iter(), |a, b| a < b)),
            &what("argmin"),
        );
        close(
            &local(&x.argmax(None).unwrap()),
            &scalar(first_best(r.iter(), |a, b| a > b)),
            &what("argmax"),
        );
    }
}

/// An array method comparing with another array.
type Comparison = fn(&Array, &Array) -> Result<Array, ArrayError>;

/// What a comparison computes, for one pair of values.
type Truth = fn(f64, f64) -> bool;

/// The position of the first value no later one beats (`better(later, best)`), as f64.
fn first_best<'a>(values: impl Iterator<Item = &'a f64>, better: fn(f64, f64) -> bool) -> f64 {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in values.enumerate() {
        if best.is_none_or(|(_, b)| better(v, b)) {
            best = Some((i, v));
        }
    }
    best.map_or(f64::NAN, |(i, _)| i as f64)
}

#[test]
fn arg_reductions_take_the_first_of_ties_and_of_nans() {
    let lit = |v: &[f64]| ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap();
    // Ties across chunks and across combine nodes: the lowest index wins.
    let a = from_ndarray(&lit(&[3.0, 0.0, 0.0, 3.0, 0.0, 3.0]), 1)
        .unwrap()
        .split_every(2);
    close(
        &local(&a.argmax(None).unwrap()),
        &scalar(0.0),
        "argmax of ties",
    );
    close(
        &local(&a.argmin(None).unwrap()),
        &scalar(1.0),
        "argmin of ties",
    );
    close(
        &local(&zeros(&[5, 6], [2, 4]).unwrap().argmax(Some(1)).unwrap()),
        &ArrayD::zeros(IxDyn(&[5])),
        "argmax of zeros along an axis",
    );
    // NumPy returns the first NaN's index, for argmin and argmax alike.
    let n = from_ndarray(&lit(&[1.0, 5.0, f64::NAN, 0.0, f64::NAN]), 2).unwrap();
    close(
        &local(&n.argmin(None).unwrap()),
        &scalar(2.0),
        "argmin with NaN",
    );
    close(
        &local(&n.argmax(None).unwrap()),
        &scalar(2.0),
        "argmax with NaN",
    );
    // Indices are global: a chunk's offset is added, in C order of the whole array.
    let m = ArrayD::from_shape_fn(IxDyn(&[4, 5]), |ix| {
        -(((ix[0] * 7 + ix[1] * 3) % 11) as f64)
    });
    let x = from_ndarray(&m, [3, 2]).unwrap();
    close(
        &local(&x.argmin(None).unwrap()),
        &scalar(first_best(m.iter(), |a, b| a < b)),
        "argmin of a 2-d array",
    );
    close(
        &local(&x.argmin(Some(0)).unwrap()),
        &m.map_axis(Axis(0), |lane| first_best(lane.iter(), |a, b| a < b)),
        "argmin along axis 0",
    );
    // An empty array has no extreme: the task fails and says so.
    let empty = random(&[4], 2, 0)
        .unwrap()
        .slice(&[Range::new(2, 2)])
        .unwrap();
    let g = empty.argmin(None).unwrap().graph();
    let (_, err) = registry().compute_local(&g, &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("array.partial: argmin() of an empty chunk has no identity"),
        "{err}"
    );
}

#[test]
fn elementwise_transpose_slice_and_rechunk_match_ndarray() {
    let mut cases = Cases(ChunkRng::new(5, 0));
    for case in 0..60 {
        let (shape, chunks) = cases.shape_and_chunks();
        let what = |op: &str| format!("case {case}: {op} of {shape:?} in chunks {chunks:?}");
        let x = random(&shape, chunks.as_slice(), 7).unwrap();
        let r = reference_random(&x, 7);
        let lit = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
            (0..ix.ndim()).map(|d| ix[d] * (d + 1)).sum::<usize>() as f64
        });
        let y = from_ndarray(&lit, chunks.as_slice()).unwrap();
        // (x * 2 + y - 1) / 4, and 3 - x, and -x
        let e = &(&x * 2.0).add(&y).unwrap() - 1.0;
        let e = &e / 4.0;
        close(
            &local(&e),
            &((&r * 2.0 + &lit - 1.0) / 4.0),
            &what("elementwise"),
        );
        close(&local(&(3.0 - &x)), &(3.0 - &r), &what("scalar first"));
        close(
            &local(&(-&x).mul(&x).unwrap()),
            &(-&r * &r),
            &what("neg mul"),
        );
        close(&local(&x.sqrt()), &r.mapv(f64::sqrt), &what("sqrt"));
        close(&local(&x.exp()), &r.mapv(f64::exp), &what("exp"));
        close(
            &local(&(&x + 0.5).log().abs()),
            &(&r + 0.5).mapv(|v| v.ln().abs()),
            &what("log abs"),
        );
        // Comparisons give 1.0 and 0.0, against an array and against itself.
        let half = full(&shape, chunks.as_slice(), 0.5).unwrap();
        let comparisons: [(Comparison, Truth); 6] = [
            (Array::less, |a, b| a < b),
            (Array::less_equal, |a, b| a <= b),
            (Array::greater, |a, b| a > b),
            (Array::greater_equal, |a, b| a >= b),
            (Array::equal, |a, b| a == b),
            (Array::not_equal, |a, b| a != b),
        ];
        for (i, (op, f)) in comparisons.into_iter().enumerate() {
            let truth = |a: f64, b: f64| if f(a, b) { 1.0 } else { 0.0 };
            close(
                &local(&op(&x, &half).unwrap()),
                &r.mapv(|v| truth(v, 0.5)),
                &what(&format!("comparison {i} with 0.5")),
            );
            close(
                &local(&op(&x, &x).unwrap()),
                &r.mapv(|v| truth(v, v)),
                &what(&format!("comparison {i} with itself")),
            );
        }
        // the elementwise result reduced (fused) and materialized agree
        let sum = local(&e.sum(None).unwrap());
        close(&sum, &scalar(local(&e).sum()), &what("fused sum"));
        // transpose
        let rt = r.t().to_owned();
        close(&local(&x.t()), &rt, &what("transpose"));
        close(
            &local(&(&x.t() + 1.0).t()),
            &(&r + 1.0),
            &what("transpose twice"),
        );
        close(
            &local(&x.t().sum(Some(0)).unwrap()),
            &rt.sum_axis(Axis(0)),
            &what("transpose sum"),
        );
        // a slice with random bounds and steps
        let ranges: Vec<Range> = shape
            .iter()
            .map(|&d| {
                let a = cases.below(d + 1);
                let b = a + cases.below(d + 1 - a);
                Range::new(a, b).step(1 + cases.below(3))
            })
            .collect();
        let s = x.slice(&ranges).unwrap();
        let mut view = r.view();
        for (d, rg) in ranges.iter().enumerate() {
            view.slice_axis_inplace(
                Axis(d),
                Slice::new(rg.start as isize, Some(rg.stop as isize), rg.step as isize),
            );
        }
        close(
            &local(&s),
            &view.to_owned(),
            &what(&format!("slice {ranges:?}")),
        );
        if !view.is_empty() {
            close(
                &local(&s.sum(None).unwrap()),
                &scalar(view.sum()),
                &what("slice sum"),
            );
        }
        // rechunk to other random chunks
        let new: Vec<usize> = shape.iter().map(|&d| 1 + cases.below(d)).collect();
        let rc = x.rechunk(new.as_slice()).unwrap();
        assert_eq!(
            rc.chunks(),
            Grid::new(&shape, &ChunkSpec::Sizes(new.clone()), 8)
                .unwrap()
                .chunks()
        );
        close(&local(&rc), &r, &what(&format!("rechunk to {new:?}")));
        close(
            &local(&rc.add(&x.rechunk(new.as_slice()).unwrap()).unwrap()),
            &(&r * 2.0),
            &what("rechunked add"),
        );
    }
}

#[test]
fn dot_matches_ndarray() {
    let mut cases = Cases(ChunkRng::new(11, 0));
    for case in 0..30 {
        let (m, k, n) = (
            1 + cases.below(12),
            1 + cases.below(12),
            1 + cases.below(12),
        );
        let (cm, ck, cn) = (1 + cases.below(m), 1 + cases.below(k), 1 + cases.below(n));
        let a = random(&[m, k], [cm, ck], 1)
            .unwrap()
            .split_every(2 + case % 3);
        let b = random(&[k, n], [ck, cn], 2).unwrap();
        let ra = reference_random(&a, 1)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let rb = reference_random(&b, 2)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let what = format!("case {case}: dot of {m}x{k} ({cm},{ck}) and {k}x{n} ({ck},{cn})");
        close(&local(&a.dot(&b).unwrap()), &ra.dot(&rb).into_dyn(), &what);
    }
    // The seed expression on a square matrix: (x.dot(x.T + 1) - x.mean()).std()
    let x = random(&[13, 13], [5, 5], 3).unwrap();
    let r = reference_random(&x, 3)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let got = x
        .dot(&(&x.t() + 1.0))
        .unwrap()
        .sub(&x.mean(None).unwrap())
        .unwrap()
        .std(None, 0.0)
        .unwrap();
    let want = (r.dot(&(&r.t() + 1.0)) - r.mean().unwrap()).std(0.0);
    close(&local(&got), &scalar(want), "seed expression");
    close(
        &local(&x.sum(Some(0)).unwrap()),
        &r.sum_axis(Axis(0)).into_dyn(),
        "seed sum(axis=0)",
    );
}

#[test]
fn creation_functions() {
    close(
        &local(&zeros(&[4, 3], 2).unwrap()),
        &ArrayD::zeros(IxDyn(&[4, 3])),
        "zeros",
    );
    close(
        &local(&ones(&[5], 2).unwrap().sum(None).unwrap()),
        &scalar(5.0),
        "ones",
    );
    let a = arange(1.0, 10.0, 2.0, 2).unwrap();
    assert_eq!(a.shape(), &[5]);
    close(
        &local(&a),
        &ArrayD::from_shape_vec(IxDyn(&[5]), vec![1.0, 3.0, 5.0, 7.0, 9.0]).unwrap(),
        "arange",
    );
    assert_eq!(arange(0.0, -1.0, 1.0, 2).unwrap().shape(), &[0]);
    assert!(
        arange(0.0, 1.0, 0.0, 2)
            .unwrap_err()
            .to_string()
            .contains("non-zero step")
    );
    // random is reproducible and chunk-keyed
    let x1 = local(&random(&[6, 6], 3, 9).unwrap());
    let x2 = local(&random(&[6, 6], 3, 9).unwrap());
    assert_eq!(x1, x2);
    assert_ne!(x1, local(&random(&[6, 6], 3, 10).unwrap()));
    // .npy files
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    npy::write(&p, &x1).unwrap();
    let f = from_npy(&p, [4, 5]).unwrap();
    close(&local(&f), &x1, "from_npy");
    close(
        &local(&f.mean(Some(1)).unwrap()),
        &x1.mean_axis(Axis(1)).unwrap(),
        "from_npy mean",
    );
    // auto chunks
    let big = random(&[2000, 2000, 2000], ChunkSpec::Auto, 0).unwrap();
    assert_eq!(big.chunks()[0], vec![250; 8]);
    assert_eq!(big.nblocks(), 512);
}

#[test]
fn bad_input_is_a_clear_error() {
    let x = random(&[4, 6], 2, 0).unwrap();
    let y = random(&[4, 6], 3, 0).unwrap();
    let z = random(&[6, 4], 2, 0).unwrap();
    let e = x.add(&y).unwrap_err().to_string();
    assert!(
        e.contains("different chunks") && e.contains("rechunk"),
        "{e}"
    );
    let e = x.add(&z).unwrap_err().to_string();
    assert!(e.contains("[4, 6]") && e.contains("[6, 4]"), "{e}");
    let e = x.dot(&x).unwrap_err().to_string();
    assert!(e.contains("6 columns against 4 rows"), "{e}");
    let e = x
        .dot(&random(&[6, 2], [3, 2], 0).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("column chunks [2, 2, 2]"), "{e}");
    let e = x.sum(None).unwrap().dot(&x).unwrap_err().to_string();
    assert!(e.contains("2-d"), "{e}");
    let e = x.sum(Some(2)).unwrap_err().to_string();
    assert!(e.contains("axis 2") && e.contains("2 dimensions"), "{e}");
    let e = x
        .slice(&[Range::new(0, 5), Range::full(6)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of bounds"), "{e}");
    let e = x.slice(&[Range::new(0, 1)]).unwrap_err().to_string();
    assert!(e.contains("1 ranges"), "{e}");
    let e = x.rechunk([0, 2]).unwrap_err().to_string();
    assert!(e.contains("chunk size 0"), "{e}");
    let e = random(&[4], ChunkSpec::Explicit(vec![vec![1, 2]]), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("add up to 3"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.npy");
    std::fs::write(&p, b"\x93NUMPY\x01\x00").unwrap();
    let e = from_npy(&p, 2).unwrap_err().to_string();
    assert!(e.contains("bad.npy"), "{e}");
}

#[test]
fn mean_graph_is_a_tree_of_fused_partials() {
    let x = random(&[40, 40, 40], 10, 0).unwrap();
    let g = x.mean(None).unwrap().graph();
    // 64 fused random+partial tasks, then 8 combines of 8 and a root: nothing materializes a chunk.
    let count = |f: &str| g.iter().filter(|t| t.func.as_str() == f).count();
    assert_eq!(count("array.partial"), 64);
    assert_eq!(count("array.combine"), 9);
    assert_eq!(count("array.eval"), 0);
    // Post-order: each group's partials come right before its combine (so the scheduler's
    // priorities finish a group before starting the next).
    assert_eq!(g[8].func.as_str(), "array.combine");
    let x = x.split_every(4);
    let g = x.sum(None).unwrap().graph();
    assert_eq!(
        g.iter()
            .filter(|t| t.func.as_str() == "array.combine")
            .count(),
        16 + 4 + 1
    );
}

#[test]
fn shared_chunks_are_computed_once() {
    let x = random(&[20, 20], 10, 0).unwrap();
    let z = x
        .dot(&(&x.t() + 1.0))
        .unwrap()
        .sub(&x.mean(None).unwrap())
        .unwrap()
        .std(None, 0.0)
        .unwrap();
    let g = z.graph();
    let count = |f: &str| g.iter().filter(|t| t.func.as_str() == f).count();
    // x's 4 chunks, each once (`x.T + 1` is never made: the product is x·xᵀ plus the shift
    // times x's row sums); 3 products of 2 pairs each, the block below the diagonal being the
    // transpose of the one above.
    assert_eq!(count("array.eval"), 4);
    assert_eq!(count("array.matmul"), 3);
}

#[test]
fn array_graphs_visualize() {
    let x = random(&[20, 20], 10, 0).unwrap();
    let m = x.mean(Some(0)).unwrap();
    let dot = rask_client::visualize::to_dot(&m.graph());
    assert_eq!(dot.matches("label=\"partial\"").count(), 4);
    assert_eq!(dot.matches("label=\"combine\"").count(), 2);
    assert_eq!(dot.matches(" -> ").count(), 4);
    let dir = tempfile::tempdir().unwrap();
    let w = m.visualize(dir.path().join("mean")).unwrap();
    assert!(w.dot.ends_with("mean.dot"));
    assert_eq!(std::fs::read_to_string(&w.dot).unwrap(), dot);
}

#[test]
fn from_pickled_reads_raw_values_a_python_task_returned() {
    use bytes::Bytes;
    use rask_client::delayed::{Delayed, Deps};
    use rask_core::{FuncName, Key, Pickled};

    // The Python task is given here as its result: pickle.dumps(values.tobytes(), protocol=5).
    let source: Delayed<Pickled> = Delayed::from_parts(
        Key::new("to_chunk_bytes-1"),
        FuncName::new("python.call"),
        Bytes::new(),
        Deps::new(),
    );
    let pickle_of = |values: &[f64]| {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut p = vec![0x80, 5, b'B'];
        p.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        p.extend_from_slice(&raw);
        p.extend_from_slice(b"\x94.");
        Pickled(Bytes::from(p)).encode()
    };
    let run = |a: &Array, given: rask_core::Encoded| {
        let roots = a.to_delayed();
        let graph: Vec<_> = graph_of(&roots)
            .into_iter()
            .filter(|t| t.key != *source.key())
            .collect();
        registry()
            .compute_local(&graph, &[(source.key().clone(), given)])
            .map(|done| a.assemble(vec![Chunk::decode(&done[roots[0].key()]).unwrap()]))
    };
    let a = from_pickled(&source, &[2, 3]).unwrap();
    assert_eq!(a.chunks(), &[vec![2], vec![3]]);
    let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let got = run(&(&a * 2.0), pickle_of(&values)).unwrap().unwrap();
    let want = ArrayD::from_shape_vec(IxDyn(&[2, 3]), values.to_vec()).unwrap() * 2.0;
    assert_eq!(got, want);
    // Too few values for the shape, and a pickle of something else, name the problem.
    let (_, err) = run(&a, pickle_of(&values[..4])).unwrap_err();
    assert!(
        err.to_string()
            .contains("32 bytes of values for a chunk of shape [2, 3] (6 f64 values)"),
        "{err}"
    );
    let (_, err) = run(&a, Pickled(Bytes::from_static(b"\x80\x05K\x01.")).encode()).unwrap_err();
    assert!(
        err.to_string().contains("not a pickled bytes object"),
        "{err}"
    );
}

#[test]
fn raw_placement_matches_assemble() {
    // Uneven chunks in 0 to 3 dimensions, a transpose, and an empty array.
    let cases = vec![
        arange(0.0, 23.0, 1.0, 5).unwrap(),
        random(&[7, 5], [3, 2], 1).unwrap(),
        random(&[6, 5, 4], [4, 2, 3], 2).unwrap(),
        random(&[6, 5], [4, 2], 3).unwrap().t(),
        random(&[9, 4], 4, 4).unwrap().sum(None).unwrap(),
        zeros(&[0, 3], 2).unwrap(),
    ];
    for a in cases {
        let roots = a.to_delayed();
        let done = registry().compute_local(&graph_of(&roots), &[]).unwrap();
        let chunks: Vec<Chunk> = roots
            .iter()
            .map(|d| Chunk::decode(&done[d.key()]).unwrap())
            .collect();
        let want = a.assemble(chunks.clone()).unwrap();
        let mut out = vec![0u8; want.len() * 8];
        a.place_raw(&mut chunks.clone().into_iter(), &mut out)
            .unwrap();
        let got: Vec<f64> = out
            .chunks_exact(8)
            .map(|b| f64::from_ne_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "{a:?}");
        // A buffer of the wrong size, too few chunks, a chunk of the wrong shape: errors.
        let mut short = vec![0u8; out.len() + 8];
        assert!(
            a.place_raw(&mut chunks.clone().into_iter(), &mut short)
                .is_err()
        );
        if !want.is_empty() {
            let fewer = chunks[..chunks.len() - 1].to_vec();
            let err = a.place_raw(&mut fewer.into_iter(), &mut out).unwrap_err();
            assert!(err.to_string().contains("no computed chunk"), "{err}");
            let wrong = vec![Chunk::scalar(1.0); chunks.len()];
            if a.ndim() > 0 {
                let err = a.place_raw(&mut wrong.into_iter(), &mut out).unwrap_err();
                assert!(err.to_string().contains("expected"), "{err}");
            }
        }
    }
}

/// How many tasks of `func` the array's graph holds.
fn tasks_of(a: &Array, func: &str) -> usize {
    graph_of(&a.to_delayed())
        .iter()
        .filter(|t| t.func.as_str() == func)
        .count()
}

#[test]
fn gram_products_match_ndarray_and_multiply_only_half_the_blocks() {
    let mut cases = Cases(ChunkRng::new(17, 0));
    for case in 0..24 {
        let (m, k) = (1 + cases.below(11), 1 + cases.below(11));
        let (cm, ck) = (1 + cases.below(m), 1 + cases.below(k));
        let x = random(&[m, k], [cm, ck], 5)
            .unwrap()
            .split_every(2 + case % 3);
        let r = reference_random(&x, 5)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let what = |form: &str| format!("case {case}: {form} of {m}x{k} in ({cm},{ck})");
        let forms: [(&str, Array, ndarray::Array2<f64>); 7] = [
            ("x.dot(x.T)", x.dot(&x.t()).unwrap(), r.dot(&r.t())),
            (
                "x.dot(x.T + 1)",
                x.dot(&(&x.t() + 1.0)).unwrap(),
                r.dot(&(&r.t() + 1.0)),
            ),
            (
                "x.dot(0.5 - 2 * x.T)",
                x.dot(&(0.5 - &(2.0 * &x.t()))).unwrap(),
                r.dot(&(0.5 - &(2.0 * &r.t()))),
            ),
            (
                "x.dot(-x.T / 4)",
                x.dot(&(&(-&x.t()) / 4.0)).unwrap(),
                r.dot(&(-&r.t() / 4.0)),
            ),
            ("x.T.dot(x)", x.t().dot(&x).unwrap(), r.t().dot(&r)),
            (
                "(x.T - 3).dot(x)",
                (&x.t() - 3.0).dot(&x).unwrap(),
                (&r.t() - 3.0).dot(&r),
            ),
            (
                "(3 * x.T).dot(x)",
                (3.0 * &x.t()).dot(&x).unwrap(),
                (3.0 * &r.t()).dot(&r),
            ),
        ];
        for (form, got, want) in forms {
            let got = local(&got);
            close(&got, &want.into_dyn(), &what(form));
            if !form.contains('+') && !form.contains('-') || form == "x.dot(-x.T / 4)" {
                // No shift: the product itself, exactly symmetric.
                let g = got.view().into_dimensionality::<ndarray::Ix2>().unwrap();
                assert_eq!(g, g.t(), "{}: symmetric", what(form));
            }
        }
    }
    // Half the products: with 4 x 3 blocks, 10 of the 16 output blocks are multiplied (each a
    // task of its 3 pairs), against 16 for a product of two different arrays.
    let x = random(&[8, 6], [2, 2], 1).unwrap();
    let y = random(&[8, 6], [2, 2], 2).unwrap();
    assert_eq!(
        tasks_of(&x.dot(&(&x.t() + 1.0)).unwrap(), "array.matmul"),
        10
    );
    assert_eq!(tasks_of(&x.t().dot(&x).unwrap(), "array.matmul"), 6);
    assert_eq!(
        tasks_of(&x.dot(&(&y.t() + 1.0)).unwrap(), "array.matmul"),
        16
    );
    // Not a Gram form: a transpose under another array, or under different scalars per block.
    let shifted = (&x.t() + 1.0).add(&y.t().mul(&y.t()).unwrap()).unwrap();
    assert_eq!(tasks_of(&x.dot(&shifted).unwrap(), "array.matmul"), 16);
    let r = reference_random(&x, 1)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let ry = reference_random(&y, 2)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    close(
        &local(&x.dot(&shifted).unwrap()),
        &r.dot(&(&(&r.t() + 1.0) + &(&ry.t() * &ry.t()))).into_dyn(),
        "x.dot(x.T + 1 + y.T * y.T)",
    );
}
