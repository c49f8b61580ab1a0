//! Kernels on whole chunks: sums of block products (`array.matmul`), sums of blocks
//! (`array.add`), and chunks assembled from pieces of others (`array.rechunk`).

use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2, IxDyn, Slice};
use rask_core::{Input, Inputs, KernelError};

use crate::chunk::Chunk;
use crate::task::RechunkPiece;

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

/// `array.matmul`: Σ a_k · b_k over the pairs, with ndarray's (matrixmultiply's) gemm.
pub(super) fn matmul(
    pairs: &[(Input<Chunk>, Input<Chunk>)],
    inputs: &Inputs<'_>,
) -> Result<Chunk, KernelError> {
    let mut out: Option<Array2<f64>> = None;
    for &(a, b) in pairs {
        let (ca, cb) = (inputs.get(a)?, inputs.get(b)?);
        let x = matrix(&ca, a, inputs)?;
        let y = matrix(&cb, b, inputs)?;
        if x.ncols() != y.nrows() {
            return Err(KernelError::failed(format!(
                "blocks of shapes {:?} and {:?} (inputs {} and {}) do not multiply",
                x.shape(),
                y.shape(),
                a.index(),
                b.index()
            )));
        }
        let c = out.get_or_insert_with(|| Array2::zeros((x.nrows(), y.ncols())));
        if c.dim() != (x.nrows(), y.ncols()) {
            return Err(KernelError::failed(format!(
                "block products of shapes {:?} and {:?} do not add",
                c.shape(),
                [x.nrows(), y.ncols()]
            )));
        }
        ndarray::linalg::general_mat_mul(1.0, &x, &y, 1.0, c);
    }
    out.map(|c| Chunk::new(c.into_dyn()))
        .ok_or_else(|| KernelError::failed("a product of no blocks"))
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
