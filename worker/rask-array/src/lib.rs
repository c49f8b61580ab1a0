//! Chunked n-d arrays of f64 (Dask's `dask.array`): a shape cut into chunks, each chunk computed
//! by tasks on the cluster.
//!
//! ```no_run
//! # async fn demo(client: &rask_client::Client) -> Result<(), rask_array::ArrayError> {
//! use rask_array::{self as array, ChunkSpec};
//! let x = array::random(&[800, 800, 800], ChunkSpec::Size(200), 42)?;
//! let mean = x.mean(None)?.compute_scalar(client).await?;
//! let y = array::random(&[2000, 2000], ChunkSpec::Size(1000), 1)?;
//! let z = y.dot(&(&y.t() + 1.0))?.sub(&y.mean(None)?)?.std(None, 0.0)?;
//! println!("{mean} {}", z.compute_scalar(client).await?);
//! # Ok(()) }
//! ```
//!
//! Building an array builds no tasks yet: each chunk is a small expression (a source such as a
//! seeded random stream, under elementwise operations, transposes and slices). Operations that
//! need a chunk's values — `dot`, `rechunk`, `compute` — turn its expression into one task
//! (`array.eval`), shared by every later user of that chunk. Reductions fuse the expression into
//! their per-chunk task (`array.partial`), which streams it in cache-sized tiles, so
//! `random(..).mean()` never holds a whole chunk in memory; partial results are combined in a tree
//! (`array.combine`, `split_every` inputs per node). `dot` sums block products (`array.matmul`,
//! then `array.add`); `rechunk` assembles new chunks from pieces of old ones (`array.rechunk`).
//!
//! Every task is one value of a serde enum (`ArrayTask`, one variant per function), built by the
//! graph builders here and run by the kernels here, so both sides agree on every argument by
//! type: a chunk's expression is a typed tree, its inputs typed positions
//! ([`rask_core::Input`]). Workers run the kernels once the program that builds them registers
//! [`family()`]; the same registry runs a graph in-process, as tests do:
//!
//! ```
//! use rask_array::{Chunk, family};
//! use rask_core::{Data, Registry};
//!
//! let mut registry = Registry::new();
//! registry.register(family()).expect("one array family");
//! let x = rask_array::arange(0.0, 10.0, 1.0, 4)?; // chunks of 4, 4, 2
//! let total = x.mul(&x)?.sum(None)?;
//! let roots = total.to_delayed();
//! let done = registry
//!     .compute_local(&rask_client::delayed::graph_of(&roots), &[])
//!     .expect("the graph runs");
//! let chunks = roots.iter().map(|d| Chunk::decode(&done[d.key()])).collect::<Result<_, _>>()?;
//! assert_eq!(total.assemble(chunks)?.sum(), 285.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Array::persist`] keeps an array's chunks on the cluster and gives an array over their
//! futures; [`from_pickled`] makes a chunk of the raw values a Python task returned (the Python
//! package's `from_delayed`).
//!
//! Chunks travel as [`Chunk`]s, format tag [`TAG`]: the shape and the raw little-endian values.

mod array;
mod chunk;
mod chunks;
mod error;
mod kernels;
pub mod npy;
mod ops;
mod random;
mod task;

pub use array::Array;
pub use array::create::{arange, from_ndarray, from_npy, from_pickled, full, ones, random, zeros};
pub use chunk::{Chunk, TAG};
pub use chunks::{AUTO_CHUNK_BYTES, ChunkSpec, Grid, Range};
pub use error::ArrayError;
pub use ops::{BinOp, UnOp};

use rask_core::Family;

/// The family's name: its functions are `array.eval`, `array.partial`, ...
pub const FAMILY: &str = "array";

/// The array functions, for the program that builds a worker to register (`rask worker` does).
/// The version is this crate's: a client and a worker of different versions may disagree on the
/// tasks' arguments, and the scheduler reports the families workers hold.
pub fn family() -> Family {
    Family::new(FAMILY, env!("CARGO_PKG_VERSION")).kernels(kernels::run)
}

#[cfg(test)]
mod tests;
