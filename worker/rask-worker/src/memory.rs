//! The worker's memory model, as Dask's (`distributed.worker.memory.*`): with a memory limit,
//! results are spilled to disk to keep the store under *target* (60%) of it; when the whole
//! process is over *spill* (70%) more is spilled; over *pause* (80%) the worker starts no new
//! task until it is back under; over *terminate* (95%) the nanny, the worker's parent process,
//! restarts it. The policy here is a pure function of a sample; sampling the process's RSS is
//! [`rask_core::process::process_rss`].

/// A measurement of the worker's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// The process's resident set, bytes.
    pub rss: u64,
    /// Bytes of results held in memory by the store (Dask's *managed* memory).
    pub managed: u64,
}

/// The fractions of the memory limit at which the worker acts; `None` turns a step off (Dask's
/// `false`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryFractions {
    pub target: Option<f64>,
    pub spill: Option<f64>,
    pub pause: Option<f64>,
    pub terminate: Option<f64>,
}

impl Default for MemoryFractions {
    /// Dask's defaults.
    fn default() -> Self {
        MemoryFractions {
            target: Some(0.6),
            spill: Some(0.7),
            pause: Some(0.8),
            terminate: Some(0.95),
        }
    }
}

/// A fraction that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} = {value:?}: expected a fraction of the memory limit between 0 and 1, or false")]
pub struct FractionError {
    pub name: String,
    pub value: String,
}

impl MemoryFractions {
    /// Reads Dask's settings from the environment (`DASK_DISTRIBUTED__WORKER__MEMORY__TARGET`,
    /// `...SPILL`, `...PAUSE`, `...TERMINATE`): a fraction, or `false` to turn the step off.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, FractionError> {
        let mut f = MemoryFractions::default();
        for (name, slot) in [
            ("TARGET", &mut f.target),
            ("SPILL", &mut f.spill),
            ("PAUSE", &mut f.pause),
            ("TERMINATE", &mut f.terminate),
        ] {
            let var = format!("DASK_DISTRIBUTED__WORKER__MEMORY__{name}");
            if let Some(value) = get(&var) {
                *slot = parse_fraction(&value).map_err(|_| FractionError {
                    name: var.clone(),
                    value: value.clone(),
                })?;
            }
        }
        Ok(f)
    }
}

fn parse_fraction(s: &str) -> Result<Option<f64>, ()> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("false") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match t.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(Some(v)),
        _ => Err(()),
    }
}

/// The memory policy of one worker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryPolicy {
    /// Bytes; 0 means no limit (nothing is spilled, paused or terminated).
    pub limit: u64,
    pub fractions: MemoryFractions,
}

/// What a sample calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryDecision {
    /// Spill results until at most this many bytes stay in memory.
    pub spill_to: Option<u64>,
    /// Whether the worker should be paused.
    pub paused: bool,
}

impl MemoryPolicy {
    pub fn new(limit: u64, fractions: MemoryFractions) -> Self {
        MemoryPolicy { limit, fractions }
    }

    fn bytes(&self, fraction: Option<f64>) -> Option<u64> {
        (self.limit > 0)
            .then_some(fraction)
            .flatten()
            .map(|f| (self.limit as f64 * f) as u64)
    }

    /// The store's own budget: results beyond it go to disk as they arrive.
    pub fn target_bytes(&self) -> Option<u64> {
        self.bytes(self.fractions.target)
    }

    /// Process memory at which the nanny restarts the worker.
    pub fn terminate_bytes(&self) -> Option<u64> {
        self.bytes(self.fractions.terminate)
    }

    pub fn decide(&self, s: MemorySample, paused: bool) -> MemoryDecision {
        // Over the spill threshold, spill what it takes to bring the process back to the target
        // (or all of it: the rest of the memory is not the store's).
        let spill_to = match (self.bytes(self.fractions.spill), self.target_bytes()) {
            (Some(spill), target) if s.rss > spill && s.managed > 0 => {
                let goal = target.unwrap_or(spill);
                let excess = s.rss.saturating_sub(goal);
                Some(s.managed.saturating_sub(excess))
            }
            _ => None,
        };
        let paused = match self.bytes(self.fractions.pause) {
            // Resume a little under the threshold, so a worker near it does not flap.
            Some(pause) if paused => s.rss > pause - pause / 20,
            Some(pause) => s.rss > pause,
            None => false,
        };
        MemoryDecision { spill_to, paused }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn policy() -> MemoryPolicy {
        MemoryPolicy::new(1000 * MB, MemoryFractions::default())
    }

    fn sample(rss_mb: u64, managed_mb: u64) -> MemorySample {
        MemorySample {
            rss: rss_mb * MB,
            managed: managed_mb * MB,
        }
    }

    #[test]
    fn thresholds_as_dask() {
        let p = policy();
        let cases = [
            // (rss, managed, paused before) -> (spill to, paused)
            ((500, 300, false), (None, false)),
            ((650, 300, false), (None, false)),
            // over spill (700): bring the process to target (600) → spill 150 of 300
            ((750, 300, false), (Some(150), false)),
            // over pause (800) too
            ((850, 300, false), (Some(50), true)),
            // the excess is more than the store holds: spill everything
            ((900, 100, false), (Some(0), true)),
            // paused stays paused just under the threshold, resumes clearly under it
            ((790, 0, true), (None, true)),
            ((750, 0, true), (None, false)),
        ];
        for ((rss, managed, was), (spill, paused)) in cases {
            let d = p.decide(sample(rss, managed), was);
            assert_eq!(
                (d.spill_to, d.paused),
                (spill.map(|m| m * MB), paused),
                "rss {rss} MB, managed {managed} MB, paused {was}"
            );
        }
    }

    #[test]
    fn no_limit_or_steps_turned_off_do_nothing() {
        let none = MemoryPolicy::new(0, MemoryFractions::default());
        assert_eq!(
            none.decide(sample(10_000, 5_000), false),
            MemoryDecision {
                spill_to: None,
                paused: false
            }
        );
        assert_eq!(none.terminate_bytes(), None);
        let off = MemoryPolicy::new(
            1000 * MB,
            MemoryFractions {
                spill: None,
                pause: None,
                ..MemoryFractions::default()
            },
        );
        assert_eq!(
            off.decide(sample(990, 500), false),
            MemoryDecision {
                spill_to: None,
                paused: false
            }
        );
        assert_eq!(policy().terminate_bytes(), Some(950 * MB));
    }

    #[test]
    fn fractions_from_dask_settings() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let f = MemoryFractions::from_env(env(&[
            ("DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE", "0.5"),
            ("DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE", "False"),
        ]))
        .unwrap();
        assert_eq!(f.pause, Some(0.5));
        assert_eq!(f.terminate, None);
        assert_eq!(f.target, Some(0.6));
        let err =
            MemoryFractions::from_env(env(&[("DASK_DISTRIBUTED__WORKER__MEMORY__SPILL", "70%")]))
                .unwrap_err();
        assert_eq!(err.name, "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL");
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
        assert!(
            MemoryFractions::from_env(env(&[("DASK_DISTRIBUTED__WORKER__MEMORY__TARGET", "1.5")]))
                .is_err()
        );
    }
}
