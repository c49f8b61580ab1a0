//! The worker: executes tasks on a thread pool, stores results with spill to disk, serves them to
//! peers, and retires gracefully.

pub mod executor;
pub mod store;
