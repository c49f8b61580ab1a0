//! Adaptive scaling from the scheduler's queue: one pure [`policy`] for every backend, and the
//! DaskAutoscaler controller that applies it on Kubernetes.

pub mod driver;
pub mod kubernetes;
pub mod policy;
