//! The Azure Resource Manager client: one authenticated request with retries on 429/503 after
//! `Retry-After`, reads, and long-running operations followed through `Azure-AsyncOperation`,
//! `Location` or the resource's `provisioningState`, each with a timeout. It knows nothing of
//! VMs or clusters: the provider ([`super`]) builds the resource ids and bodies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde_json::Value;

use super::credential::Credentials;
use super::transport::{self, Https};
use super::{AzureOptions, PROVIDER};
use crate::providers::ProviderError;
use crate::providers::config::vm::AzureCredentials;

/// Answers of 429/503 retried before giving up.
const RETRIES: u32 = 4;
const ARM: &str = "https://management.azure.com";

/// An ARM endpoint with its credentials.
pub struct Arm {
    http: Client<Https, Full<Bytes>>,
    base: String,
    opts: AzureOptions,
    credentials: Arc<Credentials>,
    token: Mutex<Option<(String, Instant)>>,
    poll: Duration,
}

/// One HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub fn arm_error(action: &str, status: u16, body: &Value, text: &str) -> ProviderError {
    let err = body.get("error").unwrap_or(body);
    let code = err
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or(if status == 0 { "Unknown" } else { "HttpError" })
        .to_owned();
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )
        });
    let action = action.to_owned();
    match code.as_str() {
        "TooManyRequests" | "ThrottlingException" | "SubscriptionRequestsThrottled" => {
            ProviderError::Throttled {
                provider: PROVIDER,
                action,
                code,
                message,
            }
        }
        "SkuNotAvailable"
        | "AllocationFailed"
        | "ZonalAllocationFailed"
        | "OverconstrainedAllocationRequest"
        | "OverconstrainedZonalAllocationRequest"
        | "QuotaExceeded"
        | "OperationNotAllowed" => ProviderError::Capacity {
            provider: PROVIDER,
            action,
            what: String::new(),
            code,
            message,
        },
        "AuthorizationFailed"
        | "InvalidAuthenticationToken"
        | "AuthenticationFailed"
        | "ExpiredAuthenticationToken" => ProviderError::Unauthorized {
            provider: PROVIDER,
            action,
            code,
            message,
        },
        _ => ProviderError::Api {
            provider: PROVIDER,
            action,
            code,
            message,
        },
    }
}

/// The `tid` and `oid` claims of a JWT (not verified: it is our own token, read for its names).
fn claims(token: &str) -> Option<(String, String)> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        v.get("tid")?.as_str()?.to_owned(),
        v.get("oid")?.as_str()?.to_owned(),
    ))
}

fn retry_after(headers: &http::HeaderMap, default: Duration) -> Duration {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
        .unwrap_or(default)
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Arm {
    pub fn connect(
        opts: &AzureOptions,
        credentials: &AzureCredentials,
    ) -> Result<Arm, ProviderError> {
        let http = transport::client(&opts.root_certificates, Duration::from_secs(20))?;
        Ok(Arm {
            credentials: Arc::new(Credentials::new(
                credentials,
                http.clone(),
                opts.identity.clone(),
            )?),
            http,
            base: opts
                .endpoint
                .clone()
                .unwrap_or_else(|| ARM.into())
                .trim_end_matches('/')
                .to_owned(),
            poll: opts.poll.unwrap_or(Duration::from_secs(2)),
            opts: opts.clone(),
            token: Mutex::new(None),
        })
    }

    /// ARM's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Between polls when ARM gives no `Retry-After`.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// Tokens for other Azure services (Key Vault) from the same credential, or the fixed token.
    pub fn token_credential(&self) -> Arc<dyn azure_core::credentials::TokenCredential> {
        Arc::new(super::credential::Scoped::new(
            self.credentials.clone(),
            self.opts.token.clone(),
        ))
    }

    /// `azure_core`'s options over the operator's transport, for other Azure clients.
    pub fn client_options(&self) -> azure_core::http::ClientOptions {
        self.credentials.client_options()
    }

    /// Who the ARM token is for: its tenant and object id (the `tid` and `oid` claims), what a
    /// Key Vault access policy names.
    pub async fn principal(&self) -> Result<(String, String), ProviderError> {
        let token = self.token().await?;
        claims(&token).ok_or_else(|| {
            ProviderError::Other(
                "azure: the ARM token carries no tenant and object id (tid, oid claims) to give \
                 access to the cluster's Key Vault"
                    .into(),
            )
        })
    }

    pub fn url(&self, id: &str, api: &str) -> String {
        format!("{}{id}?api-version={api}", self.base)
    }

    async fn token(&self) -> Result<String, ProviderError> {
        if let Some(t) = &self.opts.token {
            return Ok(t.clone());
        }
        if let Some((t, until)) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && Instant::now() < until
        {
            return Ok(t);
        }
        let (token, lifetime) = self.credentials.token().await?;
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(300));
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), until));
        Ok(token)
    }

    /// One request, retried on 429/503 after `Retry-After`.
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        body: Option<&Value>,
        action: &str,
        auth: bool,
    ) -> Result<Answer, ProviderError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .header("content-type", "application/json");
            if auth {
                req = req.header("authorization", format!("Bearer {}", self.token().await?));
            }
            let payload = body.map(Value::to_string).unwrap_or_default();
            let req = req
                .body(Full::new(Bytes::from(payload)))
                .map_err(|e| ProviderError::Other(format!("{action}: bad request: {e}")))?;
            let unreachable = |reason: String| ProviderError::Unreachable {
                provider: PROVIDER,
                action: action.to_owned(),
                endpoint: self.base.clone(),
                reason,
            };
            let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
                .await
                .map_err(|_| unreachable("no answer within 60s".into()))?
                .map_err(|e| {
                    tracing::debug!(action, error = ?e, "ARM request failed before ARM answered");
                    unreachable(crate::providers::error::summary(&e))
                })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
                .await
                .map_err(|_| unreachable("body not received in time".into()))?
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if (status == 429 || status == 503) && attempt <= RETRIES {
                tokio::time::sleep(retry_after(&headers, self.poll)).await;
                continue;
            }
            if status == 429 {
                let mut e = arm_error(action, status, &body, &text);
                if !matches!(e, ProviderError::Throttled { .. }) {
                    e = ProviderError::Throttled {
                        provider: PROVIDER,
                        action: action.to_owned(),
                        code: "TooManyRequests".into(),
                        message: text.chars().take(300).collect(),
                    };
                }
                return Err(e);
            }
            return Ok(Answer {
                status,
                headers,
                body,
                text,
            });
        }
    }

    pub async fn get(
        &self,
        id: &str,
        api: &str,
        action: &str,
    ) -> Result<Option<Value>, ProviderError> {
        let a = self
            .send(http::Method::GET, &self.url(id, api), None, action, true)
            .await?;
        match a.status {
            200 => Ok(Some(a.body)),
            404 => Ok(None),
            s => Err(arm_error(action, s, &a.body, &a.text)),
        }
    }

    pub async fn follow(
        &self,
        first: Answer,
        resource_url: &str,
        action: &str,
        timeout: Duration,
        deleting: bool,
    ) -> Result<(), ProviderError> {
        let start = Instant::now();
        let timed_out = || ProviderError::Timeout {
            what: format!("{action} finishing"),
            after: timeout,
            boot_log: None,
        };
        if let Some(op) = header(&first.headers, "azure-asyncoperation") {
            let mut wait = retry_after(&first.headers, self.poll);
            loop {
                if start.elapsed() > timeout {
                    return Err(timed_out());
                }
                tokio::time::sleep(wait).await;
                let a = self
                    .send(http::Method::GET, &op, None, action, true)
                    .await?;
                if a.status != 200 {
                    return Err(arm_error(action, a.status, &a.body, &a.text));
                }
                match a.body.get("status").and_then(Value::as_str) {
                    Some("Succeeded") => return Ok(()),
                    Some("Failed" | "Canceled") => {
                        return Err(arm_error(action, a.status, &a.body, &a.text));
                    }
                    _ => wait = retry_after(&a.headers, self.poll),
                }
            }
        }
        if first.status == 202
            && let Some(loc) = header(&first.headers, "location")
        {
            let mut wait = retry_after(&first.headers, self.poll);
            loop {
                if start.elapsed() > timeout {
                    return Err(timed_out());
                }
                tokio::time::sleep(wait).await;
                let a = self
                    .send(http::Method::GET, &loc, None, action, true)
                    .await?;
                match a.status {
                    202 => wait = retry_after(&a.headers, self.poll),
                    200..=299 => return Ok(()),
                    404 if deleting => return Ok(()),
                    s => return Err(arm_error(action, s, &a.body, &a.text)),
                }
            }
        }
        // No operation to follow: watch the resource itself.
        loop {
            let a = self
                .send(http::Method::GET, resource_url, None, action, true)
                .await?;
            match (a.status, deleting) {
                (404, true) => return Ok(()),
                (200, false) => match a.body["properties"]["provisioningState"].as_str() {
                    Some("Succeeded") | None => return Ok(()),
                    Some("Failed" | "Canceled") => {
                        return Err(ProviderError::Api {
                            provider: PROVIDER,
                            action: action.to_owned(),
                            code: "ProvisioningFailed".into(),
                            message: format!(
                                "provisioningState is {}",
                                a.body["properties"]["provisioningState"]
                            ),
                        });
                    }
                    _ => {}
                },
                (200, true) => {}
                (s, _) => return Err(arm_error(action, s, &a.body, &a.text)),
            }
            if start.elapsed() > timeout {
                return Err(timed_out());
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_token_names_its_tenant_and_object() {
        use base64::Engine;
        let enc = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let jwt = format!(
            "{}.{}.sig",
            enc(&json!({"alg": "RS256"})),
            enc(&json!({"tid": "t-1", "oid": "o-2", "aud": "https://management.azure.com"}))
        );
        assert_eq!(claims(&jwt), Some(("t-1".into(), "o-2".into())));
        assert_eq!(claims("opaque"), None);
        assert_eq!(claims("a.%%%.c"), None);
    }

    #[test]
    fn arm_error_codes_become_clear_errors() {
        let body = json!({"error": {"code": "SkuNotAvailable", "message": "Standard_X is not available in westeurope"}});
        let e = arm_error("create virtual-machine w", 409, &body, "");
        assert!(matches!(e, ProviderError::Capacity { .. }), "{e}");
        let e = arm_error(
            "list",
            403,
            &json!({"error": {"code": "AuthorizationFailed", "message": "no"}}),
            "",
        );
        assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e}");
        let e = arm_error("x", 500, &Value::Null, "<html>oops</html>");
        assert!(e.to_string().contains("HTTP 500: <html>oops</html>"), "{e}");
    }
}
