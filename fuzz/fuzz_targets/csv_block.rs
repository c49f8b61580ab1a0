//! A CSV file a user points `read_csv` at: header, schema inference, blocks split at line
//! boundaries, each block parsed and counted as a worker would. The first two bytes pick the
//! block size (so blocks end in odd places) and the separator.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One file, rewritten for every input (libFuzzer runs inputs one after another).
fn file() -> &'static tempfile::NamedTempFile {
    static FILE: OnceLock<tempfile::NamedTempFile> = OnceLock::new();
    FILE.get_or_init(|| tempfile::Builder::new().suffix(".csv").tempfile().expect("temp file"))
}

fuzz_target!(|data: &[u8]| {
    let [size, sep, csv @ ..] = data else {
        return;
    };
    let blocksize = 1 + u64::from(*size);
    let sep = [b',', b';', b'\t', b'|'][usize::from(*sep) % 4];
    let f = file();
    let mut w = f.reopen().expect("reopen");
    w.set_len(0).expect("truncate");
    w.write_all(csv).expect("write");
    let Some(path) = f.path().to_str() else {
        return;
    };
    drop(rask_frame::fuzzing::read_csv_blocks(path, blocksize, sep));
});
