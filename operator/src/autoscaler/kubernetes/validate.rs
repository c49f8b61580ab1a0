//! Stage 2 for DaskAutoscalers: the spec checked and settled into the policy's settings.

use std::time::Duration;

use kube::ResourceExt;

use crate::autoscaler::policy::Settings;
use crate::crd::DaskAutoscaler;
use crate::error::Invalid;
use crate::names;

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
    if a.spec.minimum < 0 || a.spec.maximum < a.spec.minimum {
        return Err(Invalid {
            kind: "DaskAutoscaler",
            name,
            problems: vec![format!(
                "spec.minimum ({}) must be at least 0 and at most spec.maximum ({})",
                a.spec.minimum, a.spec.maximum
            )],
        });
    }
    let mut settings = Settings::new(
        a.spec.minimum.unsigned_abs() as usize,
        a.spec.maximum.unsigned_abs() as usize,
    );
    if let Some(s) = a.spec.scale_down_stabilization_seconds {
        settings.down_window = Duration::from_secs(s.max(0).unsigned_abs());
    }
    Ok(ValidatedAutoscaler {
        generation: a.metadata.generation.unwrap_or(0),
        cluster: a.spec.cluster.clone(),
        group: a
            .spec
            .worker_group
            .clone()
            .unwrap_or_else(|| names::default_worker_group(&a.spec.cluster)),
        settings,
        key: a.uid().unwrap_or_else(|| format!("{namespace}/{name}")),
        name,
        namespace,
    })
}
