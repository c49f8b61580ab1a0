//! The operator's controllers driven against kube-double (an in-process API server with
//! Kubernetes' semantics and a simulated kubelet), with a real rask scheduler standing in for the
//! cluster's scheduler and real rask workers started for running worker pods.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failure

#[cfg(feature = "azure")]
mod arm_stub;
mod autoscaling;
#[cfg(feature = "azure")]
mod azure_credentials;
mod batch_env;
mod batch_sge;
mod batch_slurm;
mod certificates;
mod chart;
#[cfg(feature = "aws")]
mod cloud_aws;
#[cfg(feature = "azure")]
mod cloud_azure;
mod cloud_cli;
#[cfg(any(feature = "aws", feature = "azure"))]
mod cloud_env;
mod compat;
mod env;
mod job;
mod job_script;
mod lifecycle;
mod local_backend;
mod rbac;
mod scaling;
mod scheduler_api;
mod validation;
