//! Validated, typed values every backend shares: what a spec says is settled here once — sizes
//! and walltimes as numbers, one autoscaler, one worker-group template — so local processes,
//! Kubernetes, VMs and batch jobs never re-check or re-parse a raw string.

pub mod autoscaler;
pub mod quantity;
pub mod walltime;
pub mod worker;

pub use autoscaler::AutoscalerSpec;
pub use quantity::{ByteSize, MemoryLimit};
pub use walltime::Walltime;
pub use worker::WorkerTemplate;
