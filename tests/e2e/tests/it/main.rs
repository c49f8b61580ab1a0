//! End to end: manifests applied to kube-double, the operator reconciling them, and rask's
//! scheduler, workers and job runners running as real processes on their pods' addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failure

mod cluster;
mod job;
