//! What the dashboard's panels know of one task: its prefix and where its state counts.

/// Index of a task prefix (the part of a key before its first `-`) in the progress counts
/// (`feed::Progress`).
pub type PrefixId = u32;

/// Where a task state counts on the progress and graph panels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// Known but not needed now (released, or not yet started).
    Released,
    /// Waiting for inputs, or ready and waiting for a worker.
    Waiting,
    Processing,
    Memory,
    Erred,
}
