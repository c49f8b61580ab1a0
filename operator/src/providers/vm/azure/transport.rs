//! The operator's one HTTP client for Azure: hyper over rustls with the system's root certificates
//! (plus any the caller trusts besides, see [`super::AzureOptions::root_certificates`]). ARM
//! requests ([`super::arm`]) use it directly; `azure_identity`'s credentials use it through
//! [`Transport`], its `HttpClient`, so no second HTTP stack (reqwest, OpenSSL) is built in.

use std::sync::Arc;
use std::time::Duration;

use azure_core::error::{Error, ErrorKind};
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, Url};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::providers::ProviderError;

pub type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The default origin of Azure's instance metadata service.
pub const IMDS: &str = "http://169.254.169.254";

/// An HTTP(S) client trusting the system's roots and `extra` (DER certificates), connecting
/// within `connect_timeout`.
pub fn client(
    extra: &[Vec<u8>],
    connect_timeout: Duration,
) -> Result<Client<Https, Full<Bytes>>, ProviderError> {
    let mut roots = rustls::RootCertStore::empty();
    // SSL_CERT_FILE / SSL_CERT_DIR replace the system's store, as for kube and the AWS SDK.
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be loaded");
    }
    let (_added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "system root certificates rustls cannot use");
    }
    for (i, der) in extra.iter().enumerate() {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| {
                ProviderError::Other(format!(
                    "azure: trusted certificate #{} is not a usable root: {e}",
                    i + 1
                ))
            })?;
    }
    if roots.is_empty() {
        return Err(ProviderError::Other(
            "azure: no root certificates found (the system's store is empty or unreadable; \
             set SSL_CERT_FILE to a PEM bundle)"
                .into(),
        ));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ProviderError::Other(format!("azure: TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// `azure_identity`'s requests over [`client`]. With `imds`, requests to Azure's instance
/// metadata service ([`IMDS`]) go to that origin instead (a managed identity's endpoint is not
/// configurable in `azure_identity`).
#[derive(Clone)]
pub struct Transport {
    http: Client<Https, Full<Bytes>>,
    imds: Option<Url>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("imds", &self.imds.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

/// No answer within this long is a transport error (retried by the credential's policy).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

impl Transport {
    pub fn new(http: Client<Https, Full<Bytes>>, imds: Option<&str>) -> Result<Self, String> {
        let imds = imds
            .map(|u| Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}")))
            .transpose()?;
        Ok(Transport { http, imds })
    }

    /// Where a request is sent: its URL, or the configured metadata service's for [`IMDS`]'s.
    fn target(&self, url: &Url) -> Url {
        let Some(base) = &self.imds else {
            return url.clone();
        };
        if url.origin().ascii_serialization() != IMDS {
            return url.clone();
        }
        let mut to = base.clone();
        let prefix = base.path().trim_end_matches('/');
        to.set_path(&format!("{prefix}{}", url.path()));
        to.set_query(url.query());
        to
    }
}

fn method(m: azure_core::http::Method) -> Result<http::Method, Error> {
    http::Method::from_bytes(m.as_str().as_bytes())
        .map_err(|e| Error::with_error(ErrorKind::Other, e, "unsupported HTTP method"))
}

async fn body_bytes(body: &Body) -> Result<Bytes, Error> {
    match body.clone() {
        Body::Bytes(b) => Ok(b),
        Body::SeekableStream(mut s) => {
            let mut out = BytesMut::new();
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out.freeze())
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Transport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let url = self.target(request.url());
        let mut req = http::Request::builder()
            .method(method(request.method())?)
            .uri(url.as_str());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Full::new(body_bytes(request.body()).await?))
            .map_err(|e| Error::with_error(ErrorKind::Other, e, "cannot build the request"))?;
        // Only scheme, host and path: the query may name an identity, and bodies hold secrets.
        let shown = format!(
            "{}{}",
            url.origin().ascii_serialization(),
            url.path().trim_end_matches('/')
        );
        tracing::debug!(method = %request.method(), url = %shown, "azure credential request");
        let resp = tokio::time::timeout(ANSWER_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| {
                Error::with_message(
                    ErrorKind::Io,
                    format!("{shown}: no answer within {ANSWER_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    ErrorKind::Connection
                } else {
                    ErrorKind::Io
                };
                let why = crate::providers::error::summary(&e);
                Error::with_message(kind, format!("{shown}: {why}"))
            })?;
        let status = resp.status().as_u16();
        let mut headers = Headers::new();
        for (k, v) in resp.headers() {
            if let Ok(v) = v.to_str() {
                headers.insert(
                    HeaderName::from(k.as_str().to_owned()),
                    HeaderValue::from(v.to_owned()),
                );
            }
        }
        let bytes = tokio::time::timeout(ANSWER_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| {
                Error::with_message(ErrorKind::Io, format!("{shown}: body not received in time"))
            })?
            .map_err(|e| Error::with_message(ErrorKind::Io, format!("{shown}: {e}")))?
            .to_bytes();
        Ok(AsyncRawResponse::from_bytes(status.into(), headers, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(imds: Option<&str>) -> Transport {
        let http = Client::builder(TokioExecutor::new()).build(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .build(),
        );
        Transport::new(http, imds).unwrap()
    }

    #[test]
    fn only_metadata_requests_go_to_the_configured_metadata_service() {
        let t = transport(Some("http://127.0.0.1:9999/imds/"));
        let mi = Url::parse(
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01",
        )
        .unwrap();
        assert_eq!(
            t.target(&mi).as_str(),
            "http://127.0.0.1:9999/imds/metadata/identity/oauth2/token?api-version=2019-08-01"
        );
        let login = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        assert_eq!(t.target(&login), login);
        assert_eq!(transport(None).target(&mi), mi);
    }

    #[test]
    fn a_bad_metadata_url_is_refused() {
        let http = transport(None).http;
        let e = Transport::new(http, Some("not a url")).unwrap_err();
        assert!(e.contains("not a URL"), "{e}");
    }
}
