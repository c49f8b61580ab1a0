//! What every reconcile gets: the API client, the scheduler API, metrics and the event recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::metrics::Metrics;
use crate::names;
use crate::scheduler_api::SchedulerApi;

/// Resolves a cluster's scheduler HTTP API base URL from (cluster name, namespace).
pub type SchedulerUrl = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

pub struct Context {
    pub client: kube::Client,
    /// Each DaskAutoscaler's policy and its memory of recent targets, by object UID.
    pub policies: Mutex<HashMap<String, crate::autoscaler::policy::Policy>>,
    pub scheduler_api: SchedulerApi,
    pub scheduler_url: SchedulerUrl,
    pub metrics: Arc<Metrics>,
    /// Whether rask pods use their cluster's certificates (mounted, `tls://` addresses): on by
    /// default, off with `rask-operator run --no-cluster-tls`. The certificates are made either
    /// way.
    pub cluster_tls: bool,
    /// Failures in a row per object, for `error_policy`'s backoff.
    pub backoff: Backoff,
    /// HTTPS clients of TLS clusters' schedulers, by (namespace, Secret), with the Secret's
    /// resourceVersion they were made from (see [`crate::cluster::reach`]).
    tls_apis: Mutex<TlsApis>,
    recorder: Recorder,
}

type TlsApis = HashMap<(String, String), (String, SchedulerApi)>;

impl Context {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: names::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            policies: Mutex::default(),
            backoff: Backoff::default(),
            tls_apis: Mutex::default(),
            client,
            scheduler_api: SchedulerApi::default(),
            scheduler_url: Arc::new(names::scheduler_http),
            metrics,
            cluster_tls: true,
        }
    }

    /// Has rask pods use their cluster's certificates (see [`Context::cluster_tls`]).
    pub fn with_cluster_tls(mut self, on: bool) -> Self {
        self.cluster_tls = on;
        self
    }

    /// The HTTPS clients of TLS clusters' schedulers (a poisoned lock is taken over: the map
    /// only caches clients).
    pub(crate) fn tls_apis(&self) -> std::sync::MutexGuard<'_, TlsApis> {
        self.tls_apis.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Points scheduler API calls elsewhere (tests, or an operator outside the cluster).
    pub fn with_scheduler_url(mut self, f: SchedulerUrl) -> Self {
        self.scheduler_url = f;
        self
    }

    pub fn with_scheduler_api(mut self, api: SchedulerApi) -> Self {
        self.scheduler_api = api;
        self
    }

    /// Publishes a Kubernetes Event about `obj`; failing to is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let reference: ObjectReference = obj.object_ref(&());
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason, "cannot publish an event");
        }
    }
}

/// Failures in a row per object, for the backoff.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<(&'static str, String), u32>>,
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String), u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failure; returns how many in a row (1 for the first).
    pub fn failed(&self, controller: &'static str, key: &str) -> u32 {
        let mut map = self.lock();
        let n = map.entry((controller, key.to_owned())).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, controller: &'static str, key: &str) {
        let mut map = self.lock();
        if !map.is_empty() {
            map.remove(&(controller, key.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_per_object_until_a_success() {
        let b = Backoff::default();
        assert_eq!(b.failed("daskcluster", "ns/a"), 1);
        assert_eq!(b.failed("daskcluster", "ns/a"), 2);
        assert_eq!(b.failed("daskjob", "ns/a"), 1, "per controller");
        assert_eq!(b.failed("daskcluster", "ns/b"), 1, "per object");
        b.succeeded("daskcluster", "ns/a");
        assert_eq!(b.failed("daskcluster", "ns/a"), 1);
    }
}
