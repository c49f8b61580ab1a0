//! `many-workers` (issue 18): a real `rask scheduler` process and N simulated workers
//! ([`SimWorker`]) in this process, each on a TCP connection of its own speaking the worker
//! protocol. One JSON line per N with:
//!
//! - **idle**: the scheduler process's CPU while the workers only heartbeat (utime + stime of
//!   `/proc/<pid>/stat`, and per thread from `/proc/<pid>/task/*/schedstat`), as % of a core;
//! - **busy**: tasks/s of a `map` of `inc` tasks from a real client, every result checked, with
//!   the scheduler's CPU per thread during it (is its one event-loop thread the bound?);
//! - **lost worker**: time until `GET /api/v1/get_workers` no longer lists a worker that went
//!   silent (no heartbeat, connection held open) against the configured `--worker-ttl`, counted
//!   from the last message it sent (a heartbeat or a result: any shows it alive), and one
//!   whose connection closed;
//! - **retire**: time for `POST /api/v1/retire_workers {"n": k}` to answer, with results held on
//!   every worker (the retiring ones' results are copied to others first), then a dependent task
//!   per held result, checked, so a result lost in the move fails the run.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use rask::Value;
use rask::client::{Client, Future};
use rask::core::Registry;
use rask::core::net::PeerPool;
use rask::seed::{INC, lit};

use crate::sim_worker::{SimConfig, SimWorker};
use crate::{BenchError, Cli, Result, Spawned, free_port, health_ok, io_err, round, stats};

/// Issue 18's targets at 1,000 workers.
const TARGET_IDLE_CPU_PERCENT: f64 = 5.0;
const TARGET_BUSY_TASKS_PER_S: f64 = 100_000.0;
/// A silent worker must be gone within its TTL of the last message the scheduler read from it (any
/// message shows it alive), by the scheduler's own count of the silence at removal; the
/// scheduler's timer and its wake-up are allowed this much.
const LOST_SLACK_S: f64 = 0.05;
/// Polls near a silent worker's deadline, milliseconds apart.
const SILENT_FINE_POLL_MS: u64 = 2;

/// Workers started at once while connecting N (the scheduler's accept queue and this
/// process's runtime take them in batches).
const CONNECT_BATCH: usize = 50;

/// Linux's USER_HZ: the unit of `/proc/<pid>/stat`'s utime and stime.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// Runs `many-workers` at each of `--workers`' sizes, printing a line per size.
pub(crate) fn run(cli: &Cli, rask: &Path, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let sizes = if cli.workers.is_empty() {
        vec![100, 1_000]
    } else {
        cli.workers.clone()
    };
    for n in sizes {
        let line = runtime.block_on(one_size(cli, rask, n))?;
        println!("{line}");
    }
    Ok(())
}

/// What `many-workers` measures at one size, with its settings.
struct Settings {
    workers: usize,
    tasks: usize,
    reps: usize,
    heartbeat: Duration,
    ttl_s: f64,
    idle: Duration,
    retire: usize,
    timeout: Duration,
}

impl Settings {
    fn of(cli: &Cli, workers: usize) -> Settings {
        Settings {
            workers: workers.max(4),
            tasks: cli.tasks.first().copied().unwrap_or(100_000).max(1),
            reps: cli.reps.max(1),
            heartbeat: Duration::from_secs_f64(cli.heartbeat_s.max(0.001)),
            ttl_s: cli.worker_ttl,
            idle: Duration::from_secs_f64(cli.idle_s.max(0.1)),
            retire: cli.retire,
            timeout: Duration::from_secs(cli.timeout),
        }
    }
}

async fn one_size(cli: &Cli, rask: &Path, n: usize) -> Result<Json> {
    let s = Settings::of(cli, n);
    let n = s.workers;
    let sched = SchedulerProcess::start(rask, s.ttl_s, s.timeout)?;
    let t0 = Instant::now();
    let workers = start_workers(&sched.address, n, s.heartbeat).await?;
    sched.wait_for_workers(n, s.timeout).await?;
    let register_s = t0.elapsed().as_secs_f64();

    // (a) Idle: heartbeats only, after a moment for the registrations' work to settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let beats_before: u64 = workers
        .iter()
        .map(|w| w.stats().heartbeats.load(Ordering::Relaxed))
        .sum();
    let (sched_before, own_before) = (Cpu::sample(sched.pid)?, Cpu::sample(std::process::id())?);
    tokio::time::sleep(s.idle).await;
    let (sched_after, own_after) = (Cpu::sample(sched.pid)?, Cpu::sample(std::process::id())?);
    let beats: u64 = workers
        .iter()
        .map(|w| w.stats().heartbeats.load(Ordering::Relaxed))
        .sum::<u64>()
        - beats_before;
    let idle_cpu = sched_after.since(&sched_before);
    let idle = json!({
        "secs": round(idle_cpu.wall_s),
        "heartbeats_per_s": round(beats as f64 / idle_cpu.wall_s),
        "scheduler_cpu_percent": round(idle_cpu.percent()),
        "scheduler_cpu_percent_stat": round(idle_cpu.stat_percent()),
        "scheduler_threads": idle_cpu.threads_json(),
        "bench_process_cpu_percent": round(own_after.since(&own_before).percent()),
    });

    // (b) Busy: a map of `inc` over every worker, results checked.
    let client = Client::connect(&sched.address).await?;
    // Every worker runs `inc` once first (each takes one task of unknown duration at first), so
    // the scheduler knows its duration and pipelines the timed runs.
    map_checked(&client, 2 * n, 0).await?;
    sched.drained(s.timeout).await?;
    let mut rates = Vec::new();
    let mut secs = Vec::new();
    let mut sched_cpu = Vec::new();
    let mut sched_loop_cpu = Vec::new();
    let mut own_cpu = Vec::new();
    let mut used = Vec::new();
    let mut spread = (u64::MAX, 0u64);
    let mut busiest_threads = Json::Null;
    for rep in 0..s.reps {
        let executed_before: Vec<u64> = executed(&workers);
        let (sb, ob) = (Cpu::sample(sched.pid)?, Cpu::sample(std::process::id())?);
        let t = Instant::now();
        let offset = (rep * s.tasks) as i64;
        tokio::time::timeout(s.timeout, map_checked(&client, s.tasks, offset))
            .await
            .map_err(|_| BenchError::Timeout {
                workload: "many-workers",
                what: "the busy map",
                secs: s.timeout.as_secs(),
            })??;
        let wall = t.elapsed().as_secs_f64();
        let (sa, oa) = (Cpu::sample(sched.pid)?, Cpu::sample(std::process::id())?);
        let per_worker: Vec<u64> = executed(&workers)
            .iter()
            .zip(&executed_before)
            .map(|(a, b)| a - b)
            .collect();
        used.push(per_worker.iter().filter(|&&c| c > 0).count() as f64);
        spread.0 = spread.0.min(per_worker.iter().copied().min().unwrap_or(0));
        spread.1 = spread.1.max(per_worker.iter().copied().max().unwrap_or(0));
        rates.push(s.tasks as f64 / wall);
        secs.push(wall);
        let cpu = sa.since(&sb);
        sched_cpu.push(cpu.percent());
        sched_loop_cpu.push(cpu.thread_percent("rask-scheduler"));
        own_cpu.push(oa.since(&ob).percent());
        busiest_threads = cpu.threads_json();
        sched.drained(s.timeout).await?;
    }
    let busy = json!({
        "tasks": s.tasks,
        "reps": s.reps,
        "tasks_per_s": stats(&rates),
        "total_s": stats(&secs),
        "workers_used": stats(&used),
        "tasks_per_worker_min": spread.0,
        "tasks_per_worker_max": spread.1,
        "scheduler_cpu_percent": stats(&sched_cpu),
        "scheduler_event_loop_cpu_percent": stats(&sched_loop_cpu),
        "scheduler_threads_last_rep": busiest_threads,
        "bench_process_cpu_percent": stats(&own_cpu),
    });

    // (c) A lost worker: one goes silent, another's connection closes.
    let silent = &workers[0];
    silent.silence();
    let t = Instant::now();
    // Coarse polls until shortly before its TTL runs out, then fine ones, so the time measured
    // is the scheduler's to within a poll and one HTTP request.
    let last = silent.stats().last_message().unwrap_or(t);
    let fine = (
        last + Duration::from_secs_f64((s.ttl_s - 0.2).max(0.0)),
        Duration::from_millis(SILENT_FINE_POLL_MS),
    );
    let timed_out_before = sched.timed_out()?;
    let silent_gone = sched
        .wait_until_gone(
            silent.name(),
            Duration::from_millis(50),
            Some(fine),
            s.timeout,
        )
        .await?;
    let silent_s = silent_gone.duration_since(t).as_secs_f64();
    // The scheduler sends `Close` as it removes the worker, and the silent worker notes when it
    // reads it: the removal's time to within a loopback hop, where the listing's polls (an HTTP
    // request naming every worker: tens of milliseconds at 1,000) only bound it.
    let mut closed_at = silent.stats().closed_while_silent();
    let read_by = Instant::now() + Duration::from_secs(1);
    while closed_at.is_none() && Instant::now() < read_by {
        tokio::time::sleep(Duration::from_millis(1)).await;
        closed_at = silent.stats().closed_while_silent();
    }
    let last = silent.stats().last_message();
    let since_last_s = closed_at
        .zip(last)
        .map(|(c, b)| round(c.saturating_duration_since(b).as_secs_f64()));
    let unlisted_since_last_s = last.map(|b| round(silent_gone.duration_since(b).as_secs_f64()));
    // By the scheduler's own clock: how long the worker had been silent when the scheduler
    // removed it (its metrics' sum over the one removal). What the sim counts from its send also
    // holds the time the message took to be written and read and to wait its turn in the
    // scheduler's queue.
    let timed_out_after = sched.timed_out()?;
    let silence_at_removal_s = (timed_out_after.0 - timed_out_before.0 == 1.0)
        .then(|| round(timed_out_after.1 - timed_out_before.1));
    let closed = &workers[1];
    closed.disconnect();
    let t = Instant::now();
    let closed_gone = sched
        .wait_until_gone(closed.name(), Duration::from_millis(2), None, s.timeout)
        .await?;
    let closed_ms = closed_gone.duration_since(t).as_secs_f64() * 1e3;
    let lost = json!({
        "worker_ttl_s": s.ttl_s,
        "silent_noticed_s": round(silent_s),
        "silent_since_last_message_s": since_last_s,
        "silent_unlisted_since_last_message_s": unlisted_since_last_s,
        "silent_at_removal_by_scheduler_s": silence_at_removal_s,
        "silent_poll_ms": SILENT_FINE_POLL_MS,
        "closed_noticed_ms": round(closed_ms),
        "closed_poll_ms": 2,
    });

    // (d) Retire k workers at once while every worker holds results.
    let left = n - 2;
    let k = s.retire.min(left / 2).max(1);
    let held_n = 10 * n;
    let held_offset = (s.reps * s.tasks) as i64;
    let held: Vec<Future<Value>> =
        client.map(INC, (0..held_n as i64).map(|i| lit(i + held_offset)));
    check_incs(&client.gather(&held).await?, held_offset, 1)?;
    // The fewest results a live worker holds: retiring any of them moves data.
    let fewest_held = workers[2..].iter().map(SimWorker::holds).min().unwrap_or(0);
    let replicas_before: u64 = workers
        .iter()
        .map(|w| w.stats().replicas.load(Ordering::Relaxed))
        .sum();
    let t = Instant::now();
    let retired = sched.retire(k, s.timeout)?;
    let retire_s = t.elapsed().as_secs_f64();
    if retired != k {
        return Err(BenchError::Wrong {
            workload: "many-workers",
            got: format!("{retired} workers retired"),
            expected: format!("{k}"),
        });
    }
    let replicas: u64 = workers
        .iter()
        .map(|w| w.stats().replicas.load(Ordering::Relaxed))
        .sum::<u64>()
        - replicas_before;
    let remaining = sched.worker_names()?.len();
    // The retired workers were told to close (and the disconnected one has ended).
    let t = Instant::now();
    while workers.iter().filter(|w| w.finished()).count() < k + 1 && t.elapsed() < s.timeout {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ended = workers.iter().filter(|w| w.finished()).count();
    if ended != k + 1 || remaining != left - k {
        return Err(BenchError::Wrong {
            workload: "many-workers",
            got: format!("{remaining} workers listed and {ended} ended after retiring {k}"),
            expected: format!("{} listed and {} ended", left - k, k + 1),
        });
    }
    // A dependent of every held result: each reads its input where it now lives.
    let dependents: Vec<Future<Value>> = held
        .iter()
        .map(|f| client.submit_with(INC, |d| d.input(f).into()))
        .collect();
    check_incs(&client.gather(&dependents).await?, held_offset, 2)?;
    let retire = json!({
        "workers": k,
        "retire_s": round(retire_s),
        "results_held": held_n,
        "results_held_per_worker_min": fewest_held,
        "results_copied": replicas,
        "workers_left": remaining,
        "dependents_checked": dependents.len(),
    });
    drop((held, dependents));
    client.close();
    // Let the client's goodbye reach the scheduler before it is killed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(sched);
    drop(workers);

    let idle_pct = idle_cpu.stat_percent();
    let busy_median = median(&rates);
    Ok(json!({
        "bench": "many-workers",
        "workers": n,
        "heartbeat_s": s.heartbeat.as_secs_f64(),
        "register_s": round(register_s),
        "idle": idle,
        "busy": busy,
        "lost_worker": lost,
        "retire": retire,
        "target_idle_cpu_percent": TARGET_IDLE_CPU_PERCENT,
        "target_busy_tasks_per_s": TARGET_BUSY_TASKS_PER_S,
        "target": "at 1,000 workers: idle scheduler CPU <= 5% of a core; busy >= 100k tasks/s; \
                   a silent worker removed within its TTL of the last message the scheduler read \
                   (the silence at removal by the scheduler's own metric, within 50 ms)",
        "met": {
            "idle_cpu": idle_pct <= TARGET_IDLE_CPU_PERCENT,
            "busy_tasks_per_s": busy_median >= TARGET_BUSY_TASKS_PER_S,
            // The TTL runs from the last message the scheduler read, by its clock (its metric).
            "lost_worker": silence_at_removal_s.is_some_and(|v| v <= s.ttl_s + LOST_SLACK_S),
        },
    }))
}

fn median(v: &[f64]) -> f64 {
    stats(v)["median"].as_f64().unwrap_or(f64::NAN)
}

fn executed(workers: &[SimWorker]) -> Vec<u64> {
    workers
        .iter()
        .map(|w| w.stats().executed.load(Ordering::Relaxed))
        .collect()
}

/// Connects `n` simulated workers named `sim-0` … to `scheduler`, `CONNECT_BATCH` at a time,
/// their first heartbeats spread over one interval.
pub(crate) async fn start_workers(
    scheduler: &str,
    n: usize,
    heartbeat: Duration,
) -> Result<Vec<SimWorker>> {
    let registry: Arc<Registry> = Arc::new(rask::registry());
    let peers = Arc::new(PeerPool::new(None));
    let mut workers = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
        let starts: Vec<_> = batch
            .iter()
            .map(|&i| {
                let config = SimConfig {
                    scheduler: scheduler.to_owned(),
                    name: format!("sim-{i}"),
                    heartbeat,
                    first_heartbeat: heartbeat.mul_f64(i as f64 / n as f64),
                };
                tokio::spawn(SimWorker::start(config, registry.clone(), peers.clone()))
            })
            .collect();
        for start in starts {
            let worker = start
                .await
                .map_err(|e| BenchError::ManyWorkers(format!("a worker's start panicked: {e}")))?
                .map_err(|e| BenchError::ManyWorkers(e.to_string()))?;
            workers.push(worker);
        }
    }
    Ok(workers)
}

/// Maps `inc` over `offset..offset + n` and checks every result.
pub(crate) async fn map_checked(client: &Client, n: usize, offset: i64) -> Result<()> {
    let futures: Vec<Future<Value>> = client.map(INC, (0..n as i64).map(|i| lit(i + offset)));
    let values = client.gather(&futures).await?;
    check_incs(&values, offset, 1)
}

/// Checks that `values[i]` is `offset + i + add`, each of them.
pub(crate) fn check_incs(values: &[Value], offset: i64, add: i64) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        let expected = Value::Int(offset + i as i64 + add);
        if *v != expected {
            return Err(BenchError::Wrong {
                workload: "many-workers",
                got: format!("{v} at position {i}"),
                expected: expected.to_string(),
            });
        }
    }
    Ok(())
}

// ----- the scheduler process and its HTTP API ------------------------------------------------

/// `rask scheduler` as a child process, with its HTTP API on loopback; killed when dropped.
struct SchedulerProcess {
    _child: Spawned,
    pid: u32,
    address: String,
    http: SocketAddr,
}

impl SchedulerProcess {
    fn start(rask: &Path, ttl_s: f64, timeout: Duration) -> Result<SchedulerProcess> {
        let (port, http_port) = (free_port()?, free_port()?);
        let http = SocketAddr::from(([127, 0, 0, 1], http_port));
        let child = Command::new(rask)
            .args([
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(["--dashboard-address", &http.to_string()])
            .args(["--worker-ttl", &ttl_s.to_string()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_err(format!("spawning {} scheduler", rask.display())))?;
        let mut child = Spawned(child);
        let t0 = Instant::now();
        while !health_ok(http) {
            if let Some(status) = child.0.try_wait().map_err(io_err("waiting for rask"))? {
                return Err(BenchError::SchedulerExited(status));
            }
            if t0.elapsed() > timeout {
                return Err(BenchError::Timeout {
                    workload: "many-workers",
                    what: "waiting for the scheduler's /health",
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = child.0.id();
        Ok(SchedulerProcess {
            _child: child,
            pid,
            address: format!("tcp://127.0.0.1:{port}"),
            http,
        })
    }

    /// The names `GET /api/v1/get_workers` lists.
    fn worker_names(&self) -> Result<Vec<String>> {
        let body = http_json(self.http, "GET", "/api/v1/get_workers", None)?;
        let workers = body["workers"].as_array().ok_or_else(|| {
            BenchError::ManyWorkers(format!(
                "get_workers answered without a worker list: {body}"
            ))
        })?;
        Ok(workers
            .iter()
            .filter_map(|w| w["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// The scheduler's `/metrics` text.
    fn metrics(&self) -> Result<String> {
        let (status, text) = http_request(self.http, "GET", "/metrics", None)?;
        if status != 200 {
            return Err(BenchError::ManyWorkers(format!(
                "/metrics answered {status}"
            )));
        }
        Ok(text)
    }

    /// The scheduler's count of workers removed for silence and their summed silence at
    /// removal (`rask_scheduler_workers_timed_out_total` and `…_silence_seconds_total`).
    fn timed_out(&self) -> Result<(f64, f64)> {
        let text = self.metrics()?;
        let value = |name: &str| -> Result<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .ok_or_else(|| BenchError::ManyWorkers(format!("/metrics has no {name}")))
        };
        Ok((
            value("rask_scheduler_workers_timed_out_total")?,
            value("rask_scheduler_workers_timed_out_silence_seconds_total")?,
        ))
    }

    async fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if self.worker_names()?.len() >= n {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                return Err(BenchError::Timeout {
                    workload: "many-workers",
                    what: "registering the workers",
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `get_workers` every `poll` until `name` is gone; with `fine = (from, every)`,
    /// every `every` from `from` on. Returns when it was first seen gone.
    async fn wait_until_gone(
        &self,
        name: &str,
        poll: Duration,
        fine: Option<(Instant, Duration)>,
        timeout: Duration,
    ) -> Result<Instant> {
        let t0 = Instant::now();
        loop {
            let poll = match fine {
                Some((from, every)) if Instant::now() + poll >= from => every,
                _ => poll,
            };
            if !self.worker_names()?.iter().any(|w| w == name) {
                return Ok(Instant::now());
            }
            if t0.elapsed() > timeout {
                return Err(BenchError::Timeout {
                    workload: "many-workers",
                    what: "the scheduler noticing a lost worker",
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Waits until the scheduler holds no tasks (`dask_scheduler_tasks` of `/metrics` all 0).
    async fn drained(&self, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let held: f64 = self
                .metrics()?
                .lines()
                .filter(|l| l.starts_with("dask_scheduler_tasks{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if held == 0.0 {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                return Err(BenchError::Timeout {
                    workload: "many-workers",
                    what: "forgetting the released tasks",
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `POST /api/v1/retire_workers {"n": k}`: the number of workers the answer names.
    fn retire(&self, k: usize, timeout: Duration) -> Result<usize> {
        let body = json!({ "n": k }).to_string();
        let answer = http_json_timeout(
            self.http,
            "POST",
            "/api/v1/retire_workers",
            Some(&body),
            timeout,
        )?;
        answer.as_object().map(|o| o.len()).ok_or_else(|| {
            BenchError::ManyWorkers(format!("retire_workers answered {answer}, not an object"))
        })
    }
}

fn http_json(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<Json> {
    http_json_timeout(addr, method, path, body, Duration::from_secs(30))
}

fn http_json_timeout(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Json> {
    let (status, text) = http_request_timeout(addr, method, path, body, timeout)?;
    if status != 200 {
        return Err(BenchError::ManyWorkers(format!(
            "{method} {path} answered {status}: {text}"
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| BenchError::ManyWorkers(format!("{method} {path}: not JSON ({e}): {text}")))
}

fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    http_request_timeout(addr, method, path, body, Duration::from_secs(30))
}

/// One HTTP/1.0 request (the answer ends with the connection): its status and body.
fn http_request_timeout(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let what = format!("{method} http://{addr}{path}");
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io_err(what.clone()))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io_err(what.clone()))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(io_err(what.clone()))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(io_err(what.clone()))?;
    let (head, text) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| BenchError::ManyWorkers(format!("{what}: no HTTP status in {head:?}")))?;
    Ok((status, text.to_owned()))
}

// ----- CPU of a process, per thread ------------------------------------------------------------

/// A process's CPU time at one moment: in total (`/proc/<pid>/stat`) and per thread.
struct Cpu {
    at: Instant,
    /// utime + stime, in clock ticks.
    stat_ticks: u64,
    /// Per thread id: its name and the ns it has run (`schedstat`).
    threads: HashMap<u32, (String, u64)>,
}

/// CPU used between two samples.
struct CpuDelta {
    wall_s: f64,
    stat_ticks: u64,
    /// Per thread name (threads of one name summed), ns.
    threads: Vec<(String, u64)>,
}

impl Cpu {
    fn sample(pid: u32) -> Result<Cpu> {
        let fail = |field: &'static str, reason: String| BenchError::Proc { pid, field, reason };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| fail("stat", e.to_string()))?;
        let stat_ticks =
            utime_stime(&stat).ok_or_else(|| fail("stat", format!("unexpected {stat:?}")))?;
        let mut threads = HashMap::new();
        let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| fail("task", e.to_string()))?;
        for entry in dir {
            let entry = entry.map_err(|e| fail("task", e.to_string()))?;
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may exit between listing and reading; it no longer counts.
            let (Ok(comm), Ok(sched)) = (
                std::fs::read_to_string(entry.path().join("comm")),
                std::fs::read_to_string(entry.path().join("schedstat")),
            ) else {
                continue;
            };
            let ns = sched
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| fail("schedstat", format!("unexpected {sched:?}")))?;
            threads.insert(tid, (comm.trim().to_owned(), ns));
        }
        Ok(Cpu {
            at: Instant::now(),
            stat_ticks,
            threads,
        })
    }

    fn since(&self, before: &Cpu) -> CpuDelta {
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for (tid, (name, ns)) in &self.threads {
            let was = before.threads.get(tid).map_or(0, |t| t.1);
            *by_name.entry(name.clone()).or_default() += ns.saturating_sub(was);
        }
        let mut threads: Vec<(String, u64)> = by_name.into_iter().collect();
        threads.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        CpuDelta {
            wall_s: self.at.duration_since(before.at).as_secs_f64(),
            stat_ticks: self.stat_ticks.saturating_sub(before.stat_ticks),
            threads,
        }
    }
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15; the name in parentheses may
/// hold spaces, so fields are counted after its closing one).
fn utime_stime(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some(utime + stime)
}

impl CpuDelta {
    /// All threads, % of one core (schedstat).
    fn percent(&self) -> f64 {
        let ns: u64 = self.threads.iter().map(|t| t.1).sum();
        ns as f64 / (self.wall_s * 1e7)
    }

    /// The process, % of one core, from `/proc/<pid>/stat` (10-ms ticks).
    fn stat_percent(&self) -> f64 {
        self.stat_ticks as f64 / CLOCK_TICKS_PER_S / self.wall_s * 100.0
    }

    /// Threads named `name`, % of one core.
    fn thread_percent(&self, name: &str) -> f64 {
        let ns: u64 = self
            .threads
            .iter()
            .filter(|t| t.0 == name)
            .map(|t| t.1)
            .sum();
        ns as f64 / (self.wall_s * 1e7)
    }

    fn threads_json(&self) -> Json {
        Json::Array(
            self.threads
                .iter()
                .filter(|t| t.1 > 0)
                .map(|(name, ns)| json!({"thread": name, "cpu_percent": round(*ns as f64 / (self.wall_s * 1e7))}))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rask::scheduler::RetireSelector;
    use rask::scheduler::server::{Scheduler, SchedulerConfig};

    #[test]
    fn fake_results_fail_the_check() {
        let right: Vec<Value> = (0..5).map(|i| Value::Int(10 + i + 1)).collect();
        assert!(check_incs(&right, 10, 1).is_ok());
        // A constant, an off-by-one, and the inputs themselves are all caught.
        let constant = vec![Value::Int(11); 5];
        assert!(check_incs(&constant, 10, 1).is_err());
        let shifted: Vec<Value> = (0..5).map(|i| Value::Int(10 + i + 2)).collect();
        assert!(check_incs(&shifted, 10, 1).is_err());
        let inputs: Vec<Value> = (0..5).map(|i| Value::Int(10 + i)).collect();
        assert!(check_incs(&inputs, 10, 1).is_err());
    }

    #[test]
    fn utime_and_stime_are_read_after_the_name() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 99 1000 50";
        assert_eq!(utime_stime(line), Some(10));
        assert_eq!(utime_stime("42 (x) S 1"), None);
    }

    /// Five simulated workers against a real scheduler: they register, run a map whose every
    /// result is checked, one that closes its connection is removed, and after two retire while
    /// holding results, dependents of those results still compute right.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simulated_workers_register_run_tasks_and_retire() {
        let scheduler = Scheduler::start(SchedulerConfig::default()).await.unwrap();
        let handle = scheduler.handle();
        let workers = start_workers(scheduler.address(), 5, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(handle.snapshot().await.unwrap().workers.len(), 5);
        let client = Client::connect(scheduler.address()).await.unwrap();
        map_checked(&client, 200, 1_000).await.unwrap();
        let ran: u64 = executed(&workers).iter().sum();
        assert!(ran >= 200, "the simulated workers ran {ran} of 200 tasks");
        let beats: u64 = workers
            .iter()
            .map(|w| w.stats().heartbeats.load(Ordering::Relaxed))
            .sum();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later: u64 = workers
            .iter()
            .map(|w| w.stats().heartbeats.load(Ordering::Relaxed))
            .sum();
        assert!(later > beats, "no heartbeat in 300 ms");

        workers[0].disconnect();
        let t0 = Instant::now();
        while handle.snapshot().await.unwrap().workers.len() != 4 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "a closed worker was not removed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let held: Vec<Future<Value>> = client.map(INC, (0..40).map(lit));
        check_incs(&client.gather(&held).await.unwrap(), 0, 1).unwrap();
        // Two that hold results, so the retirement has data to move.
        let holding: Vec<String> = workers[1..]
            .iter()
            .filter(|w| w.holds() > 0)
            .map(|w| w.name().to_owned())
            .take(2)
            .collect();
        assert_eq!(holding.len(), 2, "40 results on fewer than 2 workers");
        let retired = handle
            .retire(RetireSelector::Workers(holding.clone()))
            .await
            .unwrap();
        assert_eq!(retired.len(), 2);
        let copied: u64 = workers
            .iter()
            .map(|w| w.stats().replicas.load(Ordering::Relaxed))
            .sum();
        assert!(copied > 0, "no result was copied off the retiring workers");
        let names: Vec<String> = handle
            .snapshot()
            .await
            .unwrap()
            .workers
            .iter()
            .map(|w| w.name.clone())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        for r in &retired {
            let w = workers.iter().find(|w| w.name() == r.name).unwrap();
            let t0 = Instant::now();
            while !w.finished() {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "{} was not closed",
                    r.name
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let dependents: Vec<Future<Value>> = held
            .iter()
            .map(|f| client.submit_with(INC, |d| d.input(f).into()))
            .collect();
        check_incs(&client.gather(&dependents).await.unwrap(), 0, 2).unwrap();
        scheduler.shutdown().await;
    }
}
