//! A frame body as read off a connection, decoded as each kind of message rask processes
//! receive: from workers and clients (the scheduler's side), from the scheduler (workers and
//! clients), and the data requests and replies between workers.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rask_core::protocol::{DataReply, DataRequest, FromScheduler, ToScheduler, decode_body};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let body = Bytes::copy_from_slice(body);
    match kind % 4 {
        0 => drop(decode_body::<ToScheduler>(body)),
        1 => drop(decode_body::<FromScheduler>(body)),
        2 => drop(decode_body::<DataRequest>(body)),
        _ => drop(decode_body::<DataReply>(body)),
    }
});
