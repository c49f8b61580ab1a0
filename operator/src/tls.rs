//! A cluster's certificates: a CA made for the cluster alone and, signed by it, a certificate and
//! key for each party of Dask's mutual TLS (scheduler, workers, the operator's autoscaler, users).
//! Pure: the Kubernetes Secret and the local backend's state directory store what this makes,
//! under the same file names, and hand it back to [`ClusterCerts::from_files`] to be checked.
//!
//! ECDSA P-256 keys (what Dask's `Security.temporary()` and most meshes use), SHA-256 signatures.
//! The CA's key is not kept: nothing signs for a cluster after its certificates are made, so
//! nobody who reads the stored certificates can mint new ones.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::names;

/// `kubernetes.dask.org/tls: "false"` on a DaskCluster: no certificates for it.
pub const ANNOTATION_TLS: &str = "kubernetes.dask.org/tls";
/// The CA's certificate, in the Secret and the state directory.
pub const CA_FILE: &str = "ca.pem";
/// Where rask containers find the cluster's certificates.
pub const MOUNT_PATH: &str = "/etc/rask/tls";
/// The pod volume holding them.
pub const VOLUME: &str = "rask-tls";
/// How long the certificates are valid: they are made once per cluster and never renewed.
pub const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Slack before "now" in `notBefore`, for machines whose clocks run behind the operator's.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Whether a cluster with these annotations gets certificates: unless [`ANNOTATION_TLS`] is
/// `"false"`. Another value than `"true"` or `"false"` is an error naming it.
pub fn wanted(annotations: &std::collections::BTreeMap<String, String>) -> Result<bool, String> {
    match annotations.get(ANNOTATION_TLS).map(String::as_str) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "metadata.annotations[{ANNOTATION_TLS}]: {other:?} is neither \"true\" nor \"false\""
        )),
    }
}

/// One party of the cluster's mutual TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Scheduler,
    Worker,
    /// The operator and its autoscaler, talking to the scheduler.
    Operator,
    /// Users' clients (`kubectl get secret NAME-tls`).
    Client,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Scheduler, Role::Worker, Role::Operator, Role::Client];

    pub fn name(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Client => "client",
        }
    }

    /// `scheduler.pem`, ...
    pub fn cert_file(self) -> String {
        format!("{}.pem", self.name())
    }

    /// `scheduler-key.pem`, ...
    pub fn key_file(self) -> String {
        format!("{}-key.pem", self.name())
    }

    /// Which side of a connection the certificate may be: the scheduler and workers both
    /// accept connections and open them (to each other); the others only connect.
    fn usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Role::Scheduler | Role::Worker => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Operator | Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }

    /// The `DASK_DISTRIBUTED__COMM__TLS__...` section whose CERT and KEY name this party's
    /// files, as Dask's configuration calls them (the operator's is a client).
    pub fn dask_section(self) -> &'static str {
        match self {
            Role::Scheduler => "SCHEDULER",
            Role::Worker => "WORKER",
            Role::Operator | Role::Client => "CLIENT",
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A cluster's CA and its parties' identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterCerts {
    pub ca_pem: String,
    pub scheduler: Identity,
    pub worker: Identity,
    pub operator: Identity,
    pub client: Identity,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make the certificates of cluster {cluster}: {source}")]
    Generate {
        cluster: String,
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "cannot make the certificates of cluster {cluster}: {name:?} is not a host name or IP address"
    )]
    BadName { cluster: String, name: String },
    /// Stored certificates that cannot be used; every problem named.
    #[error("{}", problems.join("; "))]
    Malformed { problems: Vec<String> },
}

/// The names the scheduler's certificate is valid for on Kubernetes: its Service's in-cluster
/// DNS names (short to fully qualified), and loopback for `kubectl port-forward`.
pub fn kubernetes_scheduler_names(cluster: &str, namespace: &str) -> Vec<String> {
    let service = names::scheduler_name(cluster);
    let mut out = vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    out.extend(local_names());
    out
}

/// The names a local cluster's scheduler (on loopback) is valid for.
pub fn local_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

fn generate_error(cluster: &str) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        cluster: cluster.to_owned(),
        source,
    }
}

fn subject(cluster: &str, who: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rask");
    dn.push(DnType::CommonName, format!("{cluster} {who}"));
    dn
}

impl ClusterCerts {
    /// A new CA for `cluster` and its parties' certificates, valid from (a little before)
    /// `now_unix` for [`VALIDITY`]. The scheduler's is valid for `scheduler_names` (DNS names or
    /// IP addresses); the workers' for loopback only: workers are reached at pod or host
    /// addresses nobody knows in advance, and Dask checks their chain, not their names.
    pub fn generate(
        cluster: &str,
        scheduler_names: &[String],
        now_unix: i64,
    ) -> Result<ClusterCerts, CertError> {
        let err = generate_error(cluster);
        if let Some(bad) = scheduler_names
            .iter()
            .find(|n| ServerName::try_from(n.as_str()).is_err())
        {
            return Err(CertError::BadName {
                cluster: cluster.to_owned(),
                name: bad.clone(),
            });
        }
        let start = time::OffsetDateTime::from_unix_timestamp(
            now_unix.saturating_sub(CLOCK_SKEW.as_secs() as i64),
        )
        .map_err(|_| CertError::Malformed {
            problems: vec![format!(
                "{now_unix} is not a time a certificate can start at"
            )],
        })?;
        let end = start + VALIDITY + CLOCK_SKEW;

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(&err)?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = subject(cluster, "CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = start;
        ca_params.not_after = end;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(&err)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let identity = |role: Role| -> Result<Identity, CertError> {
            let sans = match role {
                Role::Scheduler => scheduler_names.to_vec(),
                Role::Worker => local_names(),
                Role::Operator | Role::Client => Vec::new(),
            };
            let mut params = CertificateParams::new(sans).map_err(&err)?;
            params.distinguished_name = subject(cluster, role.name());
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = role.usages();
            params.use_authority_key_identifier_extension = true;
            params.not_before = start;
            params.not_after = end;
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(&err)?;
            let cert = params.signed_by(&key, &issuer).map_err(&err)?;
            Ok(Identity {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        };
        Ok(ClusterCerts {
            ca_pem: ca_cert.pem(),
            scheduler: identity(Role::Scheduler)?,
            worker: identity(Role::Worker)?,
            operator: identity(Role::Operator)?,
            client: identity(Role::Client)?,
        })
    }

    pub fn identity(&self, role: Role) -> &Identity {
        match role {
            Role::Scheduler => &self.scheduler,
            Role::Worker => &self.worker,
            Role::Operator => &self.operator,
            Role::Client => &self.client,
        }
    }

    /// Every file, by name: `ca.pem`, then each party's `NAME.pem` and `NAME-key.pem`.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut out = vec![(CA_FILE.to_owned(), self.ca_pem.clone())];
        for role in Role::ALL {
            let id = self.identity(role);
            out.push((role.cert_file(), id.cert_pem.clone()));
            out.push((role.key_file(), id.key_pem.clone()));
        }
        out
    }

    /// Whether `file` holds a private key (stored readable by its owner only).
    pub fn is_key_file(file: &str) -> bool {
        file.ends_with("-key.pem")
    }

    /// Certificates stored before, read back with `get(file name)`, checked: every file is there
    /// and parses, and each party's certificate chains to the CA, for its usage, at `now_unix`;
    /// the scheduler's is valid for `scheduler_name`. Every problem is named.
    pub fn from_files(
        get: impl Fn(&str) -> Option<String>,
        scheduler_name: &str,
        now_unix: i64,
    ) -> Result<ClusterCerts, CertError> {
        let mut problems = Vec::new();
        let mut read = |file: &str| {
            let text = get(file);
            if text.is_none() {
                problems.push(format!("{file}: missing"));
            }
            text.unwrap_or_default()
        };
        let ca_pem = read(CA_FILE);
        let mut identity = |role: Role| Identity {
            cert_pem: read(&role.cert_file()),
            key_pem: read(&role.key_file()),
        };
        let certs = ClusterCerts {
            scheduler: identity(Role::Scheduler),
            worker: identity(Role::Worker),
            operator: identity(Role::Operator),
            client: identity(Role::Client),
            ca_pem,
        };
        if !problems.is_empty() {
            return Err(CertError::Malformed { problems });
        }
        let problems = certs.check(scheduler_name, now_unix);
        if problems.is_empty() {
            Ok(certs)
        } else {
            Err(CertError::Malformed { problems })
        }
    }

    /// What is wrong with these certificates (nothing: empty).
    fn check(&self, scheduler_name: &str, now_unix: i64) -> Vec<String> {
        let mut problems = Vec::new();
        let ca = match CertificateDer::from_pem_slice(self.ca_pem.as_bytes()) {
            Ok(ca) => ca,
            Err(e) => return vec![format!("{CA_FILE}: not a PEM certificate ({e})")],
        };
        let anchor = match webpki::anchor_from_trusted_cert(&ca) {
            Ok(a) => a,
            Err(e) => return vec![format!("{CA_FILE}: not a usable CA certificate ({e})")],
        };
        let anchors = [anchor];
        let now = UnixTime::since_unix_epoch(Duration::from_secs(now_unix.max(0).unsigned_abs()));
        for role in Role::ALL {
            let id = self.identity(role);
            let file = role.cert_file();
            if let Err(e) = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()) {
                problems.push(format!("{}: not a PEM private key ({e})", role.key_file()));
            }
            let der = match CertificateDer::from_pem_slice(id.cert_pem.as_bytes()) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("{file}: not a PEM certificate ({e})"));
                    continue;
                }
            };
            let cert = match webpki::EndEntityCert::try_from(&der) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{file}: not a usable certificate ({e})"));
                    continue;
                }
            };
            let usage = match role {
                Role::Scheduler | Role::Worker => webpki::KeyUsage::server_auth(),
                Role::Operator | Role::Client => webpki::KeyUsage::client_auth(),
            };
            if let Err(e) = cert.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &[],
                now,
                usage,
                None,
                None,
            ) {
                problems.push(format!("{file}: does not verify with {CA_FILE} ({e})"));
            }
            if role == Role::Scheduler {
                match ServerName::try_from(scheduler_name) {
                    Ok(name) => {
                        if let Err(e) = cert.verify_is_valid_for_subject_name(&name) {
                            problems.push(format!("{file}: not valid for {scheduler_name} ({e})"));
                        }
                    }
                    Err(e) => problems.push(format!("{scheduler_name}: not a host name ({e})")),
                }
            }
        }
        problems
    }
}

/// `tls://host:port` for `tcp://host:port`.
pub fn tls_address(tcp: &str) -> String {
    match tcp.strip_prefix("tcp://") {
        Some(rest) => format!("tls://{rest}"),
        None => tcp.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_428_800; // 2026-12-05

    fn certs() -> ClusterCerts {
        ClusterCerts::generate("foo", &kubernetes_scheduler_names("foo", "ns"), NOW).unwrap()
    }

    fn end_entity(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn verifies(ca: &str, cert: &str, usage: webpki::KeyUsage, at: i64) -> bool {
        let ca = end_entity(ca);
        let anchors = [webpki::anchor_from_trusted_cert(&ca).unwrap()];
        let der = end_entity(cert);
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(at as u64)),
            usage,
            None,
            None,
        )
        .is_ok()
    }

    #[test]
    fn the_annotation_opts_out_and_nothing_else_is_accepted() {
        let with = |v: Option<&str>| {
            let mut m = std::collections::BTreeMap::new();
            if let Some(v) = v {
                m.insert(ANNOTATION_TLS.to_owned(), v.to_owned());
            }
            wanted(&m)
        };
        assert_eq!(with(None), Ok(true));
        assert_eq!(with(Some("true")), Ok(true));
        assert_eq!(with(Some("false")), Ok(false));
        assert_eq!(
            with(Some("no")),
            Err(r#"metadata.annotations[kubernetes.dask.org/tls]: "no" is neither "true" nor "false""#.into())
        );
    }

    #[test]
    fn every_party_chains_to_the_clusters_ca_for_its_usage() {
        let c = certs();
        for role in [Role::Scheduler, Role::Worker] {
            let pem = &c.identity(role).cert_pem;
            assert!(
                verifies(&c.ca_pem, pem, webpki::KeyUsage::server_auth(), NOW),
                "{role:?}"
            );
            assert!(
                verifies(&c.ca_pem, pem, webpki::KeyUsage::client_auth(), NOW),
                "{role:?}"
            );
        }
        for role in [Role::Operator, Role::Client] {
            let pem = &c.identity(role).cert_pem;
            assert!(
                verifies(&c.ca_pem, pem, webpki::KeyUsage::client_auth(), NOW),
                "{role:?}"
            );
            assert!(
                !verifies(&c.ca_pem, pem, webpki::KeyUsage::server_auth(), NOW),
                "{role:?} is a client only"
            );
        }
        // Valid from a little before now, for about ten years.
        let later = NOW + (9 * 365 * 24 * 3600);
        assert!(verifies(
            &c.ca_pem,
            &c.client.cert_pem,
            webpki::KeyUsage::client_auth(),
            later
        ));
        let too_late = NOW + (11 * 365 * 24 * 3600);
        assert!(!verifies(
            &c.ca_pem,
            &c.client.cert_pem,
            webpki::KeyUsage::client_auth(),
            too_late
        ));
        assert!(verifies(
            &c.ca_pem,
            &c.client.cert_pem,
            webpki::KeyUsage::client_auth(),
            NOW - 60
        ));
    }

    #[test]
    fn another_clusters_ca_does_not_verify() {
        let a = certs();
        let b = certs();
        assert_ne!(a.ca_pem, b.ca_pem, "a CA per cluster, never reused");
        assert!(!verifies(
            &b.ca_pem,
            &a.scheduler.cert_pem,
            webpki::KeyUsage::server_auth(),
            NOW
        ));
    }

    #[test]
    fn the_scheduler_certificate_names_its_service() {
        let c = certs();
        let der = end_entity(&c.scheduler.cert_pem);
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        for name in [
            "foo-scheduler",
            "foo-scheduler.ns",
            "foo-scheduler.ns.svc",
            "foo-scheduler.ns.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            "::1",
        ] {
            let n = ServerName::try_from(name).unwrap();
            assert!(cert.verify_is_valid_for_subject_name(&n).is_ok(), "{name}");
        }
        for name in [
            "bar-scheduler.ns.svc",
            "foo-scheduler.other.svc",
            "10.0.0.1",
        ] {
            let n = ServerName::try_from(name).unwrap();
            assert!(cert.verify_is_valid_for_subject_name(&n).is_err(), "{name}");
        }
    }

    #[test]
    fn keys_are_ecdsa_p256_and_match_their_certificates() {
        let c = certs();
        for role in Role::ALL {
            let id = c.identity(role);
            let key = KeyPair::from_pem(&id.key_pem).unwrap();
            assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256, "{role:?}");
            // The certificate carries the key's public half.
            let der = end_entity(&id.cert_pem);
            let raw = key.public_key_raw();
            assert!(
                der.windows(raw.len()).any(|w| w == raw),
                "{role:?}: the certificate holds another key"
            );
        }
    }

    #[test]
    fn stored_files_round_trip_and_no_ca_key_is_kept() {
        let c = certs();
        let files = c.files();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "scheduler.pem",
                "scheduler-key.pem",
                "worker.pem",
                "worker-key.pem",
                "operator.pem",
                "operator-key.pem",
                "client.pem",
                "client-key.pem"
            ]
        );
        assert!(files.iter().all(|(n, _)| !n.starts_with("ca-key")));
        let get = |f: &str| files.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone());
        let back = ClusterCerts::from_files(get, "foo-scheduler.ns.svc", NOW).unwrap();
        assert_eq!(back, c);
        assert!(ClusterCerts::is_key_file("worker-key.pem"));
        assert!(!ClusterCerts::is_key_file("worker.pem"));
    }

    #[test]
    fn malformed_stored_certificates_name_every_problem() {
        let c = certs();
        let other = certs();
        let files = c.files();
        let get = |f: &str| -> Option<String> {
            match f {
                "worker-key.pem" => None,
                "client.pem" => Some("not a certificate".into()),
                // Another cluster's: does not chain to this CA.
                "operator.pem" => Some(other.operator.cert_pem.clone()),
                _ => files.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone()),
            }
        };
        let err = ClusterCerts::from_files(get, "foo-scheduler.ns.svc", NOW).unwrap_err();
        assert_eq!(err.to_string(), "worker-key.pem: missing");
        let get = |f: &str| -> Option<String> {
            match f {
                "client.pem" => Some("not a certificate".into()),
                "operator.pem" => Some(other.operator.cert_pem.clone()),
                "scheduler-key.pem" => Some("-----BEGIN PRIVATE KEY-----\n!!\n".into()),
                _ => files.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone()),
            }
        };
        let text = ClusterCerts::from_files(get, "foo-scheduler.ns.svc", NOW)
            .unwrap_err()
            .to_string();
        assert!(text.contains("client.pem: not a PEM certificate"), "{text}");
        assert!(
            text.contains("operator.pem: does not verify with ca.pem"),
            "{text}"
        );
        assert!(
            text.contains("scheduler-key.pem: not a PEM private key"),
            "{text}"
        );
        let get = |f: &str| files.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone());
        let text = ClusterCerts::from_files(get, "bar-scheduler.ns.svc", NOW)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("scheduler.pem: not valid for bar-scheduler.ns.svc"),
            "{text}"
        );
        let get = |f: &str| -> Option<String> {
            match f {
                "ca.pem" => Some("garbage".into()),
                _ => files.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone()),
            }
        };
        let text = ClusterCerts::from_files(get, "foo-scheduler.ns.svc", NOW)
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("ca.pem: not a PEM certificate"), "{text}");
    }

    #[test]
    fn a_bad_scheduler_name_is_a_generation_error() {
        let err = ClusterCerts::generate("foo", &["not a name!".into()], NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cannot make the certificates of cluster foo: "not a name!" is not a host name or IP address"#
        );
    }

    #[test]
    fn expired_or_not_yet_valid_certificates_are_refused() {
        let c = certs();
        let files = c.files();
        let get = |f: &str| files.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone());
        let later = NOW + 11 * 365 * 24 * 3600;
        let text = ClusterCerts::from_files(get, "foo-scheduler.ns.svc", later)
            .unwrap_err()
            .to_string();
        for role in Role::ALL {
            assert!(
                text.contains(&format!(
                    "{}: does not verify with ca.pem",
                    role.cert_file()
                )),
                "{role:?}: {text}"
            );
        }
        assert!(text.contains("Expired"), "{text}");
        let before = NOW - 2 * 3600;
        let text = ClusterCerts::from_files(get, "foo-scheduler.ns.svc", before)
            .unwrap_err()
            .to_string();
        assert!(text.contains("NotValidYet"), "{text}");
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let c = certs();
        let text = format!("{c:?}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains("BEGIN CERTIFICATE"));
    }
}
