//! rask's core: what every other layer of the engine shares, and nothing else.
//!
//! - [`key`] and [`task`]: what a task is (a key, a function name, inputs, a payload, resources);
//! - [`data`] and [`value`]: results as bytes, and the dynamic scalar value;
//! - [`function`]: task functions, typed by [`function::Func`], and the [`function::Registry`]
//!   that whoever builds a worker fills;
//! - [`protocol`] and [`net`]: every message between processes, and the connections carrying them;
//! - [`tls`]: mutual TLS for those connections (`tls://` addresses);
//! - [`table`] and [`small_bytes`]: compact storage for a million tasks or results: values by
//!   key in a vector of slots, and short byte strings inline;
//! - [`units`]: sizes written by people (`4GiB`);
//! - [`ticks`]: how responsive an event loop is, for the scheduler's and workers' metrics.
//!
//! No collection (arrays, dataframes) and no Python lives here: they register their functions
//! and data types from above.

pub mod data;
pub mod function;
pub mod key;
pub mod net;
mod pickled;
pub mod process;
pub mod protocol;
pub mod small_bytes;
pub mod table;
pub mod task;
pub mod ticks;
pub mod tls;
pub mod units;
pub mod value;

pub use data::{Data, DataError, Encoded, Pickled};
pub use function::{
    Family, FamilyInfo, Func, Input, Inputs, KernelError, KernelTask, Operand, PythonException,
    Registry,
};
pub use key::Key;
pub use small_bytes::SmallBytes;
pub use task::{FuncName, Resources, TaskSpec};
pub use value::Value;
