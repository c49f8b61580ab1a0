//! rask's operator: reconciles Dask's custom resources into scheduler and worker pods.

pub mod crd;
