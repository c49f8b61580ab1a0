//! Containers' output as the kubelet keeps it and `pods/{name}/log` serves it: the newest bytes
//! of the current run and of the previous one (`previous=true`), followed live (`follow=true`)
//! until the run ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

/// The output of one run of a container, newest `limit` bytes; `start` counts the bytes dropped
/// from the front, so a reader can follow by absolute position.
#[derive(Default)]
pub(crate) struct LogBuf {
    text: String,
    start: u64,
}

impl LogBuf {
    fn push(&mut self, line: &str, limit: usize) {
        self.text.push_str(line);
        self.text.push('\n');
        if self.text.len() > limit {
            // Whole lines go: up to the first line end past the excess.
            let excess = self.text.len() - limit;
            let cut = self.text[excess..]
                .find('\n')
                .map_or(self.text.len(), |i| excess + i + 1);
            self.text.drain(..cut);
            self.start += cut as u64;
        }
    }

    /// Everything kept, marked when older output was dropped.
    pub(crate) fn text(&self) -> String {
        if self.start > 0 {
            format!("[older output dropped]\n{}", self.text)
        } else {
            self.text.clone()
        }
    }

    fn end(&self) -> u64 {
        self.start + self.text.len() as u64
    }

    /// What was written from absolute position `from` on.
    fn since(&self, from: u64) -> &str {
        let at = usize::try_from(from.saturating_sub(self.start)).unwrap_or(usize::MAX);
        self.text.get(at.min(self.text.len())..).unwrap_or_default()
    }

    /// The last `n` lines.
    fn tail(&self, n: usize) -> &str {
        if n == 0 {
            return "";
        }
        let body = self.text.strip_suffix('\n').unwrap_or(&self.text);
        let at = body
            .rmatch_indices('\n')
            .nth(n - 1)
            .map_or(0, |(i, _)| i + 1);
        &self.text[at..]
    }
}

struct State {
    current: LogBuf,
    previous: Option<LogBuf>,
    /// The current run is going (a follower waits for more).
    running: bool,
    /// Runs so far (a follower of one run stops when the next begins).
    run: u64,
}

/// One container's output across its restarts.
pub(crate) struct ContainerLog {
    state: Mutex<State>,
    limit: usize,
    changed: watch::Sender<u64>,
}

impl ContainerLog {
    pub(crate) fn new(limit: usize) -> Arc<ContainerLog> {
        Arc::new(ContainerLog {
            state: Mutex::new(State {
                current: LogBuf::default(),
                previous: None,
                running: true,
                run: 0,
            }),
            limit,
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn push(&self, line: &str) {
        self.lock().current.push(line, self.limit);
        self.notify();
    }

    /// The current run ended.
    pub(crate) fn ended(&self) {
        self.lock().running = false;
        self.notify();
    }

    /// A new run starts (a restart): the current output becomes the previous run's.
    pub(crate) fn restarted(&self) {
        {
            let mut s = self.lock();
            let old = std::mem::take(&mut s.current);
            s.previous = Some(old);
            s.running = true;
            s.run += 1;
        }
        self.notify();
    }

    pub(crate) fn text(&self) -> String {
        self.lock().current.text()
    }
}

/// A pod's containers' output, by container name.
pub(crate) type PodLogs = Vec<(String, Arc<ContainerLog>)>;

/// Every pod's containers' output, by (namespace, pod name); kept after the pod is gone.
#[derive(Default)]
pub(crate) struct Logs {
    pods: Mutex<HashMap<(String, String), PodLogs>>,
}

/// What `pods/{name}/log` asks for.
pub(crate) struct LogQuery {
    pub container: Option<String>,
    pub previous: bool,
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
}

/// Why a log cannot be served (the API server's 400s).
pub(crate) enum LogError {
    /// No container named so, or the pod has several and none was named.
    Container(String),
    /// The container has not started (or, for `previous`, has not been restarted).
    NotStarted(String),
}

/// A log answer: all of it, or the text so far and a stream of what follows.
pub(crate) enum LogAnswer {
    Text(String),
    Follow(String, futures::stream::BoxStream<'static, Bytes>),
}

impl Logs {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), PodLogs>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, ns: &str, pod: &str, containers: PodLogs) {
        self.lock()
            .insert((ns.to_owned(), pod.to_owned()), containers);
    }

    pub(crate) fn get(&self, ns: &str, pod: &str) -> Option<PodLogs> {
        self.lock().get(&(ns.to_owned(), pod.to_owned())).cloned()
    }

    pub(crate) fn pods(&self) -> Vec<(String, String)> {
        let mut pods: Vec<_> = self.lock().keys().cloned().collect();
        pods.sort();
        pods
    }

    /// The log of `container` (the pod's only one when `None`) of pod `ns/pod`, whose spec names
    /// `containers`.
    pub(crate) fn serve(
        &self,
        ns: &str,
        pod: &str,
        containers: &[String],
        q: &LogQuery,
    ) -> Result<LogAnswer, LogError> {
        let name = match (&q.container, containers) {
            (Some(c), _) if containers.contains(c) => c.clone(),
            (Some(c), _) => {
                return Err(LogError::Container(format!(
                    "container {c} is not valid for pod {pod}"
                )));
            }
            (None, [only]) => only.clone(),
            (None, _) => {
                return Err(LogError::Container(format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let kept = self
            .get(ns, pod)
            .and_then(|cs| cs.into_iter().find(|(c, _)| *c == name).map(|(_, l)| l));
        let Some(log) = kept else {
            // Known to the spec, never run as a process: no output (simulated pods), or not
            // started yet.
            return Ok(LogAnswer::Text(String::new()));
        };
        let s = log.lock();
        let buf = if q.previous {
            match &s.previous {
                Some(b) => b,
                None => {
                    return Err(LogError::NotStarted(format!(
                        "previous terminated container \"{name}\" in pod \"{pod}\" not found"
                    )));
                }
            }
        } else {
            &s.current
        };
        let mut text = match q.tail_lines {
            Some(n) => buf.tail(n).to_owned(),
            None => buf.text(),
        };
        if let Some(limit) = q.limit_bytes
            && text.len() > limit
        {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        if !q.follow || q.previous || !s.running {
            return Ok(LogAnswer::Text(text));
        }
        let (from, run) = (s.current.end(), s.run);
        drop(s);
        Ok(LogAnswer::Follow(text, follow(log, from, run)))
    }
}

/// What the current run writes from `from` on, until it ends (or another begins).
fn follow(
    log: Arc<ContainerLog>,
    from: u64,
    run: u64,
) -> futures::stream::BoxStream<'static, Bytes> {
    let rx = log.changed.subscribe();
    Box::pin(futures::stream::unfold(
        (log, rx, from, false),
        move |(log, mut rx, pos, done)| async move {
            if done {
                return None;
            }
            loop {
                let (chunk, end, over) = {
                    let s = log.lock();
                    if s.run != run {
                        (String::new(), pos, true)
                    } else {
                        (s.current.since(pos).to_owned(), s.current.end(), !s.running)
                    }
                };
                if !chunk.is_empty() {
                    return Some((Bytes::from(chunk), (log, rx, end, over)));
                }
                if over {
                    return None;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_keep_the_newest_bytes() {
        let mut l = LogBuf::default();
        l.push("first", 12);
        l.push("second", 12);
        assert_eq!(l.text(), "[older output dropped]\nsecond\n");
        assert_eq!(l.since(0), "second\n");
        assert_eq!(l.since(l.end()), "");
    }

    #[test]
    fn tail_gives_the_last_lines() {
        let mut l = LogBuf::default();
        for line in ["a", "b", "c"] {
            l.push(line, 100);
        }
        assert_eq!(l.tail(2), "b\nc\n");
        assert_eq!(l.tail(5), "a\nb\nc\n");
        assert_eq!(l.tail(0), "");
    }

    #[test]
    fn a_restart_keeps_the_previous_run() {
        let log = ContainerLog::new(1 << 20);
        log.push("run 1");
        log.ended();
        log.restarted();
        log.push("run 2");
        let logs = Logs::default();
        logs.set("ns", "p", vec![("c".into(), log)]);
        let q = |previous| LogQuery {
            container: None,
            previous,
            follow: false,
            tail_lines: None,
            limit_bytes: None,
        };
        let text = |a: Result<LogAnswer, LogError>| match a {
            Ok(LogAnswer::Text(t)) => t,
            _ => panic!("expected text"),
        };
        let cs = ["c".to_owned()];
        assert_eq!(text(logs.serve("ns", "p", &cs, &q(false))), "run 2\n");
        assert_eq!(text(logs.serve("ns", "p", &cs, &q(true))), "run 1\n");
        let both = ["c".to_owned(), "d".to_owned()];
        assert!(matches!(
            logs.serve("ns", "p", &both, &q(false)),
            Err(LogError::Container(_))
        ));
    }
}
