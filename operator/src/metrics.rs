//! The operator's own metrics and diagnostics, shared by the controllers and the HTTP server.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::now;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub controller: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

/// Reconcile counts, durations, errors and clusters by phase.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    failures: Family<ErrorLabel, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    clusters: Family<PhaseLabel, Gauge>,
    diagnostics: Mutex<Diagnostics>,
    ready: std::sync::atomic::AtomicBool,
}

/// What `/` shows: when the operator last reconciled something.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diagnostics {
    pub started_at: f64,
    pub last_reconcile_at: Option<f64>,
    pub last_error: Option<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rask_operator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
        });
        let clusters = Family::<PhaseLabel, Gauge>::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconciliation took",
            duration.clone(),
        );
        registry.register("clusters", "DaskClusters by phase", clusters.clone());
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            clusters,
            diagnostics: Mutex::new(Diagnostics {
                started_at: now(),
                ..Diagnostics::default()
            }),
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// The controllers' caches have synced: the operator acts on the cluster's real state.
    pub fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs one reconcile and records it.
    pub async fn timed<T>(
        &self,
        controller: &str,
        reconcile: impl std::future::Future<Output = T>,
    ) -> T {
        let started = std::time::Instant::now();
        let result = reconcile.await;
        self.reconciled(controller, started.elapsed());
        result
    }

    pub fn reconciled(&self, controller: &str, took: Duration) {
        let l = ControllerLabel {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
        self.diag().last_reconcile_at = Some(now());
    }

    pub fn failed(&self, controller: &str, kind: &str, message: String) {
        self.failures
            .get_or_create(&ErrorLabel {
                controller: controller.into(),
                error: kind.into(),
            })
            .inc();
        self.diag().last_error = Some(message);
    }

    /// Sets the number of clusters in each phase (all phases given, so stale ones drop to zero).
    pub fn set_clusters_by_phase(&self, counts: &[(&str, i64)]) {
        for (phase, n) in counts {
            self.clusters
                .get_or_create(&PhaseLabel {
                    phase: (*phase).into(),
                })
                .set(*n);
        }
    }

    fn diag(&self) -> std::sync::MutexGuard<'_, Diagnostics> {
        self.diagnostics.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn diagnostics(&self) -> Diagnostics {
        self.diag().clone()
    }

    /// Prometheus text of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
