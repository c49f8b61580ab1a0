//! A dataframe partition as a task result, and its encoding: format tag [`FramePart::TAG`], then
//! an Arrow IPC file.
//!
//! Partitions are encoded once by the worker that made them and decoded only where a task or the
//! client needs the frame. Decoding reads the IPC file straight from the shared bytes of the
//! encoding (no copy of the body first); Polars' reader then builds the columns (a zero-copy
//! read of IPC needs Polars' `unsafe` memory-mapping API, which this crate does not use).
//! Corrupt bytes are an error naming what is wrong, never a panic: the IPC reader is guarded,
//! since the bytes may come from a peer or a spill file.

use std::fmt;
use std::io::Cursor;

use polars::prelude::{DataFrame, IpcReader, IpcWriter, SerReader, SerWriter};
use rask_core::{Data, DataError, Encoded};

/// One partition of a distributed dataframe: a Polars frame.
#[derive(Clone, Default)]
pub struct FramePart(DataFrame);

/// How decoding errors name a partition.
const KIND: &str = "a dataframe partition";

impl FramePart {
    /// The format tag of an encoded partition (rask-core's table of tags lists it).
    pub const TAG: u8 = 2;

    pub fn new(df: DataFrame) -> Self {
        FramePart(df)
    }

    pub fn frame(&self) -> &DataFrame {
        &self.0
    }

    pub fn into_frame(self) -> DataFrame {
        self.0
    }

    /// Appends the frame as an Arrow IPC file (uncompressed: partitions move between processes
    /// on one machine or a fast network, where compression costs more than it saves).
    fn write_ipc(&self, out: &mut Vec<u8>) {
        // A clone of a frame shares its columns; the writer wants `&mut`.
        let mut df = self.0.clone();
        if let Err(e) = IpcWriter::new(&mut *out).finish(&mut df) {
            // Only the dtypes rask creates (ints, floats, strings, booleans) reach here, and
            // writing those into memory cannot fail.
            unreachable!("IPC encoding of an in-memory frame failed: {e}");
        }
    }

    /// Decodes an Arrow IPC file; malformed bytes give an error naming what is wrong.
    fn from_ipc(bytes: &[u8]) -> Result<FramePart, String> {
        if bytes.len() < 8 || !bytes.starts_with(b"ARROW1") {
            return Err(format!(
                "{} bytes that do not start with the Arrow IPC file magic",
                bytes.len()
            ));
        }
        let read = || IpcReader::new(Cursor::new(bytes)).finish();
        match std::panic::catch_unwind(read) {
            Ok(Ok(df)) => Ok(FramePart(df)),
            Ok(Err(e)) => Err(format!("{} bytes of Arrow IPC: {e}", bytes.len())),
            Err(_) => Err(format!(
                "the Arrow IPC reader rejected {} bytes",
                bytes.len()
            )),
        }
    }
}

impl Data for FramePart {
    fn encode(&self) -> Encoded {
        let mut out = vec![Self::TAG];
        self.write_ipc(&mut out);
        Encoded::from_tagged_vec(out)
    }

    fn decode(e: &Encoded) -> Result<Self, DataError> {
        let body = e.body(Self::TAG, KIND)?;
        FramePart::from_ipc(body).map_err(|reason| DataError::Malformed { kind: KIND, reason })
    }
}

impl PartialEq for FramePart {
    fn eq(&self, other: &Self) -> bool {
        self.0.schema() == other.0.schema() && self.0.equals_missing(&other.0)
    }
}

/// Short: a partition may hold millions of rows, and values appear in error messages.
impl fmt::Debug for FramePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FramePart({self})")
    }
}

impl fmt::Display for FramePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (rows, cols) = self.0.shape();
        write!(f, "{rows} rows x {cols} columns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    fn sample() -> DataFrame {
        df!(
            "k" => [Some(1i64), None, Some(3)],
            "x" => [1.5f64, 2.5, f64::NAN],
            "s" => ["a", "b", "c"],
            "b" => [true, false, true],
        )
        .unwrap()
    }

    #[test]
    fn partitions_round_trip_with_their_own_tag() {
        let p = FramePart::new(sample());
        let enc = p.encode();
        assert_eq!(enc.tag(), Some(FramePart::TAG));
        assert_eq!(enc.bytes()[1..7], *b"ARROW1", "the body is an IPC file");
        assert_eq!(FramePart::decode(&enc).unwrap(), p);
        let empty = FramePart::new(sample().head(Some(0)));
        assert_eq!(FramePart::decode(&empty.encode()).unwrap(), empty);
        assert_eq!(format!("{p:?}"), "FramePart(3 rows x 4 columns)");
    }

    #[test]
    fn other_kinds_of_data_are_refused_by_tag() {
        let e = FramePart::decode(&7u64.encode()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected a dataframe partition, got data of another kind (format tag 0)"
        );
        // And a partition is not a serde value.
        let e = FramePart::new(sample())
            .encode()
            .decode::<u64>()
            .unwrap_err();
        assert!(e.to_string().contains("format tag 2"), "{e}");
    }

    #[test]
    fn corrupt_partitions_are_errors_not_panics() {
        let good = FramePart::new(sample()).encode().into_bytes();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![2],
            vec![2, 1, 2, 3],
            b"\x02ARROW1\x00\x00".to_vec(),
        ];
        for cut in [9, good.len() / 2, good.len() - 1] {
            cases.push(good[..cut].to_vec());
        }
        for case in cases {
            let len = case.len();
            let r = FramePart::decode(&Encoded::from_tagged_vec(case));
            let e = r.expect_err(&format!("{len} corrupt bytes decoded"));
            match e {
                DataError::Empty => assert_eq!(len, 0),
                DataError::Malformed { kind, reason } => {
                    assert_eq!(kind, "a dataframe partition");
                    assert!(reason.contains(&format!("{} bytes", len - 1)), "{reason}");
                }
                other => panic!("{len} bytes: {other}"),
            }
        }
        // Flipped bytes inside: an error or some frame, never a panic (IPC has no checksum, so
        // a flipped data byte may still decode).
        for step in [3, 7, 13] {
            let mut flipped = good.to_vec();
            for i in (10..flipped.len() - 10).step_by(step) {
                flipped[i] ^= 0x5a;
            }
            let _ = FramePart::decode(&Encoded::from_tagged_vec(flipped));
        }
    }
}
