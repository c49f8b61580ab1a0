//! A file for `kubectl apply -f` / `rask-operator up`: every document read, then each Dask
//! resource through the validation its controller runs before building anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rask_operator::local::manifest::{Resource, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(resources) = parse("fuzz.yaml", text) else {
        return;
    };
    for r in &resources {
        match r {
            Resource::Cluster(c) => drop(rask_operator::cluster::validate::validate(c)),
            Resource::WorkerGroup(g) => drop(rask_operator::workergroup::validate::validate(g)),
            Resource::Autoscaler(a) => {
                drop(rask_operator::autoscaler::kubernetes::validate::validate(a))
            }
            Resource::Job(j) => drop(rask_operator::job::validate::validate(j)),
        }
    }
});
