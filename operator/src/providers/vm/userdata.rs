//! The cloud-init document each VM boots with, as a pure function of the validated cluster. It
//! starts the scheduler or one worker from the rask image (and, on the scheduler VM of an
//! autoscaled cluster, the autoscaler from the operator image). It holds no secret: cloud
//! credentials come from the VM's instance profile or managed identity, the config refuses
//! secret-looking environment variables (see [`crate::providers::config`]), and with TLS it names
//! only where the VM's certificate and key are kept: the VM fetches them at boot
//! (`rask-operator vm-tls fetch`, see [`super::secrets`]): from SSM Parameter Store with the
//! instance profile on AWS, from the cluster's Key Vault with its managed identity on Azure.

use std::fmt::Write;

use super::secrets::{self, VM_DIR};
use crate::providers::config::vm::CloudCluster;
use crate::tls::Role;

/// Where the cluster's file lives on the scheduler VM, for `rask-operator autoscale`.
pub const CONFIG_PATH: &str = "/etc/rask/cluster.yaml";

/// What one VM runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Scheduler {
        /// The config file as the user wrote it (checked to hold no secret-looking env), for the
        /// autoscaler on the scheduler VM. `None` without autoscaling.
        config_text: Option<&'a str>,
    },
    Worker {
        group: &'a str,
        /// The VM's name, which is also the worker's name at the scheduler.
        name: &'a str,
        /// `tcp://PRIVATE_IP:8786`, `tls://` with TLS.
        scheduler: &'a str,
    },
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A YAML block scalar's lines, indented.
fn block(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}{line}");
    }
}

fn env_file<'a>(
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
    extra: &[(&str, &str)],
) -> String {
    let mut out = String::new();
    for (k, v) in extra
        .iter()
        .copied()
        .chain(env.into_iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        // docker's --env-file takes the value literally up to the end of the line.
        let _ = writeln!(out, "{k}={}", v.replace('\n', " "));
    }
    out
}

/// With TLS: the lines that fetch `roles`' files into [`VM_DIR`] (as root, for the image's
/// user), and the `docker run` options and `rask` flags that use them; all empty without.
fn tls_parts(cluster: &CloudCluster, roles: &[Role]) -> (String, String, String) {
    let Some(store) = secrets::store_of(cluster) else {
        return Default::default();
    };
    let fetch: Vec<String> = secrets::fetch_args(&store, roles)
        .iter()
        .map(|a| quote(a))
        .collect();
    let fetch = format!(
        "docker run --rm --network host --user 0:0 -v {VM_DIR}:{VM_DIR} {} {}\n",
        quote(&cluster.software.operator_image),
        fetch.join(" ")
    );
    let mount = format!(" -v {VM_DIR}:{VM_DIR}:ro");
    let flags: Vec<String> = secrets::rask_flags(VM_DIR, roles[0])
        .iter()
        .map(|a| quote(a))
        .collect();
    (fetch, mount, format!(" {}", flags.join(" ")))
}

/// Renders the `#cloud-config` document for one VM of `cluster`.
pub fn render(cluster: &CloudCluster, body: &Body<'_>) -> String {
    let sw = &cluster.software;
    let mut out = String::from("#cloud-config\n");
    let (role, env, script, config) = match body {
        Body::Scheduler { config_text } => {
            let env = env_file(
                &cluster.scheduler.env,
                &[
                    ("DASK_CLUSTER_NAME", &cluster.name),
                    (
                        "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES",
                        "['distributed.http.scheduler.api','distributed.http.health','distributed.http.scheduler.prometheus']",
                    ),
                ],
            );
            let roles: &[Role] = if config_text.is_some() {
                &[Role::Scheduler, Role::Operator]
            } else {
                &[Role::Scheduler]
            };
            let (fetch, mount, flags) = tls_parts(cluster, roles);
            let mut script = fetch;
            let _ = writeln!(
                script,
                "docker run -d --name rask-scheduler --restart always --network host \
                 --env-file /etc/rask/scheduler.env{mount} {} scheduler --host 0.0.0.0 --port 8786 \
                 --dashboard-address 0.0.0.0:8787{flags}",
                quote(&sw.image)
            );
            if config_text.is_some() {
                // As the image's user, who owns the fetched files, with the operator's identity.
                let (user, url, tls) = if cluster.tls {
                    (
                        format!(
                            " --user {}:{}",
                            secrets::IMAGE_OWNER.0,
                            secrets::IMAGE_OWNER.1
                        ),
                        "https",
                        format!(" --tls-dir {VM_DIR}"),
                    )
                } else {
                    (String::new(), "http", String::new())
                };
                let _ = writeln!(
                    script,
                    "docker run -d --name rask-autoscaler --restart always --network host{user} \
                     -v /etc/rask:/etc/rask:ro {} autoscale {CONFIG_PATH} \
                     --scheduler-url {url}://127.0.0.1:8787{tls}",
                    quote(&sw.operator_image)
                );
            }
            ("scheduler", env, script, *config_text)
        }
        Body::Worker {
            group,
            name,
            scheduler,
        } => {
            let g = &cluster.groups[*group];
            let env = env_file(
                g.worker.env.iter().map(|(k, v)| (k, v)),
                &[
                    ("DASK_CLUSTER_NAME", &cluster.name),
                    ("DASK_WORKER_NAME", name),
                    ("DASK_SCHEDULER_ADDRESS", scheduler),
                ],
            );
            let flags: Vec<String> = g.worker.args().iter().map(|a| quote(a)).collect();
            // The worker tells peers its private IP: scheduler-to-worker and worker-to-worker
            // traffic stays inside the network.
            let (fetch, mount, tls) = tls_parts(cluster, &[Role::Worker]);
            let script = format!(
                "PRIVATE_IP=$(hostname -I | cut -d' ' -f1)\n{fetch}\
                 docker run -d --name rask-worker --restart always --network host \
                 --env-file /etc/rask/worker.env{mount} {} worker {} --name {} {} \
                 --contact-host \"$PRIVATE_IP\" --local-directory /tmp{tls}\n",
                quote(&sw.image),
                quote(scheduler),
                quote(name),
                flags.join(" "),
            );
            ("worker", env, script, None)
        }
    };
    let _ = writeln!(
        out,
        "# rask {}: cluster {}, {role}",
        env!("CARGO_PKG_VERSION"),
        cluster.name
    );
    if sw.install_docker {
        out.push_str("package_update: true\npackages:\n  - docker.io\n");
    }
    out.push_str("write_files:\n");
    let _ = writeln!(
        out,
        "  - path: /etc/rask/{role}.env\n    permissions: '0644'\n    content: |"
    );
    block(&mut out, "      ", &env);
    if let Some(text) = config {
        let _ = writeln!(
            out,
            "  - path: {CONFIG_PATH}\n    permissions: '0644'\n    content: |"
        );
        block(&mut out, "      ", text);
    }
    let _ = writeln!(
        out,
        "  - path: /etc/rask/start.sh\n    permissions: '0755'\n    content: |\n      #!/bin/sh\n      set -eu"
    );
    block(&mut out, "      ", &script);
    out.push_str("runcmd:\n");
    if sw.install_docker {
        out.push_str("  - [systemctl, enable, --now, docker]\n");
    }
    out.push_str("  - [/etc/rask/start.sh]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::config::vm as config;

    const CONFIG: &str = "
provider: aws
name: demo
software:
  image: example.org/rask:1
  operator_image: example.org/rask-operator:1
worker:
  replicas: 2
  nthreads: 4
  memory_limit: 6GiB
  env: {EXTRA_PIP: pandas}
autoscaling: {minimum: 1, maximum: 4}
ec2:
  region: eu-west-1
  ami: ami-0123456789abcdef0
  iam_instance_profile: rask-scheduler
";

    fn parse_yaml(doc: &str) -> serde_json::Value {
        serde_yaml::from_str(doc).unwrap()
    }

    #[test]
    fn a_worker_joins_the_scheduler_at_its_private_address_under_its_vm_name() {
        let c = config::parse(CONFIG).unwrap();
        let doc = render(
            &c,
            &Body::Worker {
                group: "default",
                name: "demo-default-1a2b",
                scheduler: "tcp://10.0.1.5:8786",
            },
        );
        assert!(doc.starts_with("#cloud-config\n"));
        let v = parse_yaml(&doc);
        let files = v["write_files"].as_array().unwrap();
        let env = files[0]["content"].as_str().unwrap();
        assert!(
            env.contains("DASK_WORKER_NAME=demo-default-1a2b\n"),
            "{env}"
        );
        assert!(env.contains("DASK_SCHEDULER_ADDRESS=tcp://10.0.1.5:8786\n"));
        assert!(env.contains("EXTRA_PIP=pandas\n"));
        let script = files[1]["content"].as_str().unwrap();
        assert!(script.contains(
            "'example.org/rask:1' worker 'tcp://10.0.1.5:8786' --name 'demo-default-1a2b' '--nthreads' '4' '--memory-limit' '6442450944' --contact-host \"$PRIVATE_IP\""
        ), "{script}");
        assert_eq!(v["packages"][0], "docker.io");
        assert_eq!(v["runcmd"][1][0], "/etc/rask/start.sh");
    }

    #[test]
    fn the_scheduler_serves_dasks_api_and_runs_the_autoscaler_from_the_config() {
        let c = config::parse(CONFIG).unwrap();
        let doc = render(
            &c,
            &Body::Scheduler {
                config_text: Some(CONFIG),
            },
        );
        let v = parse_yaml(&doc);
        let files = v["write_files"].as_array().unwrap();
        assert!(
            files[0]["content"]
                .as_str()
                .unwrap()
                .contains("distributed.http.scheduler.api")
        );
        assert_eq!(files[1]["path"], CONFIG_PATH);
        // The file on the VM is the user's config, which reads back the same.
        let again = config::parse(files[1]["content"].as_str().unwrap()).unwrap();
        assert_eq!(again, c);
        let script = files[2]["content"].as_str().unwrap();
        assert!(
            script
                .contains("scheduler --host 0.0.0.0 --port 8786 --dashboard-address 0.0.0.0:8787")
        );
        assert!(script.contains("'example.org/rask-operator:1' autoscale /etc/rask/cluster.yaml"));
    }

    #[test]
    fn with_tls_each_vm_fetches_its_own_key_by_name_and_uses_it() {
        let c = config::parse(CONFIG).unwrap();
        assert!(c.tls, "the default");
        let worker = render(
            &c,
            &Body::Worker {
                group: "default",
                name: "demo-default-1a2b",
                scheduler: "tls://10.0.1.5:8786",
            },
        );
        let v = parse_yaml(&worker);
        let script = v["write_files"][1]["content"].as_str().unwrap();
        assert!(
            script.contains(
                "docker run --rm --network host --user 0:0 -v /etc/rask/tls:/etc/rask/tls \
             'example.org/rask-operator:1' 'vm-tls' 'fetch' '--aws-region' 'eu-west-1' \
             '--aws-ssm-prefix' '/rask/demo/tls' '--role' 'worker' '--dir' '/etc/rask/tls' \
             '--owner' '1000:1000' '--wait-seconds' '600'\n"
            ),
            "{script}"
        );
        assert!(script.contains(
            "--env-file /etc/rask/worker.env -v /etc/rask/tls:/etc/rask/tls:ro 'example.org/rask:1' \
             worker 'tls://10.0.1.5:8786'"
        ), "{script}");
        assert!(
            script.contains(
                "'--tls-ca-file' '/etc/rask/tls/ca.pem' '--tls-cert' '/etc/rask/tls/worker.pem' \
             '--tls-key' '/etc/rask/tls/worker-key.pem'"
            ),
            "{script}"
        );
        // The fetch runs first: `set -eu` stops the script if it fails.
        assert!(script.find("'vm-tls'").unwrap() < script.find("rask-worker").unwrap());

        let scheduler = render(
            &c,
            &Body::Scheduler {
                config_text: Some(CONFIG),
            },
        );
        let v = parse_yaml(&scheduler);
        let script = v["write_files"][2]["content"].as_str().unwrap();
        assert!(
            script.contains("'--role' 'scheduler' '--role' 'operator'"),
            "{script}"
        );
        assert!(script.contains(
            "'--tls-cert' '/etc/rask/tls/scheduler.pem' '--tls-key' '/etc/rask/tls/scheduler-key.pem'"
        ), "{script}");
        assert!(script.contains(
            "--network host --user 1000:1000 -v /etc/rask:/etc/rask:ro 'example.org/rask-operator:1' \
             autoscale /etc/rask/cluster.yaml --scheduler-url https://127.0.0.1:8787 --tls-dir /etc/rask/tls"
        ), "{script}");
        // Without autoscaling the operator's key stays in the store.
        let alone = render(&c, &Body::Scheduler { config_text: None });
        assert!(!alone.contains("'operator'"), "{alone}");
    }

    #[test]
    fn on_azure_each_vm_reads_its_key_from_the_cluster_s_key_vault_as_its_identity() {
        let c = config::parse(
            "provider: azure\nname: demo\nazure:\n  location: westeurope\n  resource_group: rg\n  \
             subscription_id: 00000000-0000-0000-0000-000000000000\n  vnet: net\n  subnet: sub\n  \
             ssh_public_key: ssh-ed25519 AAAA test\n",
        )
        .unwrap();
        let vault = secrets::key_vault_name("00000000-0000-0000-0000-000000000000", "rg", "demo");
        let doc = render(
            &c,
            &Body::Worker {
                group: "default",
                name: "demo-default-1a2b",
                scheduler: "tls://10.0.1.5:8786",
            },
        );
        let v = parse_yaml(&doc);
        let script = v["write_files"][1]["content"].as_str().unwrap();
        assert!(
            script.contains(&format!(
                "'vm-tls' 'fetch' '--azure-key-vault-url' 'https://{vault}.vault.azure.net' \
                 '--azure-identity' '/subscriptions/00000000-0000-0000-0000-000000000000/\
                 resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/\
                 rask-demo-tls' '--role' 'worker'"
            )),
            "{script}"
        );
        let upper = doc.to_ascii_uppercase();
        for word in ["SECRET", "TOKEN", "PRIVATE KEY", "BEGIN "] {
            assert!(!upper.contains(word), "custom data contains {word}:\n{doc}");
        }
    }

    #[test]
    fn without_tls_nothing_is_fetched() {
        let c = config::parse(&format!("{CONFIG}tls: false\n")).unwrap();
        for doc in [
            render(
                &c,
                &Body::Scheduler {
                    config_text: Some(CONFIG),
                },
            ),
            render(
                &c,
                &Body::Worker {
                    group: "default",
                    name: "w",
                    scheduler: "tcp://10.0.0.1:8786",
                },
            ),
        ] {
            assert!(!doc.contains("vm-tls"), "{doc}");
            assert!(!doc.contains("--tls-"), "{doc}");
            assert!(!doc.contains("/etc/rask/tls"), "{doc}");
        }
        let doc = render(
            &c,
            &Body::Scheduler {
                config_text: Some(CONFIG),
            },
        );
        assert!(
            doc.contains("--scheduler-url http://127.0.0.1:8787\n"),
            "{doc}"
        );
    }

    #[test]
    fn user_data_holds_no_secret() {
        // Whatever credentials the machine running `up` has, rendering never sees them: the
        // function takes only the validated cluster. Check that no credential-shaped text appears.
        let c = config::parse(CONFIG).unwrap();
        for doc in [
            render(
                &c,
                &Body::Scheduler {
                    config_text: Some(CONFIG),
                },
            ),
            render(
                &c,
                &Body::Worker {
                    group: "default",
                    name: "w",
                    scheduler: "tcp://10.0.0.1:8786",
                },
            ),
        ] {
            let upper = doc.to_ascii_uppercase();
            for word in [
                "SECRET",
                "PASSWORD",
                "TOKEN",
                "AKIA",
                "PRIVATE KEY",
                "BEGIN ",
                "CREDENTIAL",
            ] {
                assert!(!upper.contains(word), "user-data contains {word}:\n{doc}");
            }
        }
    }

    #[test]
    fn a_memory_limit_that_is_not_a_size_never_reaches_user_data() {
        let text = CONFIG.replace("memory_limit: 6GiB", "memory_limit: \"6GiB';reboot;'\"");
        let e = config::parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("worker.memory_limit: "), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
    }
}
