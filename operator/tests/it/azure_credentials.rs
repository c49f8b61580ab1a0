//! Azure credentials (`azure.credential`) against the ARM stub's token endpoints: a service
//! principal's client secret at Entra's login endpoint, the Azure CLI (a fake `az` printing what
//! `az account get-access-token` prints), and the VM's managed identity at the instance metadata
//! service; each token is the bearer of the ARM calls that follow. Bad secrets and unreachable
//! endpoints are clear errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rask_operator::providers::ProviderError;
use rask_operator::providers::config::vm::parse;
use rask_operator::providers::vm::Provider;
use rask_operator::providers::vm::azure::{Azure, AzureOptions};

use crate::arm_stub::{
    ArmStub, CLI_TOKEN, CLIENT_ID, CLIENT_SECRET, GROUP, MI_TOKEN, SP_TOKEN, SUBSCRIPTION, TENANT,
};

/// A cluster file whose `azure` section ends with `credentials` (indented two spaces).
fn config(credentials: &str) -> String {
    format!(
        "provider: azure
name: creds
azure:
  location: westeurope
  resource_group: {GROUP}
  subscription_id: {SUBSCRIPTION}
  vnet: vnet-test
  subnet: default
  ssh_public_key: ssh-ed25519 AAAATEST rask-test
{credentials}"
    )
}

fn options(stub: &ArmStub) -> AzureOptions {
    AzureOptions {
        endpoint: Some(stub.url.clone()),
        token: None,
        root_certificates: vec![stub.ca.clone()],
        poll: Some(Duration::from_millis(20)),
        ..AzureOptions::default()
    }
}

fn connect(stub: &ArmStub, credentials: &str) -> Azure {
    let cluster = parse(&config(credentials)).unwrap();
    Azure::connect(&cluster, &options(stub)).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A stand-in for the Azure CLI: checks it was asked for an ARM token as azure_identity asks,
/// records its arguments, and prints the token JSON of `az account get-access-token`.
fn fake_az(dir: &Path, logged_in: bool) -> PathBuf {
    let body = if logged_in {
        format!(
            r#"case "$*" in
  "account get-access-token -o json --scope https://management.azure.com/.default") ;;
  *) echo "ERROR: unexpected arguments: $*" >&2; exit 2 ;;
esac
exp=$(( $(date +%s) + 3600 ))
printf '{{"accessToken": "{CLI_TOKEN}", "expiresOn": "2030-01-01 00:00:00.000000", "expires_on": %s, "subscription": "{SUBSCRIPTION}", "tenant": "{TENANT}", "tokenType": "Bearer"}}\n' "$exp""#
        )
    } else {
        r#"echo "ERROR: Please run 'az login' to setup account." >&2
exit 1"#
            .to_owned()
    };
    let path = write(
        dir,
        if logged_in { "az" } else { "az-logged-out" },
        &format!("#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/az-calls\"\n{body}\n"),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A local port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// ARM was called, always with `token` as the bearer.
fn only_bearer(stub: &ArmStub, token: &str) {
    let bearers = stub.bearers();
    assert!(!bearers.is_empty(), "ARM was called");
    assert!(bearers.iter().all(|b| b == token), "{bearers:?}");
}

fn token_requests(stub: &ArmStub) -> Vec<String> {
    stub.requests()
        .into_iter()
        .filter(|r| r.contains("/oauth2/"))
        .collect()
}

/// A service principal block whose secret is in `secret_file`.
fn service_principal(stub: &ArmStub, secret_file: &Path) -> String {
    format!(
        "  login_endpoint: {}
  service_principal:
    tenant_id: {TENANT}
    client_id: {CLIENT_ID}
    client_secret_file: {}
",
        stub.login_url,
        secret_file.display()
    )
}

#[tokio::test]
async fn a_service_principal_s_token_from_entra_is_arm_s_bearer() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", &format!("{CLIENT_SECRET}\n"));
    let sp = service_principal(&stub, &secret);

    // Named, and picked by `auto` (the default) when configured.
    for credentials in [format!("  credential: service_principal\n{sp}"), sp.clone()] {
        let before = token_requests(&stub).len();
        let azure = connect(&stub, &credentials);
        assert!(azure.list_vms("creds").await.unwrap().is_empty());
        azure.list_vms("creds").await.unwrap();
        let all = token_requests(&stub);
        let asked = &all[before..];
        assert_eq!(
            asked,
            [format!("POST /{TENANT}/oauth2/v2.0/token")],
            "one token for both calls"
        );
    }
    only_bearer(&stub, SP_TOKEN);
}

#[tokio::test]
async fn the_azure_cli_s_token_is_arm_s_bearer() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let az = fake_az(dir.path(), true);
    let azure = connect(
        &stub,
        &format!("  credential: azure_cli\n  az_path: {}\n", az.display()),
    );
    azure.list_vms("creds").await.unwrap();
    let calls = std::fs::read_to_string(dir.path().join("az-calls")).unwrap();
    assert_eq!(
        calls,
        "account get-access-token -o json --scope https://management.azure.com/.default\n"
    );
    only_bearer(&stub, CLI_TOKEN);
    assert!(token_requests(&stub).is_empty(), "nothing asked of Entra");
}

#[tokio::test]
async fn a_managed_identity_s_token_from_the_metadata_service_is_arm_s_bearer() {
    let stub = ArmStub::start().await;
    let azure = connect(
        &stub,
        &format!(
            "  credential: managed_identity\n  imds_endpoint: {}\n",
            stub.url
        ),
    );
    azure.list_vms("creds").await.unwrap();
    azure.list_vms("creds").await.unwrap();
    assert_eq!(
        token_requests(&stub),
        ["GET /metadata/identity/oauth2/token"; 2],
        "a probe, then one token for both calls"
    );
    only_bearer(&stub, MI_TOKEN);
}

#[tokio::test]
async fn a_vm_with_two_identities_asks_for_the_one_configured() {
    // The autoscaler on a TLS scheduler VM: `azure.identity` beside the Key Vault identity.
    let stub = ArmStub::start().await;
    let cluster = parse(&config(&format!(
        "  credential: managed_identity\n  imds_endpoint: {}\n",
        stub.url
    )))
    .unwrap();
    let id = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rask-scaler"
    );
    let opts = AzureOptions {
        identity: Some(id.clone()),
        ..options(&stub)
    };
    let azure = Azure::connect(&cluster, &opts).unwrap();
    azure.list_vms("creds").await.unwrap();
    only_bearer(&stub, MI_TOKEN);
    let queries = stub.imds_queries();
    let asked: Vec<String> = queries
        .iter()
        .filter(|q| q.contains("resource="))
        .cloned()
        .collect();
    assert_eq!(asked.len(), 1, "{queries:?}");
    let params: Vec<(String, String)> = form_urlencoded::parse(asked[0].as_bytes())
        .into_owned()
        .collect();
    assert!(
        params.contains(&("msi_res_id".to_owned(), id)),
        "{params:?}"
    );
}

#[tokio::test]
async fn auto_goes_on_to_the_managed_identity_when_the_others_are_missing_and_lists_them_all() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let az = fake_az(dir.path(), false);
    // A service principal whose secret is not here (as on the scheduler VM, where the config is
    // copied but not the secret), the CLI not logged in, then the managed identity.
    let missing = dir.path().join("no-such-secret");
    let unavailable = format!(
        "  az_path: {}\n  service_principal:\n    tenant_id: {TENANT}\n    client_id: {CLIENT_ID}\n    client_secret_file: {}\n",
        az.display(),
        missing.display()
    );
    let azure = connect(
        &stub,
        &format!("{unavailable}  imds_endpoint: {}\n", stub.url),
    );
    azure.list_vms("creds").await.unwrap();
    only_bearer(&stub, MI_TOKEN);

    // Nothing at all: every source and why, and what to do.
    let port = closed_port().await;
    let azure = connect(
        &stub,
        &format!("{unavailable}  imds_endpoint: http://127.0.0.1:{port}\n"),
    );
    let err = azure.list_vms("creds").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::NoCredentials { .. }), "{msg}");
    assert!(
        msg.contains("a service principal (cannot read azure.service_principal.client_secret_file"),
        "{msg}"
    );
    assert!(msg.contains("Please run 'az login'"), "{msg}");
    assert!(
        msg.contains(&format!(
            "a managed identity (instance metadata at http://127.0.0.1:{port}"
        )),
        "{msg}"
    );
    assert!(msg.contains("run `az login`"), "the hint: {msg}");
}

#[tokio::test]
async fn a_wrong_secret_names_the_service_principal_and_tenant_and_never_the_secret() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-Secret-42";
    let secret = write(dir.path(), "secret", wrong);
    let azure = connect(&stub, &service_principal(&stub, &secret));
    let err = azure.list_vms("creds").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "azure get a token as service principal {CLIENT_ID} in tenant {TENANT}: not authorized (AADSTS7000215): AADSTS7000215: Invalid client secret provided."
        )),
        "{msg}"
    );
    assert!(!msg.contains(wrong) && !format!("{err:?}").contains(wrong));
    assert!(stub.bearers().is_empty(), "ARM was not called");

    // A tenant Entra does not know is named too.
    let other = service_principal(&stub, &write(dir.path(), "ok", CLIENT_SECRET))
        .replace(TENANT, "contoso.example");
    let msg = connect(&stub, &other)
        .list_vms("creds")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("in tenant contoso.example: not authorized (AADSTS90002): AADSTS90002: Tenant 'contoso.example' not found."),
        "{msg}"
    );
}

#[tokio::test]
async fn unreachable_endpoints_and_a_missing_cli_are_clear_errors() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().await;
    let secret = write(dir.path(), "secret", CLIENT_SECRET);
    let sp = service_principal(&stub, &secret)
        .replace(&stub.login_url, &format!("https://127.0.0.1:{port}"));
    let err = connect(&stub, &sp).list_vms("creds").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "get a token as service principal {CLIENT_ID} in tenant {TENANT}: the API is unreachable at https://127.0.0.1:{port}"
        )),
        "{msg}"
    );

    let err = connect(
        &stub,
        &format!("  credential: managed_identity\n  imds_endpoint: http://127.0.0.1:{port}\n"),
    )
    .list_vms("creds")
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{msg}");
    assert!(msg.contains("is this an Azure VM?"), "{msg}");

    let missing = dir.path().join("no-az-here");
    let err = connect(
        &stub,
        &format!(
            "  credential: azure_cli\n  az_path: {}\n",
            missing.display()
        ),
    )
    .list_vms("creds")
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "azure get a token from the Azure CLI ({})",
            missing.display()
        )),
        "{msg}"
    );
    assert!(stub.bearers().is_empty(), "ARM was not called");
}
