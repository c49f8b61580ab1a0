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

// pub mod batch;
pub mod commands;
pub mod config;
pub mod error;
pub mod vm;

pub use error::ProviderError;
