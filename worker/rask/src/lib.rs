//! rask's chunked compute engine: a scheduler and workers over TCP, a client with futures and
//! delayed graphs, and a local cluster that runs them all on one machine.
//!
//! Layers, bottom up: [`value`] and [`graph`] (what tasks are), [`registry`] (what they run),
//! [`protocol`] and `net` (how processes talk), [`scheduler`], [`worker`], [`client`], [`local`].

pub mod array;
pub mod client;
pub mod frame;
pub mod graph;
pub mod jobs;
pub mod local;
mod net;
pub mod protocol;
pub mod registry;
pub mod scheduler;
pub mod units;
pub mod value;
pub mod worker;

pub use graph::{Arg, Key, TaskSpec};
pub use value::Value;
