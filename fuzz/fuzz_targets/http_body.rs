//! The body of `POST /api/v1/retire_workers`, the one body the scheduler's HTTP API parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rask_scheduler::http::fuzz_retire_body(data);
});
