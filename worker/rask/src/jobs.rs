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
pub fn uniform_mean_plausible(mean: f64, n: usize) -> bool {
    (mean - 0.5).abs() <= 6.0 * (1.0 / 12.0 / n.max(1) as f64).sqrt()
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
