//! Arrays on real clusters: chunks computed by worker processes and moved between them match a
//! direct ndarray computation; failures in array tasks reach the client with their message.

use ndarray::{ArrayD, Axis, IxDyn};

use rask::array::{self, ChunkSpec, Range};
use rask::client::ClientError;
use rask::jobs;

use crate::process_cluster;

fn close(got: &ArrayD<f64>, want: &ArrayD<f64>) {
    assert_eq!(got.shape(), want.shape());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{g} != {w}");
    }
}

#[tokio::test]
async fn array_operations_on_worker_processes_match_ndarray() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    // The whole random array, computed chunk by chunk, is the reference for everything below.
    let x = array::random(&[30, 17], [7, 5], 4).unwrap();
    let r = x.compute(&client).await.unwrap();
    assert_eq!(r.shape(), &[30, 17]);
    assert!(r.iter().all(|v| (0.0..1.0).contains(v)));
    let r2 = r.clone().into_dimensionality::<ndarray::Ix2>().unwrap();

    let mean = x.mean(None).unwrap().compute_scalar(&client).await.unwrap();
    assert!((mean - r.mean().unwrap()).abs() < 1e-12);
    close(
        &x.std(Some(1), 1.0).unwrap().compute(&client).await.unwrap(),
        &r.std_axis(Axis(1), 1.0),
    );
    close(
        &x.max(Some(0)).unwrap().compute(&client).await.unwrap(),
        &r.fold_axis(Axis(0), f64::MIN, |&m, &v| m.max(v)),
    );

    // (x.T . x - x.mean()) / 2, with x.T's chunks matching x's rows.
    let g = x.t().dot(&x).unwrap().sub(&x.mean(None).unwrap()).unwrap();
    let g = &g / 2.0;
    let want = (r2.t().dot(&r2) - r.mean().unwrap()) / 2.0;
    close(&g.compute(&client).await.unwrap(), &want.into_dyn());

    let s = x
        .slice(&[Range::new(3, 29).step(2), Range::new(1, 16)])
        .unwrap()
        .rechunk([4, 4])
        .unwrap();
    let mut view = r.view();
    view.slice_axis_inplace(Axis(0), ndarray::Slice::new(3, Some(29), 2));
    view.slice_axis_inplace(Axis(1), ndarray::Slice::from(1..16));
    close(&s.compute(&client).await.unwrap(), &view.to_owned());

    // From an in-memory array and from a .npy file the workers read.
    let lit = ArrayD::from_shape_fn(IxDyn(&[9, 4]), |ix| (ix[0] * 4 + ix[1]) as f64);
    let y = array::from_ndarray(&lit, [2, 3]).unwrap();
    close(&(&y * 3.0).compute(&client).await.unwrap(), &(&lit * 3.0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lit.npy");
    array::npy::write(&path, &lit).unwrap();
    let f = array::from_npy(&path, 4).unwrap();
    close(
        &f.sum(Some(0)).unwrap().compute(&client).await.unwrap(),
        &lit.sum_axis(Axis(0)),
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn seed_jobs_run_on_worker_processes() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let (mean, chunks) = jobs::array_mean(&client, 60, ChunkSpec::Size(20), 0)
        .await
        .unwrap();
    assert_eq!(chunks, 27);
    assert!(jobs::uniform_mean_plausible(mean, 60 * 60 * 60), "{mean}");
    let (sum0, expr) = jobs::array_linalg_graphs(40, ChunkSpec::Size(15), 1).unwrap();
    let s = sum0.compute(&client).await.unwrap();
    assert_eq!(s.shape(), &[40]);
    let std = expr.compute_scalar(&client).await.unwrap();
    assert!(std.is_finite() && std > 0.0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_failing_chunk_task_reaches_the_client_with_its_message() {
    let cluster = process_cluster(1).await;
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.npy");
    array::npy::write(&path, &ArrayD::zeros(IxDyn(&[4]))).unwrap();
    let x = array::from_npy(&path, 2).unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = x.sum(None).unwrap().compute(&client).await.unwrap_err();
    match err {
        array::ArrayError::Client(ClientError::Task(f)) => {
            assert!(f.error.to_string().contains("gone.npy"), "{f}")
        }
        other => panic!("unexpected error {other}"),
    }
    cluster.shutdown().await;
}
