//! The seed workloads `rask run` offers, usable from tests and benchmarks too.

use crate::array::{self, Array, ArrayError, ChunkSpec};
use crate::client::delayed::{Delayed, delayed};
use crate::client::{Client, ClientError, TaskFuture};
use crate::graph::Arg;
use crate::value::Value;

/// The seed notebook's delayed example: `sum(add(inc(x), custom_op(x)) for x in 0..6)`, which is 131.
pub fn seed_delayed_graph() -> Delayed {
    let parts: Vec<Delayed> = (0..6i64)
        .map(|x| {
            delayed(
                "add",
                vec![
                    delayed("inc", vec![x.into()]).into(),
                    delayed("custom_op", vec![x.into()]).into(),
                ],
            )
        })
        .collect();
    delayed("sum", vec![parts.into()])
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
pub fn futures_pipeline(client: &Client, pairs: usize, step_s: f64) -> Vec<TaskFuture> {
    (0..pairs)
        .map(|i| {
            let step = Arg::from(step_s);
            let loaded = client.submit("load", vec![Arg::from(i as i64), step.clone()]);
            let p1 = client.submit("process1", vec![(&loaded).into(), step.clone()]);
            let p2 = client.submit("process2", vec![(&p1).into(), step.clone()]);
            client.submit(
                "save",
                vec![(&p2).into(), Arg::from(format!("out-{i}")), step],
            )
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
pub fn burst(client: &Client, tasks: usize, task_s: f64) -> Vec<TaskFuture> {
    client.map_args(
        "sleep",
        (0..tasks).map(|i| vec![Arg::from(task_s), Arg::from(i as i64)]),
    )
}

/// Indices of the burst's results that are not what `sleep(task_s, i)` returns.
pub async fn burst_wrong(futures: &[TaskFuture]) -> Result<Vec<usize>, ClientError> {
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
