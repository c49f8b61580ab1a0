//! The `rask-operator` binary's cloud commands, where they fail before reaching any cloud: the
//! message names what is wrong and the exit code says it failed.

use std::process::Command;

fn run(args: &[&str], state: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rask-operator"))
        .args(args)
        .env("RASK_STATE_DIR", state)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cloud_commands_name_the_bad_key_the_missing_cluster_and_the_wrong_kind_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "provider: aws\nname: x\nworker: {replicas: 1, nthreads: 0}\nec2: {region: eu-west-1, ami: ami-1}\n",
    )
    .unwrap();
    let (ok, err) = run(&["up", bad.to_str().unwrap()], &state);
    assert!(!ok);
    assert!(
        err.contains("bad.yaml: worker.nthreads: must be at least 1"),
        "{err}"
    );

    let manifest = dir.path().join("cluster.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: kubernetes.dask.org/v1\nkind: DaskCluster\n",
    )
    .unwrap();
    // Not a cloud config: read as a manifest for the local backend, whose error names the problem.
    let (ok, err) = run(&["up", manifest.to_str().unwrap()], &state);
    assert!(!ok);
    assert!(
        err.contains("cluster.yaml, document 1: DaskCluster has no metadata.name"),
        "{err}"
    );

    for cmd in [
        vec!["scale", "ghost", "3"],
        vec!["status", "ghost"],
        vec!["logs", "ghost"],
        vec!["down", "ghost"],
    ] {
        let (ok, err) = run(&cmd, &state);
        assert!(!ok, "{cmd:?}");
        assert!(
            err.contains("no cluster named ghost: no saved config at"),
            "{cmd:?}: {err}"
        );
    }
    let (ok, err) = run(&["sweep"], &state);
    assert!(!ok);
    assert!(err.contains("pass --config FILE"), "{err}");
}

#[cfg(feature = "aws")]
#[test]
fn missing_aws_credentials_are_summarised_and_the_sdk_dump_is_kept_for_debug_logs() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cloud-aws.yaml");
    let up = |rust_log: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_rask-operator"))
            .args(["up", example.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("RASK_STATE_DIR", dir.path().join("state"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", rust_log)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = up("warn");
    assert!(
        err.contains("error: aws: no credentials found (tried: AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(
        err.contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"),
        "{err}"
    );
    for dump in ["DispatchFailure", "headers", "SdkBody", "{"] {
        assert!(
            !err.contains(dump),
            "the message holds a debug dump ({dump}):\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 1, "{err}");
    let debug = up("rask_operator=debug");
    assert!(
        debug.contains("DispatchFailure"),
        "RUST_LOG=debug keeps the SDK's error:\n{debug}"
    );
}

#[cfg(feature = "aws")]
#[test]
fn vm_tls_fetch_names_a_bad_role_or_owner_and_an_unreachable_parameter_store() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("tls");
    let fetch = |extra: &[&str]| {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = vec![
            "vm-tls",
            "fetch",
            "--aws-region",
            "eu-west-1",
            "--aws-ssm-prefix",
            "/rask/demo/tls",
            "--dir",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_rask-operator"))
            .args(&args)
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fetch(&["--role", "admin"]);
    assert!(
        err.contains(r#"--role "admin": not one of scheduler, worker, operator, client"#),
        "{err}"
    );
    let err = fetch(&["--role", "worker", "--owner", "rask"]);
    assert!(err.contains(r#"--owner "rask": not UID:GID"#), "{err}");
    let err = fetch(&["--role", "worker"]);
    assert!(err.contains("unreachable at http://127.0.0.1:"), "{err}");
    assert!(
        err.contains(
            "GetParameters /rask/demo/tls/ca.pem, /rask/demo/tls/worker.pem, \
             /rask/demo/tls/worker-key.pem (SSM Parameter Store, eu-west-1): the API is \
             unreachable at"
        ),
        "{err}"
    );
    assert!(
        !out_dir.exists(),
        "nothing is written when nothing was read"
    );
}
