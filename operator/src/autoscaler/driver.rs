//! The autoscaling loop for any [`Backend`]: observe the backend's workers and the scheduler, ask
//! the [`Policy`], carry the decision out. Kubernetes runs one [`step`]'s halves per reconcile;
//! the local and cloud backends run [`Autoscaler::run`] next to their scheduler.

use std::collections::BTreeSet;
use std::time::Duration;

use super::policy::{Decision, GroupWorker, Observation, Policy, Settings};
use crate::backend::{Backend, BackendError, InstanceState, Retirement, WorkerInstance};
use crate::clock::now;
use crate::scheduler_api::SchedulerApi;

/// How long one look at the scheduler may take before the policy is told it did not answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What one poll saw.
#[derive(Clone, Debug)]
pub struct Observed {
    pub observation: Observation,
    /// The group's instances, newest first.
    pub instances: Vec<WorkerInstance>,
    /// Why the scheduler could not be asked, when it could not.
    pub scheduler_error: Option<String>,
}

/// Reads the group's workers from the backend and the scheduler's target for the whole cluster,
/// minus the workers of other groups (each group scales within its own bounds).
pub async fn observe<B: Backend>(
    backend: &B,
    api: &SchedulerApi,
    group: &str,
) -> Result<Observed, BackendError> {
    let mut instances: Vec<WorkerInstance> = backend
        .list_workers(group)
        .await?
        .into_iter()
        .filter(|w| !matches!(w.state, InstanceState::Failed { .. }))
        .collect();
    instances.sort_by(|a, b| b.created.total_cmp(&a.created).then(b.name.cmp(&a.name)));
    let own: BTreeSet<&str> = instances.iter().map(|w| w.name.as_str()).collect();
    let base = backend.scheduler_url();
    let ask = async {
        let target = api.adaptive_target(&base).await?;
        let workers = api.get_workers(&base).await?;
        Ok::<_, crate::scheduler_api::SchedulerApiError>((target, workers))
    };
    let answer = match tokio::time::timeout(ASK_TIMEOUT, ask).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "scheduler API at {base} gave no answer within {ASK_TIMEOUT:?}"
        )),
    };
    let (target, workers, scheduler_error) = match answer {
        Ok((target, workers)) => {
            let others = workers
                .iter()
                .filter(|w| !own.contains(w.name.as_str()))
                .count();
            let known: BTreeSet<String> = workers.into_iter().map(|w| w.name).collect();
            // Newest first, as the policy expects.
            let mine = instances
                .iter()
                .filter(|i| known.contains(&i.name))
                .map(|i| GroupWorker {
                    name: i.name.clone(),
                    nbytes: None,
                })
                .collect();
            let target = usize::try_from(target).unwrap_or(0).saturating_sub(others);
            (Some(target), mine, None)
        }
        Err(e) => (None, Vec::new(), Some(e)),
    };
    Ok(Observed {
        observation: Observation {
            at: now(),
            target,
            current: instances.len(),
            workers,
        },
        instances,
        scheduler_error,
    })
}

/// What carrying a decision out did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Held,
    Added(Vec<String>),
    Retired(Retirement),
}

/// Carries `decision` out on the backend. A retirement names the scheduler's workers the policy
/// chose plus the newest instances the scheduler does not know yet (they hold nothing).
pub async fn apply<B: Backend>(
    backend: &B,
    group: &str,
    decision: &Decision,
    observed: &Observed,
) -> Result<Outcome, BackendError> {
    match decision {
        Decision::Hold { .. } => Ok(Outcome::Held),
        Decision::ScaleUp { by, .. } => Ok(Outcome::Added(backend.add_workers(group, *by).await?)),
        Decision::Retire {
            workers, unstarted, ..
        } => {
            let known: BTreeSet<&str> = observed
                .observation
                .workers
                .iter()
                .map(|w| w.name.as_str())
                .collect();
            let mut names: Vec<String> = observed
                .instances
                .iter()
                .filter(|i| !known.contains(i.name.as_str()))
                .take(*unstarted)
                .map(|i| i.name.clone())
                .collect();
            names.extend(workers.iter().cloned());
            Ok(Outcome::Retired(
                backend.retire_workers(group, &names).await?,
            ))
        }
    }
}

/// One poll's record, for logs, status and benchmarks.
#[derive(Clone, Debug)]
pub struct Step {
    pub at: f64,
    /// Workers of the group before the decision.
    pub current: usize,
    pub target: Option<usize>,
    pub decision: Decision,
    pub outcome: Result<Outcome, String>,
}

/// Observes, decides and applies once.
pub async fn step<B: Backend>(
    backend: &B,
    api: &SchedulerApi,
    group: &str,
    policy: &mut Policy,
) -> Step {
    let observed = match observe(backend, api, group).await {
        Ok(o) => o,
        Err(e) => {
            let reason = format!("cannot list the workers of {group}: {e}; holding");
            return Step {
                at: now(),
                current: 0,
                target: None,
                decision: Decision::Hold {
                    reason: reason.clone(),
                },
                outcome: Err(reason),
            };
        }
    };
    let decision = policy.decide(&observed.observation);
    let outcome = apply(backend, group, &decision, &observed)
        .await
        .map_err(|e| e.to_string());
    Step {
        at: observed.observation.at,
        current: observed.observation.current,
        target: observed.observation.target,
        decision,
        outcome,
    }
}

/// The loop around [`step`] for one worker group.
pub struct Autoscaler {
    pub group: String,
    pub policy: Policy,
    pub interval: Duration,
    pub api: SchedulerApi,
}

impl Autoscaler {
    pub fn new(group: impl Into<String>, settings: Settings) -> Self {
        Autoscaler {
            group: group.into(),
            policy: Policy::new(settings),
            interval: Duration::from_secs(1),
            api: SchedulerApi::new(Duration::from_secs(60)),
        }
    }

    /// Polls every `interval` until `stop` turns true, handing each step to `report`.
    pub async fn run<B: Backend>(
        mut self,
        backend: &B,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut report: impl FnMut(&Step) + Send,
    ) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let s = step(backend, &self.api, &self.group, &mut self.policy).await;
            report(&s);
        }
    }
}
