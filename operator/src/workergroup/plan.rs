//! Scaling and rolling as a pure decision: from the pods that exist and the replicas wanted, which
//! pods to create, which to delete outright, and which to retire through the scheduler first.

/// What the plan needs to know of one pod (pods being deleted are left out by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// Running and passing readiness: it may hold results, so it is retired, never just deleted.
    pub ready: bool,
    /// Failed or Succeeded: a lost worker to replace.
    pub terminal: bool,
    /// Made from the current template.
    pub up_to_date: bool,
    /// Creation time (seconds), to remove the newest first.
    pub created: i64,
    /// `controller.kubernetes.io/pod-deletion-cost`, as ReplicaSets honour it: lower goes first.
    /// The autoscaler marks the workers it chose to retire this way.
    pub deletion_cost: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New pods to create.
    pub create: usize,
    /// Pods to delete now: finished or failed ones, and ones never ready (they hold no data).
    pub delete: Vec<String>,
    /// Ready pods to retire through the scheduler, then delete the ones it retired.
    pub retire: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create == 0 && self.delete.is_empty() && self.retire.is_empty()
    }
}

/// Decides the next step toward `desired` up-to-date, ready pods.
///
/// - Lost pods (failed, finished) are deleted and replaced.
/// - Missing up-to-date pods are created first (a rolling update surges, then shrinks).
/// - Pods that were never ready go first when there are too many: pending ones before any ready one.
/// - Ready pods are only removed while more than `desired` are ready, so a rolling update never
///   drops below the ready count it started with, and each removal goes through retirement.
pub fn plan(desired: usize, pods: &[PodView]) -> Plan {
    let mut out = Plan::default();
    let mut live: Vec<&PodView> = Vec::new();
    for p in pods {
        if p.terminal {
            out.delete.push(p.name.clone());
        } else {
            live.push(p);
        }
    }
    // Cheapest to delete first, then newest first: they are the least likely to hold results.
    live.sort_by(|a, b| {
        a.deletion_cost
            .cmp(&b.deletion_cost)
            .then_with(|| b.created.cmp(&a.created))
            .then_with(|| b.name.cmp(&a.name))
    });
    let up: Vec<&PodView> = live.iter().copied().filter(|p| p.up_to_date).collect();
    let old: Vec<&PodView> = live.iter().copied().filter(|p| !p.up_to_date).collect();
    out.create = desired.saturating_sub(up.len());

    let mut ready_budget = live
        .iter()
        .filter(|p| p.ready)
        .count()
        .saturating_sub(desired);
    let mut excess_up = up.len().saturating_sub(desired);

    // Outdated pods that are not ready serve nobody.
    out.delete
        .extend(old.iter().filter(|p| !p.ready).map(|p| p.name.clone()));
    for p in up.iter().filter(|p| !p.ready) {
        if excess_up == 0 {
            break;
        }
        out.delete.push(p.name.clone());
        excess_up -= 1;
    }
    // Ready pods: outdated ones first, then surplus up-to-date ones, within the ready budget.
    for p in old.iter().filter(|p| p.ready) {
        if ready_budget == 0 {
            break;
        }
        out.retire.push(p.name.clone());
        ready_budget -= 1;
    }
    for p in up.iter().filter(|p| p.ready) {
        if ready_budget == 0 || excess_up == 0 {
            break;
        }
        out.retire.push(p.name.clone());
        ready_budget -= 1;
        excess_up -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, up_to_date: bool, created: i64) -> PodView {
        PodView {
            name: name.into(),
            ready,
            terminal: false,
            up_to_date,
            created,
            deletion_cost: 0,
        }
    }

    fn ready(n: usize) -> Vec<PodView> {
        (0..n)
            .map(|i| pod(&format!("w{i}"), true, true, i as i64))
            .collect()
    }

    #[test]
    fn scale_up_creates() {
        assert_eq!(
            plan(5, &ready(2)),
            Plan {
                create: 3,
                ..Plan::default()
            }
        );
        assert!(plan(2, &ready(2)).is_empty());
    }

    #[test]
    fn scale_down_retires_the_newest_ready_pods() {
        let p = plan(3, &ready(5));
        assert_eq!(
            p,
            Plan {
                create: 0,
                delete: vec![],
                retire: vec!["w4".into(), "w3".into()]
            }
        );
    }

    #[test]
    fn scale_down_removes_pending_pods_before_ready_ones() {
        let mut pods = ready(3);
        pods.push(pod("p1", false, true, 10));
        pods.push(pod("p2", false, true, 11));
        let p = plan(3, &pods);
        assert_eq!(
            p,
            Plan {
                create: 0,
                delete: vec!["p2".into(), "p1".into()],
                retire: vec![]
            }
        );
        let p = plan(2, &pods);
        assert_eq!(p.delete, vec!["p2".to_string(), "p1".into()]);
        assert_eq!(p.retire, vec!["w2".to_string()]);
    }

    #[test]
    fn lost_pods_are_replaced() {
        let mut pods = ready(2);
        pods.push(PodView {
            terminal: true,
            ..pod("dead", false, true, 5)
        });
        assert_eq!(
            plan(3, &pods),
            Plan {
                create: 1,
                delete: vec!["dead".into()],
                retire: vec![]
            }
        );
    }

    #[test]
    fn a_rolling_update_surges_then_retires_old_pods_as_new_ones_get_ready() {
        let old: Vec<PodView> = (0..3)
            .map(|i| pod(&format!("old{i}"), true, false, i))
            .collect();
        // New template: create three, remove nothing yet.
        assert_eq!(
            plan(3, &old),
            Plan {
                create: 3,
                ..Plan::default()
            }
        );
        // Three new pods pending: wait.
        let mut pods = old.clone();
        pods.extend((0..3).map(|i| pod(&format!("new{i}"), false, true, 10 + i)));
        assert!(plan(3, &pods).is_empty());
        // One new pod ready: one old pod may go.
        pods[3].ready = true;
        assert_eq!(plan(3, &pods).retire.len(), 1);
        // All new pods ready: every old pod goes.
        for p in &mut pods[3..] {
            p.ready = true;
        }
        let p = plan(3, &pods);
        assert_eq!(p.retire.len(), 3);
        assert!(p.retire.iter().all(|n| n.starts_with("old")));
        assert_eq!(p.create, 0);
    }

    #[test]
    fn outdated_pods_that_never_got_ready_are_deleted_at_once() {
        let pods = vec![
            pod("old-crashing", false, false, 1),
            pod("new", true, true, 2),
        ];
        assert_eq!(
            plan(1, &pods),
            Plan {
                create: 0,
                delete: vec!["old-crashing".into()],
                retire: vec![]
            }
        );
    }

    #[test]
    fn scale_to_zero_retires_everything_ready() {
        let mut pods = ready(2);
        pods.push(pod("pending", false, true, 9));
        let p = plan(0, &pods);
        assert_eq!(p.delete, vec!["pending".to_string()]);
        assert_eq!(p.retire, vec!["w1".to_string(), "w0".into()]);
    }

    #[test]
    fn scale_down_retires_the_pods_marked_cheapest_to_delete() {
        let mut pods = ready(4);
        pods[0].deletion_cost = -100;
        pods[2].deletion_cost = -100;
        let p = plan(2, &pods);
        assert_eq!(p.retire, vec!["w2".to_string(), "w0".to_string()]);
        assert!(p.delete.is_empty());
    }
}
