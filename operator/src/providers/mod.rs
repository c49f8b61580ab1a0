//! Clusters from a config file on resources rask does not own: cloud VMs (AWS EC2, Azure) and
//! batch queues (SLURM, SGE; PBS job scripts). The folders read in order:
//!
//! - [`config`]: the file, read strictly and settled into validated, typed values;
//! - [`vm`] and [`batch`]: the providers — what a VM or a batch job is, behind one [`Backend`]
//!   each (VMs through a cloud's API, jobs through `sbatch`/`squeue` or `qsub`/`qstat`);
//! - [`commands`]: `up`, `scale`, `status`, `logs`, `down`, `sweep`, `autoscale` and
//!   `job-script` as functions, which `main.rs` only parses arguments for and prints.
//!
//! [`Backend`]: crate::backend::Backend

pub mod batch;
pub mod commands;
pub mod config;
pub mod error;
pub mod vm;

pub use error::ProviderError;

/// A short random-enough suffix for VM and job names: time and a process-wide counter.
pub fn suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (t ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ u64::from(std::process::id()))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!("{:08x}", (mixed >> 32) as u32)
}
