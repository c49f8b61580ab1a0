//! Adaptive scaling from the scheduler's queue: one pure [`policy`] for every backend.

pub mod policy;
