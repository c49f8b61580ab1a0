//! `rask-operator job-script` for the SLURM, SGE and PBS examples, compared with golden files
//! (`operator/tests/golden/`; `RASK_UPDATE_GOLDEN=1` rewrites them after a deliberate change),
//! and its errors.

use std::path::Path;
use std::process::Command;

fn job_script(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rask-operator"))
        .arg("job-script")
        .args(args)
        .env("RASK_STATE_DIR", dir.path())
        .output()
        .unwrap();
    // The state directory (the scheduler file, the certificates) differs per run.
    let state = dir.path().display().to_string();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).replace(&state, "STATE"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("RASK_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (RASK_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        text,
        want,
        "{} differs (RASK_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn job_scripts_for_slurm_sge_and_pbs_match_their_golden_files() {
    for (file, system) in [
        ("hpc-slurm.yaml", "slurm"),
        ("hpc-sge.yaml", "sge"),
        ("hpc-pbs.yaml", "pbs"),
    ] {
        let (ok, out, err) = job_script(&[
            &example(file),
            "--name",
            "cluster-default-00000000",
            "--scheduler",
            "tls://login1:8786",
        ]);
        assert!(ok, "{file}: {err}");
        golden(&format!("{system}-worker.sh"), &out);
    }
    let (ok, out, err) = job_script(&[
        &example("hpc-slurm.yaml"),
        "--group",
        "bigmem",
        "--name",
        "hpc-bigmem-00000000",
        "--scheduler",
        "tls://login1:8786",
    ]);
    assert!(ok, "{err}");
    golden("slurm-bigmem.sh", &out);
    let (ok, out, err) = job_script(&[&example("hpc-slurm.yaml"), "--scheduler-job"]);
    assert!(ok, "{err}");
    golden("slurm-scheduler.sh", &out);
}

#[test]
fn a_job_is_named_as_up_names_it_unless_told() {
    let (ok, out, _) = job_script(&[&example("hpc-slurm.yaml"), "--scheduler", "tcp://x:1"]);
    assert!(ok);
    let name = out
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH -J "))
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with("hpc-default-") && name.len() == "hpc-default-".len() + 8,
        "{name}"
    );
}

#[test]
fn job_script_errors_name_the_problem() {
    let (ok, _, err) = job_script(&[&example("hpc-slurm.yaml"), "--group", "gpu"]);
    assert!(!ok);
    assert!(
        err.contains("has no worker group gpu (it has: bigmem, default)"),
        "{err}"
    );
    let (ok, _, err) = job_script(&[&example("cloud-aws.yaml")]);
    assert!(!ok);
    assert!(
        err.contains("describes a aws cluster, not a batch one"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "provider: slurm\nname: x\nslurm: {walltime: soon}\n").unwrap();
    let (ok, _, err) = job_script(&[bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bad.yaml: slurm.walltime: \"soon\" is not a walltime"),
        "{err}"
    );
}

#[test]
fn up_refuses_pbs_and_says_to_use_job_script() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rask-operator"))
        .args(["up", &example("hpc-pbs.yaml")])
        .env("RASK_STATE_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provider pbs makes job scripts only (`rask-operator job-script FILE`)"),
        "{err}"
    );
}
