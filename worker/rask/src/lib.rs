//! rask's chunked compute engine: a scheduler and workers over TCP, a client with futures and
//! delayed graphs, chunked arrays and partitioned dataframes, and a local cluster that runs them
//! all on one machine.
//!
//! This crate is the top of the engine's layers and a facade over them:
//!
//! | layer | crate | re-exported as |
//! |---|---|---|
//! | keys, tasks, data, function registry, wire protocol | `rask-core` | [`core`] |
//! | scheduler (I/O-free state machine, server, HTTP API) | `rask-scheduler` | [`scheduler`] |
//! | worker (executor, store, data server) | `rask-worker` | [`worker`] |
//! | client (futures, delayed, visualize) | `rask-client` | [`client`] |
//! | arrays, dataframes | `rask-array`, `rask-frame` | [`array`], [`frame`] |
//! | users' Python functions | `rask-python` | [`python`] |
//!
//! Here: the seed's scalar functions ([`seed`]), its workloads ([`jobs`]), local clusters
//! ([`local`]), the command line ([`cli`]) and [`registry`], the built-in function families a
//! worker carries. A program that builds its own worker adds its families to that registry and
//! hands it to [`cli::main`] (see `examples/custom-worker`).

pub mod certs;
pub mod cli;
pub mod jobs;
pub mod local;
mod progress;
pub mod seed;

pub use rask_array as array;
pub use rask_client as client;
pub use rask_core as core;
pub use rask_frame as frame;
pub use rask_python as python;
pub use rask_scheduler as scheduler;
pub use rask_worker as worker;

pub use rask_core::{Data, Encoded, Family, Func, Input, KernelError, Operand, Registry, Value};

/// The function families built into `rask`: `seed`, `array` and `frame`. `rask worker` adds
/// `python` ([`rask_python`]), whose version depends on the interpreter it finds.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    for family in [seed::family(), rask_array::family(), rask_frame::family()] {
        // The built-in families have distinct names; a clash is a bug caught by a unit test.
        if let Err(e) = r.register(family) {
            panic!("built-in function families clash: {e}");
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_families_register_and_their_data_tags_differ() {
        let r = registry();
        let names: Vec<&str> = r.families().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["seed", "array", "frame"]);
        let tags = [
            rask_core::data::TAG_SERDE,
            rask_array::TAG,
            rask_frame::FramePart::TAG,
            rask_core::data::TAG_PICKLE,
        ];
        for (i, a) in tags.iter().enumerate() {
            assert!(!tags[i + 1..].contains(a), "format tag {a} is used twice");
        }
    }
}
