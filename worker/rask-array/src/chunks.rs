//! Chunk grids: how an n-d shape is cut into blocks, `"auto"` chunking, and the index arithmetic
//! of slicing and rechunking. Pure functions, no graphs.

use serde::{Deserialize, Serialize};

use crate::error::ArrayError;

/// How a caller asks for chunks.
#[derive(Clone, Debug, PartialEq)]
pub enum ChunkSpec {
    /// About [`AUTO_CHUNK_BYTES`] per chunk, sizes aligned with the shape as Dask does.
    Auto,
    /// The same size along every dimension (the last chunk may be smaller).
    Size(usize),
    /// One size per dimension (the last chunk of each may be smaller).
    Sizes(Vec<usize>),
    /// Every chunk's size, per dimension; they must add up to the shape.
    Explicit(Vec<Vec<usize>>),
}

impl From<usize> for ChunkSpec {
    fn from(n: usize) -> Self {
        ChunkSpec::Size(n)
    }
}

impl From<&[usize]> for ChunkSpec {
    fn from(n: &[usize]) -> Self {
        ChunkSpec::Sizes(n.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for ChunkSpec {
    fn from(n: [usize; N]) -> Self {
        ChunkSpec::Sizes(n.to_vec())
    }
}

impl std::str::FromStr for ChunkSpec {
    type Err = ArrayError;

    /// `auto`, `250` (every dimension) or `250,100` (per dimension).
    fn from_str(s: &str) -> Result<Self, ArrayError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(ChunkSpec::Auto);
        }
        let bad = || {
            ArrayError::Chunks(format!(
                "{s:?} is not `auto`, a size, or sizes like `250,100`"
            ))
        };
        let sizes = s
            .split(',')
            .map(|p| p.trim().parse::<usize>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        match sizes.as_slice() {
            [n] => Ok(ChunkSpec::Size(*n)),
            _ => Ok(ChunkSpec::Sizes(sizes)),
        }
    }
}

/// Dask's `array.chunk-size` default: the target size of an `"auto"` chunk.
pub const AUTO_CHUNK_BYTES: usize = 128 << 20;

/// A shape and the chunk sizes along each of its dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    shape: Vec<usize>,
    chunks: Vec<Vec<usize>>,
}

impl Grid {
    /// The grid `spec` asks for on `shape` (`itemsize` bytes per element, for `Auto`).
    pub fn new(shape: &[usize], spec: &ChunkSpec, itemsize: usize) -> Result<Grid, ArrayError> {
        let chunks = match spec {
            ChunkSpec::Auto => auto_chunks(shape, itemsize, AUTO_CHUNK_BYTES),
            ChunkSpec::Size(n) => {
                return Grid::new(shape, &ChunkSpec::Sizes(vec![*n; shape.len()]), itemsize);
            }
            ChunkSpec::Sizes(sizes) => {
                if sizes.len() != shape.len() {
                    return Err(ArrayError::Chunks(format!(
                        "chunk sizes {sizes:?} have {} dimensions, the shape {shape:?} has {}",
                        sizes.len(),
                        shape.len()
                    )));
                }
                shape
                    .iter()
                    .zip(sizes)
                    .map(|(&dim, &c)| {
                        if c == 0 {
                            Err(ArrayError::Chunks(format!(
                                "chunk size 0 in {sizes:?} for shape {shape:?}"
                            )))
                        } else {
                            Ok(regular(dim, c))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            ChunkSpec::Explicit(c) => c.clone(),
        };
        Grid::from_chunks(shape, chunks)
    }

    /// A grid from explicit chunk sizes, checked against the shape.
    pub fn from_chunks(shape: &[usize], chunks: Vec<Vec<usize>>) -> Result<Grid, ArrayError> {
        if chunks.len() != shape.len() {
            return Err(ArrayError::Chunks(format!(
                "chunks {chunks:?} have {} dimensions, the shape {shape:?} has {}",
                chunks.len(),
                shape.len()
            )));
        }
        for (d, (c, &dim)) in chunks.iter().zip(shape).enumerate() {
            if c.iter().sum::<usize>() != dim {
                return Err(ArrayError::Chunks(format!(
                    "chunks {c:?} of dimension {d} add up to {}, not its length {dim}",
                    c.iter().sum::<usize>()
                )));
            }
            if c.contains(&0) && dim > 0 {
                return Err(ArrayError::Chunks(format!(
                    "chunks {c:?} of dimension {d} contain an empty chunk"
                )));
            }
        }
        Ok(Grid {
            shape: shape.to_vec(),
            chunks,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn chunks(&self) -> &[Vec<usize>] {
        &self.chunks
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Elements in the whole array.
    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Blocks along each dimension.
    pub fn blocks_per_dim(&self) -> Vec<usize> {
        self.chunks.iter().map(Vec::len).collect()
    }

    /// Blocks in all.
    pub fn nblocks(&self) -> usize {
        self.blocks_per_dim().iter().product()
    }

    /// Block indices in C order (the order blocks are stored in).
    pub fn block_indices(&self) -> Vec<Vec<usize>> {
        c_order(&self.blocks_per_dim())
    }

    /// Linear position of a block index in C order.
    pub fn linear(&self, idx: &[usize]) -> usize {
        linear(&self.blocks_per_dim(), idx)
    }

    pub fn block_shape(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter().zip(&self.chunks).map(|(&i, c)| c[i]).collect()
    }

    /// Where a block starts, per dimension.
    pub fn block_offset(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .zip(&self.chunks)
            .map(|(&i, c)| c[..i].iter().sum())
            .collect()
    }

    /// The grid with its dimensions reversed (a transpose).
    pub(crate) fn reversed(&self) -> Grid {
        Grid {
            shape: self.shape.iter().rev().copied().collect(),
            chunks: self.chunks.iter().rev().cloned().collect(),
        }
    }

    /// The grid without dimension `axis` (a reduction along it).
    pub(crate) fn without(&self, axis: usize) -> Grid {
        let mut g = self.clone();
        g.shape.remove(axis);
        g.chunks.remove(axis);
        g
    }
}

/// `dim` cut into chunks of `c` (the last one smaller if `c` does not divide it).
fn regular(dim: usize, c: usize) -> Vec<usize> {
    if dim == 0 {
        return vec![0];
    }
    let mut out = vec![c; dim / c];
    if !dim.is_multiple_of(c) {
        out.push(dim % c);
    }
    out
}

/// Every index of a grid with `counts` along each dimension, in C order.
pub(crate) fn c_order(counts: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = counts.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let mut idx = vec![0; counts.len()];
    for _ in 0..total {
        out.push(idx.clone());
        for d in (0..counts.len()).rev() {
            idx[d] += 1;
            if idx[d] < counts[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn linear(counts: &[usize], idx: &[usize]) -> usize {
    idx.iter().zip(counts).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// Dask's `"auto"` chunks when every dimension is auto: the cube root (n-th root) of the target
/// element count per dimension; dimensions shorter than that are whole, and the others take the
/// largest divisor of their length between half and all of the ideal size, or the ideal size.
/// (2000³ f64 at 128 MiB: ideal 256, so 250.)
pub(crate) fn auto_chunks(shape: &[usize], itemsize: usize, limit_bytes: usize) -> Vec<Vec<usize>> {
    let mut chunk: Vec<Option<usize>> = vec![None; shape.len()];
    loop {
        let autos: Vec<usize> = (0..shape.len()).filter(|&i| chunk[i].is_none()).collect();
        if autos.is_empty() {
            break;
        }
        let fixed: f64 = chunk.iter().flatten().map(|&c| c.max(1) as f64).product();
        let size =
            (limit_bytes as f64 / itemsize.max(1) as f64 / fixed).powf(1.0 / autos.len() as f64);
        let small: Vec<usize> = autos
            .iter()
            .copied()
            .filter(|&i| (shape[i] as f64) < size)
            .collect();
        if small.is_empty() {
            for i in autos {
                chunk[i] = Some(round_to(size, shape[i]));
            }
            break;
        }
        for i in small {
            chunk[i] = Some(shape[i]);
        }
    }
    shape
        .iter()
        .zip(chunk)
        .map(|(&dim, c)| regular(dim, c.unwrap_or(dim).max(1)))
        .collect()
}

/// Dask's `round_to`: the largest divisor of `s` within [c/2, c], else `c` itself.
fn round_to(c: f64, s: usize) -> usize {
    let c_int = (c as usize).max(1);
    if c_int >= s {
        return s;
    }
    (1..=c_int)
        .rev()
        .take_while(|&f| f as f64 >= c / 2.0)
        .find(|f| s.is_multiple_of(*f))
        .unwrap_or(c_int)
}

/// A range along one dimension, with a positive step (like Python's `start:stop:step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: usize,
    pub stop: usize,
    pub step: usize,
}

impl Range {
    pub fn new(start: usize, stop: usize) -> Range {
        Range {
            start,
            stop,
            step: 1,
        }
    }

    pub fn step(self, step: usize) -> Range {
        Range { step, ..self }
    }

    /// The whole of a dimension of length `dim`.
    pub fn full(dim: usize) -> Range {
        Range::new(0, dim)
    }

    pub fn len(&self) -> usize {
        if self.stop <= self.start {
            0
        } else {
            (self.stop - self.start).div_ceil(self.step)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One output chunk of a slice along a dimension: the input block it comes from and the range
/// within that block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlicePiece {
    pub block: usize,
    pub local: Range,
}

/// Slices a dimension cut into `chunks` by `r`: one piece per input block that `r` selects from.
pub(crate) fn slice_dim(
    chunks: &[usize],
    r: Range,
    dim: usize,
) -> Result<Vec<SlicePiece>, ArrayError> {
    if r.step == 0 {
        return Err(ArrayError::Slice(format!(
            "step 0 in {}..{}",
            r.start, r.stop
        )));
    }
    if r.start > dim || r.stop > dim {
        return Err(ArrayError::Slice(format!(
            "range {}..{} is out of bounds for a dimension of length {dim}",
            r.start, r.stop
        )));
    }
    let mut out = Vec::new();
    if r.is_empty() {
        return Ok(out);
    }
    let mut begin = 0;
    for (b, &c) in chunks.iter().enumerate() {
        let end = begin + c;
        // First selected index at or after `begin`.
        let first = if r.start >= begin {
            r.start
        } else {
            r.start + (begin - r.start).div_ceil(r.step) * r.step
        };
        let last = r.stop.min(end);
        if first < last {
            out.push(SlicePiece {
                block: b,
                local: Range {
                    start: first - begin,
                    stop: last - begin,
                    step: r.step,
                },
            });
        }
        begin = end;
    }
    Ok(out)
}

/// For rechunking one dimension: each new chunk as a list of (old block, range within it, offset
/// within the new chunk).
pub(crate) fn rechunk_dim(old: &[usize], new: &[usize]) -> Vec<Vec<(usize, Range, usize)>> {
    let mut out = Vec::with_capacity(new.len());
    let mut start = 0;
    for &n in new {
        let end = start + n;
        let mut pieces = Vec::new();
        let mut begin = 0;
        for (b, &c) in old.iter().enumerate() {
            let stop = begin + c;
            let lo = start.max(begin);
            let hi = end.min(stop);
            if lo < hi {
                pieces.push((b, Range::new(lo - begin, hi - begin), lo - start));
            }
            begin = stop;
        }
        out.push(pieces);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_matches_dask() {
        // Dask: da.random.random((2000,)*3).chunks -> 250 per dimension.
        assert_eq!(
            auto_chunks(&[2000; 3], 8, AUTO_CHUNK_BYTES)[0],
            vec![250; 8]
        );
        // Small arrays are one chunk.
        assert_eq!(
            auto_chunks(&[10, 20], 8, AUTO_CHUNK_BYTES),
            vec![vec![10], vec![20]]
        );
        // 8000² f64: sqrt(2^24) = 4096, divisors of 8000 within [2048, 4096]: 4000.
        assert_eq!(
            auto_chunks(&[8000, 8000], 8, AUTO_CHUNK_BYTES)[0],
            vec![4000, 4000]
        );
        // A short dimension is taken whole and the others share the budget.
        let c = auto_chunks(&[3, 100_000_000], 8, AUTO_CHUNK_BYTES);
        assert_eq!(c[0], vec![3]);
        assert!(c[1][0] * 3 * 8 <= AUTO_CHUNK_BYTES);
        // No divisor within a factor of 2: the ideal size, with an uneven last chunk.
        let c = auto_chunks(&[1_000_003], 8, 8 * 1000);
        assert_eq!(c[0][0], 1000);
        assert_eq!(c[0].iter().sum::<usize>(), 1_000_003);
    }

    #[test]
    fn sizes_give_uneven_last_chunks_and_errors_name_the_problem() {
        let g = Grid::new(&[10, 7], &ChunkSpec::Sizes(vec![4, 7]), 8).unwrap();
        assert_eq!(g.chunks(), &[vec![4, 4, 2], vec![7]]);
        assert_eq!(g.nblocks(), 3);
        assert_eq!(g.block_offset(&[2, 0]), vec![8, 0]);
        assert_eq!(g.block_shape(&[2, 0]), vec![2, 7]);
        let e = Grid::new(&[10], &ChunkSpec::Size(0), 8).unwrap_err();
        assert!(e.to_string().contains("chunk size 0"), "{e}");
        let e = Grid::new(&[10, 3], &ChunkSpec::Sizes(vec![2]), 8).unwrap_err();
        assert!(e.to_string().contains("1 dimensions"), "{e}");
        let e = Grid::new(&[10], &ChunkSpec::Explicit(vec![vec![3, 3]]), 8).unwrap_err();
        assert!(e.to_string().contains("add up to 6"), "{e}");
    }

    #[test]
    fn chunk_specs_parse() {
        assert_eq!("auto".parse::<ChunkSpec>().unwrap(), ChunkSpec::Auto);
        assert_eq!("250".parse::<ChunkSpec>().unwrap(), ChunkSpec::Size(250));
        assert_eq!(
            "2, 3".parse::<ChunkSpec>().unwrap(),
            ChunkSpec::Sizes(vec![2, 3])
        );
        let e = "big".parse::<ChunkSpec>().unwrap_err();
        assert!(e.to_string().contains("\"big\""), "{e}");
    }

    #[test]
    fn c_order_and_linear_agree() {
        let idx = c_order(&[2, 3]);
        assert_eq!(idx.len(), 6);
        assert_eq!(idx[4], vec![1, 1]);
        for (i, ix) in idx.iter().enumerate() {
            assert_eq!(linear(&[2, 3], ix), i);
        }
    }

    #[test]
    fn slicing_picks_blocks_and_local_ranges() {
        // chunks 4,4,2 over 10; select 3..9
        let p = slice_dim(&[4, 4, 2], Range::new(3, 9), 10).unwrap();
        assert_eq!(
            p,
            vec![
                SlicePiece {
                    block: 0,
                    local: Range::new(3, 4)
                },
                SlicePiece {
                    block: 1,
                    local: Range::new(0, 4)
                },
                SlicePiece {
                    block: 2,
                    local: Range::new(0, 1)
                },
            ]
        );
        // with a step of 3: 1, 4, 7 -> block 0 at 1, block 1 at 0 and 3
        let p = slice_dim(&[4, 4, 2], Range::new(1, 10).step(3), 10).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].local,
            Range {
                start: 1,
                stop: 4,
                step: 3
            }
        );
        assert_eq!(p[0].local.len(), 1);
        assert_eq!(
            p[1].local,
            Range {
                start: 0,
                stop: 4,
                step: 3
            }
        );
        assert_eq!(p[1].local.len(), 2);
        assert!(
            slice_dim(&[4], Range::new(2, 5), 4)
                .unwrap_err()
                .to_string()
                .contains("out of bounds")
        );
        assert!(slice_dim(&[4], Range::new(0, 4).step(0), 4).is_err());
        assert!(slice_dim(&[4], Range::new(3, 2), 4).unwrap().is_empty());
    }

    #[test]
    fn rechunk_pieces_cover_each_new_chunk() {
        let r = rechunk_dim(&[4, 4, 2], &[3, 3, 3, 1]);
        assert_eq!(r[0], vec![(0, Range::new(0, 3), 0)]);
        assert_eq!(
            r[1],
            vec![(0, Range::new(3, 4), 0), (1, Range::new(0, 2), 1)]
        );
        assert_eq!(r[3], vec![(2, Range::new(1, 2), 0)]);
        for (new, pieces) in [3usize, 3, 3, 1].iter().zip(&r) {
            assert_eq!(pieces.iter().map(|p| p.1.len()).sum::<usize>(), *new);
        }
    }
}
