//! How fast one block product runs: GFLOP/s of faer's matrix multiply (the kernel behind
//! `array.matmul`), of matrixmultiply's (ndarray's `general_mat_mul`, the kernel before it), and
//! of one whole `array.matmul` task as a worker runs it (decoding its inputs, encoding its
//! result), at the chunk size of the 8000² benchmark expression (1000² blocks, 8 pairs a task).
//!
//! ```text
//! cargo run --release -p rask-array --example gemm -- [BLOCK] [REPS]
//! ```
//!
//! Prints one JSON line per kernel. The candidates alternate within each repetition, so a busy
//! machine slows them alike. `per_cpu_s` divides the work by the CPU time this thread ran
//! (`/proc/thread-self/schedstat`), which the other processes on the machine do not inflate;
//! `wall` divides it by the elapsed time.

use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use rask_array::{ChunkSpec, family, random};
use rask_core::{Encoded, Registry};

/// Block products per `array.matmul` task in the benchmark (the default `split_every`).
const PAIRS: usize = 8;

type Error = Box<dyn std::error::Error>;

/// One kernel's measurements: its work per call, and (CPU, wall) seconds per call.
struct Run {
    kernel: &'static str,
    flop: f64,
    times: Vec<(f64, f64)>,
}

impl Run {
    fn new(kernel: &'static str, flop: f64) -> Run {
        Run {
            kernel,
            flop,
            times: Vec::new(),
        }
    }

    /// `{"min": .., "median": .., "max": ..}` GFLOP/s over the CPU (`cpu`) or wall seconds.
    fn rates(&self, cpu: bool) -> String {
        let mut r: Vec<f64> = self
            .times
            .iter()
            .map(|&(c, w)| self.flop / if cpu { c } else { w } / 1e9)
            .collect();
        r.sort_by(f64::total_cmp);
        format!(
            "{{\"min\": {:.1}, \"median\": {:.1}, \"max\": {:.1}}}",
            r[0],
            r[r.len() / 2],
            r[r.len() - 1]
        )
    }
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let block: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let reps: usize = args.next().map_or(Ok(9), |a| a.parse())?;
    if block == 0 || reps == 0 {
        return Err("BLOCK and REPS must be positive".into());
    }

    // One task of the benchmark's shape: a block row of x times a block column of x.T + 1.
    let mut registry = Registry::new();
    registry.register(family())?;
    let x = random(&[block, PAIRS * block], ChunkSpec::Size(block), 1)?;
    let y = &random(&[PAIRS * block, block], ChunkSpec::Size(block), 2)? + 1.0;
    let graph = x.dot(&y)?.graph();
    let done = registry
        .compute_local(&graph, &[])
        .map_err(|(key, e)| format!("{key}: {e}"))?;
    let task = graph
        .iter()
        .find(|t| t.func.as_str() == "array.matmul")
        .ok_or("the product's graph has no array.matmul task")?;
    let inputs: Vec<Encoded> = task
        .inputs
        .iter()
        .map(|k| {
            done.get(k)
                .cloned()
                .ok_or(format!("input {k} was not computed"))
        })
        .collect::<Result<_, _>>()?;
    let a = square(block, 3);
    let b = square(block, 4);
    let block_flop = 2.0 * (block as f64).powi(3);

    let mut runs = [
        Run::new(
            "faer matmul, one thread (array.matmul's kernel)",
            block_flop,
        ),
        Run::new(
            "matrixmultiply via ndarray general_mat_mul (the kernel before)",
            block_flop,
        ),
        Run::new(
            "array.matmul task of 8 block pairs, inputs decoded, result encoded",
            block_flop * PAIRS as f64,
        ),
    ];
    for _ in 0..reps {
        let mut c = Array2::<f64>::zeros((block, block));
        runs[0]
            .times
            .push(timed(|| faer_mul_add(&mut c, a.view(), b.view()))?);
        let mut c = Array2::<f64>::zeros((block, block));
        runs[1].times.push(timed(|| {
            ndarray::linalg::general_mat_mul(1.0, &a, &b, 1.0, &mut c)
        })?);
        let mut out = Ok(Encoded::from_tagged_vec(vec![]));
        runs[2].times.push(timed(|| {
            out = registry.call("array.matmul", &task.payload, &inputs)
        })?);
        out?;
    }
    for run in &runs {
        println!(
            "{{\"kernel\": \"{}\", \"block\": [{block}, {block}], \"reps\": {reps}, \"gflop_per_s\": {{\"per_cpu_s\": {}, \"wall\": {}}}}}",
            run.kernel,
            run.rates(true),
            run.rates(false)
        );
    }
    Ok(())
}

/// `c += a · b` as `array.matmul` does it (faer, one thread).
fn faer_mul_add(c: &mut Array2<f64>, a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) {
    let (m, n) = c.dim();
    let (Some(a), Some(b), Some(c)) = (a.to_slice(), b.to_slice(), c.as_slice_mut()) else {
        unreachable!("the blocks here are row-major");
    };
    let k = a.len() / m;
    faer::linalg::matmul::matmul(
        faer::MatMut::from_row_major_slice_mut(c, m, n),
        faer::Accum::Add,
        faer::MatRef::from_row_major_slice(a, m, k),
        faer::MatRef::from_row_major_slice(b, k, n),
        1.0,
        faer::Par::Seq,
    );
}

/// A square block of values in [0, 1) (the benchmark's uniform data).
fn square(n: usize, seed: u64) -> Array2<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array2::from_shape_simple_fn((n, n), || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// (CPU seconds of this thread, wall seconds) that `f` took.
fn timed(f: impl FnOnce()) -> Result<(f64, f64), Error> {
    let (cpu0, t0) = (thread_cpu_s()?, Instant::now());
    f();
    Ok((thread_cpu_s()? - cpu0, t0.elapsed().as_secs_f64()))
}

/// CPU time this thread has run, from the first field of `/proc/thread-self/schedstat` (ns).
fn thread_cpu_s() -> Result<f64, Error> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns: u64 = s
        .split_whitespace()
        .next()
        .ok_or("an empty /proc/thread-self/schedstat")?
        .parse()?;
    Ok(ns as f64 * 1e-9)
}
