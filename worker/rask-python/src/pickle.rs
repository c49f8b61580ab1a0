//! [`Value`]s as pickles, so a Python function reads the results of the engine's scalar
//! functions (the `seed` family's) as the natural Python objects: `None`, `bool`, `int`, `float`,
//! `str`, `bytes`, `list`.
//!
//! Written with the opcodes of pickle protocol 4 that `pickle.loads` has read since Python 3.4.

use rask_core::Value;

const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
/// A little-endian two's-complement integer of 1-byte length.
const LONG1: u8 = 0x8a;
/// An IEEE double, big-endian.
const BINFLOAT: u8 = b'G';
const BINUNICODE: u8 = b'X';
const BINUNICODE8: u8 = 0x8d;
const BINBYTES: u8 = b'B';
const BINBYTES8: u8 = 0x8e;
const EMPTY_LIST: u8 = b']';
const MARK: u8 = b'(';
const APPENDS: u8 = b'e';

/// `value` as a pickle.
pub(crate) fn pickle_value(value: &Value) -> Vec<u8> {
    let mut out = vec![PROTO, 4];
    write(value, &mut out);
    out.push(STOP);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::None => out.push(NONE),
        Value::Bool(true) => out.push(NEWTRUE),
        Value::Bool(false) => out.push(NEWFALSE),
        Value::Int(i) => {
            out.extend_from_slice(&[LONG1, 8]);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(BINFLOAT);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => sized(BINUNICODE, BINUNICODE8, s.as_bytes(), out),
        Value::Bytes(b) => sized(BINBYTES, BINBYTES8, b, out),
        Value::List(items) => {
            out.push(EMPTY_LIST);
            if !items.is_empty() {
                out.push(MARK);
                for item in items {
                    write(item, out);
                }
                out.push(APPENDS);
            }
        }
    }
}

/// A string or bytes opcode with a u32 length, or its u64 form for 4 GiB and more.
fn sized(op4: u8, op8: u8, body: &[u8], out: &mut Vec<u8>) {
    match u32::try_from(body.len()) {
        Ok(n) => {
            out.push(op4);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Err(_) => {
            out.push(op8);
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_of_each_kind() {
        assert_eq!(pickle_value(&Value::None), b"\x80\x04N.");
        assert_eq!(pickle_value(&Value::Bool(true)), b"\x80\x04\x88.");
        assert_eq!(
            pickle_value(&Value::Int(-2)),
            b"\x80\x04\x8a\x08\xfe\xff\xff\xff\xff\xff\xff\xff."
        );
        assert_eq!(
            pickle_value(&Value::Str("hé".into())),
            b"\x80\x04X\x03\x00\x00\x00h\xc3\xa9."
        );
        assert_eq!(pickle_value(&Value::List(vec![])), b"\x80\x04].");
        assert_eq!(
            pickle_value(&Value::List(vec![Value::None, Value::Bool(false)])),
            b"\x80\x04](N\x89e."
        );
    }
}
