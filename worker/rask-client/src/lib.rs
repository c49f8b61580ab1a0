//! The client: connects to a scheduler, submits tasks and delayed graphs, and gathers results.
//!
//! Tasks are calls of registered functions, typed by their [`Func`] constant (see
//! [`rask_core::function`]); a [`Future<R>`] is a result on the cluster whose value is an `R`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rask_client::ClientError> {
//! use rask_client::Client;
//! use rask_core::{Func, Operand, Value};
//!
//! const INC: Func<Operand<Value>, Value> = Func::new("seed.inc");
//! const SUM: Func<Vec<Operand<Value>>, Value> = Func::new("seed.sum");
//!
//! let client = Client::connect("tcp://127.0.0.1:8786").await?;
//! let futures = client.map(INC, (0..10).map(|i| Operand::Value(Value::Int(i))));
//! let total = client.submit_with(SUM, |d| futures.iter().map(|f| d.input(f).into()).collect());
//! assert_eq!(total.result().await?, Value::Int(55));
//! # Ok(()) }
//! ```

mod client;
pub mod delayed;
mod follows;
pub mod progress;
pub mod visualize;

pub use client::{Client, ClientError, Future};
pub use delayed::{Delayed, Deps, delayed, delayed_with, graph_of, kernel};
pub use progress::{Progress, ProgressSnapshot};
