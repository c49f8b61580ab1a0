//! rask's operator: reconciles Dask's custom resources into scheduler and worker pods.
//!
//! Each controller is a short pipeline — read → validate → build (pure) → apply → status — with
//! one file per stage. Only the first, fourth and fifth stages talk to the API server.

mod apply;
pub mod autoscaler;
pub mod backend;
pub mod clock;
pub mod cluster;
mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod error;
pub mod job;
pub mod local;
pub mod metrics;
pub mod names;
pub mod providers;
pub mod run;
pub mod scheduler_api;
pub mod spec;
mod template;
pub mod tls;
pub mod workergroup;
