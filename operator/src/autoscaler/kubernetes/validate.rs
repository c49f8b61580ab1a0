//! Stage 2 for DaskAutoscalers: the spec checked and settled into the policy's settings.

use kube::ResourceExt;

use crate::autoscaler::policy::Settings;
use crate::crd::DaskAutoscaler;
use crate::error::Invalid;
use crate::names;
use crate::spec::autoscaler::{AutoscalerSpec, Keys};

/// A DaskAutoscaler whose group and settings are settled.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedAutoscaler {
    pub name: String,
    pub namespace: String,
    pub generation: i64,
    /// The DaskCluster it scales.
    pub cluster: String,
    /// The worker group it sizes: `spec.workerGroup`, else the cluster's default group.
    pub group: String,
    pub settings: Settings,
    /// Its policy's key in the context (the object's uid).
    pub key: String,
}

pub fn validate(a: &DaskAutoscaler) -> Result<ValidatedAutoscaler, Invalid> {
    let name = a.name_any();
    let namespace = a.namespace().unwrap_or_else(|| "default".into());
    // The same checks and messages as every other backend's autoscaler (spec::autoscaler).
    let group = a
        .spec
        .worker_group
        .clone()
        .unwrap_or_else(|| names::default_worker_group(&a.spec.cluster));
    let spec = AutoscalerSpec::validate(
        group,
        i64::from(a.spec.minimum),
        i64::from(a.spec.maximum),
        a.spec.scale_down_stabilization_seconds,
        Keys::RESOURCE,
    )
    .map_err(|invalid| Invalid {
        kind: "DaskAutoscaler",
        name: name.clone(),
        problems: vec![invalid.message],
    })?;
    Ok(ValidatedAutoscaler {
        generation: a.metadata.generation.unwrap_or(0),
        cluster: a.spec.cluster.clone(),
        group: spec.group,
        settings: spec.settings,
        key: a.uid().unwrap_or_else(|| format!("{namespace}/{name}")),
        name,
        namespace,
    })
}
