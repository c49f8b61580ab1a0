//! Dask's adaptive target: how many workers the scheduler would like, as a pure function of its
//! load.
//!
//! The scheduler's state machine fills an [`AdaptiveInput`] and stores [`adaptive_target`]'s answer
//! in [`Snapshot::adaptive_target`](crate::Snapshot::adaptive_target), which the HTTP API serves as
//! `/api/v1/adaptive_target` and as the `dask_scheduler_desired_workers` metric. The rules follow
//! `Scheduler.adaptive_target` in Dask's `distributed/scheduler.py`:
//!
//! 1. **CPU.** Ask for enough threads to finish the known work within `target_duration`:
//!    `ceil((processing_seconds + queued_seconds) / target_duration)`, but never more threads than
//!    there are ready tasks (queued + processing), so a few long tasks do not ask for many cores.
//!    Threads become workers through the cluster's average threads per worker; with no workers
//!    yet, one thread counts as one worker.
//! 2. **Memory.** When the workers hold more than 60 % of their summed memory limits, ask for twice
//!    as many workers as there are now.
//! 3. **Scale down.** When the larger of the two asks for fewer workers than exist, the answer is
//!    the current count minus the workers that can be closed: idle workers, the ones holding least
//!    data first, as long as the workers left keep twice as much memory as the data held (Dask's
//!    `workers_to_close` with `memory_ratio=2`). A busy worker is never counted as closable, and
//!    without memory limits no worker is closable while any data is held.
//!
//! Differences from Dask, each deliberate:
//! - `queued_seconds` is whatever the caller sums over all queued tasks; Dask samples the first
//!   100 queued tasks and extrapolates, which is only a cheaper estimate of the same figure.
//! - While any task is queued or processing, or any data is held, the answer is at least 1. Dask
//!   gets there on its own except when every duration estimate is zero, where it can answer 0 with
//!   work queued; a cluster with work must not be told to shut down.
//! - When scaling down, the answer never drops below the CPU and memory ask. Dask answers
//!   "current minus closable" even when that undershoots its own CPU estimate (for example many
//!   idle workers beside a few busy ones with work queued), which an autoscaler would follow by
//!   scaling down and then straight back up.
//! - The memory floor keeps data at no more than half of the remaining memory (Dask's ratio of 2)
//!   rather than 60 %: scale-up triggers above 60 %, so scaling down to exactly 60 % would sit on
//!   the trigger and make the autoscaler flap.

use std::time::Duration;

/// Dask's default `distributed.adaptive.target-duration`: finish known work within 5 seconds.
pub const DEFAULT_TARGET_DURATION: Duration = Duration::from_secs(5);

/// Above this fraction of the summed memory limits held as data, the cluster asks to double.
const MEMORY_HIGH_WATER: f64 = 0.6;

/// When scaling down, the workers kept must have this many times the data held in memory limits.
const MEMORY_RATIO: u128 = 2;

/// What [`adaptive_target`] looks at; the scheduler's state machine fills it.
///
/// All fields are public and the struct implements [`Default`] (an idle cluster with no workers and
/// Dask's 5 s target duration), so callers can fill what they know with struct update syntax.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveInput {
    /// Tasks ready to run that no worker has yet: Dask's queued plus unrunnable (`no-worker`).
    pub queued: usize,
    /// Expected seconds to run all `queued` tasks, each at its task prefix's average duration
    /// (or a default estimate for prefixes never seen).
    pub queued_seconds: f64,
    /// Expected seconds of work left in the tasks workers are processing (Dask's
    /// `total_occupancy`).
    pub processing_seconds: f64,
    /// Every worker the scheduler knows, retiring ones included, as Dask counts them.
    pub workers: Vec<WorkerLoad>,
    /// How quickly the known work should finish; more workers are asked for the shorter it is.
    /// Zero asks for one thread per ready task.
    pub target_duration: Duration,
}

impl Default for AdaptiveInput {
    fn default() -> Self {
        AdaptiveInput {
            queued: 0,
            queued_seconds: 0.0,
            processing_seconds: 0.0,
            workers: Vec::new(),
            target_duration: DEFAULT_TARGET_DURATION,
        }
    }
}

/// One worker's share of the load, as [`adaptive_target`] needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Threads the worker runs tasks on.
    pub nthreads: u32,
    /// Tasks assigned to it and not yet finished.
    pub processing: usize,
    /// Bytes of results it holds.
    pub nbytes: u64,
    /// Its memory limit in bytes; 0 when it has none.
    pub memory_limit: u64,
}

/// The number of workers the scheduler would like for its current load (Dask's
/// `Scheduler.adaptive_target`); see the [module docs](self) for the rules.
pub fn adaptive_target(input: &AdaptiveInput) -> usize {
    let workers = &input.workers;
    let n_workers = workers.len();
    let processing: usize = workers.iter().map(|w| w.processing).sum();
    let ready = input.queued.saturating_add(processing);

    let cpu = cpu_workers(input, ready);

    let limit: u128 = workers.iter().map(|w| u128::from(w.memory_limit)).sum();
    let held: u128 = workers.iter().map(|w| u128::from(w.nbytes)).sum();
    let memory = if limit > 0 && held as f64 > MEMORY_HIGH_WATER * limit as f64 {
        n_workers.saturating_mul(2)
    } else {
        0
    };

    let has_work = ready > 0 || held > 0;
    let target = cpu.max(memory).max(usize::from(has_work));
    if target >= n_workers {
        return target;
    }
    target.max(n_workers - closable_workers(workers, held))
}

/// Rule 1: workers needed to finish the known work within the target duration.
fn cpu_workers(input: &AdaptiveInput, ready: usize) -> usize {
    // `max(0.0)` also turns a NaN estimate into 0.
    let work = input.processing_seconds.max(0.0) + input.queued_seconds.max(0.0);
    let target = input.target_duration.as_secs_f64();
    let threads = if target > 0.0 {
        // Saturating float-to-int conversion: an infinite estimate becomes usize::MAX and is then
        // capped by the ready tasks.
        (work / target).ceil() as usize
    } else {
        usize::MAX
    };
    // A few long tasks must not ask for more threads than there are tasks to run.
    let threads = threads.min(ready);

    let n_workers = input.workers.len();
    let nthreads: u128 = input.workers.iter().map(|w| u128::from(w.nthreads)).sum();
    if n_workers == 0 || nthreads == 0 {
        // Nothing to learn threads per worker from: count one worker per thread, and at least
        // one worker while tasks wait for any.
        return if input.queued > 0 {
            threads.max(1)
        } else {
            threads
        };
    }
    let workers = (threads as u128 * n_workers as u128).div_ceil(nthreads);
    usize::try_from(workers).unwrap_or(usize::MAX)
}

/// Rule 3: how many workers can close, idle ones holding least data first, while the rest keep
/// [`MEMORY_RATIO`] times the data held in memory limits.
fn closable_workers(workers: &[WorkerLoad], held: u128) -> usize {
    let mut order: Vec<&WorkerLoad> = workers.iter().collect();
    order.sort_by_key(|w| (w.processing > 0, w.nbytes));
    let mut limit: u128 = workers.iter().map(|w| u128::from(w.memory_limit)).sum();
    let needed = MEMORY_RATIO * held;
    let mut closable = 0;
    for w in order {
        if w.processing > 0 {
            break;
        }
        limit -= u128::from(w.memory_limit);
        if limit < needed {
            break;
        }
        closable += 1;
    }
    closable
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn idle(n: usize, nthreads: u32) -> Vec<WorkerLoad> {
        vec![
            WorkerLoad {
                nthreads,
                ..WorkerLoad::default()
            };
            n
        ]
    }

    fn holding(nbytes: &[u64], memory_limit: u64) -> Vec<WorkerLoad> {
        nbytes
            .iter()
            .map(|&nbytes| WorkerLoad {
                nthreads: 1,
                processing: 0,
                nbytes,
                memory_limit,
            })
            .collect()
    }

    #[test]
    fn default_is_an_idle_cluster_with_dasks_target_duration() {
        let input = AdaptiveInput::default();
        assert_eq!(input.target_duration, Duration::from_secs(5));
        assert_eq!(adaptive_target(&input), 0);
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, AdaptiveInput, usize)> = vec![
            ("idle cluster without workers", AdaptiveInput::default(), 0),
            (
                "idle workers without data all go",
                AdaptiveInput {
                    workers: idle(3, 2),
                    ..AdaptiveInput::default()
                },
                0,
            ),
            (
                "1000 queued 1-s tasks, no workers yet: one per 5 s of work",
                AdaptiveInput {
                    queued: 1000,
                    queued_seconds: 1000.0,
                    ..AdaptiveInput::default()
                },
                200,
            ),
            (
                "1000 queued 1-s tasks on single-threaded workers",
                AdaptiveInput {
                    queued: 1000,
                    queued_seconds: 1000.0,
                    workers: idle(10, 1),
                    ..AdaptiveInput::default()
                },
                200,
            ),
            (
                "1000 queued 1-s tasks on 2-thread workers: threads become workers",
                AdaptiveInput {
                    queued: 1000,
                    queued_seconds: 1000.0,
                    workers: idle(10, 2),
                    ..AdaptiveInput::default()
                },
                100,
            ),
            (
                "1000 queued 1-s tasks with a 1 s target",
                AdaptiveInput {
                    queued: 1000,
                    queued_seconds: 1000.0,
                    target_duration: Duration::from_secs(1),
                    ..AdaptiveInput::default()
                },
                1000,
            ),
            (
                "one short queued task and no workers still asks for one",
                AdaptiveInput {
                    queued: 1,
                    queued_seconds: 0.01,
                    ..AdaptiveInput::default()
                },
                1,
            ),
            (
                "three 100-s tasks ask for three workers, not sixty",
                AdaptiveInput {
                    processing_seconds: 300.0,
                    workers: vec![
                        WorkerLoad {
                            nthreads: 1,
                            processing: 1,
                            ..WorkerLoad::default()
                        };
                        3
                    ],
                    ..AdaptiveInput::default()
                },
                3,
            ),
            (
                "two long queued tasks and no workers ask for two",
                AdaptiveInput {
                    queued: 2,
                    queued_seconds: 7200.0,
                    ..AdaptiveInput::default()
                },
                2,
            ),
            (
                "a zero target duration asks for a thread per ready task",
                AdaptiveInput {
                    queued: 7,
                    queued_seconds: 0.7,
                    target_duration: Duration::ZERO,
                    ..AdaptiveInput::default()
                },
                7,
            ),
            (
                "above 60% of memory the cluster asks to double",
                AdaptiveInput {
                    workers: holding(&[GIB * 7 / 10, GIB * 7 / 10], GIB),
                    ..AdaptiveInput::default()
                },
                4,
            ),
            (
                "held data keeps twice its size in memory limits",
                AdaptiveInput {
                    workers: holding(&[GIB / 2; 6], GIB)
                        .into_iter()
                        .chain(holding(&[0; 4], GIB))
                        .collect(),
                    ..AdaptiveInput::default()
                },
                6,
            ),
            (
                "held data on idle workers without memory limits keeps them all",
                AdaptiveInput {
                    workers: holding(&[1, 0, 0, 0], 0),
                    ..AdaptiveInput::default()
                },
                4,
            ),
            (
                "a little held data keeps one worker",
                AdaptiveInput {
                    workers: holding(&[1000, 0, 0], GIB),
                    ..AdaptiveInput::default()
                },
                1,
            ),
            (
                "busy workers are never closed",
                AdaptiveInput {
                    processing_seconds: 0.2,
                    workers: vec![
                        WorkerLoad {
                            nthreads: 1,
                            processing: 1,
                            ..WorkerLoad::default()
                        },
                        WorkerLoad {
                            nthreads: 1,
                            processing: 1,
                            ..WorkerLoad::default()
                        },
                        WorkerLoad {
                            nthreads: 1,
                            ..WorkerLoad::default()
                        },
                        WorkerLoad {
                            nthreads: 1,
                            ..WorkerLoad::default()
                        },
                    ],
                    ..AdaptiveInput::default()
                },
                2,
            ),
            (
                "queued tasks without duration estimates keep one worker",
                AdaptiveInput {
                    queued: 5,
                    workers: idle(3, 1),
                    ..AdaptiveInput::default()
                },
                1,
            ),
            (
                "scale-down stops at the CPU ask, not below",
                AdaptiveInput {
                    queued: 20,
                    queued_seconds: 15.0,
                    processing_seconds: 2.0,
                    workers: std::iter::once(WorkerLoad {
                        nthreads: 1,
                        processing: 2,
                        ..WorkerLoad::default()
                    })
                    .chain(idle(9, 1))
                    .collect(),
                    ..AdaptiveInput::default()
                },
                4,
            ),
            (
                "NaN and negative estimates count as no work",
                AdaptiveInput {
                    queued: 1,
                    queued_seconds: f64::NAN,
                    processing_seconds: -3.0,
                    ..AdaptiveInput::default()
                },
                1,
            ),
            (
                "an infinite estimate is capped by the ready tasks",
                AdaptiveInput {
                    queued: 3,
                    queued_seconds: f64::INFINITY,
                    workers: idle(1, 1),
                    ..AdaptiveInput::default()
                },
                3,
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(adaptive_target(&input), want, "{name}");
        }
    }

    #[test]
    fn workers_without_threads_count_as_one_worker_per_thread() {
        let input = AdaptiveInput {
            queued: 10,
            queued_seconds: 20.0,
            workers: idle(2, 0),
            ..AdaptiveInput::default()
        };
        assert_eq!(adaptive_target(&input), 4);
    }
}
