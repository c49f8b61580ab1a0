//! What a file of Dask resources asks of the local backend, settled and checked: the cluster, its
//! worker groups with how each worker is started, the autoscalers, and a DaskJob's runner.
//! Pure: no processes are started here.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt;

use super::manifest::Resource;
use crate::crd::{DaskClusterSpec, WorkerSpec};
use crate::names;
use crate::spec::autoscaler::{AutoscalerSpec, Keys};
use crate::spec::quantity::kube_quantity;
use crate::spec::worker::parse_resources;
use crate::spec::{ByteSize, MemoryLimit, WorkerTemplate};

/// The name of rask's worker image, whose entrypoint is the `rask` binary.
pub const RASK_IMAGE: &str = "rask-dev/rask-worker";

/// Whether a container runs rask's image (whose `rask` reads Dask's TLS settings).
pub fn is_rask(c: &Container) -> bool {
    c.image.as_deref().is_some_and(|i| i.contains(RASK_IMAGE))
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupPlan {
    pub replicas: usize,
    pub template: WorkerTemplate,
    /// The program its workers run, when the container names one (`command: [custom-worker]`);
    /// otherwise `rask`.
    pub program: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerPlan {
    /// The DaskAutoscaler's name.
    pub name: String,
    pub spec: AutoscalerSpec,
}

/// A DaskJob's runner: its command line as written (`$(VAR)` references expanded at start, when
/// the scheduler's address is known), and its environment.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerPlan {
    pub job: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Failed runs retried this many times (`spec.backoffLimit`).
    pub backoff_limit: u32,
    /// The job fails when it has not finished this long after `up` started
    /// (`spec.activeDeadlineSeconds`).
    pub deadline: Option<Duration>,
    /// Keep the cluster after a failure, until Ctrl-C (`spec.keepClusterOnFailure`).
    pub keep_cluster_on_failure: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LocalPlan {
    pub cluster: String,
    pub scheduler_env: Vec<(String, String)>,
    /// The program the scheduler runs, when its container names one; otherwise `rask`.
    pub scheduler_program: Option<String>,
    /// By group name; the default group is `{cluster}-default`, as on Kubernetes.
    pub groups: BTreeMap<String, GroupPlan>,
    pub autoscalers: Vec<AutoscalerPlan>,
    pub idle_timeout: Option<Duration>,
    pub runner: Option<RunnerPlan>,
    /// Certificates made for the cluster in its directory: unless the DaskCluster's (or
    /// DaskJob's) `kubernetes.dask.org/tls` annotation is `"false"`.
    pub certificates: bool,
}

/// Every problem of the file, each naming the resource and field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot run this locally: {}", problems.join("; "))]
pub struct Invalid {
    pub problems: Vec<String>,
}

pub fn plan(resources: &[Resource]) -> Result<LocalPlan, Invalid> {
    let mut problems = Vec::new();
    let mut clusters: Vec<(String, &DaskClusterSpec, Option<RunnerPlan>)> = Vec::new();
    let mut certificates = true;
    for r in resources {
        match r {
            Resource::Cluster(c) => {
                let name = c.name_any();
                certificates = tls_annotation(&format!("DaskCluster {name}"), &**c, &mut problems);
                clusters.push((name, &c.spec, None));
            }
            Resource::Job(j) => {
                let name = j.name_any();
                certificates = tls_annotation(&format!("DaskJob {name}"), &**j, &mut problems);
                let runner = runner(
                    &name,
                    &j.spec.job.spec,
                    &format!("DaskJob {name}: spec.job.spec"),
                    &mut problems,
                )
                .map(|r| RunnerPlan {
                    backoff_limit: j
                        .spec
                        .backoff_limit
                        .and_then(|b| u32::try_from(b).ok())
                        .unwrap_or(0),
                    deadline: j
                        .spec
                        .active_deadline_seconds
                        .filter(|s| *s > 0)
                        .map(|s| Duration::from_secs(s.unsigned_abs())),
                    keep_cluster_on_failure: j.spec.keep_cluster_on_failure.unwrap_or(false),
                    ..r
                });
                clusters.push((name, &j.spec.cluster.spec, runner));
            }
            _ => {}
        }
    }
    let (cluster, spec, runner) = match clusters.len() {
        1 => clusters.remove(0),
        n => {
            let names: Vec<String> = clusters.iter().map(|c| c.0.clone()).collect();
            return Err(Invalid {
                problems: vec![format!(
                    "the file must hold exactly one DaskCluster or DaskJob, it holds {n} ({})",
                    names.join(", ")
                )],
            });
        }
    };
    let scheduler = first_container(&spec.scheduler.spec, "spec.scheduler.spec", &mut problems);
    let scheduler_env = scheduler
        .map(|c| env(c, "spec.scheduler.spec.containers[0]", &mut problems))
        .unwrap_or_default();
    let scheduler_program = scheduler.and_then(program);
    let mut groups = BTreeMap::new();
    let default = names::default_worker_group(&cluster);
    if let Some(g) = group(
        &spec.worker,
        &format!("{cluster}: spec.worker"),
        &mut problems,
    ) {
        groups.insert(default.clone(), g);
    }
    let mut autoscalers = Vec::new();
    for r in resources {
        match r {
            Resource::WorkerGroup(g) => {
                let name = g.name_any();
                if g.spec.cluster != cluster {
                    problems.push(format!(
                        "DaskWorkerGroup {name}: spec.cluster is {:?}, not this file's cluster {cluster:?}",
                        g.spec.cluster
                    ));
                } else if let Some(p) = group(
                    &g.spec.worker,
                    &format!("DaskWorkerGroup {name}: spec.worker"),
                    &mut problems,
                ) {
                    groups.insert(name, p);
                }
            }
            Resource::Autoscaler(a) => {
                let name = a.name_any();
                let group = a
                    .spec
                    .worker_group
                    .clone()
                    .unwrap_or_else(|| default.clone());
                if a.spec.cluster != cluster {
                    problems.push(format!(
                        "DaskAutoscaler {name}: spec.cluster is {:?}, not this file's cluster {cluster:?}",
                        a.spec.cluster
                    ));
                    continue;
                }
                match AutoscalerSpec::validate(
                    group,
                    i64::from(a.spec.minimum),
                    i64::from(a.spec.maximum),
                    a.spec.scale_down_stabilization_seconds,
                    Keys::RESOURCE,
                ) {
                    Ok(spec) => autoscalers.push(AutoscalerPlan { name, spec }),
                    Err(e) => problems.push(format!("DaskAutoscaler {name}: {e}")),
                }
            }
            Resource::Cluster(_) | Resource::Job(_) => {}
        }
    }
    for a in &autoscalers {
        if !groups.contains_key(&a.spec.group) {
            problems.push(format!(
                "DaskAutoscaler {}: worker group {} is not in the file (groups: {})",
                a.name,
                a.spec.group,
                groups.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Invalid { problems });
    }
    Ok(LocalPlan {
        cluster,
        scheduler_env,
        scheduler_program,
        groups,
        autoscalers,
        idle_timeout: spec
            .idle_timeout
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s.unsigned_abs())),
        runner,
        certificates,
    })
}

/// `kubernetes.dask.org/tls` of the file's cluster or job.
fn tls_annotation(what: &str, obj: &impl ResourceExt, problems: &mut Vec<String>) -> bool {
    crate::tls::wanted(obj.annotations()).unwrap_or_else(|e| {
        problems.push(format!("{what}: {e}"));
        true
    })
}

fn first_container<'a>(
    spec: &'a PodSpec,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<&'a Container> {
    let c = spec.containers.first();
    if c.is_none() {
        problems.push(format!("{path}.containers: empty"));
    }
    c
}

/// The plain `value` environment variables; `valueFrom` needs a Kubernetes API server.
fn env(c: &Container, path: &str, problems: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        match (&e.value, &e.value_from) {
            (_, Some(_)) => problems.push(format!(
                "{path}.env[{i}] ({}): valueFrom needs Kubernetes; give a value for a local run",
                e.name
            )),
            (v, None) => out.push((e.name.clone(), v.clone().unwrap_or_default())),
        }
    }
    out
}

/// The program a container names with `command`, which runs in place of `rask` locally; Dask's
/// own commands (`dask`, `dask-worker`, `dask-scheduler`, as dask-kubernetes writes them) stand
/// for `rask`, which takes their flags.
fn program(c: &Container) -> Option<String> {
    let first = c.command.as_ref()?.first()?;
    let base = first.rsplit('/').next().unwrap_or(first);
    (!matches!(base, "dask" | "dask-worker" | "dask-scheduler" | "rask")).then(|| first.clone())
}

/// The value of `--flag V` or `--flag=V` in a command line.
fn flag(args: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        }
    })
}

fn group(w: &WorkerSpec, path: &str, problems: &mut Vec<String>) -> Option<GroupPlan> {
    if w.replicas < 0 {
        problems.push(format!("{path}.replicas: {} is negative", w.replicas));
        return None;
    }
    let c = first_container(&w.spec, &format!("{path}.spec"), problems)?;
    let cpath = format!("{path}.spec.containers[0]");
    let mut args: Vec<String> = c.command.clone().unwrap_or_default();
    args.extend(c.args.clone().unwrap_or_default());
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let limit = |k: &str| limits.and_then(|l| l.get(k)).map(|q| q.0.clone());
    let nthreads = match flag(&args, "--nthreads") {
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                problems.push(format!(
                    "{cpath}.args: --nthreads {n:?} is not a positive integer"
                ));
                return None;
            }
        },
        None => match limit("cpu") {
            Some(q) => match kube_quantity(&q) {
                Some(cpus) => (cpus.ceil() as usize).max(1),
                None => {
                    problems.push(format!(
                        "{cpath}.resources.limits.cpu: {q:?} is not a quantity"
                    ));
                    return None;
                }
            },
            None => 1,
        },
    };
    let memory_limit = match flag(&args, "--memory-limit") {
        Some(m) => match MemoryLimit::parse(&m) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("{cpath}.args: --memory-limit: {e}"));
                return None;
            }
        },
        None => match limit("memory") {
            Some(q) => match kube_quantity(&q) {
                Some(bytes) => MemoryLimit::Bytes(ByteSize(bytes as u64)),
                None => {
                    problems.push(format!(
                        "{cpath}.resources.limits.memory: {q:?} is not a quantity"
                    ));
                    return None;
                }
            },
            None => MemoryLimit::Auto,
        },
    };
    let resources = match flag(&args, "--resources") {
        Some(r) => match parse_resources(&r) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(format!("{cpath}.args: --resources: {e}"));
                return None;
            }
        },
        None => None,
    };
    Some(GroupPlan {
        replicas: w.replicas as usize,
        template: WorkerTemplate {
            nthreads: Some(nthreads),
            memory_limit,
            env: env(c, &cpath, problems),
            resources,
        },
        program: program(c),
    })
}

fn runner(job: &str, spec: &PodSpec, path: &str, problems: &mut Vec<String>) -> Option<RunnerPlan> {
    let c = first_container(spec, path, problems)?;
    let cpath = format!("{path}.containers[0]");
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    // rask's worker image has `rask` as its entrypoint: its args are a rask command line.
    if c.command.is_none() && is_rask(c) {
        argv.push("rask".into());
    }
    argv.extend(c.args.clone().unwrap_or_default());
    if argv.is_empty() {
        problems.push(format!(
            "{cpath}: no command or args (a local run cannot use an image's entrypoint)"
        ));
        return None;
    }
    Some(RunnerPlan {
        job: job.to_owned(),
        argv,
        env: env(c, &cpath, problems),
        backoff_limit: 0,
        deadline: None,
        keep_cluster_on_failure: false,
    })
}

/// Expands Kubernetes' `$(VAR)` references from `vars`; unknown ones stay as written, and
/// `$$(VAR)` is a literal `$(VAR)`, as the kubelet does.
pub fn expand(arg: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$(") {
            out.push_str("$(");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
        {
            let name = &t[..end];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::super::manifest::parse;
    use super::*;

    fn example(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    fn plan_of(text: &str) -> Result<LocalPlan, Invalid> {
        plan(&parse("t.yaml", text).unwrap())
    }

    #[test]
    fn the_tls_annotation_opts_the_file_out_of_certificates() {
        let base = example("daskcluster.yaml");
        assert!(plan_of(&base).unwrap().certificates);
        let off = base.replacen(
            "metadata:\n  name: foo",
            "metadata:\n  name: foo\n  annotations: {kubernetes.dask.org/tls: \"false\"}",
            1,
        );
        assert!(!plan_of(&off).unwrap().certificates);
        let bad = base.replacen(
            "metadata:\n  name: foo",
            "metadata:\n  name: foo\n  annotations: {kubernetes.dask.org/tls: \"maybe\"}",
            1,
        );
        let err = plan_of(&bad).unwrap_err().to_string();
        assert!(
            err.contains(
                r#"DaskCluster foo: metadata.annotations[kubernetes.dask.org/tls]: "maybe""#
            ),
            "{err}"
        );
    }

    #[test]
    fn dask_kubernetes_cluster_with_an_autoscaler() {
        let text = format!(
            "{}---\n{}",
            example("daskcluster.yaml"),
            example("daskautoscaler.yaml")
        );
        let p = plan_of(&text).unwrap();
        assert_eq!(p.cluster, "foo");
        let g = &p.groups["foo-default"];
        assert_eq!(g.replicas, 2);
        // limits.memory 64Gi, no --nthreads and no cpu limit.
        assert_eq!(
            g.template.memory_limit,
            MemoryLimit::Bytes(ByteSize(64u64 << 30))
        );
        assert_eq!(g.template.nthreads, Some(1));
        assert_eq!(p.autoscalers.len(), 1);
        assert_eq!(p.autoscalers[0].spec.group, "foo-default");
        assert_eq!(p.autoscalers[0].spec.settings.maximum, 10);
        assert!(p.runner.is_none());
    }

    #[test]
    fn a_job_brings_its_runner_and_cluster() {
        let p = plan_of(&example("daskjob.yaml")).unwrap();
        assert_eq!(p.cluster, "simple-job");
        let r = p.runner.unwrap();
        assert_eq!(r.argv[0], "python");
        assert_eq!(p.groups["simple-job-default"].replicas, 2);
    }

    #[test]
    fn problems_name_the_resource_and_field() {
        let cluster = example("daskcluster.yaml");
        let wrong_cluster = "apiVersion: kubernetes.dask.org/v1\nkind: DaskAutoscaler\nmetadata: {name: a}\nspec: {cluster: bar, minimum: 1, maximum: 2}\n";
        let e = plan_of(&format!("{cluster}---\n{wrong_cluster}")).unwrap_err();
        assert_eq!(
            e.problems,
            vec!["DaskAutoscaler a: spec.cluster is \"bar\", not this file's cluster \"foo\""]
        );
        let bad_group = "apiVersion: kubernetes.dask.org/v1\nkind: DaskAutoscaler\nmetadata: {name: a}\nspec: {cluster: foo, minimum: 3, maximum: 2, workerGroup: gpu}\n";
        let e = plan_of(&format!("{cluster}---\n{bad_group}")).unwrap_err();
        assert!(
            e.problems[0]
                .contains("spec.minimum (3) must be at least 0 and at most spec.maximum (2)")
        );
        let e = plan_of(&format!("{cluster}---\n{cluster}")).unwrap_err();
        assert!(e.problems[0].contains("exactly one DaskCluster or DaskJob, it holds 2"));
        let bad_threads = cluster.replace("--name, $(DASK_WORKER_NAME)", "--nthreads, lots");
        let e = plan_of(&bad_threads).unwrap_err();
        assert!(
            e.problems[0].contains("--nthreads \"lots\" is not a positive integer"),
            "{e}"
        );
        let value_from = cluster.replace(
            "image: ghcr.io/dask/dask:latest\n        args: [dask-worker",
            "image: ghcr.io/dask/dask:latest\n        env: [{name: T, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n        args: [dask-worker",
        );
        let e = plan_of(&value_from).unwrap_err();
        assert!(
            e.problems[0].contains("env[0] (T): valueFrom needs Kubernetes"),
            "{e}"
        );
    }

    #[test]
    fn containers_name_their_programs_and_workers_their_resources() {
        let p = plan_of(&example("custom-worker/job.yaml")).unwrap();
        assert_eq!(p.scheduler_program.as_deref(), Some("custom-worker"));
        assert_eq!(
            p.groups["wordcount-default"].program.as_deref(),
            Some("custom-worker")
        );
        assert_eq!(p.runner.unwrap().argv[0], "wordcount");
        // Dask's own commands stand for rask.
        let dask = example("daskcluster.yaml").replace(
            "args: [dask-worker",
            "command: [dask-worker]\n        args: [dask-worker",
        );
        assert_eq!(plan_of(&dask).unwrap().groups["foo-default"].program, None);
        let cluster = example("daskcluster.yaml");
        let gpu = cluster.replace(
            "--name, $(DASK_WORKER_NAME)",
            "--name, $(DASK_WORKER_NAME), --resources, \"GPU=1 MEM=8e9\"",
        );
        assert_eq!(
            plan_of(&gpu).unwrap().groups["foo-default"]
                .template
                .resources
                .as_deref(),
            Some("GPU=1,MEM=8000000000")
        );
        let bad = cluster.replace(
            "--name, $(DASK_WORKER_NAME)",
            "--name, $(DASK_WORKER_NAME), --resources, GPU",
        );
        let e = plan_of(&bad).unwrap_err();
        assert!(
            e.problems[0].contains("args: --resources: \"GPU\" is not NAME=AMOUNT"),
            "{e}"
        );
    }

    #[test]
    fn a_memory_limit_that_is_not_a_size_is_named() {
        let cluster = example("daskcluster.yaml");
        let bad = cluster.replace(
            "--name, $(DASK_WORKER_NAME)",
            "--name, $(DASK_WORKER_NAME), --memory-limit, lots",
        );
        let e = plan_of(&bad).unwrap_err();
        assert!(
            e.problems[0].contains("args: --memory-limit: \"lots\" is not a size"),
            "{e}"
        );
    }

    #[test]
    fn expansion() {
        let vars = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("--name=$(A)-$(B)", &vars), "--name=x-$(B)");
        assert_eq!(expand("$$(A) costs $5", &vars), "$(A) costs $5");
    }
}
