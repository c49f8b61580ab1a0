//! Job scripts as pure functions of the validated cluster: the directives each batch system
//! reads (`#SBATCH`, `#$`, `#PBS`, as dask-jobqueue writes them), the prologue, the environment,
//! and the `rask worker` (or `rask scheduler`) command lines. `job-script` prints them, and the
//! providers submit them as they are.

use std::fmt::Write;

use crate::providers::config::batch::{BatchCluster, JobResources, JobTemplate, System};
use crate::tls::{CA_FILE, Role};

use super::{JobRole, Tag};

/// One worker job to render.
#[derive(Clone, Copy, Debug)]
pub struct WorkerJob<'a> {
    pub cluster: &'a BatchCluster,
    pub group: &'a str,
    /// The job's name, which names its workers.
    pub name: &'a str,
    /// `tcp://HOST:PORT`, or `tls://HOST:PORT`.
    pub scheduler: &'a str,
    pub rask_bin: &'a str,
    pub log_dir: &'a str,
    /// The directory of the cluster's certificates, when it uses TLS.
    pub tls: Option<&'a str>,
}

/// The scheduler's own job.
#[derive(Clone, Copy, Debug)]
pub struct SchedulerJob<'a> {
    pub cluster: &'a BatchCluster,
    pub rask_bin: &'a str,
    pub log_dir: &'a str,
    /// Where it writes its address (on a filesystem `up` sees too).
    pub scheduler_file: &'a str,
    /// The directory of the cluster's certificates, when it uses TLS.
    pub tls: Option<&'a str>,
}

/// One shell word, taken literally.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One shell word in which `$VAR` and `${VAR}` still expand (paths like `$TMPDIR/dask`).
fn quote_expanding(s: &str) -> String {
    if !s.is_empty() && !s.contains('$') && quote(s) == s {
        return s.to_owned();
    }
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' | '`' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// The directive prefix of a system's job scripts.
pub fn prefix(system: System) -> &'static str {
    match system {
        System::Slurm => "#SBATCH",
        System::Sge => "#$",
        System::Pbs => "#PBS",
    }
}

/// The directives of one job, as dask-jobqueue writes them for the system, less those
/// `job_directives_skip` names, then the tag and the extra ones.
fn directives(
    system: System,
    name: &str,
    job: &JobResources,
    log_dir: &str,
    tag: &Tag,
) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    match system {
        System::Slurm => {
            lines.push(format!("-J {name}"));
            lines.push(format!("-e {log_dir}/{name}-%J.err"));
            lines.push(format!("-o {log_dir}/{name}-%J.out"));
            if let Some(q) = &job.queue {
                lines.push(format!("-p {q}"));
            }
            if let Some(a) = &job.account {
                lines.push(format!("-A {a}"));
            }
            lines.push("-n 1".into());
            lines.push("-N 1".into());
            lines.push(format!("--cpus-per-task={}", job.cpus));
            match (&job.job_mem, job.memory) {
                (Some(m), _) => lines.push(format!("--mem={m}")),
                (None, Some(m)) => lines.push(format!("--mem={}", m.slurm())),
                (None, None) => {}
            }
            lines.push(format!("-t {}", job.walltime.hms()));
        }
        System::Sge => {
            lines.push(format!("-N {name}"));
            if let Some(q) = &job.queue {
                lines.push(format!("-q {q}"));
            }
            if let Some(p) = &job.project {
                lines.push(format!("-P {p}"));
            }
            if let Some(r) = &job.resource_spec {
                lines.push(format!("-l {r}"));
            }
            lines.push(format!("-l h_rt={}", job.walltime.hms()));
            lines.push(format!("-e {log_dir}/"));
            lines.push(format!("-o {log_dir}/"));
            lines.push("-cwd".into());
            lines.push("-j y".into());
        }
        System::Pbs => {
            lines.push(format!("-N {name}"));
            if let Some(q) = &job.queue {
                lines.push(format!("-q {q}"));
            }
            if let Some(a) = &job.account {
                lines.push(format!("-A {a}"));
            }
            let spec = job.resource_spec.clone().unwrap_or_else(|| {
                let mut s = format!("select=1:ncpus={}", job.cpus);
                if let Some(m) = job.memory {
                    s.push_str(&format!(":mem={}", m.pbs()));
                }
                s
            });
            lines.push(format!("-l {spec}"));
            lines.push(format!("-l walltime={}", job.walltime.hms()));
            lines.push(format!("-e {log_dir}/"));
            lines.push(format!("-o {log_dir}/"));
        }
    }
    lines.retain(|l| {
        let full = format!("{} {l}", prefix(system));
        !job.directives_skip
            .iter()
            .any(|skip| full.contains(skip.as_str()))
    });
    match system {
        System::Slurm => lines.push(format!("--comment={}", tag.comment())),
        System::Sge => lines.push(format!("-ac {}", sge_context(tag))),
        System::Pbs => {}
    }
    lines.extend(job.extra_directives.iter().cloned());
    lines
}

/// SGE's job context for a tag: `rask_cluster=NAME,rask_role=worker,rask_group=GROUP`.
pub fn sge_context(tag: &Tag) -> String {
    let mut s = format!(
        "rask_cluster={},rask_role={}",
        tag.cluster,
        tag.role.as_str()
    );
    if let Some(g) = &tag.group {
        s.push_str(&format!(",rask_group={g}"));
    }
    s
}

fn header(
    out: &mut String,
    system: System,
    name: &str,
    job: &JobResources,
    log_dir: &str,
    tag: &Tag,
) {
    let _ = writeln!(out, "{}", job.shebang);
    let _ = writeln!(out);
    for d in directives(system, name, job, log_dir, tag) {
        let _ = writeln!(out, "{} {d}", prefix(system));
    }
    let _ = writeln!(out);
    for line in &job.prologue {
        let _ = writeln!(out, "{line}");
    }
}

fn exports(out: &mut String, vars: &[(&str, &str)], env: &[(String, String)]) {
    for (k, v) in vars
        .iter()
        .copied()
        .chain(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        let _ = writeln!(out, "export {k}={}", quote(v));
    }
}

/// Sets `RASK_HOST` to the IPv4 address of `interface`, or ends the job saying why.
fn interface_address(out: &mut String, interface: &str) {
    let _ = writeln!(
        out,
        "RASK_HOST=$(ip -o -4 addr show dev {} | awk '{{print $4}}' | cut -d/ -f1 | head -n 1)",
        quote(interface)
    );
    let _ = writeln!(
        out,
        "[ -n \"$RASK_HOST\" ] || {{ echo \"no IPv4 address on interface {interface}\" >&2; exit 1; }}"
    );
}

/// A worker job's script.
pub fn worker(j: &WorkerJob<'_>) -> String {
    let c = j.cluster;
    let g: &JobTemplate = &c.groups[j.group];
    let tag = Tag {
        cluster: c.name.clone(),
        role: JobRole::Worker,
        group: Some(j.group.to_owned()),
    };
    let mut out = String::new();
    header(&mut out, c.system, j.name, &g.job, j.log_dir, &tag);
    exports(
        &mut out,
        &[
            ("DASK_CLUSTER_NAME", &c.name),
            ("DASK_SCHEDULER_ADDRESS", j.scheduler),
        ],
        &g.worker.env,
    );
    if let Some(i) = &g.interface {
        interface_address(&mut out, i);
    }
    let mut args: Vec<String> = g.worker.args().iter().map(|a| quote(a)).collect();
    if let Some(d) = &g.local_directory {
        args.extend(["--local-directory".into(), quote_expanding(d)]);
    }
    if g.interface.is_some() {
        args.extend([
            "--listen-host".into(),
            "\"$RASK_HOST\"".into(),
            "--contact-host".into(),
            "\"$RASK_HOST\"".into(),
        ]);
    }
    if let Some(tls) = j.tls {
        args.extend(script_args(tls, Role::Worker));
    }
    args.extend(g.extra_args.iter().map(|a| quote(a)));
    let command = |name: &str| {
        format!(
            "{} worker \"$DASK_SCHEDULER_ADDRESS\" --name {} {}",
            quote_expanding(j.rask_bin),
            quote(name),
            args.join(" ")
        )
    };
    if g.processes <= 1 && g.job.epilogue.is_empty() {
        // exec: the batch system's signals reach the worker itself.
        let _ = writeln!(out, "exec {}", command(j.name));
    } else {
        // The workers leave together: a signal to the job reaches each of them.
        let _ = writeln!(out, "trap 'kill $(jobs -p) 2>/dev/null' TERM INT");
        let names = super::BatchBackend::<super::Queue>::worker_names(j.name, g.processes);
        for name in names {
            let _ = writeln!(out, "{} &", command(&name));
        }
        let _ = writeln!(out, "wait");
        for line in &g.job.epilogue {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// The scheduler's job script (`scheduler_options.location: job`).
pub fn scheduler(j: &SchedulerJob<'_>) -> String {
    let c = j.cluster;
    let s = &c.scheduler;
    let name = format!("{}-scheduler", c.name);
    let tag = Tag {
        cluster: c.name.clone(),
        role: JobRole::Scheduler,
        group: None,
    };
    let mut out = String::new();
    header(&mut out, c.system, &name, &s.job, j.log_dir, &tag);
    exports(
        &mut out,
        &[
            ("DASK_CLUSTER_NAME", &c.name),
            (
                "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES",
                "['distributed.http.scheduler.api','distributed.http.health','distributed.http.scheduler.prometheus']",
            ),
        ],
        &s.env,
    );
    let host = match (&s.host, &s.interface) {
        (Some(h), _) => quote(h),
        (None, Some(i)) => {
            interface_address(&mut out, i);
            "\"$RASK_HOST\"".into()
        }
        (None, None) => "0.0.0.0".into(),
    };
    let dashboard = s
        .dashboard_address
        .clone()
        .unwrap_or_else(|| ":8787".into());
    let tls = j
        .tls
        .map(|t| format!(" {}", script_args(t, Role::Scheduler).join(" ")))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "exec {} scheduler --host {host} --port {} --dashboard-address {} --scheduler-file {}{tls}",
        quote_expanding(j.rask_bin),
        s.port.unwrap_or(8786),
        quote(&dashboard),
        quote_expanding(j.scheduler_file),
    );
    out
}

/// The flags that give a `rask` process in a job script `role`'s files, shell-quoted.
pub fn script_args(tls: &str, role: Role) -> Vec<String> {
    let q = |f: String| quote(&format!("{tls}/{f}"));
    vec![
        "--tls-ca-file".into(),
        q(CA_FILE.to_owned()),
        "--tls-cert".into(),
        q(role.cert_file()),
        "--tls-key".into(),
        q(role.key_file()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::config::batch::parse;

    fn render(text: &str, group: &str) -> String {
        let c = parse(text).unwrap();
        worker(&WorkerJob {
            cluster: &c,
            group,
            name: "hpc-default-0",
            scheduler: "tcp://10.0.0.1:8786",
            rask_bin: "/opt/rask/bin/rask",
            log_dir: "/home/u/logs",
            tls: None,
        })
    }

    const SLURM: &str = "provider: slurm\nname: hpc\nslurm:\n  walltime: '00:10:00'\n";

    fn has(script: &str, line: &str) -> bool {
        script.lines().any(|l| l == line)
    }

    #[test]
    fn quoting_keeps_one_word_and_expands_only_where_meant() {
        assert_eq!(quote("plain-1.0"), "plain-1.0");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("a b;reboot"), "'a b;reboot'");
        assert_eq!(
            quote_expanding("$TMPDIR/x \"y\""),
            "\"$TMPDIR/x \\\"y\\\"\""
        );
    }

    /// Each key's effect on the script, one line at a time.
    #[test]
    fn each_slurm_key_shows_in_the_script() {
        let cases: [(&str, &str); 13] = [
            ("  queue: debug\n", "#SBATCH -p debug"),
            ("  account: proj1\n", "#SBATCH -A proj1"),
            ("  cores: 4\n", "#SBATCH --cpus-per-task=4"),
            ("  cores: 4\n  job_cpu: 8\n", "#SBATCH --cpus-per-task=8"),
            ("  memory: 16GB\n", "#SBATCH --mem=15G"),
            ("  memory: 16GB\n  job_mem: 20G\n", "#SBATCH --mem=20G"),
            (
                "  job_extra_directives: ['--gres=gpu:1']\n",
                "#SBATCH --gres=gpu:1",
            ),
            (
                "  job_script_prologue: ['module load foo']\n",
                "module load foo",
            ),
            ("  shebang: '#!/bin/bash -l'\n", "#!/bin/bash -l"),
            (
                "  memory: 4GiB\n",
                "exec /opt/rask/bin/rask worker \"$DASK_SCHEDULER_ADDRESS\" --name hpc-default-0 --nthreads 1 --memory-limit 4294967296",
            ),
            (
                "  cores: 2\n  local_directory: $TMPDIR\n",
                "exec /opt/rask/bin/rask worker \"$DASK_SCHEDULER_ADDRESS\" --name hpc-default-0 --nthreads 2 --memory-limit auto --local-directory \"$TMPDIR\"",
            ),
            (
                "  interface: ib0\n",
                "RASK_HOST=$(ip -o -4 addr show dev ib0 | awk '{print $4}' | cut -d/ -f1 | head -n 1)",
            ),
            (
                "  worker_extra_args: [--resources, 'GPU=1']\n",
                "exec /opt/rask/bin/rask worker \"$DASK_SCHEDULER_ADDRESS\" --name hpc-default-0 --nthreads 1 --memory-limit auto --resources GPU=1",
            ),
        ];
        for (keys, line) in cases {
            let s = render(&format!("{SLURM}{keys}"), "default");
            assert!(has(&s, line), "{keys}: no line {line:?} in\n{s}");
        }
        let s = render(SLURM, "default");
        assert!(has(&s, "#SBATCH -t 00:10:00"), "{s}");
        assert!(
            has(
                &s,
                "#SBATCH --comment=rask:cluster=hpc,role=worker,group=default"
            ),
            "{s}"
        );
        assert!(
            !s.contains("#SBATCH --mem"),
            "no memory asked for unless given:\n{s}"
        );
        let skipped = render(
            &format!("{SLURM}  job_directives_skip: ['-n 1', '-N 1']\n"),
            "default",
        );
        assert!(
            !has(&skipped, "#SBATCH -n 1") && !has(&skipped, "#SBATCH -N 1"),
            "{skipped}"
        );
        assert!(has(
            &skipped,
            "#SBATCH --comment=rask:cluster=hpc,role=worker,group=default"
        ));
    }

    #[test]
    fn several_processes_run_together_and_leave_together() {
        let s = render(
            &format!(
                "{SLURM}  cores: 4\n  memory: 8GiB\n  processes: 2\n  job_script_epilogue: ['echo done']\n"
            ),
            "default",
        );
        assert!(
            has(&s, "trap 'kill $(jobs -p) 2>/dev/null' TERM INT"),
            "{s}"
        );
        for i in 0..2 {
            assert!(
                has(
                    &s,
                    &format!(
                        "/opt/rask/bin/rask worker \"$DASK_SCHEDULER_ADDRESS\" --name hpc-default-0-{i} --nthreads 2 --memory-limit 4294967296 &"
                    )
                ),
                "{s}"
            );
        }
        let wait = s.lines().position(|l| l == "wait").unwrap();
        assert_eq!(s.lines().nth(wait + 1), Some("echo done"));
    }

    #[test]
    fn environment_values_stay_literal() {
        let s = render(
            &format!("{SLURM}worker:\n  env: {{GREETING: \"it's $HOME\"}}\n"),
            "default",
        );
        assert!(has(&s, "export GREETING='it'\\''s $HOME'"), "{s}");
        assert!(
            has(&s, "export DASK_SCHEDULER_ADDRESS=tcp://10.0.0.1:8786"),
            "{s}"
        );
    }

    #[test]
    fn sge_and_pbs_take_their_own_keys() {
        let sge = render(
            "provider: sge\nname: hpc\nsge:\n  queue: all.q\n  project: p1\n  resource_spec: h_vmem=4G\n  walltime: '01:00:00'\n",
            "default",
        );
        for line in [
            "#$ -N hpc-default-0",
            "#$ -q all.q",
            "#$ -P p1",
            "#$ -l h_vmem=4G",
            "#$ -l h_rt=01:00:00",
            "#$ -e /home/u/logs/",
            "#$ -o /home/u/logs/",
            "#$ -cwd",
            "#$ -j y",
            "#$ -ac rask_cluster=hpc,rask_role=worker,rask_group=default",
        ] {
            assert!(has(&sge, line), "no {line:?} in\n{sge}");
        }
        let pbs = render(
            "provider: pbs\nname: hpc\npbs:\n  queue: workq\n  account: a1\n  cores: 8\n  memory: 16GB\n",
            "default",
        );
        for line in [
            "#PBS -N hpc-default-0",
            "#PBS -q workq",
            "#PBS -A a1",
            "#PBS -l select=1:ncpus=8:mem=15GB",
            "#PBS -l walltime=00:30:00",
        ] {
            assert!(has(&pbs, line), "no {line:?} in\n{pbs}");
        }
        let spec = render(
            "provider: pbs\nname: hpc\npbs:\n  resource_spec: select=2:ncpus=4\n",
            "default",
        );
        assert!(has(&spec, "#PBS -l select=2:ncpus=4"), "{spec}");
    }

    #[test]
    fn the_scheduler_job_writes_its_address_for_up_to_read() {
        let c = parse(&format!("{SLURM}scheduler_options:\n  location: job\n  cores: 2\n  memory: 4GiB\n  walltime: '08:00:00'\n  dashboard_address: ':8790'\n")).unwrap();
        let s = scheduler(&SchedulerJob {
            cluster: &c,
            rask_bin: "rask",
            log_dir: "/home/u/logs",
            scheduler_file: "/home/u/.config/rask/clusters/hpc.scheduler.json",
            tls: Some("/home/u/.config/rask/clusters/hpc-tls"),
        });
        for line in [
            "#SBATCH -J hpc-scheduler",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --mem=4G",
            "#SBATCH -t 08:00:00",
            "#SBATCH --comment=rask:cluster=hpc,role=scheduler",
            "exec rask scheduler --host 0.0.0.0 --port 8786 --dashboard-address :8790 --scheduler-file /home/u/.config/rask/clusters/hpc.scheduler.json \
             --tls-ca-file /home/u/.config/rask/clusters/hpc-tls/ca.pem \
             --tls-cert /home/u/.config/rask/clusters/hpc-tls/scheduler.pem \
             --tls-key /home/u/.config/rask/clusters/hpc-tls/scheduler-key.pem",
        ] {
            assert!(has(&s, line), "no {line:?} in\n{s}");
        }
    }

    #[test]
    fn workers_of_a_tls_cluster_get_the_worker_s_files() {
        let c = parse(SLURM).unwrap();
        let text = worker(&WorkerJob {
            cluster: &c,
            group: "default",
            name: "hpc-default-0",
            scheduler: "tls://10.0.0.1:8786",
            rask_bin: "rask",
            log_dir: "/home/u/logs",
            tls: Some("/home/u/my dir/hpc-tls"),
        });
        assert!(
            has(&text, "export DASK_SCHEDULER_ADDRESS=tls://10.0.0.1:8786"),
            "{text}"
        );
        let exec = text.lines().find(|l| l.starts_with("exec ")).unwrap();
        assert!(
            exec.contains(
                "--tls-ca-file '/home/u/my dir/hpc-tls/ca.pem' --tls-cert \
                 '/home/u/my dir/hpc-tls/worker.pem' --tls-key '/home/u/my dir/hpc-tls/worker-key.pem'"
            ),
            "{exec}"
        );
        assert!(!render(SLURM, "default").contains("--tls"));
    }

    #[test]
    fn script_flags_name_the_roles_files() {
        assert_eq!(
            script_args("/home/u/.rask/hpc-tls", Role::Worker).join(" "),
            "--tls-ca-file /home/u/.rask/hpc-tls/ca.pem --tls-cert /home/u/.rask/hpc-tls/worker.pem \
             --tls-key /home/u/.rask/hpc-tls/worker-key.pem"
        );
    }
}
