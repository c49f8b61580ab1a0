//! What every reconcile gets: the API client, the scheduler API, metrics and the event recorder.

use std::sync::Arc;

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
    pub policies:
        std::sync::Mutex<std::collections::HashMap<String, crate::autoscaler::policy::Policy>>,
    pub scheduler_api: SchedulerApi,
    pub scheduler_url: SchedulerUrl,
    pub metrics: Arc<Metrics>,
    /// Whether rask pods use their cluster's certificates (mounted, `tls://` addresses):
    /// `rask-operator run --cluster-tls`. The certificates are made either way.
    pub cluster_tls: bool,
    /// Failures in a row per object, for `error_policy`'s backoff.
    pub backoff: crate::controller::Backoff,
    recorder: Recorder,
}

impl Context {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: names::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            policies: std::sync::Mutex::default(),
            backoff: crate::controller::Backoff::default(),
            client,
            scheduler_api: SchedulerApi::default(),
            scheduler_url: Arc::new(names::scheduler_http),
            metrics,
            cluster_tls: false,
        }
    }

    /// Has rask pods use their cluster's certificates (see [`Context::cluster_tls`]).
    pub fn with_cluster_tls(mut self, on: bool) -> Self {
        self.cluster_tls = on;
        self
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
