//! The operator's side of the seam: Dask's scheduler HTTP API (rask's scheduler or a real Dask
//! scheduler with `distributed.http.scheduler.api` enabled), over HTTP, or over HTTPS for a
//! cluster with TLS: the scheduler's certificate must chain to the cluster's CA and name the host
//! asked, and the operator presents its own certificate of that CA (the scheduler's mutating
//! routes admit nothing else).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// A worker as the scheduler knows it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WorkerRef {
    pub name: String,
    pub address: String,
}

/// Why the scheduler could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerApiError {
    #[error("scheduler API at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("scheduler API at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("scheduler API at {url} answered something unexpected: {reason}")]
    Malformed { url: String, reason: String },
}

/// Why a TLS client for a cluster's scheduler could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("the cluster's CA certificate cannot be used: {0}")]
    Ca(String),
    #[error("the operator's certificate or key cannot be used: {0}")]
    Identity(String),
}

/// Asks schedulers things over HTTP, or HTTPS ([`SchedulerApi::with_tls`]). Cheap to clone.
#[derive(Clone)]
pub struct SchedulerApi {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Default for SchedulerApi {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

/// rustls on aws-lc-rs, the workspace's one provider, with its default protocol versions.
fn client_builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports TLS 1.2 and 1.3")
}

type TlsParts = (
    rustls::RootCertStore,
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// The cluster's CA as the only root, and the operator's certificate chain and key.
fn tls_parts(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<TlsParts, ClientTlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientTlsError::Ca(e.to_string()))?;
    if cas.is_empty() {
        return Err(ClientTlsError::Ca("no certificate in it".into()));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| ClientTlsError::Ca(e.to_string()))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientTlsError::Identity(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ClientTlsError::Identity(e.to_string()))?;
    Ok((roots, chain, key))
}

/// Checks the server's chain (signatures, validity, usage) against the cluster's CA but not its
/// name: a name mismatch is only reported after the chain verified.
#[derive(Debug)]
struct AnyNameVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[derive(Deserialize)]
struct GetWorkers {
    workers: Vec<WorkerRef>,
}

#[derive(Deserialize)]
struct Retired {
    name: serde_json::Value,
}

#[derive(Deserialize)]
struct Target {
    workers: i64,
}

#[derive(Deserialize)]
struct Idle {
    idle_since: Option<f64>,
}

impl SchedulerApi {
    /// `timeout` bounds every request (retirement waits for data to move, so allow for it).
    /// Plain HTTP only: an `https://` URL is refused at the handshake (no CA is trusted).
    pub fn new(timeout: Duration) -> Self {
        let tls = client_builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Self::with_config(tls, timeout)
    }

    /// A client for one cluster's scheduler over HTTPS: trusts only the cluster's CA (`ca_pem`)
    /// and presents `cert_pem`/`key_pem`, the operator's certificate of that CA. `http://`
    /// URLs still work with it.
    pub fn with_tls(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        timeout: Duration,
    ) -> Result<SchedulerApi, ClientTlsError> {
        let (roots, chain, key) = tls_parts(ca_pem, cert_pem, key_pem)?;
        let tls = client_builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientTlsError::Identity(e.to_string()))?;
        Ok(Self::with_config(tls, timeout))
    }

    /// As [`SchedulerApi::with_tls`], but the scheduler's certificate need not name the host
    /// asked, only chain to the cluster's CA (what Dask's and rask's own clients check): for a
    /// scheduler on a node nobody knows before its batch job starts. The CA is the cluster's
    /// alone and its key is not kept, so only the cluster's own parties hold its certificates.
    pub fn with_tls_any_name(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        timeout: Duration,
    ) -> Result<SchedulerApi, ClientTlsError> {
        let (roots, chain, key) = tls_parts(ca_pem, cert_pem, key_pem)?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .map_err(|e| ClientTlsError::Ca(e.to_string()))?;
        let tls = client_builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyNameVerifier(inner)))
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientTlsError::Identity(e.to_string()))?;
        Ok(Self::with_config(tls, timeout))
    }

    fn with_config(tls: rustls::ClientConfig, timeout: Duration) -> SchedulerApi {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        SchedulerApi {
            http: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        }
    }

    /// How long each request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn call(
        &self,
        method: http::Method,
        url: String,
        body: Option<String>,
    ) -> Result<Bytes, SchedulerApiError> {
        let unreachable = |reason: String| SchedulerApiError::Unreachable {
            url: url.clone(),
            reason,
        };
        let req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("body not received in time".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(SchedulerApiError::Status {
                url,
                status: status.as_u16(),
                body,
            });
        }
        Ok(body)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        url: &str,
        body: &[u8],
    ) -> Result<T, SchedulerApiError> {
        serde_json::from_slice(body).map_err(|e| SchedulerApiError::Malformed {
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }

    /// `GET /api/v1/get_workers`.
    pub async fn get_workers(&self, base: &str) -> Result<Vec<WorkerRef>, SchedulerApiError> {
        let url = format!("{base}/api/v1/get_workers");
        let body = self.call(http::Method::GET, url.clone(), None).await?;
        Ok(Self::parse::<GetWorkers>(&url, &body)?.workers)
    }

    /// `POST /api/v1/retire_workers` with explicit addresses; returns the names of the workers
    /// the scheduler retired (their data moved to other workers).
    pub async fn retire_workers(
        &self,
        base: &str,
        addresses: &[String],
    ) -> Result<Vec<String>, SchedulerApiError> {
        let url = format!("{base}/api/v1/retire_workers");
        let body = serde_json::json!({ "workers": addresses }).to_string();
        let answer = self
            .call(http::Method::POST, url.clone(), Some(body))
            .await?;
        let retired: std::collections::BTreeMap<String, Retired> = Self::parse(&url, &answer)?;
        Ok(retired
            .into_values()
            .map(|r| match r.name {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect())
    }

    /// Retires workers by name: looks their addresses up, asks the scheduler to retire those it
    /// knows, and returns `(retired, kept)`. Workers the scheduler does not know hold no results
    /// and count as retired; workers it declined to retire (their results had nowhere to go) are
    /// kept. Names the scheduler answers that were not asked for are ignored.
    pub async fn retire_by_name(
        &self,
        base: &str,
        names: &[String],
    ) -> Result<(Vec<String>, Vec<String>), SchedulerApiError> {
        let known: std::collections::BTreeMap<String, String> = self
            .get_workers(base)
            .await?
            .into_iter()
            .map(|w| (w.name, w.address))
            .collect();
        let mut retired: Vec<String> = names
            .iter()
            .filter(|n| !known.contains_key(*n))
            .cloned()
            .collect();
        let addresses: Vec<String> = names.iter().filter_map(|n| known.get(n).cloned()).collect();
        if !addresses.is_empty() {
            let answered = self.retire_workers(base, &addresses).await?;
            retired.extend(answered.into_iter().filter(|n| names.contains(n)));
        }
        let kept = names
            .iter()
            .filter(|n| !retired.contains(n))
            .cloned()
            .collect();
        Ok((retired, kept))
    }

    /// `GET /api/v1/adaptive_target`.
    pub async fn adaptive_target(&self, base: &str) -> Result<i64, SchedulerApiError> {
        let url = format!("{base}/api/v1/adaptive_target");
        let body = self.call(http::Method::GET, url.clone(), None).await?;
        Ok(Self::parse::<Target>(&url, &body)?.workers)
    }

    /// `GET /api/v1/check_idle`: seconds since the epoch since when the scheduler is idle.
    pub async fn idle_since(&self, base: &str) -> Result<Option<f64>, SchedulerApiError> {
        let url = format!("{base}/api/v1/check_idle");
        let body = self.call(http::Method::GET, url.clone(), None).await?;
        Ok(Self::parse::<Idle>(&url, &body)?.idle_since)
    }
}
