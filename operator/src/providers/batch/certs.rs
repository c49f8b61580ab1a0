//! A batch cluster's certificates: `up` makes them with [`crate::tls::ClusterCerts`] (the same
//! CA and parties as local and Kubernetes clusters) and writes them with the local backend's
//! [`crate::local::certs::write`] into `{state_dir}/{name}-tls/` — directory 0700, keys 0600 —
//! on the filesystem the batch jobs share with it: the jobs run as the same user and read their
//! files from there. `down` removes the directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::providers::ProviderError;
use crate::scheduler_api::SchedulerApi;
use crate::tls::{CA_FILE, ClusterCerts, Role, local_names};

/// Where cluster `name`'s certificates are kept.
pub fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}-tls"))
}

/// The names the scheduler's certificate is valid for: `host` (the scheduler's configured host,
/// when given), this machine's name and loopback. A scheduler in a job runs on a node nobody
/// knows in advance; rask-operator and Dask's clients check its chain, not its name.
pub fn scheduler_names(host: Option<&str>, this_machine: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in [host, this_machine].into_iter().flatten() {
        let n = n.trim();
        let usable = rustls_pki_types::ServerName::try_from(n).is_ok() && n != "0.0.0.0";
        if usable && !names.iter().any(|m| m == n) {
            names.push(n.to_owned());
        }
    }
    for n in local_names() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// This machine's host name, if it has one.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// New certificates for cluster `name` in [`dir`], replacing any left by an earlier cluster of
/// that name. Returns the directory.
pub fn make(
    state_dir: &Path,
    name: &str,
    scheduler_names: &[String],
    now_unix: i64,
) -> Result<PathBuf, ProviderError> {
    let tls = dir(state_dir, name);
    remove(&tls)?;
    let certs = ClusterCerts::generate(name, scheduler_names, now_unix)
        .map_err(|e| ProviderError::Other(e.to_string()))?;
    crate::local::certs::write(&tls, &certs).map_err(|e| ProviderError::Other(e.to_string()))?;
    Ok(tls)
}

/// Removes the certificates' directory (keys and all); a directory already gone is fine.
pub fn remove(tls: &Path) -> Result<(), ProviderError> {
    match std::fs::remove_dir_all(tls) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProviderError::Read {
            path: tls.display().to_string(),
            reason: format!("cannot remove the cluster's certificates: {e}"),
        }),
    }
}

/// A client of the scheduler's HTTP API presenting `role`'s certificate from `tls`.
pub fn api(tls: &Path, role: Role, timeout: Duration) -> Result<SchedulerApi, ProviderError> {
    let read = |f: String| {
        let path = tls.join(&f);
        std::fs::read_to_string(&path).map_err(|e| ProviderError::Read {
            path: path.display().to_string(),
            reason: format!(
                "cannot read the cluster's {} certificate: {e} (made by `up`; `tls: false` in \
                 the config for a cluster without TLS)",
                role.name()
            ),
        })
    };
    let ca = read(CA_FILE.to_owned())?;
    let cert = read(role.cert_file())?;
    let key = read(role.key_file())?;
    SchedulerApi::with_tls_any_name(&ca, &cert, &key, timeout)
        .map_err(|e| ProviderError::Other(format!("certificates in {}: {e}", tls.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_428_800;

    #[test]
    fn made_private_replaced_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let names = scheduler_names(Some("10.1.2.3"), Some("login1"));
        assert_eq!(
            names,
            ["10.1.2.3", "login1", "localhost", "127.0.0.1", "::1"]
        );
        let tls = make(state.path(), "hpc", &names, NOW).unwrap();
        assert_eq!(tls, state.path().join("hpc-tls"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&tls), 0o700);
            for role in Role::ALL {
                assert_eq!(mode(&tls.join(role.key_file())), 0o600, "{role:?}");
            }
        }
        let get = |f: &str| std::fs::read_to_string(tls.join(f)).ok();
        ClusterCerts::from_files(get, "10.1.2.3", NOW).unwrap();
        let ca = std::fs::read_to_string(tls.join(CA_FILE)).unwrap();
        // A new `up` of the same name gets a new CA.
        make(state.path(), "hpc", &names, NOW).unwrap();
        assert_ne!(std::fs::read_to_string(tls.join(CA_FILE)).unwrap(), ca);
        assert!(api(&tls, Role::Operator, Duration::from_secs(1)).is_ok());
        remove(&tls).unwrap();
        assert!(!tls.exists());
        remove(&tls).unwrap();
    }

    #[test]
    fn unusable_names_are_left_out() {
        assert_eq!(
            scheduler_names(Some("0.0.0.0"), Some("not a name!")),
            local_names()
        );
    }

    #[test]
    fn missing_files_are_named() {
        let state = tempfile::tempdir().unwrap();
        let err = api(
            &dir(state.path(), "x"),
            Role::Operator,
            Duration::from_secs(1),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("x-tls/ca.pem"), "{err}");
        assert!(err.contains("tls: false"), "{err}");
    }

    /// A stand-in scheduler API over HTTPS with `tls`'s scheduler certificate, admitting only
    /// clients of that CA; answers every request with no workers. Returns its URL.
    async fn https_scheduler(tls: &Path) -> String {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let read = |f: &str| std::fs::read(tls.join(f)).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&read(CA_FILE)).unwrap())
            .unwrap();
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(&read("scheduler.pem")).unwrap()],
                PrivateKeyDer::from_pem_slice(&read("scheduler-key.pem")).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = r#"{"workers":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        url
    }

    /// A scheduler job's certificate cannot name the node it lands on: the operator admits a
    /// scheduler certificate of the cluster's CA for any name, and refuses another CA's.
    #[tokio::test]
    async fn the_operator_checks_the_scheduler_s_chain_not_its_name() {
        let now = crate::clock::now() as i64;
        let state = tempfile::tempdir().unwrap();
        let tls = make(state.path(), "hpc", &["node17".to_owned()], now).unwrap();
        let url = https_scheduler(&tls).await;
        let timeout = Duration::from_secs(5);

        let any_name = api(&tls, Role::Operator, timeout).unwrap();
        assert_eq!(any_name.get_workers(&url).await.unwrap(), vec![]);

        // The same files with the host name checked: refused, the certificate names node17.
        let read = |f: String| std::fs::read_to_string(tls.join(f)).unwrap();
        let strict = SchedulerApi::with_tls(
            &read(CA_FILE.to_owned()),
            &read(Role::Operator.cert_file()),
            &read(Role::Operator.key_file()),
            timeout,
        )
        .unwrap();
        // (hyper's error does not carry the handshake's reason into the message.)
        assert!(strict.get_workers(&url).await.is_err());

        // Another cluster's certificates: its CA did not sign the scheduler's.
        let other = make(state.path(), "other", &["node17".to_owned()], now).unwrap();
        let foreign = api(&other, Role::Operator, timeout).unwrap();
        assert!(foreign.get_workers(&url).await.is_err());
    }
}
