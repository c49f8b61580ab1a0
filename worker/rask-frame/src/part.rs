//! A dataframe partition as a task value, and its encoding: an Arrow IPC file.
//!
//! Partitions are encoded once by the worker that made them (value tag 2, see [`crate::value`])
//! and decoded only where a task or the client needs the frame. Corrupt bytes are an error, never
//! a panic: the IPC reader is guarded, since the bytes may come from a peer or a spill file.

use std::fmt;
use std::io::Cursor;

use polars::prelude::{DataFrame, IpcReader, IpcWriter, SerReader, SerWriter};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::value::Value;

/// One partition of a distributed dataframe: a Polars frame.
#[derive(Clone, Default)]
pub struct FramePart(pub DataFrame);

impl FramePart {
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
    pub fn write_ipc(&self, out: &mut Vec<u8>) {
        let mut df = self.0.clone();
        if let Err(e) = IpcWriter::new(&mut *out).finish(&mut df) {
            // Only the dtypes rask creates (ints, floats, strings, booleans) reach here, and
            // writing those into memory cannot fail.
            unreachable!("IPC encoding of an in-memory frame failed: {e}");
        }
    }

    /// Decodes an Arrow IPC file; malformed bytes give an error naming what is wrong.
    pub fn from_ipc(bytes: &[u8]) -> Result<FramePart, String> {
        if bytes.len() < 8 || !bytes.starts_with(b"ARROW1") {
            return Err(format!(
                "{} bytes that do not start with the Arrow IPC file magic",
                bytes.len()
            ));
        }
        let read = || IpcReader::new(Cursor::new(bytes)).finish();
        match std::panic::catch_unwind(read) {
            Ok(Ok(df)) => Ok(FramePart(df)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the Arrow IPC reader rejected the bytes".into()),
        }
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

/// Inside a list (postcard), a partition is its IPC bytes.
impl Serialize for FramePart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        self.write_ipc(&mut out);
        s.serialize_bytes(&out)
    }
}

impl<'de> Deserialize<'de> for FramePart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_vec::Buf = Deserialize::deserialize(d)?;
        FramePart::from_ipc(&bytes.0).map_err(serde::de::Error::custom)
    }
}

/// A byte buffer that deserializes from serde's bytes (postcard writes `serialize_bytes` as a
/// length and raw bytes, which `Vec<u8>`'s sequence form would not read back).
mod serde_bytes_vec {
    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
    use std::fmt;

    pub struct Buf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("Arrow IPC bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buf, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Buf(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// The frame in a task argument, or an error naming the function and what it got instead.
pub fn frame_arg<'a>(args: &'a [Value], i: usize, func: &str) -> Result<&'a DataFrame, String> {
    match args.get(i) {
        Some(Value::Frame(p)) => Ok(p.frame()),
        Some(other) => Err(format!(
            "{func}(): argument {} must be a frame, got {}",
            i + 1,
            other.kind()
        )),
        None => Err(format!(
            "{func}() takes at least {} argument(s), got {}",
            i + 1,
            args.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Encoded;
    use bytes::Bytes;
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
    fn frames_round_trip_alone_and_in_lists() {
        let v = Value::Frame(FramePart::new(sample()));
        let enc = v.encode();
        assert_eq!(enc.0[0], 2, "frames have their own tag");
        assert_eq!(enc.decode().unwrap(), v);
        let nested = Value::List(vec![v.clone(), Value::Int(3)]);
        assert_eq!(nested.encode().decode().unwrap(), nested);
        let empty = Value::Frame(FramePart::new(sample().head(Some(0))));
        assert_eq!(empty.encode().decode().unwrap(), empty);
    }

    #[test]
    fn corrupt_frames_are_errors_not_panics() {
        let good = Value::Frame(FramePart::new(sample())).encode().0;
        let mut cases: Vec<Vec<u8>> =
            vec![vec![2], vec![2, 1, 2, 3], b"\x02ARROW1\x00\x00".to_vec()];
        for cut in [9, good.len() / 2, good.len() - 1] {
            cases.push(good[..cut].to_vec());
        }
        for case in cases {
            let r = Encoded(Bytes::from(case.clone())).decode();
            assert!(r.is_err(), "{} corrupt bytes decoded: {r:?}", case.len());
        }
        // Flipped bytes inside: an error or some frame, never a panic (IPC has no checksum, so
        // a flipped data byte may still decode).
        for step in [3, 7, 13] {
            let mut flipped = good.to_vec();
            for i in (10..flipped.len() - 10).step_by(step) {
                flipped[i] ^= 0x5a;
            }
            let _ = Encoded(Bytes::from(flipped)).decode();
        }
    }
}
