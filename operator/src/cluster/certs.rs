//! A cluster's certificates on Kubernetes, as pure functions: the Secret `{cluster}-tls` that
//! holds them (owned by the DaskCluster, so it goes with it), reading it back, and the volume,
//! mounts and Dask's TLS environment that give rask's containers their part of it.
//!
//! Only containers running rask's image are changed: a Dask image's pod is what its spec says
//! (Dask's own TLS settings, if the user wrote them).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, PodSpec, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use kube::api::ObjectMeta;

use super::validate::ValidatedCluster;
use crate::local::plan::is_rask;
use crate::names::{LABEL_CLUSTER, LABEL_COMPONENT};
use crate::tls::{CA_FILE, CertError, ClusterCerts, MOUNT_PATH, Role, VOLUME, tls_address};

/// Where a cluster's certificates stand after [`ensure_certificates`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Certificates {
    /// `kubernetes.dask.org/tls: "false"`: none made.
    OptedOut,
    /// The Secret holds usable certificates (`created`: this reconcile made it).
    Ready { created: bool },
    /// The Secret exists but cannot be used; never replaced while it exists.
    Malformed(String),
}

/// `{cluster}-tls`: the Secret holding a cluster's certificates.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The Secret holding `certs`, owned by the cluster.
pub fn secret(v: &ValidatedCluster, certs: &ClusterCerts) -> Secret {
    let data: BTreeMap<String, ByteString> = certs
        .files()
        .into_iter()
        .map(|(name, text)| (name, ByteString(text.into_bytes())))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&v.name)),
            namespace: Some(v.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_CLUSTER.to_owned(), v.name.clone()),
                (LABEL_COMPONENT.to_owned(), "tls".to_owned()),
            ])),
            owner_references: Some(vec![v.owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The certificates an existing Secret holds, checked (see [`ClusterCerts::from_files`]).
pub fn read_secret(
    s: &Secret,
    v: &ValidatedCluster,
    now_unix: i64,
) -> Result<ClusterCerts, CertError> {
    let data = s.data.clone().unwrap_or_default();
    let get = |file: &str| {
        data.get(file)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let service = format!("{}-scheduler.{}.svc", v.name, v.namespace);
    ClusterCerts::from_files(get, &service, now_unix)
}

/// Dask's TLS settings of a rask container playing `role`, with the cluster's certificates
/// mounted at [`MOUNT_PATH`]: plus listening and connecting over TLS only.
pub fn tls_env(role: Role) -> Vec<(String, String)> {
    let section = role.dask_section();
    let path = |f: &str| format!("{MOUNT_PATH}/{f}");
    vec![
        ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE".into(), path(CA_FILE)),
        (
            format!("DASK_DISTRIBUTED__COMM__TLS__{section}__CERT"),
            path(&role.cert_file()),
        ),
        (
            format!("DASK_DISTRIBUTED__COMM__TLS__{section}__KEY"),
            path(&role.key_file()),
        ),
        (
            "DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME".into(),
            "tls".into(),
        ),
        (
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION".into(),
            "True".into(),
        ),
    ]
}

fn set_default(c: &mut Container, name: &str, value: &str) {
    let env = c.env.get_or_insert_with(Vec::new);
    if !env.iter().any(|e| e.name == name) {
        env.push(EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        });
    }
}

/// A rask scheduler with TLS serves its HTTP port over HTTPS only: its HTTP probes (`/health`
/// stays open to callers without a certificate) ask over HTTPS. A scheme the spec wrote as
/// HTTPS already, or another kind of probe, is kept.
fn https_probes(c: &mut Container) {
    let probes = [
        c.readiness_probe.as_mut(),
        c.liveness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ];
    for get in probes
        .into_iter()
        .flatten()
        .filter_map(|p| p.http_get.as_mut())
    {
        if get.scheme.as_deref().is_none_or(|s| s == "HTTP") {
            get.scheme = Some("HTTPS".into());
        }
    }
}

/// Gives every rask container of `spec` (init containers too) `role`'s certificates from the
/// Secret `secret`, Dask's TLS settings and the scheduler's `tls://` address (values the user
/// wrote win, as for the rest of Dask's environment); a scheduler's HTTP probes ask over HTTPS.
/// Adds the volume, with only the CA and
/// `role`'s certificate and key, when a container uses it. Returns whether any container did.
pub fn mount(spec: &mut PodSpec, secret: &str, role: Role, tcp_address: &str) -> bool {
    let mut env = tls_env(role);
    env.push(("DASK_SCHEDULER_ADDRESS".into(), tls_address(tcp_address)));
    let mut used = false;
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .filter(|c| is_rask(c));
    for c in containers {
        used = true;
        for (name, value) in &env {
            set_default(c, name, value);
        }
        if role == Role::Scheduler {
            https_probes(c);
        }
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts
            .iter()
            .any(|m| m.name == VOLUME || m.mount_path == MOUNT_PATH)
        {
            mounts.push(VolumeMount {
                name: VOLUME.into(),
                mount_path: MOUNT_PATH.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    }
    if used {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == VOLUME) {
            let item = |f: String| KeyToPath {
                key: f.clone(),
                path: f,
                mode: None,
                user: None,
            };
            volumes.push(Volume {
                name: VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.to_owned()),
                    items: Some(vec![
                        item(CA_FILE.to_owned()),
                        item(role.cert_file()),
                        item(role.key_file()),
                    ]),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::validate::validate;
    use crate::crd::DaskCluster;

    const NOW: i64 = 1_796_428_800;

    fn fixture(file: &str) -> DaskCluster {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(file);
        let mut c: DaskCluster =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn certs(v: &ValidatedCluster) -> ClusterCerts {
        ClusterCerts::generate(
            &v.name,
            &crate::tls::kubernetes_scheduler_names(&v.name, &v.namespace),
            NOW,
        )
        .unwrap()
    }

    fn env(c: &Container) -> BTreeMap<String, String> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn the_secret_is_owned_by_the_cluster_and_reads_back() {
        let v = validate(&fixture("rask-cluster.yaml")).unwrap();
        let c = certs(&v);
        let s = secret(&v, &c);
        assert_eq!(s.metadata.name.as_deref(), Some("rask-tls"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("DaskCluster", "rask")
        );
        assert_eq!(s.data.as_ref().unwrap().len(), 9);
        assert_eq!(read_secret(&s, &v, NOW).unwrap(), c);
    }

    #[test]
    fn a_damaged_secret_says_what_is_wrong() {
        let v = validate(&fixture("rask-cluster.yaml")).unwrap();
        let mut s = secret(&v, &certs(&v));
        let data = s.data.as_mut().unwrap();
        data.remove("client-key.pem");
        let err = read_secret(&s, &v, NOW).unwrap_err();
        assert_eq!(err.to_string(), "client-key.pem: missing");
        // Another cluster's Secret copied over: its scheduler is not this one's.
        let other = validate(&fixture("daskcluster.yaml")).unwrap();
        let s = secret(&other, &certs(&other));
        let err = read_secret(&s, &v, NOW).unwrap_err().to_string();
        assert!(
            err.contains("scheduler.pem: not valid for rask-scheduler.ns.svc"),
            "{err}"
        );
    }

    #[test]
    fn rask_containers_get_their_role_only() {
        let v = validate(&fixture("rask-cluster.yaml")).unwrap();
        let mut spec = v.worker.spec.clone();
        assert!(mount(
            &mut spec,
            "rask-tls",
            Role::Worker,
            &v.scheduler_address
        ));
        let c = &spec.containers[0];
        let e = env(c);
        assert_eq!(
            e["DASK_SCHEDULER_ADDRESS"],
            "tls://rask-scheduler.ns.svc.cluster.local:8786"
        );
        assert_eq!(
            e["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"],
            "/etc/rask/tls/ca.pem"
        );
        assert_eq!(
            e["DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT"],
            "/etc/rask/tls/worker.pem"
        );
        assert_eq!(
            e["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"],
            "/etc/rask/tls/worker-key.pem"
        );
        assert!(!e.contains_key("DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY"));
        let m = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (m.name.as_str(), m.mount_path.as_str(), m.read_only),
            (VOLUME, MOUNT_PATH, Some(true))
        );
        let vol = &spec.volumes.as_ref().unwrap()[0];
        let source = vol.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("rask-tls"));
        let keys: Vec<&str> = source
            .items
            .iter()
            .flatten()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["ca.pem", "worker.pem", "worker-key.pem"],
            "no other party's key"
        );

        let mut spec = v.scheduler_spec.clone();
        assert!(mount(
            &mut spec,
            "rask-tls",
            Role::Scheduler,
            &v.scheduler_address
        ));
        let e = env(&spec.containers[0]);
        assert_eq!(
            e["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY"],
            "/etc/rask/tls/scheduler-key.pem"
        );
        assert_eq!(e["DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME"], "tls");
        // Its HTTP port is HTTPS now: so is its readiness probe (the example has one).
        let probe = spec.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.http_get.as_ref().unwrap().scheme.as_deref(),
            Some("HTTPS")
        );
        // Workers serve their own /health over HTTP still: their probes are kept.
        let mut spec = v.worker.spec.clone();
        let before = spec.containers[0].readiness_probe.clone();
        mount(&mut spec, "rask-tls", Role::Worker, &v.scheduler_address);
        assert_eq!(spec.containers[0].readiness_probe, before);
    }

    #[test]
    fn dask_image_pods_are_left_as_their_spec_says() {
        let v = validate(&fixture("daskcluster.yaml")).unwrap();
        let mut spec = v.scheduler_spec.clone();
        let before = spec.clone();
        assert!(!mount(
            &mut spec,
            "foo-tls",
            Role::Scheduler,
            &v.scheduler_address
        ));
        assert_eq!(spec, before);
    }

    #[test]
    fn what_the_user_wrote_wins_and_mounting_twice_changes_nothing() {
        let v = validate(&fixture("rask-cluster.yaml")).unwrap();
        let mut spec = v.worker.spec.clone();
        spec.containers[0].env = Some(vec![EnvVar {
            name: "DASK_SCHEDULER_ADDRESS".into(),
            value: Some("tcp://elsewhere:8786".into()),
            value_from: None,
        }]);
        mount(&mut spec, "rask-tls", Role::Worker, &v.scheduler_address);
        let once = spec.clone();
        mount(&mut spec, "rask-tls", Role::Worker, &v.scheduler_address);
        assert_eq!(spec, once);
        assert_eq!(
            env(&spec.containers[0])["DASK_SCHEDULER_ADDRESS"],
            "tcp://elsewhere:8786"
        );
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 1);
        assert_eq!(spec.containers[0].volume_mounts.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn addresses_change_scheme_only() {
        assert_eq!(tls_address("tcp://a.b:8786"), "tls://a.b:8786");
        assert_eq!(tls_address("tls://a.b:8786"), "tls://a.b:8786");
    }
}
