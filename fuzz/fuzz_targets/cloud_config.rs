//! A cluster config file for `rask-operator up --config` (local, AWS, Azure, SLURM, SGE, PBS).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        drop(rask_operator::providers::config::parse(text));
    }
});
