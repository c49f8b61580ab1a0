//! A bearer token for ARM: client credentials from the environment, else the Azure CLI's, else
//! the VM's managed identity (what the autoscaler on the scheduler VM uses).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::PROVIDER;
use crate::providers::ProviderError;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A token for ARM: client credentials from the environment, else the Azure CLI's, else the
/// VM's managed identity (what the autoscaler on the scheduler VM uses).
pub async fn fetch() -> Result<(String, Duration), ProviderError> {
    let fail = |how: &str, e: String| ProviderError::Unauthorized {
        provider: PROVIDER,
        action: format!("get a token ({how})"),
        code: "NoCredentials".into(),
        message: e,
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(tenant), Some(client), Some(secret)) = (
        env("AZURE_TENANT_ID"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_CLIENT_SECRET"),
    ) {
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            form_escape(&client),
            form_escape(&secret),
            form_escape("https://management.azure.com/.default")
        );
        let url = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token");
        let body = post_form(&url, form)
            .await
            .map_err(|e| fail("AZURE_CLIENT_SECRET", e))?;
        return token_from(&body).ok_or_else(|| fail("AZURE_CLIENT_SECRET", body.to_string()));
    }
    let mut tried = vec![format!(
        "a service principal (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET: {} not set)",
        ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]
            .into_iter()
            .filter(|k| env(k).is_none())
            .collect::<Vec<_>>()
            .join(", ")
    )];
    let cli = tokio::process::Command::new("az")
        .args([
            "account",
            "get-access-token",
            "--resource",
            "https://management.azure.com/",
            "--output",
            "json",
        ])
        .output()
        .await;
    match cli {
        Ok(out) if out.status.success() => {
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
                && let Some(t) = v.get("accessToken").and_then(Value::as_str)
            {
                return Ok((t.to_owned(), Duration::from_secs(1800)));
            }
            tried.push("the Azure CLI (`az account get-access-token` printed no token)".into());
        }
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            tracing::debug!(stderr = %err, "az account get-access-token failed");
            let first = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("it failed")
                .trim()
                .to_owned();
            tried.push(format!(
                "the Azure CLI (`az account get-access-token`: {first})"
            ));
        }
        Err(e) => tried.push(format!("the Azure CLI (az: {e})")),
    }
    // Managed identity through the instance metadata service (only on an Azure VM).
    match managed_identity().await {
        Ok(t) => Ok(t),
        Err(why) => {
            tried.push(format!(
                "a managed identity (instance metadata at 169.254.169.254: {why})"
            ));
            Err(ProviderError::NoCredentials {
                provider: PROVIDER,
                tried,
                hint: "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a \
                       service principal, or run `az login`; on an Azure VM give it a managed \
                       identity"
                    .into(),
            })
        }
    }
}

/// A token from the VM's managed identity, or why there is none.
async fn managed_identity() -> Result<(String, Duration), String> {
    let url = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build({
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        c
    });
    let req = http::Request::get(url)
        .header("Metadata", "true")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), http.request(req))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| crate::providers::error::summary(&e))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    token_from(&v).ok_or_else(|| {
        tracing::debug!(%status, body = %String::from_utf8_lossy(&bytes), "no managed identity token");
        format!("HTTP {status}, no token")
    })
}

fn token_from(v: &Value) -> Option<(String, Duration)> {
    let t = v.get("access_token")?.as_str()?.to_owned();
    let secs = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(1800);
    Some((t, Duration::from_secs(secs)))
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post_form(url: &str, form: String) -> Result<Value, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| e.to_string())?
        .https_only()
        .enable_http1()
        .build();
    let http: Client<Https, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
        .await
        .map_err(|_| format!("{url}: no answer within 30s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
