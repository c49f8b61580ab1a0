//! rask-operator's ARM token, from `azure_identity`'s credentials over the operator's own HTTP
//! client ([`super::transport`]): a service principal's client secret
//! (`ClientSecretCredential`), the Azure CLI's login (`AzureCliCredential`) or the VM's managed
//! identity (`ManagedIdentityCredential`, what the autoscaler on the scheduler VM uses).
//! `azure.credential` picks one; `auto` takes the first available in that order. Errors name the
//! credential (and for a service principal its client id and tenant) but never a secret.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, Executor, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;

use super::PROVIDER;
use super::transport::{self, Https, Transport};
use crate::providers::ProviderError;
use crate::providers::config::vm::{
    AzureCredentialKind, AzureCredentials, LOGIN_ENDPOINT, SecretSource,
};

/// The token's audience: Azure Resource Manager.
const SCOPE: &str = "https://management.azure.com/.default";

/// How long `az account get-access-token` may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// One of the credentials, built, with what a person needs to know of it for errors.
struct Chosen {
    credential: Arc<dyn TokenCredential>,
    /// `get a token as service principal ... in tenant ...`.
    action: String,
    /// The endpoint it talks to (the CLI's binary for the CLI).
    endpoint: String,
}

/// Gets ARM tokens with the configured credential; once one worked, `auto` keeps it.
pub struct Credentials {
    settings: AzureCredentials,
    http: Client<Https, Full<Bytes>>,
    transport: Arc<Transport>,
    /// The user-assigned identity (resource id) to ask the metadata service for, if not the
    /// VM's only one.
    identity: Option<String>,
    chosen: tokio::sync::Mutex<Option<Arc<Chosen>>>,
}

impl Credentials {
    pub fn new(
        settings: &AzureCredentials,
        http: Client<Https, Full<Bytes>>,
        identity: Option<String>,
    ) -> Result<Credentials, ProviderError> {
        let transport =
            Transport::new(http.clone(), settings.imds_endpoint.as_deref()).map_err(|e| {
                ProviderError::Config {
                    file: String::new(),
                    key: "azure.imds_endpoint".into(),
                    message: e,
                }
            })?;
        Ok(Credentials {
            settings: settings.clone(),
            http,
            transport: Arc::new(transport),
            identity,
            chosen: tokio::sync::Mutex::new(None),
        })
    }

    /// A bearer token for ARM and how long it is valid.
    pub async fn token(&self) -> Result<(String, Duration), ProviderError> {
        self.token_for(SCOPE).await
    }

    /// A bearer token for `scope` (ARM's, Key Vault's) and how long it is valid.
    pub async fn token_for(&self, scope: &str) -> Result<(String, Duration), ProviderError> {
        let mut chosen = self.chosen.lock().await;
        if let Some(c) = chosen.clone() {
            return get(&c, scope).await;
        }
        let mut tried = Vec::new();
        let kind = self.settings.kind;
        let auto = kind == AzureCredentialKind::Auto;
        if auto || kind == AzureCredentialKind::ServicePrincipal {
            match self.service_principal() {
                // A service principal that is there is the one meant: its errors are final.
                Ok(c) => {
                    let c = Arc::new(c);
                    let t = get(&c, scope).await?;
                    *chosen = Some(c);
                    return Ok(t);
                }
                Err(why) => tried.push(format!("a service principal ({why})")),
            }
        }
        if auto || kind == AzureCredentialKind::AzureCli {
            let c = Arc::new(self.azure_cli()?);
            match get(&c, scope).await {
                Ok(t) => {
                    *chosen = Some(c);
                    return Ok(t);
                }
                Err(e) if auto => {
                    tracing::debug!(error = %e, "no token from the Azure CLI");
                    tried.push(format!(
                        "the Azure CLI ({}: {})",
                        self.settings.az_path,
                        why(&e)
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        if auto || kind == AzureCredentialKind::ManagedIdentity {
            let endpoint = self.imds();
            match self.probe_imds().await {
                Ok(()) => {
                    let c = Arc::new(self.managed_identity()?);
                    let t = get(&c, scope).await?;
                    *chosen = Some(c);
                    return Ok(t);
                }
                Err(reason) if auto => tried.push(format!(
                    "a managed identity (instance metadata at {endpoint}: {reason})"
                )),
                Err(reason) => {
                    return Err(ProviderError::Unreachable {
                        provider: PROVIDER,
                        action: "get a token for the managed identity".into(),
                        endpoint,
                        reason: format!("{reason} (is this an Azure VM?)"),
                    });
                }
            }
        }
        Err(ProviderError::NoCredentials {
            provider: PROVIDER,
            tried,
            hint: match kind {
                AzureCredentialKind::ServicePrincipal => {
                    "give azure.service_principal's tenant_id, client_id and client_secret_file \
                     (or client_secret_env), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and \
                     AZURE_CLIENT_SECRET"
                }
                _ => {
                    "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or \
                     azure.service_principal) for a service principal, or run `az login`; on an \
                     Azure VM give it a managed identity"
                }
            }
            .into(),
        })
    }

    fn imds(&self) -> String {
        self.settings
            .imds_endpoint
            .clone()
            .unwrap_or_else(|| transport::IMDS.into())
    }

    /// `azure_core`'s options over the operator's transport, for credentials and other clients
    /// (Key Vault's).
    pub fn client_options(&self) -> ClientOptions {
        client_options(&self.transport, &self.settings.login_endpoint)
    }

    /// The configured service principal (or the one `AZURE_*` names), or why there is none.
    fn service_principal(&self) -> Result<Chosen, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let (tenant, client, secret) = match &self.settings.service_principal {
            Some(sp) => {
                let tenant = sp.tenant_id.clone().or_else(|| env("AZURE_TENANT_ID")).ok_or(
                    "azure.service_principal.tenant_id is not given and AZURE_TENANT_ID is not set",
                )?;
                let client = sp.client_id.clone().or_else(|| env("AZURE_CLIENT_ID")).ok_or(
                    "azure.service_principal.client_id is not given and AZURE_CLIENT_ID is not set",
                )?;
                let secret = match &sp.secret {
                    SecretSource::File(path) => std::fs::read_to_string(path)
                        .map_err(|e| {
                            format!(
                                "cannot read azure.service_principal.client_secret_file {}: {e}",
                                path.display()
                            )
                        })?
                        .trim()
                        .to_owned(),
                    SecretSource::Env(var) => {
                        env(var).ok_or_else(|| format!("{var} (the client secret) is not set"))?
                    }
                };
                if secret.is_empty() {
                    return Err("the client secret is empty".into());
                }
                (tenant, client, secret)
            }
            None => {
                let vars = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"];
                match vars.map(env) {
                    [Some(t), Some(c), Some(s)] => (t, c, s),
                    _ => {
                        let unset: Vec<&str> =
                            vars.into_iter().filter(|k| env(k).is_none()).collect();
                        return Err(format!(
                            "azure.service_principal is not given and {} not set",
                            unset.join(", ")
                        ));
                    }
                }
            }
        };
        let action = format!("get a token as service principal {client} in tenant {tenant}");
        let credential = ClientSecretCredential::new(
            &tenant,
            client.clone(),
            Secret::new(secret),
            Some(ClientSecretCredentialOptions {
                client_options: self.client_options(),
            }),
        )
        .map_err(|e| format!("{action}: {}", message(&e)))?;
        Ok(Chosen {
            credential,
            action,
            endpoint: self.settings.login_endpoint.clone(),
        })
    }

    fn azure_cli(&self) -> Result<Chosen, ProviderError> {
        let action = format!("get a token from the Azure CLI ({})", self.settings.az_path);
        let credential = AzureCliCredential::new(Some(AzureCliCredentialOptions {
            executor: Some(Arc::new(AzCli {
                path: self.settings.az_path.clone(),
            })),
            ..AzureCliCredentialOptions::default()
        }))
        .map_err(|e| ProviderError::Other(format!("azure {action}: {}", message(&e))))?;
        Ok(Chosen {
            credential,
            action,
            endpoint: self.settings.az_path.clone(),
        })
    }

    fn managed_identity(&self) -> Result<Chosen, ProviderError> {
        let endpoint = self.imds();
        let action = "get a token for the managed identity".to_owned();
        let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: self.identity.clone().map(UserAssignedId::ResourceId),
            client_options: self.client_options(),
        }))
        .map_err(|e| ProviderError::Other(format!("azure {action}: {}", message(&e))))?;
        Ok(Chosen {
            credential,
            action,
            endpoint,
        })
    }

    /// Whether an instance metadata service answers at all, quickly: off Azure nothing does,
    /// and the managed identity's own retries would take over a minute to say so.
    async fn probe_imds(&self) -> Result<(), String> {
        let url = format!("{}/metadata/identity/oauth2/token", self.imds());
        let req = http::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("bad URL {url}: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(5), self.http.request(req)).await {
            Err(_) => Err("no answer within 5s".into()),
            Ok(Err(e)) => Err(crate::providers::error::summary(&e)),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// `azure_core`'s options: `transport`, Entra at `login`, and a few quick retries, so an endpoint
/// that does not answer is reported in seconds.
pub(super) fn client_options(transport: &Arc<Transport>, login: &str) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = login.to_owned();
    ClientOptions {
        transport: Some(azure_core::http::Transport::new(transport.clone())),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(500),
            max_retries: 3,
            max_total_elapsed: azure_core::time::Duration::seconds(30),
            max_delay: azure_core::time::Duration::seconds(5),
        }),
        ..ClientOptions::default()
    }
}

/// The VM's user-assigned managed identity `identity` (a resource id), from the instance metadata
/// service `transport` sends to: what a VM reads its cluster's Key Vault with.
pub fn vm_identity(
    identity: &str,
    transport: &Arc<Transport>,
) -> Result<Arc<dyn TokenCredential>, ProviderError> {
    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ResourceId(identity.to_owned())),
        client_options: client_options(transport, LOGIN_ENDPOINT),
    }))
    .map(|c| c as Arc<dyn TokenCredential>)
    .map_err(|e| {
        ProviderError::Other(format!(
            "azure: managed identity {identity}: {}",
            message(&e)
        ))
    })
}

/// Tokens for any scope from [`Credentials`] (or one fixed token), as `azure_core` clients ask
/// for them: Key Vault's client asks for the scope its vault's challenge names.
#[derive(Clone)]
pub struct Scoped {
    credentials: Arc<Credentials>,
    fixed: Option<String>,
}

impl std::fmt::Debug for Scoped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped").finish_non_exhaustive()
    }
}

impl Scoped {
    pub fn new(credentials: Arc<Credentials>, fixed: Option<String>) -> Scoped {
        Scoped { credentials, fixed }
    }
}

#[async_trait::async_trait]
impl TokenCredential for Scoped {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let now = azure_core::time::OffsetDateTime::now_utc();
        if let Some(t) = &self.fixed {
            return Ok(azure_core::credentials::AccessToken::new(
                t.clone(),
                now + azure_core::time::Duration::hours(1),
            ));
        }
        let scope = scopes.first().copied().unwrap_or(SCOPE);
        let (token, left) = self.credentials.token_for(scope).await.map_err(|e| {
            let kind = match e {
                ProviderError::Unreachable { .. } => ErrorKind::Connection,
                _ => ErrorKind::Credential,
            };
            azure_core::Error::with_message(kind, e.to_string())
        })?;
        let left = azure_core::time::Duration::seconds(i64::try_from(left.as_secs()).unwrap_or(0));
        Ok(azure_core::credentials::AccessToken::new(token, now + left))
    }
}

/// One token from a credential, its error made readable.
async fn get(c: &Chosen, scope: &str) -> Result<(String, Duration), ProviderError> {
    match c.credential.get_token(&[scope], None).await {
        Ok(t) => {
            let left = (t.expires_on - azure_core::time::OffsetDateTime::now_utc())
                .whole_seconds()
                .max(0);
            Ok((
                t.token.secret().to_owned(),
                Duration::from_secs(left.unsigned_abs()),
            ))
        }
        Err(e) => {
            tracing::debug!(action = %c.action, error = ?e, "azure credential failed");
            Err(classify(&c.action, &c.endpoint, &e))
        }
    }
}

/// The error's causes, outermost first.
pub(super) fn chain(e: &azure_core::Error) -> Vec<&azure_core::Error> {
    let mut out = vec![e];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = cur {
        if let Some(a) = s.downcast_ref::<azure_core::Error>() {
            out.push(a);
        }
        cur = s.source();
    }
    out
}

/// The innermost cause's message, its first line: the service's or the tool's own words,
/// without `azure_identity`'s wrapping ("... authentication failed", a troubleshooting link).
pub(super) fn message(e: &azure_core::Error) -> String {
    chain(e)
        .iter()
        .rev()
        .map(|a| a.to_string())
        .map(|m| {
            m.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .find(|m| !m.is_empty())
        .unwrap_or_else(|| "failed".into())
}

/// `Unreachable` when `e` (or one of its causes) is a failed connection or I/O.
pub(super) fn unreachable(
    action: &str,
    endpoint: &str,
    e: &azure_core::Error,
) -> Option<ProviderError> {
    chain(e)
        .iter()
        .any(|a| matches!(a.kind(), ErrorKind::Io | ErrorKind::Connection))
        .then(|| ProviderError::Unreachable {
            provider: PROVIDER,
            action: action.to_owned(),
            endpoint: endpoint.to_owned(),
            reason: message(e),
        })
}

fn classify(action: &str, endpoint: &str, e: &azure_core::Error) -> ProviderError {
    if let Some(unreachable) = unreachable(action, endpoint, e) {
        return unreachable;
    }
    let causes = chain(e);
    let reason = message(e);
    let code = causes
        .iter()
        .find_map(|a| match a.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => Some(match error_code {
                // Entra's numeric codes are shown as AADSTS<n>, as in its messages.
                Some(c) if c.chars().all(|ch| ch.is_ascii_digit() || ch == ',') => {
                    format!("AADSTS{c}")
                }
                Some(c) => c.clone(),
                None => format!("HTTP {}", u16::from(*status)),
            }),
            _ => None,
        })
        .unwrap_or_else(|| "CredentialUnavailable".into());
    ProviderError::Unauthorized {
        provider: PROVIDER,
        action: action.to_owned(),
        code,
        message: reason,
    }
}

/// Why a credential gave no token, for the list of what `auto` tried.
fn why(e: &ProviderError) -> String {
    match e {
        ProviderError::Unauthorized { message, .. } => message.clone(),
        ProviderError::Unreachable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Runs the Azure CLI for `AzureCliCredential` as `path` rather than `az` from `PATH`.
/// `azure_identity` runs `/bin/sh -c "cd /bin && az account get-access-token ..."`; the `az` there
/// becomes `path`, quoted for the shell.
#[derive(Debug)]
struct AzCli {
    path: String,
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl AzCli {
    fn command(&self, args: &[&OsStr]) -> std::io::Result<Vec<OsString>> {
        let mut out: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        let Some(last) = out.last_mut() else {
            return Err(std::io::Error::other("no Azure CLI command to run"));
        };
        let text = last.to_string_lossy().into_owned();
        let Some((before, after)) = text.split_once("&& az ") else {
            return Err(std::io::Error::other(format!(
                "unexpected Azure CLI command from azure_identity: {text}"
            )));
        };
        *last = OsString::from(format!("{before}&& {} {after}", shell_quote(&self.path)));
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Executor for AzCli {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<std::process::Output> {
        let args = self.command(args)?;
        let run = tokio::process::Command::new(program)
            .args(&args)
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(CLI_TIMEOUT, run).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} gave no token within {CLI_TIMEOUT:?}", self.path),
            )
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_command_runs_the_configured_binary() {
        let cli = AzCli {
            path: "/opt/my az/az".into(),
        };
        let args = [
            OsStr::new("-c"),
            OsStr::new("cd /bin && az account get-access-token -o json --scope x/.default"),
        ];
        let out = cli.command(&args).unwrap();
        assert_eq!(out[0], "-c");
        assert_eq!(
            out[1],
            "cd /bin && '/opt/my az/az' account get-access-token -o json --scope x/.default"
        );
        let e = cli
            .command(&[OsStr::new("-c"), OsStr::new("azd auth token")])
            .unwrap_err();
        assert!(
            e.to_string().contains("unexpected Azure CLI command"),
            "{e}"
        );
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn entra_errors_name_the_action_and_code_and_transport_errors_the_endpoint() {
        let inner = azure_core::Error::new(
            ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::Unauthorized,
                error_code: Some("7000215".into()),
                raw_response: None,
            },
            "AADSTS7000215: Invalid client secret provided.",
        );
        let outer = azure_core::Error::with_error(
            ErrorKind::Credential,
            inner,
            "ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret \
             provided.\nTo troubleshoot, visit https://aka.ms/x",
        );
        let e = classify(
            "get a token as service principal c in tenant t",
            "https://l",
            &outer,
        );
        let ProviderError::Unauthorized { code, message, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(code, "AADSTS7000215");
        assert_eq!(message, "AADSTS7000215: Invalid client secret provided.");
        assert!(e.to_string().contains("in tenant t"), "{e}");

        let io = azure_core::Error::with_message(
            ErrorKind::Connection,
            "https://l/t/oauth2/v2.0/token: connection refused",
        );
        let outer = azure_core::Error::with_error(ErrorKind::Credential, io, "wrapped");
        let e = classify("get a token", "https://l", &outer);
        assert!(matches!(e, ProviderError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("connection refused"), "{e}");
    }
}
