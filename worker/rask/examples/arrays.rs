//! The seed notebook's array demos on a local cluster of two in-process workers:
//!
//! ```text
//! cargo run --release -p rask --example arrays
//! ```
//!
//! `random((400, 400, 400)).mean()` with auto chunks, then on a 2000×2000 matrix `x.sum(axis=0)` and
//! `(x.dot(x.T + 1) - x.mean()).std()`; the mean's task graph is written as DOT (and SVG when
//! Graphviz is installed) to the temporary directory.

use std::time::Instant;

use rask::array::{self, ChunkSpec};
use rask::local::LocalCluster;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = LocalCluster::new(2, 1).await?;
    let client = cluster.client().await?;

    let t = Instant::now();
    let x = array::random(&[400, 400, 400], ChunkSpec::Auto, 0)?;
    let mean = x.mean(None)?;
    let drawn = mean.visualize(std::env::temp_dir().join("rask-array-mean"))?;
    let value = mean.compute_scalar(&client).await?;
    println!(
        "random((400, 400, 400)).mean() = {value:.6} over {} chunks of {:?} in {:.3} s; graph: {}",
        x.nblocks(),
        x.chunks().iter().map(|c| c[0]).collect::<Vec<_>>(),
        t.elapsed().as_secs_f64(),
        drawn.svg.as_ref().unwrap_or(&drawn.dot).display()
    );

    let t = Instant::now();
    let m = array::random(&[2000, 2000], 500, 1)?;
    let sums = m.sum(Some(0))?.compute(&client).await?;
    let std = m
        .dot(&(&m.t() + 1.0))?
        .sub(&m.mean(None)?)?
        .std(None, 0.0)?
        .compute_scalar(&client)
        .await?;
    println!(
        "x = random((2000, 2000)): x.sum(axis=0)[:3] = {:?}, (x.dot(x.T + 1) - x.mean()).std() = {std:.4} in {:.3} s",
        sums.iter().take(3).collect::<Vec<_>>(),
        t.elapsed().as_secs_f64()
    );
    drop(client);
    cluster.shutdown().await;
    Ok(())
}
