//! Integration tests: every behaviour driven through `kube::Api` and kube-runtime against the
//! double, as an operator's tests would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failure

mod apply;
mod controller;
mod crd;
mod crud;
mod dask;
mod delete;
mod faults;
mod gc;
mod kubelet;
mod patch;
mod process;
mod rbac;
mod reach;
mod status;
mod support;
mod watch;
