//! `rask run`'s progress on stderr, from a [`Progress`] follow of the job's submissions: one
//! bar per task prefix on a terminal (indicatif), plain lines otherwise (a log, a pipe, a CI
//! job), nothing with `--no-progress`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;

use rask_client::{Progress, ProgressSnapshot};
use rask_core::protocol::PrefixProgress;

/// Least time between two rounds of plain lines: a log gets a line per prefix every few
/// seconds, not one per report.
pub(crate) const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// How long the view waits, once the job has its results, for the scheduler's final report.
const FINAL_REPORT_WAIT: Duration = Duration::from_secs(2);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Off,
    /// Plain lines, for logs and pipes.
    Lines,
    /// Bars redrawn in place, for a terminal.
    Bars,
}

impl Mode {
    /// Bars when stderr is a terminal, lines when it is not, nothing when turned off.
    pub(crate) fn detect(no_progress: bool) -> Mode {
        if no_progress {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// One prefix as a plain line: `inc: 120/400 tasks in memory, 0 erred`.
pub(crate) fn plain_line(p: &PrefixProgress) -> String {
    format!(
        "{}: {}/{} tasks in memory, {} erred",
        p.name,
        p.memory,
        p.total(),
        p.erred
    )
}

/// Plain lines as reports come: every [`LINE_INTERVAL`] a line for each prefix that changed
/// since its last line, and at the end a line for each prefix whose last line is out of date.
#[derive(Default)]
pub(crate) struct Lines {
    printed: HashMap<String, String>,
    last_round: Option<Instant>,
}

impl Lines {
    /// The lines to print for `snap` at `now`; `last`: the job is over, print what is new
    /// whatever the time.
    pub(crate) fn lines(
        &mut self,
        snap: &ProgressSnapshot,
        now: Instant,
        last: bool,
    ) -> Vec<String> {
        let due = last
            || self
                .last_round
                .is_none_or(|t| now.duration_since(t) >= LINE_INTERVAL);
        if !due {
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in &snap.prefixes {
            let line = plain_line(p);
            if self.printed.get(&p.name) != Some(&line) {
                self.printed.insert(p.name.clone(), line.clone());
                out.push(line);
            }
        }
        if !out.is_empty() {
            self.last_round = Some(now);
        }
        out
    }
}

/// Bars on a terminal, one per prefix, in order of appearance.
struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Bars {
    fn new() -> Bars {
        let style =
            ProgressStyle::with_template("{prefix:>14} {bar:40} {pos}/{len} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
            style,
        }
    }

    fn show(&mut self, snap: &ProgressSnapshot) {
        for p in &snap.prefixes {
            let bar = self.bars.entry(p.name.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(p.total()));
                b.set_style(self.style.clone());
                b.set_prefix(p.name.clone());
                b
            });
            bar.set_length(p.total());
            bar.set_position(p.memory);
            let mut msg = String::new();
            if p.processing > 0 {
                msg.push_str(&format!("{} running", p.processing));
            }
            if p.erred > 0 {
                if !msg.is_empty() {
                    msg.push_str(", ");
                }
                msg.push_str(&format!("{} erred", p.erred));
            }
            bar.set_message(msg);
        }
    }

    fn finish(self) {
        for bar in self.bars.values() {
            bar.finish();
        }
    }
}

/// Shows a follow's progress on stderr until [`View::finish`].
pub(crate) struct View {
    stop: Option<oneshot::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl View {
    /// Starts showing `progress` in `mode` (with [`Mode::Off`], shows nothing).
    pub(crate) fn start(mut progress: Progress, mode: Mode) -> View {
        if mode == Mode::Off {
            return View {
                stop: None,
                task: None,
            };
        }
        let (stop_tx, mut stop_rx) = oneshot::channel::<bool>();
        let task = tokio::spawn(async move {
            let mut bars = (mode == Mode::Bars).then(Bars::new);
            let mut lines = Lines::default();
            let mut show = |snap: &ProgressSnapshot, last: bool| match &mut bars {
                Some(b) => b.show(snap),
                None => {
                    for l in lines.lines(snap, Instant::now(), last) {
                        eprintln!("{l}");
                    }
                }
            };
            let succeeded = loop {
                tokio::select! {
                    r = progress.changed() => match r {
                        Ok(snap) => show(&snap, false),
                        // The job sees the lost connection too and says so.
                        Err(_) => break false,
                    },
                    ok = &mut stop_rx => break ok.unwrap_or(false),
                }
            };
            if succeeded {
                // The results are in; the scheduler's report saying so follows at once.
                let _ = tokio::time::timeout(FINAL_REPORT_WAIT, progress.wait()).await;
            }
            show(&progress.snapshot(), true);
            if let Some(b) = bars {
                b.finish();
            }
        });
        View {
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// The job is over (`succeeded`: its results are in): the last report is shown and the
    /// view ends.
    pub(crate) async fn finish(mut self, succeeded: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(succeeded);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(name: &str, waiting: u64, memory: u64, erred: u64) -> PrefixProgress {
        PrefixProgress {
            name: name.into(),
            waiting,
            processing: 0,
            memory,
            erred,
        }
    }

    #[test]
    fn a_plain_line_counts_a_prefix() {
        assert_eq!(
            plain_line(&prefix("random", 280, 120, 0)),
            "random: 120/400 tasks in memory, 0 erred"
        );
    }

    #[test]
    fn plain_lines_come_in_rounds_of_what_changed_and_end_up_to_date() {
        let t0 = Instant::now();
        let mut l = Lines::default();
        let snap = |inc: u64, sum: u64| ProgressSnapshot {
            prefixes: vec![
                prefix("inc", 6 - inc, inc, 0),
                prefix("sum", 1 - sum, sum, 0),
            ],
            ..ProgressSnapshot::default()
        };
        assert_eq!(
            l.lines(&snap(0, 0), t0, false),
            [
                "inc: 0/6 tasks in memory, 0 erred",
                "sum: 0/1 tasks in memory, 0 erred"
            ]
        );
        // Within the interval: nothing, whatever changed.
        assert!(
            l.lines(&snap(3, 0), t0 + LINE_INTERVAL / 2, false)
                .is_empty()
        );
        // After it: only the prefix that changed.
        assert_eq!(
            l.lines(&snap(4, 0), t0 + LINE_INTERVAL, false),
            ["inc: 4/6 tasks in memory, 0 erred"]
        );
        // The last round prints what is new at once, and nothing twice.
        let t = t0 + LINE_INTERVAL + Duration::from_millis(1);
        assert_eq!(
            l.lines(&snap(6, 1), t, true),
            [
                "inc: 6/6 tasks in memory, 0 erred",
                "sum: 1/1 tasks in memory, 0 erred"
            ]
        );
        assert!(l.lines(&snap(6, 1), t, true).is_empty());
    }
}
