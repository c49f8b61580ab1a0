//! The seed workloads `rask run` offers, usable from tests and benchmarks too.

use rask_array::{self as array, Array, ArrayError, ChunkSpec};
use rask_client::delayed::{Delayed, delayed, delayed_with};
use rask_client::{Client, ClientError, Future};
use rask_core::{Operand, Value};

use crate::seed::{self, ADD, CUSTOM_OP, INC, SUM, lit};

/// The seed notebook's delayed example: `sum(add(inc(x), custom_op(x)) for x in 0..6)`, which is 131.
pub fn seed_delayed_graph() -> Delayed<Value> {
    let parts: Vec<Delayed<Value>> = (0..6i64)
        .map(|x| {
            let a = delayed(INC, lit(x));
            let b = delayed(CUSTOM_OP, lit(x));
            delayed_with(ADD, |d| (d.input(&a).into(), d.input(&b).into()))
        })
        .collect();
    delayed_with(SUM, |d| parts.iter().map(|p| d.input(p).into()).collect())
}

pub async fn seed_delayed(client: &Client) -> Result<i64, ClientError> {
    let v = client.compute(&seed_delayed_graph()).result().await?;
    v.as_int().map_err(|e| ClientError::Decode {
        key: "sum".into(),
        reason: e.to_string(),
    })
}

/// The seed notebook's futures pipeline: for each of `pairs` (src, dst) pairs,
/// `save(process2(process1(load(src))), dst)`, each step taking `step_s` seconds.
/// Returns the futures of the `save` calls, in order.
pub fn futures_pipeline(client: &Client, pairs: usize, step_s: f64) -> Vec<Future<Value>> {
    let step = |x: Operand<Value>| seed::Step { x, seconds: step_s };
    (0..pairs)
        .map(|i| {
            let loaded = client.submit(seed::LOAD, step(lit(i as i64)));
            let p1 = client.submit_with(seed::PROCESS1, |d| step(d.input(&loaded).into()));
            let p2 = client.submit_with(seed::PROCESS2, |d| step(d.input(&p1).into()));
            client.submit_with(seed::SAVE, |d| seed::Save {
                x: d.input(&p2).into(),
                dst: format!("out-{i}"),
                seconds: step_s,
            })
        })
        .collect()
}

/// What the pipeline's `save` of pair `i` returns.
pub fn futures_pipeline_expected(i: usize) -> Value {
    Value::List(vec![
        Value::Str(format!("out-{i}")),
        Value::Int(2 * i as i64 + 1),
    ])
}

/// A burst of `tasks` independent tasks of `task_s` seconds each (`sleep(task_s, i)`): a queue the
/// autoscaler sees build up and drain. Returns the futures, whose results are `0..tasks` in order.
pub fn burst(client: &Client, tasks: usize, task_s: f64) -> Vec<Future<Value>> {
    client.map(
        seed::SLEEP,
        (0..tasks).map(|i| seed::Sleep {
            seconds: task_s,
            value: lit(i as i64),
        }),
    )
}

/// Indices of the burst's results that are not what `sleep(task_s, i)` returns.
pub async fn burst_wrong(futures: &[Future<Value>]) -> Result<Vec<usize>, ClientError> {
    let mut wrong = Vec::new();
    for (i, f) in futures.iter().enumerate() {
        if f.result().await? != Value::Int(i as i64) {
            wrong.push(i);
        }
    }
    Ok(wrong)
}

/// The seed's `da.random.random((n, n, n), chunks=chunk).mean()`: (the mean, chunks computed).
pub async fn array_mean(
    client: &Client,
    n: usize,
    chunks: ChunkSpec,
    seed: u64,
) -> Result<(f64, usize), ArrayError> {
    let x = array::random(&[n, n, n], chunks, seed)?;
    let mean = x.mean(None)?.compute_scalar(client).await?;
    Ok((mean, x.nblocks()))
}

/// Whether a mean of `n` uniform [0, 1) values is plausible: within 6 standard errors of 0.5.
/// Constant data of 0.5 passes this; [`uniform_var_plausible`] is the check that it does not.
pub fn uniform_mean_plausible(mean: f64, n: usize) -> bool {
    (mean - 0.5).abs() <= 6.0 * (1.0 / 12.0 / n.max(1) as f64).sqrt()
}

/// The variance of the seed's random array (the same values [`array_mean`] averages).
pub async fn array_var(
    client: &Client,
    n: usize,
    chunks: ChunkSpec,
    seed: u64,
) -> Result<f64, ArrayError> {
    let x = array::random(&[n, n, n], chunks, seed)?;
    x.var(None, 0.0)?.compute_scalar(client).await
}

/// Whether the variance of `n` uniform [0, 1) values is plausible: within 6 standard errors of
/// 1/12. The sample variance's standard error is √((μ₄ − σ⁴)/n) = √(1/(180 n)) for U(0, 1).
pub fn uniform_var_plausible(var: f64, n: usize) -> bool {
    (var - 1.0 / 12.0).abs() <= 6.0 * (1.0 / 180.0 / n.max(1) as f64).sqrt()
}

/// Whether `std` is plausible for `(x.dot(x.T + 1) - x.mean()).std()` on an `n`×`n` matrix of
/// uniform [0, 1) values. Each entry is Σₖ xᵢₖ(xⱼₖ + 1), a sum of `n` independent terms of
/// variance 7/9 − (3/4)² = 31/144, so the entries' variance is 31n/144 (numpy agrees: 0.215–0.218
/// n at n = 1000). Entries share rows and columns, so the sample variance wanders more than for
/// independent values: allowed 6·√(2/n) relative, ±9.5% at n = 8000, ±19% at n = 2000.
pub fn linalg_std_plausible(std: f64, n: usize) -> bool {
    let n = n.max(1) as f64;
    let expected = 31.0 * n / 144.0;
    std.is_finite() && ((std * std) / expected - 1.0).abs() <= 6.0 * (2.0 / n).sqrt()
}

/// Whether `n` column sums of an `n`×`n` uniform [0, 1) matrix are plausible: each within 6
/// standard deviations (√(n/12)) of n/2, and their mean within 6 standard errors.
pub fn column_sums_plausible(sums: &[f64], n: usize) -> bool {
    let nf = n.max(1) as f64;
    let sd = (nf / 12.0).sqrt();
    let mean = sums.iter().sum::<f64>() / sums.len().max(1) as f64;
    sums.len() == n
        && sums.iter().all(|s| (s - nf / 2.0).abs() <= 6.0 * sd)
        && (mean - nf / 2.0).abs() <= 6.0 * sd / nf.sqrt()
        && sums.iter().any(|s| (s - sums[0]).abs() > 0.0)
}

/// The seed's linear-algebra demo on an `n`×`n` random matrix `x`: `x.sum(axis=0)` and
/// `(x.dot(x.T + 1) - x.mean()).std()`.
pub fn array_linalg_graphs(
    n: usize,
    chunks: ChunkSpec,
    seed: u64,
) -> Result<(Array, Array), ArrayError> {
    let x = array::random(&[n, n], chunks, seed)?;
    let sum0 = x.sum(Some(0))?;
    let expr = x
        .dot(&(&x.t() + 1.0))?
        .sub(&x.mean(None)?)?
        .std(None, 0.0)?;
    Ok((sum0, expr))
}

#[cfg(test)]
mod plausibility_tests {
    use super::*;

    #[test]
    fn constant_data_fails_the_checks_that_real_uniform_data_passes() {
        let n = 1_000_000;
        // A constant 0.5 passes the mean and fails the variance.
        assert!(uniform_mean_plausible(0.5, n));
        assert!(!uniform_var_plausible(0.0, n));
        assert!(uniform_var_plausible(1.0 / 12.0 + 1e-4, n));
        assert!(!uniform_var_plausible(1.0 / 12.0 + 1e-2, n));
        // The expression's std: a constant matrix gives 0; the right scale passes.
        let m = 8000;
        assert!(!linalg_std_plausible(0.0, m));
        assert!(!linalg_std_plausible(f64::NAN, m));
        assert!(linalg_std_plausible((31.0 * m as f64 / 144.0).sqrt(), m));
        assert!(!linalg_std_plausible(
            (2.0 * 31.0 * m as f64 / 144.0).sqrt(),
            m
        ));
        // Column sums: all n/2 exactly is constant data.
        assert!(!column_sums_plausible(&vec![m as f64 / 2.0; m], m));
        let spread: Vec<f64> = (0..m)
            .map(|i| m as f64 / 2.0 + (i % 7) as f64 - 3.0)
            .collect();
        assert!(column_sums_plausible(&spread, m));
        assert!(!column_sums_plausible(&spread[1..], m));
    }
}
