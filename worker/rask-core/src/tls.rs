//! TLS for the engine's connections, as Dask's `tls://` comms: every process of a cluster holds a
//! certificate signed by the cluster's CA and its key, and both ends of each connection check the
//! other's certificate against that CA (mutual TLS). A process without such a certificate cannot
//! complete a handshake, so it can neither submit work, fetch results, nor join as a worker.
//!
//! As in Dask, the CA is what admits a peer, not a host name: certificates are checked for their
//! chain, validity and key usage, and a server's name is not compared with the address dialled
//! (workers are reached at pod IPs that no certificate could list in advance).
//!
//! A [`TlsConfig`] is built once per process from three PEM files ([`TlsFiles`]) and handed to
//! whatever opens or accepts connections; nothing here is global. The crypto provider is
//! aws-lc-rs, the one the rest of the workspace uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

/// The three PEM files of a process's TLS identity (Dask's `--tls-ca-file`, `--tls-cert`,
/// `--tls-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's CA certificate(s): peers must present a certificate signed by one of them.
    pub ca_file: PathBuf,
    /// This process's certificate (chain), signed by the CA.
    pub cert: PathBuf,
    /// The private key of `cert`. May be the same file as `cert` (a concatenated PEM, as Dask
    /// allows).
    pub key: PathBuf,
}

/// Which kind of process a TLS identity is for: it picks Dask's configuration variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Scheduler,
    Worker,
    Client,
}

/// Dask's variable for the CA file, shared by every role.
pub const CA_FILE_ENV: &str = "DASK_DISTRIBUTED__COMM__TLS__CA_FILE";
/// Dask's `distributed.comm.require-encryption`.
pub const REQUIRE_ENCRYPTION_ENV: &str = "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION";

impl Role {
    /// Dask's variables for this role's certificate and key
    /// (`distributed.comm.tls.<role>.cert` and `.key`).
    pub fn env(self) -> (&'static str, &'static str) {
        match self {
            Role::Scheduler => (
                "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT",
                "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY",
            ),
            Role::Worker => (
                "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT",
                "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY",
            ),
            Role::Client => (
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
            ),
        }
    }
}

/// The TLS settings of a command line, before they are checked: flags win over Dask's
/// variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Refuse to run without TLS (Dask's `require-encryption`).
    pub require_encryption: bool,
}

impl TlsSettings {
    /// Fills what the flags left out from Dask's variables for `role`, read through `env`.
    pub fn with_env(mut self, role: Role, env: impl Fn(&str) -> Option<String>) -> Self {
        let path = |k: &str| env(k).filter(|v| !v.trim().is_empty()).map(PathBuf::from);
        let (cert_env, key_env) = role.env();
        self.ca_file = self.ca_file.or_else(|| path(CA_FILE_ENV));
        self.cert = self.cert.or_else(|| path(cert_env));
        self.key = self.key.or_else(|| path(key_env));
        self.require_encryption |= env(REQUIRE_ENCRYPTION_ENV).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        self
    }

    /// The files to load, or `None` for plain TCP. A certificate without a key file is taken to
    /// hold its key too, as Dask allows; a CA without a certificate (or the reverse) is an error,
    /// and so is no TLS at all when encryption is required.
    pub fn files(self) -> Result<Option<TlsFiles>, String> {
        match (self.ca_file, self.cert, self.key) {
            (None, None, None) if self.require_encryption => Err(format!(
                "encryption is required ({REQUIRE_ENCRYPTION_ENV} or --require-encryption) but \
                 no TLS certificate is given: pass --tls-ca-file, --tls-cert and --tls-key"
            )),
            (None, None, None) => Ok(None),
            (Some(ca_file), Some(cert), key) => Ok(Some(TlsFiles {
                ca_file,
                key: key.unwrap_or_else(|| cert.clone()),
                cert,
            })),
            (None, _, _) => Err(format!(
                "--tls-cert or --tls-key is given without --tls-ca-file ({CA_FILE_ENV}): \
                 peers' certificates cannot be checked without the cluster's CA"
            )),
            (Some(_), None, _) => Err(
                "--tls-ca-file or --tls-key is given without --tls-cert: mutual TLS needs this \
                 process's own certificate"
                    .into(),
            ),
        }
    }
}

/// Why TLS could not be set up; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TLS {what} file {path} is not valid PEM: {detail}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the TLS {what} file {path} holds no certificate (no `BEGIN CERTIFICATE` block)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the TLS key file {path} holds no private key (no `BEGIN PRIVATE KEY` block)")]
    NoKey { path: PathBuf },
    #[error("the TLS CA file {path} holds a certificate that cannot be a trust anchor: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error("the TLS certificate {cert} and key {key} do not go together: {detail}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot set up TLS with the certificate {cert}: {detail}")]
    Config { cert: PathBuf, detail: String },
}

/// A process's TLS identity and trust, ready to open and accept connections. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    /// Servers of the cluster protocol: a client certificate signed by the CA is required.
    server: Arc<ServerConfig>,
    /// The HTTP API: a client certificate is checked if offered, not required (the API decides
    /// per route, with bearer tokens as the other way in).
    http_server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// Where the trusted CA came from, for errors about servers it does not vouch for.
    ca_file: Arc<Path>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig { .. }")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what,
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(k),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(TlsError::BadPem {
            what: "key",
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

impl TlsConfig {
    /// Reads the three files and builds the client and server sides.
    pub fn load(files: &TlsFiles) -> Result<TlsConfig, TlsError> {
        let ca = read("CA", &files.ca_file)?;
        let cert = read("certificate", &files.cert)?;
        let key = read("key", &files.key)?;
        Self::from_pem_named(files, &ca, &cert, &key)
    }

    /// [`TlsConfig::load`] from PEM text already in memory; `files` only names the sources in
    /// errors.
    pub fn from_pem_named(
        files: &TlsFiles,
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
    ) -> Result<TlsConfig, TlsError> {
        let ca_certs = certificates("CA", &files.ca_file, ca)?;
        let chain = certificates("certificate", &files.cert, cert)?;
        let key = private_key(&files.key, key)?;
        let mut roots = RootCertStore::empty();
        for c in ca_certs {
            roots.add(c).map_err(|e| TlsError::BadCa {
                path: files.ca_file.clone(),
                detail: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let config_error = |e: rustls::Error| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                detail: e.to_string(),
            },
            e => TlsError::Config {
                cert: files.cert.clone(),
                detail: e.to_string(),
            },
        };

        let client_verifier = |optional: bool| {
            let b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let b = if optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| TlsError::BadCa {
                path: files.ca_file.clone(),
                detail: e.to_string(),
            })
        };
        let server = |optional: bool| -> Result<Arc<ServerConfig>, TlsError> {
            let c = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(config_error)?
                .with_client_cert_verifier(client_verifier(optional)?)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(config_error)?;
            Ok(Arc::new(c))
        };
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: files.ca_file.clone(),
                    detail: e.to_string(),
                })?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterServerVerifier(server_verifier)))
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        Ok(TlsConfig {
            server: server(false)?,
            http_server: server(true)?,
            client: Arc::new(client),
            ca_file: Arc::from(files.ca_file.as_path()),
        })
    }

    /// The file the trusted CA certificate(s) came from (`--tls-ca-file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Accepts cluster connections: the peer must present a certificate signed by the CA.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// Accepts HTTP API connections: a client certificate is verified if offered, not required.
    pub fn http_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.http_server.clone())
    }

    /// Opens connections, presenting this process's certificate.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

/// The name a client gives for `host` in its handshake: the host itself when it is a DNS name
/// or an IP address; else (a name with characters DNS does not allow) an unspecified IP. Either
/// way it is not checked (see [`ClusterServerVerifier`]).
pub(crate) fn server_name(host: &str) -> ServerName<'static> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).unwrap_or(ServerName::IpAddress(
        std::net::IpAddr::from([0u8, 0, 0, 0]).into(),
    ))
}

/// What went wrong in a client's handshake with `addr`, in words: a server whose certificate
/// another CA signed (another cluster's scheduler, or a stale address) is named as such, with
/// the CA file this process trusts; other failures keep rustls' wording.
pub(crate) fn client_handshake_error(
    addr: &str,
    ca_file: &Path,
    e: std::io::Error,
) -> std::io::Error {
    let unknown_issuer = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            )
        });
    let message = if unknown_issuer {
        format!(
            "TLS handshake with {addr} failed: the server's certificate is not signed by the CA \
             in {} (another cluster's, or a server of another CA at that address) ({e})",
            ca_file.display()
        )
    } else {
        format!("TLS handshake with {addr} failed: {e}")
    };
    std::io::Error::new(e.kind(), message)
}

/// Checks a server's certificate chain against the cluster's CA (validity, signatures, key
/// usage) but not its name: as Dask, membership of the cluster is what the CA vouches for, and
/// workers are dialled at addresses no certificate lists in advance.
#[derive(Debug)]
struct ClusterServerVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name mismatch means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A throwaway CA and certificates signed by it, for tests.
    pub(crate) struct TestCa {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pub(crate) ca_pem: String,
    }

    impl TestCa {
        pub(crate) fn new(name: &str) -> TestCa {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                ca_pem: cert.pem(),
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        /// (certificate PEM, key PEM) for a member of the cluster.
        pub(crate) fn member(&self, name: &str) -> (String, String) {
            let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }

        /// A [`TlsConfig`] trusting `trust`'s CA with a certificate of this CA.
        pub(crate) fn config_trusting(&self, trust: &TestCa, name: &str) -> TlsConfig {
            let (cert, key) = self.member(name);
            TlsConfig::from_pem_named(
                &names(),
                trust.ca_pem.as_bytes(),
                cert.as_bytes(),
                key.as_bytes(),
            )
            .unwrap()
        }

        pub(crate) fn config(&self, name: &str) -> TlsConfig {
            self.config_trusting(self, name)
        }
    }

    #[test]
    fn a_server_of_another_ca_is_named_with_the_ca_file_trusted() {
        let rustls_error =
            |r: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, r);
        let err = client_handshake_error(
            "tls://10.0.0.7:8786",
            Path::new("/etc/rask/tls/ca.pem"),
            rustls_error(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        );
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "TLS handshake with tls://10.0.0.7:8786 failed: the server's certificate is not \
             signed by the CA in /etc/rask/tls/ca.pem (another cluster's, or a server of another \
             CA at that address) (invalid peer certificate: UnknownIssuer)"
        );
        // Other failures keep rustls' words, with the address.
        let expired = client_handshake_error(
            "tls://10.0.0.7:8786",
            Path::new("ca.pem"),
            rustls_error(rustls::Error::InvalidCertificate(CertificateError::Expired)),
        );
        assert_eq!(
            expired.to_string(),
            "TLS handshake with tls://10.0.0.7:8786 failed: invalid peer certificate: Expired"
        );
        let reset = client_handshake_error(
            "tls://10.0.0.7:8786",
            Path::new("ca.pem"),
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer"),
        );
        assert_eq!(
            reset.to_string(),
            "TLS handshake with tls://10.0.0.7:8786 failed: reset by peer"
        );
    }

    fn names() -> TlsFiles {
        TlsFiles {
            ca_file: "ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_a_ca_a_certificate_and_its_key_from_files() {
        let ca = TestCa::new("cluster");
        let (cert, key) = ca.member("scheduler");
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            ca_file: write(dir.path(), "ca.pem", &ca.ca_pem),
            cert: write(dir.path(), "cert.pem", &cert),
            key: write(dir.path(), "key.pem", &key),
        };
        TlsConfig::load(&files).unwrap();
        // A certificate and its key concatenated in one file, as Dask allows.
        let both = write(dir.path(), "both.pem", &format!("{cert}{key}"));
        let files = TlsFiles {
            cert: both.clone(),
            key: both,
            ..files
        };
        TlsConfig::load(&files).unwrap();
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = TlsFiles {
            ca_file: "/nonexistent/ca.pem".into(),
            ..names()
        };
        let err = TlsConfig::load(&files).unwrap_err().to_string();
        assert!(err.contains("TLS CA file /nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_pem_blocks_is_named() {
        let ca = TestCa::new("cluster");
        let (cert, key) = ca.member("w");
        let err = TlsConfig::from_pem_named(
            &names(),
            b"not a certificate",
            cert.as_bytes(),
            key.as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CA file ca.pem holds no certificate"), "{err}");
        let err = TlsConfig::from_pem_named(&names(), ca.ca_pem.as_bytes(), b"", key.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("certificate file cert.pem holds no certificate"),
            "{err}"
        );
        let err = TlsConfig::from_pem_named(
            &names(),
            ca.ca_pem.as_bytes(),
            cert.as_bytes(),
            cert.as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("key file key.pem holds no private key"),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_pem_block_is_named() {
        let ca = TestCa::new("cluster");
        let (cert, key) = ca.member("w");
        let broken = "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
        let err = TlsConfig::from_pem_named(
            &names(),
            ca.ca_pem.as_bytes(),
            broken.as_bytes(),
            key.as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("certificate file cert.pem is not valid PEM"),
            "{err}"
        );
        // Valid PEM whose content is not a certificate.
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = TlsConfig::from_pem_named(
            &names(),
            garbage.as_bytes(),
            cert.as_bytes(),
            key.as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CA file ca.pem"), "{err}");
    }

    #[test]
    fn a_certificate_with_another_key_is_refused_naming_both_files() {
        let ca = TestCa::new("cluster");
        let (cert, _) = ca.member("w");
        let (_, other_key) = ca.member("w2");
        let err = TlsConfig::from_pem_named(
            &names(),
            ca.ca_pem.as_bytes(),
            cert.as_bytes(),
            other_key.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let err = err.to_string();
        assert!(err.contains("cert.pem") && err.contains("key.pem"), "{err}");
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn dask_s_variables_fill_what_the_flags_leave_out_for_the_role() {
        let env = env_of(&[
            ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "/ca.pem"),
            ("DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT", "/worker.pem"),
            ("DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY", "/worker.key"),
            ("DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT", "/sched.pem"),
        ]);
        let worker = TlsSettings::default()
            .with_env(Role::Worker, &env)
            .files()
            .unwrap();
        assert_eq!(
            worker,
            Some(TlsFiles {
                ca_file: "/ca.pem".into(),
                cert: "/worker.pem".into(),
                key: "/worker.key".into()
            })
        );
        // A flag wins; the scheduler's key is in its certificate file.
        let sched = TlsSettings {
            ca_file: Some("/flag-ca.pem".into()),
            ..TlsSettings::default()
        }
        .with_env(Role::Scheduler, &env)
        .files()
        .unwrap()
        .unwrap();
        assert_eq!(sched.ca_file, PathBuf::from("/flag-ca.pem"));
        assert_eq!(sched.key, PathBuf::from("/sched.pem"));
        assert_eq!(
            TlsSettings::default()
                .with_env(Role::Client, env_of(&[]))
                .files(),
            Ok(None)
        );
    }

    #[test]
    fn half_given_settings_and_required_encryption_without_tls_are_errors() {
        let err = TlsSettings {
            cert: Some("/c.pem".into()),
            ..TlsSettings::default()
        }
        .files()
        .unwrap_err();
        assert!(err.contains("--tls-ca-file"), "{err}");
        let err = TlsSettings {
            ca_file: Some("/ca.pem".into()),
            ..TlsSettings::default()
        }
        .files()
        .unwrap_err();
        assert!(err.contains("without --tls-cert"), "{err}");
        let required = TlsSettings::default()
            .with_env(Role::Client, env_of(&[(REQUIRE_ENCRYPTION_ENV, "True")]));
        assert!(required.require_encryption);
        let err = required.files().unwrap_err();
        assert!(err.contains("encryption is required"), "{err}");
    }
}
