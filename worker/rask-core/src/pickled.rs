//! The one `bytes` object of a pickle ([`crate::Pickled::bytes_object`]): how native kernels read
//! what a Python task returned for them as `bytes` (`rask.array.from_delayed`'s raw f64 values,
//! `rask.dataframe.from_delayed`'s Arrow IPC), which its worker keeps pickled. Only what
//! `pickle.dumps(some_bytes, protocol=4 or 5)` writes is read: the protocol and frame markers,
//! one bytes opcode, a memo entry, the stop; anything else is refused.

/// `PROTO n`.
const PROTO: u8 = 0x80;
/// `FRAME len` (u64): groups the opcodes that follow; large payloads sit outside frames.
const FRAME: u8 = 0x95;
/// Bytes of u8 length.
const SHORT_BINBYTES: u8 = b'C';
/// Bytes of u32 length.
const BINBYTES: u8 = b'B';
/// Bytes of u64 length.
const BINBYTES8: u8 = 0x8e;
const MEMOIZE: u8 = 0x94;
const STOP: u8 = b'.';

/// The contents of the one `bytes` object pickled in `p`.
pub(crate) fn bytes_object(p: &[u8]) -> Result<&[u8], String> {
    let mut at = 0;
    let mut found: Option<&[u8]> = None;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= p.len())
            .ok_or_else(|| format!("the pickle ends at byte {} inside an opcode", p.len()))?;
        let s = &p[*at..end];
        *at = end;
        Ok(s)
    };
    let length = |s: &[u8]| -> Result<usize, String> {
        let mut b = [0u8; 8];
        b[..s.len()].copy_from_slice(s);
        usize::try_from(u64::from_le_bytes(b)).map_err(|_| "a length overflows".to_owned())
    };
    loop {
        let op = take(&mut at, 1)?[0];
        match op {
            PROTO => {
                take(&mut at, 1)?;
            }
            FRAME => {
                take(&mut at, 8)?;
            }
            SHORT_BINBYTES | BINBYTES | BINBYTES8 => {
                if found.is_some() {
                    return Err("the pickle holds more than one bytes object".into());
                }
                let width = match op {
                    SHORT_BINBYTES => 1,
                    BINBYTES => 4,
                    _ => 8,
                };
                let n = length(take(&mut at, width)?)?;
                found = Some(take(&mut at, n)?);
            }
            MEMOIZE => {}
            STOP => {
                return found.ok_or_else(|| "the pickle holds no bytes object".to_owned());
            }
            other => {
                return Err(format!(
                    "opcode 0x{other:02x} at byte {}: not a pickled bytes object",
                    at - 1
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_python_writes() {
        // pickle.dumps(b"ab", protocol=5)
        let small = b"\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00C\x02ab\x94.";
        assert_eq!(bytes_object(small).unwrap(), b"ab");
        // pickle.dumps(b"x" * 70000, protocol=5): a large payload is not framed.
        let mut large = b"\x80\x05B\x70\x11\x01\x00".to_vec();
        large.extend_from_slice(&[b'x'; 70_000]);
        large.extend_from_slice(b"\x94.");
        assert_eq!(bytes_object(&large).unwrap(), &[b'x'; 70_000][..]);
        // Frames around the opcodes, BINBYTES8 (as the protocol allows for any length).
        let data = vec![7u8; 70_000];
        let mut big = b"\x80\x05\x95\x09\x00\x00\x00\x00\x00\x00\x00\x8e".to_vec();
        big.extend_from_slice(&(data.len() as u64).to_le_bytes());
        big.extend_from_slice(&data);
        big.extend_from_slice(b"\x95\x02\x00\x00\x00\x00\x00\x00\x00\x94.");
        assert_eq!(bytes_object(&big).unwrap(), data.as_slice());
        // pickle.dumps(b"abc", protocol=4) without a frame: B with a u32 length.
        assert_eq!(
            bytes_object(b"\x80\x04B\x03\x00\x00\x00abc\x94.").unwrap(),
            b"abc"
        );
    }

    #[test]
    fn other_pickles_are_refused_by_name() {
        // pickle.dumps(1, protocol=5)
        let err = bytes_object(b"\x80\x05K\x01.").unwrap_err();
        assert_eq!(err, "opcode 0x4b at byte 2: not a pickled bytes object");
        assert_eq!(
            bytes_object(b"\x80\x05C\x05ab").unwrap_err(),
            "the pickle ends at byte 6 inside an opcode"
        );
        assert_eq!(
            bytes_object(b"\x80\x05.").unwrap_err(),
            "the pickle holds no bytes object"
        );
        assert_eq!(
            bytes_object(b"C\x01aC\x01b.").unwrap_err(),
            "the pickle holds more than one bytes object"
        );
        assert!(bytes_object(b"").is_err());
        assert!(bytes_object(b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
    }
}
