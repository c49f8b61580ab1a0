//! Kernels on whole chunks: sums of block products (`array.matmul`), sums of blocks
//! (`array.add`), and chunks assembled from pieces of others (`array.rechunk`).

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2, IxDyn, Slice};
use rask_core::{Input, Inputs, KernelError};

use crate::chunk::Chunk;
use crate::task::{RechunkPiece, Transposed};

/// Input `i` viewed as a matrix.
fn matrix<'a>(
    c: &'a Chunk,
    i: Input<Chunk>,
    inputs: &Inputs<'_>,
) -> Result<ArrayView2<'a, f64>, KernelError> {
    c.view().into_dimensionality::<Ix2>().map_err(|_| {
        inputs.input_error(
            i.index(),
            format!("a chunk of shape {:?} is not a matrix", c.shape()),
        )
    })
}

/// `array.matmul`: Σ a_k · b_k over the pairs, accumulated in pair order with [`mul_add`],
/// with one side of every pair transposed as `transposed` says.
///
/// When every pair is one block against its own transpose (a diagonal block of a Gram product),
/// the result is symmetric: only its lower half is computed and the upper half mirrored, which
/// halves the work and makes the result exactly symmetric.
pub(super) fn matmul(
    pairs: &[(Input<Chunk>, Input<Chunk>)],
    transposed: Transposed,
    inputs: &Inputs<'_>,
) -> Result<Chunk, KernelError> {
    let symmetric =
        transposed != Transposed::Neither && !pairs.is_empty() && pairs.iter().all(|(a, b)| a == b);
    let mut out: Option<(Vec<f64>, usize, usize)> = None;
    for &(a, b) in pairs {
        let (ca, cb) = (inputs.get(a)?, inputs.get(b)?);
        let mut x = matrix(&ca, a, inputs)?;
        let mut y = matrix(&cb, b, inputs)?;
        match transposed {
            Transposed::Neither => {}
            Transposed::Left => x = x.reversed_axes(),
            Transposed::Right => y = y.reversed_axes(),
        }
        if x.ncols() != y.nrows() {
            let which = match transposed {
                Transposed::Neither => "",
                Transposed::Left => ", the left one transposed",
                Transposed::Right => ", the right one transposed",
            };
            return Err(KernelError::failed(format!(
                "blocks of shapes {:?} and {:?} (inputs {} and {}{which}) do not multiply",
                x.shape(),
                y.shape(),
                a.index(),
                b.index()
            )));
        }
        let (c, rows, cols) =
            out.get_or_insert_with(|| (vec![0.0; x.nrows() * y.ncols()], x.nrows(), y.ncols()));
        if (*rows, *cols) != (x.nrows(), y.ncols()) {
            return Err(KernelError::failed(format!(
                "block products of shapes {:?} and {:?} do not add",
                [*rows, *cols],
                [x.nrows(), y.ncols()]
            )));
        }
        if symmetric {
            mul_add_lower(c, x, y);
        } else {
            mul_add(c, x, y);
        }
    }
    let (mut c, rows, cols) = out.ok_or_else(|| KernelError::failed("a product of no blocks"))?;
    if symmetric {
        mirror_lower(&mut c, rows);
    }
    Array2::from_shape_vec((rows, cols), c)
        .map(|c| Chunk::new(c.into_dyn()))
        .map_err(|e| KernelError::failed(format!("a product of shape [{rows}, {cols}]: {e}")))
}

/// The lower half (diagonal included) of `c += a · b`, for a product known to be symmetric
/// (`c` square, row-major); the upper half is left as it was.
fn mul_add_lower(c: &mut [f64], a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) {
    let (mut a_copy, mut b_copy) = (Vec::new(), Vec::new());
    let a = faer_ref(a, &mut a_copy);
    let b = faer_ref(b, &mut b_copy);
    let c = MatMut::from_row_major_slice_mut(c, a.nrows(), b.ncols());
    triangular::matmul(
        c,
        BlockStructure::TriangularLower,
        Accum::Add,
        a,
        BlockStructure::Rectangular,
        b,
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
}

/// Copies the lower half of the square row-major `n` × `n` matrix `c` onto its upper half.
fn mirror_lower(c: &mut [f64], n: usize) {
    for i in 0..n {
        for j in i + 1..n {
            c[i * n + j] = c[j * n + i];
        }
    }
}

/// `c += a · b`, with `c` the row-major values of an `a.nrows()` × `b.ncols()` matrix (the
/// caller checks the shapes), by faer's matrix multiply on this thread only.
///
/// faer's kernels run at the core's limit (AVX-512 or AVX2/FMA, picked at run time), as
/// OpenBLAS does, and faster than matrixmultiply's (docs/arrays.md has the figures). One thread
/// per product because the worker already runs one task per thread; it also keeps the result
/// bit-for-bit the same from run to run on a machine: the order of the sums depends only on the
/// shapes and the CPU's features and caches, never on how threads were scheduled.
pub(super) fn mul_add(c: &mut [f64], a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) {
    let (mut a_copy, mut b_copy) = (Vec::new(), Vec::new());
    let a = faer_ref(a, &mut a_copy);
    let b = faer_ref(b, &mut b_copy);
    let c = MatMut::from_row_major_slice_mut(c, a.nrows(), b.ncols());
    faer::linalg::matmul::matmul(c, Accum::Add, a, b, 1.0, Par::Seq);
}

/// `m` as a faer matrix: its own values when they are contiguous in either order (a chunk, or a
/// transposed one), else a row-major copy in `copy` (a strided view).
fn faer_ref<'a>(m: ArrayView2<'a, f64>, copy: &'a mut Vec<f64>) -> MatRef<'a, f64> {
    let (rows, cols) = m.dim();
    if let Some(values) = m.to_slice() {
        return MatRef::from_row_major_slice(values, rows, cols);
    }
    if let Some(values) = m.reversed_axes().to_slice() {
        return MatRef::from_column_major_slice(values, rows, cols);
    }
    *copy = m.iter().copied().collect();
    MatRef::from_row_major_slice(copy, rows, cols)
}

/// `array.add`: the blocks' elementwise sum.
pub(super) fn add(blocks: &[Input<Chunk>], inputs: &Inputs<'_>) -> Result<Chunk, KernelError> {
    let (first, rest) = blocks
        .split_first()
        .ok_or_else(|| KernelError::failed("a sum of no blocks"))?;
    let mut acc = inputs.get(*first)?.into_array();
    for &b in rest {
        let block = inputs.get(b)?;
        if block.shape() != acc.shape() {
            return Err(inputs.input_error(
                b.index(),
                format!(
                    "a block of shape {:?} does not add to shape {:?}",
                    block.shape(),
                    acc.shape()
                ),
            ));
        }
        acc += block.array();
    }
    Ok(Chunk::new(acc))
}

/// `array.rechunk`: a chunk of `shape` assembled from pieces of old chunks.
pub(super) fn rechunk(
    shape: &[usize],
    pieces: &[RechunkPiece],
    inputs: &Inputs<'_>,
) -> Result<Chunk, KernelError> {
    let mut out = ArrayD::<f64>::zeros(IxDyn(shape));
    for p in pieces {
        let src = inputs.get(p.source)?;
        if p.ranges.len() != shape.len() || p.offset.len() != shape.len() {
            return Err(KernelError::failed(format!(
                "a piece of {} ranges at {:?} for a chunk of shape {shape:?}",
                p.ranges.len(),
                p.offset
            )));
        }
        if src.ndim() != shape.len() {
            return Err(inputs.input_error(
                p.source.index(),
                format!(
                    "a chunk of shape {:?} is not a piece of shape {shape:?}",
                    src.shape()
                ),
            ));
        }
        let mut from = src.view();
        let mut to = out.view_mut();
        for (d, r) in p.ranges.iter().enumerate() {
            let len = r.end.saturating_sub(r.start);
            if r.start > r.end || r.end > src.shape()[d] || p.offset[d] + len > shape[d] {
                return Err(KernelError::failed(format!(
                    "piece {}..{} of a dimension of {} at {} is out of bounds for {}",
                    r.start,
                    r.end,
                    src.shape()[d],
                    p.offset[d],
                    shape[d]
                )));
            }
            from.slice_axis_inplace(Axis(d), Slice::from(r.clone()));
            to.slice_axis_inplace(Axis(d), Slice::from(p.offset[d]..p.offset[d] + len));
        }
        to.assign(&from);
    }
    Ok(Chunk::new(out))
}
