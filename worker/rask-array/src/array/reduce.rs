//! Reductions as trees: one `array.partial` per chunk (its expression fused in), combined
//! `split_every` at a time by `array.combine` nodes until one remains per output chunk.

use rask_client::delayed::Delayed;
use rask_client::kernel;
use rask_core::Input;

use super::{Array, Block, Expr};
use crate::chunk::Chunk;
use crate::chunks::Grid;
use crate::error::ArrayError;
use crate::task::{ArgOp, ArgPartial, ArrayTask, Combine, Moments, Reduction, Spread};

/// Where a combine node sits in its tree.
#[derive(Clone, Copy)]
enum Level {
    /// Below the root: gives a partial result for the next level.
    Inner,
    /// The root: gives the output chunk; `count` elements were reduced into each value.
    Root { count: usize },
}

impl Level {
    fn is_root(self) -> bool {
        matches!(self, Level::Root { .. })
    }
}

impl Array {
    pub fn sum(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(
            axis,
            |_| Reduction::Sum,
            |parts: Vec<Input<Chunk>>, _| Combine::Sum {
                parts,
                divisor: None,
            },
        )
    }

    pub fn min(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(
            axis,
            |_| Reduction::Min,
            |parts: Vec<Input<Chunk>>, _| Combine::Min { parts },
        )
    }

    pub fn max(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(
            axis,
            |_| Reduction::Max,
            |parts: Vec<Input<Chunk>>, _| Combine::Max { parts },
        )
    }

    pub fn mean(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.reduce(
            axis,
            |_| Reduction::Sum,
            |parts: Vec<Input<Chunk>>, level| Combine::Sum {
                parts,
                divisor: match level {
                    Level::Root { count } => Some(count as f64),
                    Level::Inner => None,
                },
            },
        )
    }

    /// Variance with `ddof` delta degrees of freedom (NumPy's default is 0).
    pub fn var(&self, axis: Option<usize>, ddof: f64) -> Result<Array, ArrayError> {
        self.spread(axis, Spread::Var { ddof })
    }

    /// Standard deviation with `ddof` delta degrees of freedom (NumPy's default is 0).
    pub fn std(&self, axis: Option<usize>, ddof: f64) -> Result<Array, ArrayError> {
        self.spread(axis, Spread::Std { ddof })
    }

    fn spread(&self, axis: Option<usize>, spread: Spread) -> Result<Array, ArrayError> {
        self.reduce(
            axis,
            |_| Reduction::Moments,
            |parts: Vec<Input<Moments>>, level| Combine::Moments {
                parts,
                spread: level.is_root().then_some(spread),
            },
        )
    }

    /// The index of the smallest value: in the flattened array (C order) for `None`, along the
    /// axis otherwise, as NumPy's `argmin` (the first of equal values; the first NaN if any).
    /// Indices are f64, exact below 2^53.
    pub fn argmin(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.arg(ArgOp::Min, axis)
    }

    /// The index of the largest value, as [`Array::argmin`].
    pub fn argmax(&self, axis: Option<usize>) -> Result<Array, ArrayError> {
        self.arg(ArgOp::Max, axis)
    }

    fn arg(&self, op: ArgOp, axis: Option<usize>) -> Result<Array, ArrayError> {
        let grid = &self.grid;
        self.reduce(
            axis,
            |idx| Reduction::Arg {
                op,
                offset: grid.block_offset(idx),
                array_shape: grid.shape().to_vec(),
            },
            |parts: Vec<Input<ArgPartial>>, level| Combine::Arg {
                op,
                parts,
                root: level.is_root(),
            },
        )
    }

    /// A tree reduction over all axes (`None`) or one: `reduction` is each chunk's partial
    /// (given the chunk's block index), `combine` a node of partials of type `P`.
    fn reduce<P>(
        &self,
        axis: Option<usize>,
        reduction: impl Fn(&[usize]) -> Reduction,
        combine: impl Fn(Vec<Input<P>>, Level) -> Combine,
    ) -> Result<Array, ArrayError> {
        if let Some(axis) = axis
            && axis >= self.ndim()
        {
            return Err(ArrayError::Axis {
                axis,
                ndim: self.ndim(),
            });
        }
        let partial = |idx: &[usize]| -> Delayed<P> {
            let b = &self.blocks[self.grid.linear(idx)];
            kernel(|deps| ArrayTask::Partial {
                expr: b.expr(deps),
                shape: b.shape().to_vec(),
                reduction: reduction(idx),
                axis,
            })
        };
        match axis {
            None => {
                let parts = self
                    .grid
                    .block_indices()
                    .iter()
                    .map(|idx| partial(idx))
                    .collect();
                let count = self.grid.size();
                let root = self.tree(parts, &combine, count);
                let grid = Grid::from_chunks(&[], vec![])?;
                Ok(self.with_blocks(grid, vec![Block::new(vec![], Expr::Task(root.into()))]))
            }
            Some(ax) => {
                let grid = self.grid.without(ax);
                let along = self.grid.blocks_per_dim()[ax];
                let count = self.shape()[ax];
                let blocks = grid
                    .block_indices()
                    .iter()
                    .map(|idx| {
                        let parts = (0..along)
                            .map(|k| {
                                let mut full = idx.clone();
                                full.insert(ax, k);
                                partial(&full)
                            })
                            .collect();
                        let root = self.tree(parts, &combine, count);
                        Block::new(grid.block_shape(idx), Expr::Task(root.into()))
                    })
                    .collect();
                Ok(self.with_blocks(grid, blocks))
            }
        }
    }

    /// Combines `parts` `split_every` at a time until one remains; the root gives the chunk.
    fn tree<P>(
        &self,
        mut parts: Vec<Delayed<P>>,
        combine: &impl Fn(Vec<Input<P>>, Level) -> Combine,
        count: usize,
    ) -> Delayed<Chunk> {
        while parts.len() > self.split_every {
            parts = parts
                .chunks(self.split_every)
                .map(|group| combine_node(group, Level::Inner, combine))
                .collect();
        }
        combine_node(&parts, Level::Root { count }, combine)
    }
}

/// One `array.combine` task over `group`; its result is the caller's to name (a partial below
/// the root, the chunk at it).
fn combine_node<P, R>(
    group: &[Delayed<P>],
    level: Level,
    combine: &impl Fn(Vec<Input<P>>, Level) -> Combine,
) -> Delayed<R> {
    kernel(|deps| {
        let parts = group.iter().map(|p| deps.input(p)).collect();
        ArrayTask::Combine(combine(parts, level))
    })
}
