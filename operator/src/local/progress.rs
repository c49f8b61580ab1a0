//! What `up` shows while it brings a cluster up and runs it: on a terminal, a spinner or bar for
//! the step under way (the scheduler starting, workers registering, the job running) with the
//! lines of the steps done above it; elsewhere (a log, a pipe, CI) plain timestamped lines;
//! nothing with `--no-progress`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How `up` shows its progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing (a library caller, or `--no-progress`).
    Off,
    /// Plain lines on stderr.
    #[default]
    Lines,
    /// A spinner or bar on stderr, redrawn in place: for a terminal.
    Bars,
}

impl ProgressMode {
    /// Bars when stderr is a terminal, lines when it is not, nothing when turned off.
    pub fn detect(no_progress: bool) -> ProgressMode {
        if no_progress {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

/// The line for workers registered: `workers 1/2 registered`.
pub fn workers_line(joined: usize, wanted: usize) -> String {
    format!("workers {joined}/{wanted} registered")
}

/// Says what `up` is doing, in its [`ProgressMode`].
pub(crate) struct Say {
    pub(crate) t0: Instant,
    mode: ProgressMode,
    multi: MultiProgress,
    /// The spinner or bar of the step under way.
    step: Mutex<Option<ProgressBar>>,
    /// The last workers count said (plain lines say each count once).
    workers: Mutex<Option<(usize, usize)>>,
}

impl Say {
    pub(crate) fn new(mode: ProgressMode) -> Say {
        let target = if mode == ProgressMode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Say {
            t0: Instant::now(),
            mode,
            multi: MultiProgress::with_draw_target(target),
            step: Mutex::new(None),
            workers: Mutex::new(None),
        }
    }

    pub(crate) fn bars(&self) -> bool {
        self.mode == ProgressMode::Bars
    }

    fn stamp(&self, msg: impl std::fmt::Display) -> String {
        format!("[{:7.1}s] {msg}", self.t0.elapsed().as_secs_f64())
    }

    /// A line about something that happened: above the bars on a terminal.
    pub(crate) fn line(&self, msg: impl std::fmt::Display) {
        match self.mode {
            ProgressMode::Off => {}
            ProgressMode::Lines => eprintln!("{}", self.stamp(msg)),
            ProgressMode::Bars => {
                let _ = self.multi.println(self.stamp(msg));
            }
        }
    }

    /// A line of the job runner's output, printed as it was (stdout or stderr) above the bars.
    pub(crate) fn passthrough(&self, line: &str, stdout: bool) {
        self.multi.suspend(|| {
            if stdout {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        });
    }

    /// A step begins: a spinner with `msg` on a terminal, a line otherwise.
    pub(crate) fn step(&self, msg: impl std::fmt::Display) {
        let msg = msg.to_string();
        if !self.bars() {
            self.line(&msg);
            return;
        }
        let spinner = self.multi.add(ProgressBar::new_spinner());
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_message(msg);
        spinner.enable_steady_tick(Duration::from_millis(120));
        self.replace_step(Some(spinner));
    }

    /// The step under way is over: `msg` says how (a line above the bars on a terminal).
    pub(crate) fn step_done(&self, msg: impl std::fmt::Display) {
        self.replace_step(None);
        self.line(msg);
    }

    /// Workers registered so far, of those wanted: a bar on a terminal, a line per new count
    /// otherwise.
    pub(crate) fn workers(&self, joined: usize, wanted: usize) {
        {
            let mut last = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            if *last == Some((joined, wanted)) {
                return;
            }
            *last = Some((joined, wanted));
        }
        if !self.bars() {
            self.line(workers_line(joined, wanted));
            return;
        }
        let mut step = self.step.lock().unwrap_or_else(|p| p.into_inner());
        let bar = match step.as_ref() {
            Some(b) if b.length().is_some() => b.clone(),
            _ => {
                if let Some(old) = step.take() {
                    old.finish_and_clear();
                }
                let b = self.multi.add(ProgressBar::new(wanted as u64));
                b.set_style(
                    ProgressStyle::with_template(
                        "workers {bar:30} {pos}/{len} registered [{elapsed}]",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                *step = Some(b.clone());
                b
            }
        };
        bar.set_length(wanted as u64);
        bar.set_position(joined as u64);
    }

    /// All `n` workers registered: the bar gives way to a line on a terminal.
    pub(crate) fn workers_done(&self, n: usize) {
        self.workers(n, n);
        if self.bars() {
            self.step_done(workers_line(n, n));
        }
    }

    fn replace_step(&self, new: Option<ProgressBar>) {
        let mut step = self.step.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = step.take() {
            old.finish_and_clear();
        }
        *step = new;
    }

    /// Clears what is still drawn.
    pub(crate) fn finish(&self) {
        self.replace_step(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_lines_name_the_count() {
        assert_eq!(workers_line(1, 2), "workers 1/2 registered");
    }

    #[test]
    fn off_means_off_whatever_the_terminal() {
        assert_eq!(ProgressMode::detect(true), ProgressMode::Off);
        // Under `cargo test` stderr is captured or a terminal; either way it is shown.
        assert_ne!(ProgressMode::detect(false), ProgressMode::Off);
    }
}
