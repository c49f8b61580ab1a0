//! Key Vault's secrets, the data plane (`PUT`/`GET {vault}/secrets/{name}`), through Microsoft's
//! `azure_security_keyvault_secrets` client over the operator's transport ([`super::transport`]).
//! Its first request to a vault goes without a token; the vault's 401 challenge names the
//! token's audience (`https://vault.azure.net`), and the client then asks the credential for that
//! scope: the operator's own credential chain on the machine running `up`, the VM's managed
//! identity at boot. Errors name the vault and the secret.
//!
//! The vault itself (ARM: create, delete, purge) is [`super::Azure`]'s. Before deleting a vault
//! the provider deletes and purges its secrets here, so the keys are gone for good even where
//! the vault itself may not be purged (that needs a right on the subscription).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, StatusCode};
use azure_security_keyvault_secrets::models::SetSecretParameters;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use super::PROVIDER;
use super::credential::{chain, message, unreachable};
use crate::providers::ProviderError;

/// One vault's secrets.
pub struct Vault {
    client: SecretClient,
    url: String,
}

/// Whether `url`'s host is this machine (a test's stand-in vault).
fn loopback(url: &azure_core::http::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Vault {
    /// The vault at `url` (`https://NAME.vault.azure.net`), with tokens from `credential`.
    pub fn connect(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        client_options: ClientOptions,
    ) -> Result<Vault, ProviderError> {
        let bad = |why: String| ProviderError::Other(format!("azure: Key Vault {url}: {why}"));
        let parsed = azure_core::http::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let options = SecretClientOptions {
            client_options,
            // The challenge's audience must be the vault's domain (`*.vault.azure.net`), so no
            // other host can ask for a Key Vault token; a stand-in on loopback cannot be under it.
            verify_challenge_resource: Some(!loopback(&parsed)),
            ..SecretClientOptions::default()
        };
        let client =
            SecretClient::new(url, credential, Some(options)).map_err(|e| bad(message(&e)))?;
        Ok(Vault {
            client,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    fn error(&self, action: &str, e: &azure_core::Error) -> ProviderError {
        vault_error(&format!("{action} in Key Vault {}", self.url), &self.url, e)
    }

    /// Stores `value` as secret `name` (a new version if it exists), tagged with `tags`.
    pub async fn set(
        &self,
        name: &str,
        value: &str,
        tags: HashMap<String, String>,
    ) -> Result<(), ProviderError> {
        let params = SetSecretParameters {
            value: Some(value.to_owned()),
            content_type: Some("application/x-pem-file".into()),
            tags: Some(tags),
            ..SetSecretParameters::default()
        };
        let action = format!("set secret {name}");
        let body: RequestContent<SetSecretParameters> =
            params.try_into().map_err(|e| self.error(&action, &e))?;
        self.client
            .set_secret(name, body, None)
            .await
            .map_err(|e| self.error(&action, &e))?;
        Ok(())
    }

    /// Secret `name`'s current value; `None` when the vault has no such secret.
    pub async fn get(&self, name: &str) -> Result<Option<String>, ProviderError> {
        let action = format!("get secret {name}");
        match self.client.get_secret(name, None).await {
            Ok(r) => {
                let secret = r.into_model().map_err(|e| self.error(&action, &e))?;
                Ok(secret.value)
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(self.error(&action, &e)),
        }
    }

    /// Deletes secret `name` and purges it (soft-delete would keep it, and its name, for the
    /// vault's retention period); a secret that is not there counts as done. Key Vault finishes
    /// a delete in the background: the purge is retried on 404 and 409 for up to `wait`.
    pub async fn delete_and_purge(&self, name: &str, wait: Duration) -> Result<(), ProviderError> {
        let existed = match self.client.delete_secret(name, None).await {
            Ok(_) => true,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => false,
            Err(e) => return Err(self.error(&format!("delete secret {name}"), &e)),
        };
        let start = Instant::now();
        loop {
            match self.client.purge_deleted_secret(name, None).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.http_status(),
                        Some(StatusCode::NotFound | StatusCode::Conflict)
                    ) && existed
                        && start.elapsed() < wait =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // Never there, or deleted and purged by someone else.
                Err(e) if e.http_status() == Some(StatusCode::NotFound) && !existed => {
                    return Ok(());
                }
                Err(e) => return Err(self.error(&format!("purge deleted secret {name}"), &e)),
            }
        }
    }

    /// The values of secrets `names`, waiting up to `wait` for those not there yet (`up` stores
    /// the scheduler's once its VM runs). Polls every `poll`.
    pub async fn wait_for(
        &self,
        names: &[String],
        wait: Duration,
        poll: Duration,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let start = Instant::now();
        let mut found: Vec<(String, String)> = Vec::new();
        loop {
            let mut missing = Vec::new();
            for n in names {
                if found.iter().any(|(f, _)| f == n) {
                    continue;
                }
                match self.get(n).await? {
                    Some(v) => found.push((n.clone(), v)),
                    None => missing.push(n.clone()),
                }
            }
            if missing.is_empty() {
                return Ok(names
                    .iter()
                    .filter_map(|n| found.iter().find(|(f, _)| f == n).cloned())
                    .collect());
            }
            if wait.is_zero() {
                return Err(ProviderError::Other(format!(
                    "Key Vault {} has no secrets {}: is the cluster up, with TLS?",
                    self.url,
                    missing.join(", ")
                )));
            }
            if start.elapsed() >= wait {
                return Err(ProviderError::Timeout {
                    what: format!(
                        "secrets {} appearing in Key Vault {}",
                        missing.join(", "),
                        self.url
                    ),
                    after: wait,
                    boot_log: None,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// An error of the vault's (or of the token for it), with what was asked and where.
fn vault_error(action: &str, endpoint: &str, e: &azure_core::Error) -> ProviderError {
    if let Some(unreachable) = unreachable(action, endpoint, e) {
        return unreachable;
    }
    let causes = chain(e);
    let reason = message(e);
    let http = causes.iter().find_map(|a| match a.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => Some((*status, error_code.clone())),
        _ => None,
    });
    match http {
        Some((status, code)) => {
            let code = code.unwrap_or_else(|| format!("HTTP {}", u16::from(status)));
            if matches!(status, StatusCode::Unauthorized | StatusCode::Forbidden) {
                ProviderError::Unauthorized {
                    provider: PROVIDER,
                    action: action.to_owned(),
                    code,
                    message: reason,
                }
            } else if status == StatusCode::TooManyRequests {
                ProviderError::Throttled {
                    provider: PROVIDER,
                    action: action.to_owned(),
                    code,
                    message: reason,
                }
            } else {
                ProviderError::Api {
                    provider: PROVIDER,
                    action: action.to_owned(),
                    code,
                    message: reason,
                }
            }
        }
        None if causes
            .iter()
            .any(|a| matches!(a.kind(), ErrorKind::Credential)) =>
        {
            ProviderError::Unauthorized {
                provider: PROVIDER,
                action: action.to_owned(),
                code: "CredentialUnavailable".into(),
                message: reason,
            }
        }
        None => ProviderError::Api {
            provider: PROVIDER,
            action: action.to_owned(),
            code: "Error".into(),
            message: reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_vault_and_the_secret() {
        let e = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::Forbidden,
                error_code: Some("Forbidden".into()),
                raw_response: None,
            },
            "The user, group or application does not have secrets set permission",
        );
        let e = vault_error(
            "set secret ca-pem in Key Vault https://v.vault.azure.net",
            "https://v.vault.azure.net",
            &e,
        );
        assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("set secret ca-pem in Key Vault https://v.vault.azure.net: not authorized (Forbidden)"),
            "{text}"
        );
        let io = azure_core::Error::with_message(ErrorKind::Connection, "connection refused");
        let e = vault_error("get secret x in Key Vault u", "u", &io);
        assert!(matches!(e, ProviderError::Unreachable { .. }), "{e:?}");
    }

    #[test]
    fn only_a_loopback_vault_skips_the_challenge_check() {
        let u = |s: &str| azure_core::http::Url::parse(s).unwrap();
        assert!(loopback(&u("http://127.0.0.1:8080/vaults/x")));
        assert!(loopback(&u("http://localhost:1/")));
        assert!(!loopback(&u("https://rask-x.vault.azure.net")));
    }
}
