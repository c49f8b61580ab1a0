//! Stage 3 for DaskAutoscalers, pure: whose the autoscaler is, and the size a decision leads to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::autoscaler::policy::Decision;

/// How an autoscaler stands to the DaskCluster of its `spec.cluster` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Not owned by it yet: it adopts the autoscaler (as dask-kubernetes' cluster does), so
    /// deleting the cluster deletes the autoscaler.
    Adopt,
    /// Owned by this cluster.
    Owned,
    /// Owned by an earlier cluster of the same name, now deleted: the autoscaler goes with it
    /// (garbage collection) and never scales the new one.
    Stale,
}

/// `owners` are the autoscaler's owner references; `cluster_uid` the current cluster's.
pub fn ownership(owners: &[OwnerReference], cluster: &str, cluster_uid: &str) -> Ownership {
    let clusters: Vec<&OwnerReference> = owners
        .iter()
        .filter(|o| o.kind == "DaskCluster" && o.name == cluster)
        .collect();
    if clusters.iter().any(|o| o.uid == cluster_uid) {
        Ownership::Owned
    } else if clusters.is_empty() {
        Ownership::Adopt
    } else {
        Ownership::Stale
    }
}

/// The group's size once `decision` is carried out from `current` workers.
pub fn desired(current: usize, decision: &Decision) -> usize {
    match decision {
        Decision::ScaleUp { by, .. } => current + by,
        Decision::Retire {
            workers, unstarted, ..
        } => current.saturating_sub(workers.len() + unstarted),
        Decision::Hold { .. } => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "kubernetes.dask.org/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn an_autoscaler_belongs_to_the_cluster_that_adopted_it() {
        let table = [
            (vec![], Ownership::Adopt),
            (vec![owner("DaskCluster", "foo", "u1")], Ownership::Owned),
            (vec![owner("DaskCluster", "foo", "u0")], Ownership::Stale),
            (vec![owner("DaskCluster", "bar", "u0")], Ownership::Adopt),
            (vec![owner("ConfigMap", "foo", "u0")], Ownership::Adopt),
        ];
        for (owners, want) in table {
            assert_eq!(ownership(&owners, "foo", "u1"), want, "{owners:?}");
        }
    }

    #[test]
    fn a_decision_sets_the_size() {
        let hold = Decision::Hold { reason: "x".into() };
        assert_eq!(desired(3, &hold), 3);
        let up = Decision::ScaleUp {
            by: 2,
            reason: "x".into(),
        };
        assert_eq!(desired(3, &up), 5);
    }
}
