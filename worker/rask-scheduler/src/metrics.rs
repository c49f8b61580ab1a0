//! The scheduler's Prometheus metrics, with Dask's `dask_scheduler_*` names, types and label
//! names (`distributed/http/scheduler/prometheus/core.py`), rendered from one [`Snapshot`] per
//! scrape.
//!
//! The families, their labels and where rask differs from Dask are listed in [`crate::http`]'s
//! documentation and in `docs/metrics.md`.

use prometheus_client::encoding::{
    EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::{Snapshot, WorkerStatus};

/// The Prometheus task states of `dask_scheduler_tasks`, in Dask's order of `ALL_TASK_STATES`
/// without `forgotten`.
fn task_states(s: &Snapshot) -> [(&'static str, usize); 7] {
    let t = &s.tasks;
    [
        ("released", t.released),
        ("waiting", t.waiting),
        ("no-worker", t.no_worker),
        ("queued", t.queued),
        ("processing", t.processing),
        ("memory", t.memory),
        ("erred", t.erred),
    ]
}

/// Renders one snapshot as OpenMetrics text with Dask's metric names.
pub(crate) fn render(s: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();

    registry.register(
        "dask_scheduler_clients",
        "Clients connected to the scheduler",
        ConstGauge::new(s.clients),
    );
    registry.register(
        "dask_scheduler_client_connections_added",
        "Client connections registered, since the scheduler started",
        ConstCounter::new(s.client_connections_added_total),
    );
    registry.register(
        "dask_scheduler_client_connections_removed",
        "Client connections closed, since the scheduler started",
        ConstCounter::new(s.client_connections_removed_total),
    );
    registry.register(
        "dask_scheduler_desired_workers",
        "Workers the scheduler would like for its current load (its adaptive target)",
        ConstGauge::new(s.adaptive_target),
    );

    let (mut idle, mut partially_saturated, mut saturated, mut paused, mut retiring) =
        (0, 0, 0, 0, 0);
    for w in &s.workers {
        match w.status {
            WorkerStatus::Retiring => retiring += 1,
            WorkerStatus::Paused => paused += 1,
            WorkerStatus::Running if w.processing == 0 => idle += 1,
            WorkerStatus::Running if w.processing < w.nthreads as usize => partially_saturated += 1,
            WorkerStatus::Running => saturated += 1,
        }
    }
    registry.register(
        "dask_scheduler_workers",
        "Workers connected to the scheduler, by how busy they are",
        Labeled::gauges(
            "state",
            [
                ("idle", idle),
                ("partially_saturated", partially_saturated),
                ("saturated", saturated),
                ("paused", paused),
                ("retiring", retiring),
            ]
            .map(|(state, n)| ([state], n as f64)),
        ),
    );
    registry.register(
        "dask_scheduler_workers_added",
        "Workers registered, since the scheduler started",
        ConstCounter::new(s.workers_added_total),
    );
    registry.register(
        "dask_scheduler_workers_removed",
        "Workers removed (lost, closed or retired), since the scheduler started",
        ConstCounter::new(s.workers_removed_total),
    );
    registry.register_with_unit(
        "dask_scheduler_gc_collection",
        "Time spent collecting garbage: always 0, rask has no garbage collector and frees \
         memory as it goes",
        Unit::Seconds,
        ConstCounter::new(0.0),
    );
    registry.register(
        "dask_scheduler_last_time",
        "The scheduler's monotonic clock when the metrics were read, in seconds since it started",
        ConstCounter::new(s.monotonic_s),
    );

    registry.register(
        "dask_scheduler_tasks_suspicious",
        "Times a worker died while running a task of the prefix, since the scheduler started",
        Labeled::counters(
            ["task_prefix_name"],
            s.prefixes
                .iter()
                .map(|p| ([p.name.as_str()], p.suspicious as f64)),
        ),
    );
    registry.register(
        "dask_scheduler_tasks_forgotten",
        "Tasks released by every client and freed, since the scheduler started",
        ConstCounter::new(s.tasks_forgotten_total),
    );
    registry.register(
        "dask_scheduler_tasks",
        "Tasks the scheduler knows, by state",
        Labeled::gauges(
            "state",
            task_states(s).map(|(state, n)| ([state], n as f64)),
        ),
    );
    registry.register(
        "dask_scheduler_task_groups",
        "Task groups the scheduler knows (a key without its last '-' part)",
        ConstGauge::new(s.task_groups),
    );
    registry.register_with_unit(
        "dask_scheduler_tasks_compute",
        "Time spent running tasks, by task prefix, since the scheduler started",
        Unit::Seconds,
        Labeled::counters(
            ["task_prefix_name"],
            s.prefixes
                .iter()
                .map(|p| ([p.name.as_str()], p.compute_seconds)),
        ),
    );
    registry.register_with_unit(
        "dask_scheduler_tasks_transfer",
        "Time workers spent fetching the inputs of tasks from peers, by task prefix, since the \
         scheduler started",
        Unit::Seconds,
        Labeled::counters(
            ["task_prefix_name"],
            s.prefixes
                .iter()
                .map(|p| ([p.name.as_str()], p.transfer_seconds)),
        ),
    );
    registry.register_with_unit(
        "dask_scheduler_tasks_output",
        "Bytes of results in memory now, each once however many workers hold it, by task prefix",
        Unit::Bytes,
        Labeled::gauges(
            "task_prefix_name",
            s.prefixes
                .iter()
                .map(|p| ([p.name.as_str()], p.nbytes_in_memory as f64)),
        ),
    );
    registry.register(
        "dask_scheduler_prefix_state_totals",
        "Transitions of tasks into each state, by task prefix, since the scheduler started",
        Labeled::counters(
            ["task_prefix_name", "state"],
            s.prefixes.iter().flat_map(|p| {
                p.state_totals
                    .iter()
                    .map(|(state, n)| ([p.name.as_str(), *state], *n as f64))
            }),
        ),
    );
    registry.register(
        "dask_scheduler_tick_duration_maximum_seconds",
        "The longest time between two ticks of the scheduler's event loop since the last scrape",
        ConstGauge::new(s.ticks.max_duration_s),
    );
    registry.register(
        "dask_scheduler_tick_count",
        "Ticks of the scheduler's event loop, since it started",
        ConstCounter::new(s.ticks.count),
    );

    registry.register(
        "rask_scheduler_tasks_speculated",
        "Tasks sent to a worker ahead of their inputs, to run there as soon as those finish \
         there (speculative assignment), since the scheduler started",
        ConstCounter::new(s.tasks_speculated_total),
    );
    registry.register(
        "rask_scheduler_workers_timed_out",
        "Workers removed because nothing came from them for their TTL, since the scheduler \
         started",
        ConstCounter::new(s.workers_timed_out_total),
    );
    registry.register_with_unit(
        "rask_scheduler_workers_timed_out_silence",
        "How long the workers removed for silence had been silent when removed, summed (the TTL \
         plus how late the scheduler noticed), since the scheduler started",
        Unit::Seconds,
        ConstCounter::new(s.workers_timed_out_silence_seconds_total),
    );
    registry.register_with_unit(
        "rask_scheduler_transfer",
        "Result bytes sent from one worker to another, since the scheduler started",
        Unit::Bytes,
        ConstCounter::new(s.transfer_bytes_total),
    );
    registry.register_with_unit(
        "rask_scheduler_start_time",
        "When the scheduler started, in seconds since the Unix epoch",
        Unit::Seconds,
        ConstGauge::new(s.started_at),
    );
    registry.register(
        "rask_scheduler_threads",
        "Threads for tasks over all workers",
        ConstGauge::new(s.workers.iter().map(|w| u64::from(w.nthreads)).sum::<u64>()),
    );
    registry.register_with_unit(
        "rask_scheduler_memory",
        "Result bytes held over all workers",
        Unit::Bytes,
        ConstGauge::new(s.workers.iter().map(|w| w.nbytes).sum::<u64>()),
    );
    registry.register_with_unit(
        "rask_scheduler_memory_limit",
        "Memory limits summed over all workers (a worker without a limit adds 0)",
        Unit::Bytes,
        ConstGauge::new(s.workers.iter().map(|w| w.memory_limit).sum::<u64>()),
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// One metric family whose samples differ in `N` labels, in a fixed order (prometheus-client's
/// `Family` keeps its samples in a hash map, so their order would change from scrape to scrape).
#[derive(Debug)]
struct Labeled<const N: usize> {
    kind: MetricType,
    labels: [&'static str; N],
    samples: Vec<([String; N], f64)>,
}

impl Labeled<1> {
    fn gauges<'a>(
        label: &'static str,
        samples: impl IntoIterator<Item = ([&'a str; 1], f64)>,
    ) -> Self {
        Labeled::new(MetricType::Gauge, [label], samples)
    }
}

impl<const N: usize> Labeled<N> {
    fn counters<'a>(
        labels: [&'static str; N],
        samples: impl IntoIterator<Item = ([&'a str; N], f64)>,
    ) -> Self {
        Labeled::new(MetricType::Counter, labels, samples)
    }

    fn new<'a>(
        kind: MetricType,
        labels: [&'static str; N],
        samples: impl IntoIterator<Item = ([&'a str; N], f64)>,
    ) -> Self {
        Labeled {
            kind,
            labels,
            samples: samples
                .into_iter()
                .map(|(values, n)| (values.map(str::to_owned), n))
                .collect(),
        }
    }
}

impl<const N: usize> EncodeMetric for Labeled<N> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (values, sample) in &self.samples {
            let labels: Vec<(&str, Escaped)> = self
                .labels
                .iter()
                .zip(values)
                .map(|(name, value)| (*name, Escaped(value)))
                .collect();
            let mut sample_encoder = encoder.encode_family(&labels)?;
            match self.kind {
                MetricType::Counter => {
                    sample_encoder.encode_counter::<NoLabelSet, _, u64>(sample, None)?
                }
                _ => sample_encoder.encode_gauge(sample)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }

    fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// A label value escaped for the text format; prometheus-client writes label values verbatim, and
/// task prefixes are chosen by users.
#[derive(Debug)]
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str(r"\\")?,
                '"' => encoder.write_str(r#"\""#)?,
                '\n' => encoder.write_str(r"\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PrefixSnapshot, TaskCounts, TickSnapshot, WorkerSnapshot};

    fn worker(status: WorkerStatus, processing: usize) -> WorkerSnapshot {
        WorkerSnapshot {
            name: "w".to_owned(),
            address: "tcp://10.0.0.1:1".to_owned(),
            nthreads: 2,
            memory_limit: 1 << 30,
            nbytes: 10,
            processing,
            keys: 1,
            spilled_bytes: 0,
            rss: 0,
            status,
            pid: 1,
            last_seen_s: 0.0,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            workers: vec![
                worker(WorkerStatus::Running, 0),
                worker(WorkerStatus::Running, 1),
                worker(WorkerStatus::Running, 2),
                worker(WorkerStatus::Paused, 0),
            ],
            tasks: TaskCounts {
                released: 1,
                waiting: 2,
                queued: 3,
                no_worker: 4,
                processing: 5,
                memory: 6,
                erred: 7,
            },
            clients: 1,
            adaptive_target: 3,
            tasks_forgotten_total: 9,
            client_connections_added_total: 5,
            client_connections_removed_total: 4,
            workers_added_total: 6,
            workers_removed_total: 2,
            task_groups: 8,
            prefixes: vec![
                PrefixSnapshot {
                    name: "inc".to_owned(),
                    compute_seconds: 1.5,
                    transfer_seconds: 0.25,
                    nbytes_in_memory: 800,
                    suspicious: 2,
                    state_totals: vec![("waiting", 3), ("memory", 3), ("forgotten", 1)],
                },
                PrefixSnapshot {
                    name: "sum".to_owned(),
                    ..PrefixSnapshot::default()
                },
            ],
            ticks: TickSnapshot {
                count: 250,
                max_duration_s: 0.125,
            },
            monotonic_s: 42.5,
            ..Snapshot::default()
        }
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_dask_family_is_rendered_from_the_snapshot() {
        let text = render(&snapshot()).unwrap();
        let want = [
            "dask_scheduler_clients 1",
            "dask_scheduler_client_connections_added_total 5",
            "dask_scheduler_client_connections_removed_total 4",
            "dask_scheduler_desired_workers 3",
            r#"dask_scheduler_workers{state="idle"} 1.0"#,
            r#"dask_scheduler_workers{state="partially_saturated"} 1.0"#,
            r#"dask_scheduler_workers{state="saturated"} 1.0"#,
            r#"dask_scheduler_workers{state="paused"} 1.0"#,
            r#"dask_scheduler_workers{state="retiring"} 0.0"#,
            "dask_scheduler_workers_added_total 6",
            "dask_scheduler_workers_removed_total 2",
            "dask_scheduler_gc_collection_seconds_total 0.0",
            "dask_scheduler_last_time_total 42.5",
            r#"dask_scheduler_tasks_suspicious_total{task_prefix_name="inc"} 2.0"#,
            r#"dask_scheduler_tasks_suspicious_total{task_prefix_name="sum"} 0.0"#,
            "dask_scheduler_tasks_forgotten_total 9",
            r#"dask_scheduler_tasks{state="released"} 1.0"#,
            r#"dask_scheduler_tasks{state="waiting"} 2.0"#,
            r#"dask_scheduler_tasks{state="no-worker"} 4.0"#,
            r#"dask_scheduler_tasks{state="queued"} 3.0"#,
            r#"dask_scheduler_tasks{state="processing"} 5.0"#,
            r#"dask_scheduler_tasks{state="memory"} 6.0"#,
            r#"dask_scheduler_tasks{state="erred"} 7.0"#,
            "dask_scheduler_task_groups 8",
            r#"dask_scheduler_tasks_compute_seconds_total{task_prefix_name="inc"} 1.5"#,
            r#"dask_scheduler_tasks_compute_seconds_total{task_prefix_name="sum"} 0.0"#,
            r#"dask_scheduler_tasks_transfer_seconds_total{task_prefix_name="inc"} 0.25"#,
            r#"dask_scheduler_tasks_transfer_seconds_total{task_prefix_name="sum"} 0.0"#,
            r#"dask_scheduler_tasks_output_bytes{task_prefix_name="inc"} 800.0"#,
            r#"dask_scheduler_tasks_output_bytes{task_prefix_name="sum"} 0.0"#,
            r#"dask_scheduler_prefix_state_totals_total{task_prefix_name="inc",state="waiting"} 3.0"#,
            r#"dask_scheduler_prefix_state_totals_total{task_prefix_name="inc",state="memory"} 3.0"#,
            r#"dask_scheduler_prefix_state_totals_total{task_prefix_name="inc",state="forgotten"} 1.0"#,
            "dask_scheduler_tick_duration_maximum_seconds 0.125",
            "dask_scheduler_tick_count_total 250",
            "rask_scheduler_tasks_speculated_total 0",
            "rask_scheduler_workers_timed_out_total 0",
            "rask_scheduler_workers_timed_out_silence_seconds_total 0.0",
            "rask_scheduler_transfer_bytes_total 0",
            "rask_scheduler_start_time_seconds 0.0",
            "rask_scheduler_threads 8",
            "rask_scheduler_memory_bytes 40",
            "rask_scheduler_memory_limit_bytes 4294967296",
        ];
        assert_eq!(samples(&text), want, "full text:\n{text}");
        for (family, kind) in [
            ("dask_scheduler_client_connections_added", "counter"),
            ("dask_scheduler_client_connections_removed", "counter"),
            ("dask_scheduler_workers_added", "counter"),
            ("dask_scheduler_workers_removed", "counter"),
            ("dask_scheduler_gc_collection_seconds", "counter"),
            ("dask_scheduler_last_time", "counter"),
            ("dask_scheduler_tasks_suspicious", "counter"),
            ("dask_scheduler_task_groups", "gauge"),
            ("dask_scheduler_tasks_transfer_seconds", "counter"),
            ("dask_scheduler_tasks_output_bytes", "gauge"),
            ("dask_scheduler_prefix_state_totals", "counter"),
            ("dask_scheduler_tick_duration_maximum_seconds", "gauge"),
            ("dask_scheduler_tick_count", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "no {kind} {family} in\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no help for {family}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn an_empty_scheduler_lists_every_state_and_no_prefix() {
        let text = render(&Snapshot::default()).unwrap();
        for state in [
            "idle",
            "partially_saturated",
            "saturated",
            "paused",
            "retiring",
        ] {
            assert!(text.contains(&format!(
                "dask_scheduler_workers{{state=\"{state}\"}} 0.0\n"
            )));
        }
        for state in [
            "released",
            "waiting",
            "no-worker",
            "queued",
            "processing",
            "memory",
            "erred",
        ] {
            assert!(text.contains(&format!("dask_scheduler_tasks{{state=\"{state}\"}} 0.0\n")));
        }
        assert!(
            !text.contains("task_prefix_name"),
            "no prefixes, no samples"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&Snapshot {
            prefixes: vec![PrefixSnapshot {
                name: "a\"b\\c\nd".to_owned(),
                compute_seconds: 2.0,
                ..PrefixSnapshot::default()
            }],
            ..Snapshot::default()
        })
        .unwrap();
        assert!(
            text.contains(
                r#"dask_scheduler_tasks_compute_seconds_total{task_prefix_name="a\"b\\c\nd"} 2.0"#
            ),
            "{text}"
        );
    }
}
