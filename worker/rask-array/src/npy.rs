//! NumPy `.npy` files: the header (dtype, order, shape), reading one block of a C-order file
//! without reading the rest, and writing f64 arrays.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use ndarray::ArrayD;

use crate::chunks::c_order;
use crate::error::ArrayError;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element types read from `.npy` files; every one is converted to f64 as it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DType {
    F64,
    F32,
    I64,
    I32,
    U8,
}

impl DType {
    fn parse(descr: &str) -> Option<(DType, bool)> {
        let (order, code) = descr.split_at(1.min(descr.len()));
        let big = match order {
            "<" | "|" | "=" => false,
            ">" => true,
            _ => return None,
        };
        let t = match code {
            "f8" => DType::F64,
            "f4" => DType::F32,
            "i8" => DType::I64,
            "i4" => DType::I32,
            "u1" => DType::U8,
            _ => return None,
        };
        Some((t, big))
    }

    pub(crate) fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::U8 => 1,
        }
    }
}

/// What a `.npy` header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub dtype: DType,
    pub big_endian: bool,
    pub shape: Vec<usize>,
    /// Where the data starts.
    pub data_offset: u64,
}

fn bad(path: &Path, what: impl Into<String>) -> ArrayError {
    ArrayError::Npy {
        path: path.to_owned(),
        reason: what.into(),
    }
}

/// Reads and checks the header of the `.npy` file at `path` (including that the file is long
/// enough for the data it announces).
pub(crate) fn read_header(path: &Path) -> Result<Header, ArrayError> {
    let mut f = File::open(path).map_err(|e| bad(path, e.to_string()))?;
    let file_len = f.metadata().map_err(|e| bad(path, e.to_string()))?.len();
    let mut pre = [0u8; 8];
    f.read_exact(&mut pre)
        .map_err(|_| bad(path, "too short for a .npy header"))?;
    if &pre[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic bytes)"));
    }
    let (len_bytes, prefix) = match pre[6] {
        1 => (2, 10u64),
        2 | 3 => (4, 12u64),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let mut lb = [0u8; 4];
    f.read_exact(&mut lb[..len_bytes])
        .map_err(|_| bad(path, "truncated header length"))?;
    let header_len = u32::from_le_bytes(lb) as u64;
    if header_len > 1 << 20 || prefix + header_len > file_len {
        return Err(bad(
            path,
            format!("header length {header_len} is past the end of the file"),
        ));
    }
    let mut text = vec![0u8; header_len as usize];
    f.read_exact(&mut text)
        .map_err(|_| bad(path, "truncated header"))?;
    let text = String::from_utf8(text).map_err(|_| bad(path, "header is not text"))?;
    let (dtype, big_endian, shape) = parse_dict(&text).map_err(|e| bad(path, e))?;
    let data_offset = prefix + header_len;
    let need = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| bad(path, format!("shape {shape:?} overflows")))?;
    if data_offset + need > file_len {
        return Err(bad(
            path,
            format!(
                "shape {shape:?} needs {need} bytes of data, the file has {}",
                file_len - data_offset
            ),
        ));
    }
    Ok(Header {
        dtype,
        big_endian,
        shape,
        data_offset,
    })
}

/// The header dictionary: `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_dict(text: &str) -> Result<(DType, bool, Vec<usize>), String> {
    let field = |name: &str| -> Result<&str, String> {
        let key = format!("'{name}':");
        let at = text
            .find(&key)
            .ok_or_else(|| format!("header has no {name:?}: {text:?}"))?;
        Ok(text[at + key.len()..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| format!("malformed descr in {text:?}"))?;
    let (dtype, big) = DType::parse(descr)
        .ok_or_else(|| format!("unsupported dtype {descr:?} (f8, f4, i8, i4 and u1 are read)"))?;
    if field("fortran_order")?.starts_with("True") {
        return Err(
            "Fortran-order arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let shape = field("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("malformed shape in {text:?}"))?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension {s:?} in shape"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, big, dims))
}

fn convert(h: &Header, bytes: &[u8], out: &mut Vec<f64>) {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            out.extend(bytes.chunks_exact($n).map(|c| {
                let mut b = [0u8; $n];
                b.copy_from_slice(c);
                (if h.big_endian {
                    <$t>::from_be_bytes(b)
                } else {
                    <$t>::from_le_bytes(b)
                }) as f64
            }))
        };
    }
    match h.dtype {
        DType::F64 => conv!(f64, 8),
        DType::F32 => conv!(f32, 4),
        DType::I64 => conv!(i64, 8),
        DType::I32 => conv!(i32, 4),
        DType::U8 => out.extend(bytes.iter().map(|&b| f64::from(b))),
    }
}

/// Reads the block at `offset` with `shape` from the `.npy` file at `path`, seeking to each
/// contiguous run of the last dimension.
pub(crate) fn read_block(
    path: &Path,
    offset: &[usize],
    shape: &[usize],
) -> Result<ArrayD<f64>, ArrayError> {
    let h = read_header(path)?;
    if offset.len() != h.shape.len() || shape.len() != h.shape.len() {
        return Err(bad(
            path,
            format!(
                "block of {} dimensions in a file of shape {:?}",
                shape.len(),
                h.shape
            ),
        ));
    }
    for d in 0..shape.len() {
        if offset[d] + shape[d] > h.shape[d] {
            return Err(bad(
                path,
                format!(
                    "block at {offset:?} of shape {shape:?} is outside the file's shape {:?}",
                    h.shape
                ),
            ));
        }
    }
    let mut f = File::open(path).map_err(|e| bad(path, e.to_string()))?;
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n > 0 {
        let ndim = shape.len();
        // Element strides of the file, C order.
        let mut strides = vec![1usize; ndim];
        for d in (0..ndim.saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * h.shape[d + 1];
        }
        let run = shape.last().copied().unwrap_or(1);
        let outer: Vec<usize> = shape.iter().take(ndim.saturating_sub(1)).copied().collect();
        let mut buf = vec![0u8; run * h.dtype.size()];
        for idx in c_order(&outer) {
            let mut elem = offset.last().copied().unwrap_or(0);
            for d in 0..outer.len() {
                elem += (offset[d] + idx[d]) * strides[d];
            }
            let pos = h.data_offset + (elem * h.dtype.size()) as u64;
            f.seek(SeekFrom::Start(pos))
                .map_err(|e| bad(path, e.to_string()))?;
            f.read_exact(&mut buf)
                .map_err(|e| bad(path, format!("reading at byte {pos}: {e}")))?;
            convert(&h, &buf, &mut out);
        }
    }
    ArrayD::from_shape_vec(shape.to_vec(), out).map_err(|e| bad(path, e.to_string()))
}

/// Writes `a` as a version 1.0 little-endian f64 C-order `.npy` file.
pub fn write(path: &Path, a: &ArrayD<f64>) -> Result<(), ArrayError> {
    let dims: Vec<String> = a.shape().iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts at a multiple of 64 bytes, ending the header with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 8 * a.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    a.iter()
        .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
    let mut f = File::create(path).map_err(|e| bad(path, e.to_string()))?;
    f.write_all(&bytes).map_err(|e| bad(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let a = ArrayD::from_shape_fn(vec![5, 4, 3], |ix| {
            (ix[0] * 100 + ix[1] * 10 + ix[2]) as f64
        });
        write(&p, &a).unwrap();
        let h = read_header(&p).unwrap();
        assert_eq!(h.shape, vec![5, 4, 3]);
        assert_eq!(h.data_offset % 64, 0);
        let b = read_block(&p, &[1, 2, 0], &[3, 2, 3]).unwrap();
        let mut want = a.view();
        for (d, r) in [1..4, 2..4, 0..3].into_iter().enumerate() {
            want.slice_axis_inplace(ndarray::Axis(d), ndarray::Slice::from(r));
        }
        assert_eq!(b, want.to_owned());
        let e = read_block(&p, &[4, 0, 0], &[2, 4, 3]).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }

    #[test]
    fn other_dtypes_convert_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.npy");
        let mut raw = Vec::new();
        raw.extend_from_slice(MAGIC);
        raw.extend_from_slice(&[1, 0]);
        let header = "{'descr': '>i4', 'fortran_order': False, 'shape': (3,), }\n";
        raw.extend_from_slice(&(header.len() as u16).to_le_bytes());
        raw.extend_from_slice(header.as_bytes());
        for v in [1i32, -2, 300] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        std::fs::write(&p, &raw).unwrap();
        let b = read_block(&p, &[0], &[3]).unwrap();
        assert_eq!(b.as_slice().unwrap(), &[1.0, -2.0, 300.0]);

        // Truncated data.
        std::fs::write(&p, &raw[..raw.len() - 1]).unwrap();
        let e = read_header(&p).unwrap_err().to_string();
        assert!(e.contains("needs 12 bytes"), "{e}");
        // Not a .npy file.
        std::fs::write(&p, b"hello world, this is text").unwrap();
        assert!(read_header(&p).unwrap_err().to_string().contains("magic"));
        // Unsupported dtype, Fortran order, bad shape.
        for (h, want) in [
            (
                "{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }",
                "unsupported dtype",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (1,), }",
                "Fortran",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (x,), }",
                "bad dimension",
            ),
        ] {
            let mut raw = Vec::new();
            raw.extend_from_slice(MAGIC);
            raw.extend_from_slice(&[1, 0]);
            raw.extend_from_slice(&(h.len() as u16).to_le_bytes());
            raw.extend_from_slice(h.as_bytes());
            raw.extend_from_slice(&[0u8; 16]);
            std::fs::write(&p, &raw).unwrap();
            let e = read_header(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("i.npy"), "{e}");
        }
        assert!(read_header(&dir.path().join("missing.npy")).is_err());
    }
}
