//! The autoscaling policy as a pure function: from what the scheduler reports and the settings,
//! a decision to add workers, retire named ones, or hold — with the reason.
//!
//! Stabilization works as in Kubernetes' HorizontalPodAutoscaler: a scale-down follows the
//! *highest* target seen over the down window (a brief dip retires nobody), a scale-up the *lowest*
//! over the up window (zero by default: react at once). Missing data never scales anything.

use std::collections::VecDeque;
use std::time::Duration;

/// Bounds and damping of one worker group's autoscaler.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub minimum: usize,
    pub maximum: usize,
    /// Scale up to the lowest target seen over this window.
    pub up_window: Duration,
    /// Scale down to the highest target seen over this window.
    pub down_window: Duration,
    /// Most workers added by one decision.
    pub max_step_up: usize,
    /// Most workers retired by one decision.
    pub max_step_down: usize,
}

impl Settings {
    pub fn new(minimum: usize, maximum: usize) -> Self {
        Settings {
            minimum,
            maximum: maximum.max(minimum),
            up_window: Duration::ZERO,
            down_window: Duration::from_secs(30),
            max_step_up: usize::MAX,
            max_step_down: usize::MAX,
        }
    }
}

/// A worker of the scaled group, as the scheduler reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupWorker {
    pub name: String,
    /// Bytes of results it holds, when the scheduler says (rask's does; Dask's API does not).
    pub nbytes: Option<u64>,
}

/// One poll of the scheduler.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// Seconds (any monotonic origin).
    pub at: f64,
    /// `adaptive_target` for this group, or `None` when the scheduler did not answer.
    pub target: Option<usize>,
    /// Workers of this group that exist now (pods, processes or VMs), including ones starting.
    pub current: usize,
    /// The group's workers the scheduler knows, newest first.
    pub workers: Vec<GroupWorker>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    ScaleUp {
        by: usize,
        reason: String,
    },
    /// Remove `unstarted` workers the scheduler does not know yet (they hold nothing), and retire
    /// the named ones through the scheduler.
    Retire {
        workers: Vec<String>,
        unstarted: usize,
        reason: String,
    },
    Hold {
        reason: String,
    },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::ScaleUp { reason, .. }
            | Decision::Retire { reason, .. }
            | Decision::Hold { reason } => reason,
        }
    }
}

/// The policy with its memory of recent targets.
#[derive(Clone, Debug)]
pub struct Policy {
    settings: Settings,
    history: VecDeque<(f64, usize)>,
}

impl Policy {
    pub fn new(settings: Settings) -> Self {
        Policy {
            settings,
            history: VecDeque::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decides what to do now.
    pub fn decide(&mut self, obs: &Observation) -> Decision {
        let s = &self.settings;
        let Some(raw) = obs.target else {
            return Decision::Hold {
                reason: format!(
                    "the scheduler did not answer; holding at {} workers",
                    obs.current
                ),
            };
        };
        let target = raw.clamp(s.minimum, s.maximum);
        self.history.push_back((obs.at, target));
        let keep = s.up_window.max(s.down_window).as_secs_f64();
        while self.history.front().is_some_and(|(t, _)| obs.at - t > keep) {
            self.history.pop_front();
        }
        let within = |w: Duration| {
            self.history
                .iter()
                .filter(move |(t, _)| obs.at - t <= w.as_secs_f64())
                .map(|(_, n)| *n)
        };
        let up_to = within(s.up_window).min().unwrap_or(target);
        let down_to = within(s.down_window).max().unwrap_or(target);
        let why = |n: usize| {
            if raw == n {
                format!("the scheduler wants {raw}")
            } else {
                format!(
                    "the scheduler wants {raw}, bounded to {}..={}",
                    s.minimum, s.maximum
                )
            }
        };
        if up_to > obs.current {
            let by = (up_to - obs.current).min(s.max_step_up);
            return Decision::ScaleUp {
                by,
                reason: format!("{}; {} workers now", why(up_to), obs.current),
            };
        }
        if down_to < obs.current {
            let excess = (obs.current - down_to).min(s.max_step_down);
            // Starting workers the scheduler does not know yet hold nothing: they go first (the
            // backend removes them without retirement); among known ones, least data, newest first.
            let starting = obs.current.saturating_sub(obs.workers.len());
            let mut known: Vec<(usize, &GroupWorker)> = obs.workers.iter().enumerate().collect();
            known.sort_by_key(|(i, w)| (w.nbytes.unwrap_or(0), *i));
            let unstarted = excess.min(starting);
            let from_known = excess - unstarted;
            let workers: Vec<String> = known
                .iter()
                .take(from_known)
                .map(|(_, w)| w.name.clone())
                .collect();
            let reason = format!(
                "{} for the last {:?}; {} workers now",
                why(down_to),
                s.down_window,
                obs.current
            );
            if workers.is_empty() && unstarted == 0 {
                return Decision::Hold {
                    reason: format!("{reason}, but the scheduler reports none of them to retire"),
                };
            }
            return Decision::Retire {
                workers,
                unstarted,
                reason,
            };
        }
        if target < obs.current {
            return Decision::Hold {
                reason: format!(
                    "{}; waiting {:?} before scaling down",
                    why(target),
                    s.down_window
                ),
            };
        }
        Decision::Hold {
            reason: format!("{}; {} workers now", why(target), obs.current),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<GroupWorker> {
        (0..n)
            .rev()
            .map(|i| GroupWorker {
                name: format!("w{i}"),
                nbytes: None,
            })
            .collect()
    }

    fn obs(at: f64, target: Option<usize>, current: usize) -> Observation {
        Observation {
            at,
            target,
            current,
            workers: workers(current),
        }
    }

    /// Runs a scripted sequence, applying each decision to `current` at once, and returns the
    /// worker counts after each step.
    fn run(
        settings: Settings,
        start: usize,
        script: &[(f64, Option<usize>)],
    ) -> (Vec<usize>, Vec<Decision>) {
        let mut p = Policy::new(settings);
        let mut current = start;
        let mut counts = Vec::new();
        let mut decisions = Vec::new();
        for &(at, target) in script {
            let d = p.decide(&obs(at, target, current));
            match &d {
                Decision::ScaleUp { by, .. } => current += by,
                Decision::Retire {
                    workers, unstarted, ..
                } => current -= workers.len() + unstarted,
                Decision::Hold { .. } => {}
            }
            counts.push(current);
            decisions.push(d);
        }
        (counts, decisions)
    }

    fn direction_changes(counts: &[usize]) -> usize {
        let deltas: Vec<i64> = counts
            .windows(2)
            .map(|w| w[1] as i64 - w[0] as i64)
            .filter(|d| *d != 0)
            .collect();
        deltas
            .windows(2)
            .filter(|w| w[0].signum() != w[1].signum())
            .count()
    }

    #[test]
    fn a_burst_scales_up_at_once_and_down_after_the_window() {
        let s = Settings::new(1, 10);
        let mut script: Vec<(f64, Option<usize>)> = vec![(0.0, Some(1)), (1.0, Some(40))];
        script.extend((2..60).map(|t| (t as f64, Some(if t < 10 { 40 } else { 1 }))));
        let (counts, _) = run(s, 1, &script);
        assert_eq!(
            counts[1], 10,
            "the spike reaches the maximum in one decision"
        );
        // Load ends at t=10: the maximum holds for the 30 s window, then back to the minimum.
        assert_eq!(counts[38], 10);
        assert_eq!(*counts.last().unwrap(), 1);
        assert_eq!(direction_changes(&counts), 1);
    }

    #[test]
    fn a_slow_ramp_follows_step_by_step_within_the_maximum() {
        let s = Settings {
            max_step_up: 2,
            ..Settings::new(0, 8)
        };
        let script: Vec<(f64, Option<usize>)> = (0..12).map(|t| (t as f64, Some(t))).collect();
        let (counts, _) = run(s, 0, &script);
        assert_eq!(counts, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8]);
    }

    #[test]
    fn oscillating_load_does_not_thrash() {
        let s = Settings::new(1, 20);
        let script: Vec<(f64, Option<usize>)> = (0..120)
            .map(|t| (t as f64, Some(if (t / 5) % 2 == 0 { 12 } else { 2 })))
            .collect();
        let (counts, _) = run(s, 1, &script);
        assert_eq!(direction_changes(&counts), 0, "{counts:?}");
        assert_eq!(*counts.last().unwrap(), 12);
    }

    #[test]
    fn a_silent_scheduler_holds_and_never_scales_to_zero() {
        let s = Settings::new(0, 10);
        let mut script = vec![(0.0, Some(5))];
        script.extend((1..100).map(|t| (t as f64, None)));
        let (counts, decisions) = run(s, 0, &script);
        assert!(counts.iter().skip(1).all(|c| *c == 5), "{counts:?}");
        assert!(decisions[50].reason().contains("did not answer"));
    }

    #[test]
    fn bounds_win_over_the_target() {
        // minimum above the target
        let (counts, d) = run(Settings::new(3, 10), 3, &[(0.0, Some(0)), (100.0, Some(0))]);
        assert_eq!(counts, vec![3, 3]);
        assert!(matches!(d[1], Decision::Hold { .. }));
        // maximum below the target
        let (counts, d) = run(Settings::new(0, 4), 1, &[(0.0, Some(100))]);
        assert_eq!(counts, vec![4]);
        assert!(
            d[0].reason().contains("bounded to 0..=4"),
            "{}",
            d[0].reason()
        );
    }

    #[test]
    fn retirement_names_least_loaded_then_newest_workers_and_starting_ones_go_first() {
        let mut p = Policy::new(Settings {
            down_window: Duration::ZERO,
            ..Settings::new(0, 10)
        });
        let o = Observation {
            at: 0.0,
            target: Some(1),
            current: 4,
            workers: vec![
                GroupWorker {
                    name: "new".into(),
                    nbytes: Some(10),
                },
                GroupWorker {
                    name: "mid".into(),
                    nbytes: Some(0),
                },
                GroupWorker {
                    name: "old".into(),
                    nbytes: Some(5),
                },
            ],
        };
        // One worker is still starting (4 exist, the scheduler knows 3): it counts first.
        match p.decide(&o) {
            Decision::Retire {
                workers, unstarted, ..
            } => {
                assert_eq!(unstarted, 1);
                assert_eq!(workers, vec!["mid".to_string(), "old".into()]);
            }
            other => panic!("{other:?}"),
        }
    }
}
