//! An in-process Kubernetes API server and kubelet that behave like the real ones, for testing
//! controllers (kube-rs `Controller`s included) without a cluster.
//!
//! ```no_run
//! # async fn demo() {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//!
//! let server = kube_double::ApiServer::new();
//! let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("settings".into());
//! cms.create(&PostParams::default(), &cm).await.unwrap();
//! # }
//! ```
//!
//! What is and is not simulated is listed in the crate README.

mod apply;
mod auth;
mod builtin;
mod delete;
mod error;
mod fields;
mod http;
mod kubelet;
mod logs;
mod meta;
mod openapi;
mod ops;
mod patch;
mod process;
mod proxy;
mod resources;
mod schema;
mod selector;
mod server;
mod shared;
mod store;
mod volumes;
mod watch;

pub use auth::{Authorization, Verb};
pub use error::Error;
pub use kubelet::{Kubelet, KubeletConfig};
pub use process::{BindArgs, PortForward, ProcessConfig, Resolver};
pub use server::ApiServer;
pub use shared::{Fault, Options, RequestRecord};
