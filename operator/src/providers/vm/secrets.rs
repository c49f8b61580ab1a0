//! A VM cluster's certificates: `up` makes them with [`crate::tls::ClusterCerts`] (the same CA
//! code as Kubernetes and the local backend) once the scheduler VM's addresses are known, puts
//! every file in the provider's secret store, and keeps the CA and the users' client certificate
//! and key in the state directory. User-data names only where the files are; at boot each VM
//! fetches its own with its instance profile (`rask-operator vm-tls fetch`) into [`VM_DIR`].
//!
//! AWS: SSM Parameter Store, one parameter per file under `/rask/{cluster}/tls/`, private keys
//! as SecureString (encrypted with the account's `aws/ssm` KMS key), tagged with the cluster so
//! `down`, `sweep` and a failed `up` delete them with the VMs.
//!
//! Azure: a Key Vault of the cluster's own ([`key_vault_name`], in its resource group), one secret
//! per file ([`secret_name`]). Only two principals may read it: whoever ran `up` (an access
//! policy for the token's object id) and a user-assigned managed identity rask makes for the
//! cluster ([`tls_identity_name`]), given to every VM; a VM asks the instance metadata service
//! for a token of that identity. `down`, `sweep` and a failed `up` delete the vault and then
//! purge it: Key Vault's soft-delete (always on) would otherwise keep the keys, and the vault's
//! name, for up to 90 days.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::providers::ProviderError;
use crate::providers::config::vm::{CloudCluster, ProviderSettings};
use crate::tls::{CA_FILE, ClusterCerts, Role};

/// Where a VM keeps its cluster's files (mounted read-only into the rask containers).
pub const VM_DIR: &str = "/etc/rask/tls";

/// The uid and gid the rask image runs as: the files fetched on a VM belong to it.
pub const IMAGE_OWNER: (u32, u32) = (1000, 1000);

/// How long a VM's fetch waits for its files: the scheduler's are stored once its VM runs
/// (their certificate names its addresses), so its first looks may find nothing yet.
pub const FETCH_WAIT_SECONDS: u64 = 600;

/// Where a cluster's TLS files are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretStore {
    /// SSM Parameter Store in `region`, one parameter per file named `{prefix}/{file}`.
    AwsSsm { region: String, prefix: String },
    /// The Key Vault at `url` (`https://NAME.vault.azure.net`), one secret per file named
    /// [`secret_name`], read with the user-assigned managed identity whose resource id is
    /// `identity`.
    AzureKeyVault { url: String, identity: String },
}

impl std::fmt::Display for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretStore::AwsSsm { region, prefix } => {
                write!(f, "SSM Parameter Store in {region} under {prefix}/")
            }
            SecretStore::AzureKeyVault { url, .. } => write!(f, "Key Vault {url}"),
        }
    }
}

/// `/rask/{cluster}/tls`, the parameters' path on AWS.
pub fn ssm_prefix(cluster: &str) -> String {
    format!("/rask/{cluster}/tls")
}

/// The cluster's Key Vault: `rask-{name}-{hash}`, 24 characters at most (Key Vault's limit), the
/// hash of subscription, resource group and name keeping it apart from other clusters of the same
/// name: vault names are global. The same for every `up` of the cluster, so user-data can name
/// it; `down` purges the vault so the name is free again.
pub fn key_vault_name(subscription: &str, resource_group: &str, cluster: &str) -> String {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    let key = format!("{subscription}/{resource_group}/{cluster}").to_ascii_lowercase();
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Letters, digits and single hyphens; starting with a letter (cluster names do).
    let mut short = String::new();
    for c in cluster.chars().take(10) {
        if c == '-' && short.ends_with('-') {
            continue;
        }
        short.push(c);
    }
    let short = short.trim_end_matches('-');
    format!("rask-{short}-{h:08x}")
}

/// `https://{name}.vault.azure.net`, a vault's address in Azure's public cloud.
pub fn key_vault_url(name: &str) -> String {
    format!("https://{name}.vault.azure.net")
}

/// The secret holding `file`: Key Vault's names are letters, digits and `-` (`ca.pem` is
/// `ca-pem`).
pub fn secret_name(file: &str) -> String {
    file.replace(['.', '_'], "-")
}

/// The user-assigned managed identity the cluster's VMs read its vault with.
pub fn tls_identity_name(cluster: &str) -> String {
    format!("rask-{cluster}-tls")
}

/// The store of a cluster with TLS; `None` when the config turned TLS off.
pub fn store_of(cluster: &CloudCluster) -> Option<SecretStore> {
    if !cluster.tls {
        return None;
    }
    match &cluster.provider {
        ProviderSettings::Aws(e) => Some(SecretStore::AwsSsm {
            region: e.region.clone(),
            prefix: ssm_prefix(&cluster.name),
        }),
        ProviderSettings::Azure(a) => Some(SecretStore::AzureKeyVault {
            url: key_vault_url(&key_vault_name(
                &a.subscription_id,
                &a.resource_group,
                &cluster.name,
            )),
            identity: format!(
                "/subscriptions/{}/resourceGroups/{}/providers/\
                 Microsoft.ManagedIdentity/userAssignedIdentities/{}",
                a.subscription_id,
                a.resource_group,
                tls_identity_name(&cluster.name)
            ),
        }),
    }
}

/// The three files a party needs: the CA, its certificate and its key.
pub fn role_files(role: Role) -> [String; 3] {
    [CA_FILE.to_owned(), role.cert_file(), role.key_file()]
}

/// Every file `up` stores: the CA and each party's certificate and key.
pub fn all_files() -> Vec<String> {
    let mut out = vec![CA_FILE.to_owned()];
    for r in Role::ALL {
        out.extend([r.cert_file(), r.key_file()]);
    }
    out
}

/// The role a `--role` value names.
pub fn parse_role(s: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.name() == s)
        .ok_or_else(|| format!("--role {s:?}: not one of scheduler, worker, operator, client"))
}

/// The arguments of `rask-operator vm-tls fetch` that bring `roles`' files from `store` into
/// [`VM_DIR`] on a VM, owned by the image's user. Names only: no secret is in them.
pub fn fetch_args(store: &SecretStore, roles: &[Role]) -> Vec<String> {
    let mut out = vec!["vm-tls".to_owned(), "fetch".to_owned()];
    match store {
        SecretStore::AwsSsm { region, prefix } => {
            out.extend(["--aws-region".into(), region.clone()]);
            out.extend(["--aws-ssm-prefix".into(), prefix.clone()]);
        }
        SecretStore::AzureKeyVault { url, identity } => {
            out.extend(["--azure-key-vault-url".into(), url.clone()]);
            out.extend(["--azure-identity".into(), identity.clone()]);
        }
    }
    for r in roles {
        out.extend(["--role".into(), r.name().to_owned()]);
    }
    out.extend([
        "--dir".into(),
        VM_DIR.into(),
        "--owner".into(),
        format!("{}:{}", IMAGE_OWNER.0, IMAGE_OWNER.1),
        "--wait-seconds".into(),
        FETCH_WAIT_SECONDS.to_string(),
    ]);
    out
}

/// `rask scheduler` / `rask worker` flags for `role`'s files in `dir`.
pub fn rask_flags(dir: &str, role: Role) -> Vec<String> {
    vec![
        "--tls-ca-file".into(),
        format!("{dir}/{CA_FILE}"),
        "--tls-cert".into(),
        format!("{dir}/{}", role.cert_file()),
        "--tls-key".into(),
        format!("{dir}/{}", role.key_file()),
    ]
}

/// What the user keeps on the machine that ran `up`: the CA and the client's certificate and key.
pub fn user_files(certs: &ClusterCerts) -> Vec<(String, String)> {
    role_files(Role::Client)
        .into_iter()
        .filter_map(|f| certs.files().into_iter().find(|(n, _)| *n == f))
        .collect()
}

/// Where the user's files of cluster `name` are kept: `{state_dir}/{name}.tls/`.
pub fn user_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}.tls"))
}

fn write_error(path: &Path, e: std::io::Error) -> ProviderError {
    ProviderError::Other(format!("cannot write {}: {e}", path.display()))
}

/// Writes `files` into `dir` (made 0700): keys 0600, certificates 0644, each replaced whole (a
/// temporary file renamed into place), then given to `owner` (uid, gid) when set.
pub fn write_dir(
    dir: &Path,
    files: &[(String, String)],
    owner: Option<(u32, u32)>,
) -> Result<(), ProviderError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| write_error(dir, e))?;
    #[cfg(unix)]
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| write_error(dir, e))?;
    }
    for (name, text) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(
            &mut options,
            if ClusterCerts::is_key_file(name) {
                0o600
            } else {
                0o644
            },
        );
        let mut f = options.open(&tmp).map_err(|e| write_error(&tmp, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| write_error(&tmp, e))?;
        drop(f);
        #[cfg(unix)]
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
                .map_err(|e| write_error(&tmp, e))?;
        }
        #[cfg(not(unix))]
        let _ = owner;
        std::fs::rename(&tmp, &path).map_err(|e| write_error(&path, e))?;
    }
    Ok(())
}

/// A party's identity read back from `dir`: (CA, certificate, key), PEM.
pub fn read_identity(dir: &Path, role: Role) -> Result<(String, String, String), ProviderError> {
    let read = |f: String| {
        let path = dir.join(&f);
        std::fs::read_to_string(&path).map_err(|e| ProviderError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let [ca, cert, key] = role_files(role);
    Ok((read(ca)?, read(cert)?, read(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::config::vm as config;

    const NOW: i64 = 1_796_428_800;

    fn cluster(extra: &str) -> CloudCluster {
        config::parse(&format!(
            "provider: aws\nname: demo\n{extra}ec2:\n  region: eu-west-1\n  ami: ami-0123456789abcdef0\n  iam_instance_profile: rask-vm\n"
        ))
        .unwrap()
    }

    #[test]
    fn aws_clusters_keep_their_files_in_ssm_unless_tls_is_off() {
        assert_eq!(
            store_of(&cluster("")),
            Some(SecretStore::AwsSsm {
                region: "eu-west-1".into(),
                prefix: "/rask/demo/tls".into()
            })
        );
        assert_eq!(store_of(&cluster("tls: false\n")), None);
        assert_eq!(
            store_of(&cluster("")).unwrap().to_string(),
            "SSM Parameter Store in eu-west-1 under /rask/demo/tls/"
        );
    }

    #[test]
    fn the_fetch_command_names_places_and_roles_only() {
        let store = store_of(&cluster("")).unwrap();
        let args = fetch_args(&store, &[Role::Scheduler, Role::Operator]);
        assert_eq!(
            args.join(" "),
            "vm-tls fetch --aws-region eu-west-1 --aws-ssm-prefix /rask/demo/tls --role scheduler \
             --role operator --dir /etc/rask/tls --owner 1000:1000 --wait-seconds 600"
        );
        assert_eq!(
            rask_flags(VM_DIR, Role::Worker).join(" "),
            "--tls-ca-file /etc/rask/tls/ca.pem --tls-cert /etc/rask/tls/worker.pem \
             --tls-key /etc/rask/tls/worker-key.pem"
        );
        assert_eq!(parse_role("worker"), Ok(Role::Worker));
        assert!(parse_role("admin").unwrap_err().contains("\"admin\""));
    }

    fn azure(extra: &str) -> CloudCluster {
        config::parse(&format!(
            "provider: azure\nname: demo-cluster--x\n{extra}azure:\n  location: westeurope\n  \
             resource_group: rg\n  subscription_id: 00000000-0000-0000-0000-000000000000\n  \
             vnet: net\n  subnet: sub\n  ssh_public_key: ssh-ed25519 AAAA test\n"
        ))
        .unwrap()
    }

    #[test]
    fn azure_clusters_keep_their_files_in_a_key_vault_of_their_own() {
        let Some(SecretStore::AzureKeyVault { url, identity }) = store_of(&azure("")) else {
            panic!("tls is on by default on azure")
        };
        let name = key_vault_name(
            "00000000-0000-0000-0000-000000000000",
            "rg",
            "demo-cluster--x",
        );
        assert_eq!(url, format!("https://{name}.vault.azure.net"));
        assert_eq!(
            identity,
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/\
             Microsoft.ManagedIdentity/userAssignedIdentities/rask-demo-cluster--x-tls"
        );
        assert_eq!(store_of(&azure("tls: false\n")), None);
        let args = fetch_args(&store_of(&azure("")).unwrap(), &[Role::Worker]).join(" ");
        assert!(
            args.starts_with(&format!(
                "vm-tls fetch --azure-key-vault-url {url} --azure-identity {identity} --role worker"
            )),
            "{args}"
        );
    }

    #[test]
    fn key_vault_names_keep_to_key_vaults_rules_and_differ_by_place() {
        for cluster in [
            "a",
            "demo",
            "demo-cluster--x",
            "a-very-long-cluster-name-indeed-0123",
        ] {
            let n = key_vault_name("s", "rg", cluster);
            assert!((3..=24).contains(&n.len()), "{n}");
            assert!(n.starts_with(|c: char| c.is_ascii_alphabetic()), "{n}");
            assert!(n.ends_with(|c: char| c.is_ascii_alphanumeric()), "{n}");
            assert!(!n.contains("--"), "{n}");
            assert!(
                n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{n}"
            );
        }
        assert_eq!(
            key_vault_name("s", "rg", "demo"),
            key_vault_name("s", "RG", "demo")
        );
        assert_ne!(
            key_vault_name("s", "rg", "demo"),
            key_vault_name("s", "rg2", "demo")
        );
        assert_ne!(
            key_vault_name("s", "rg", "demo"),
            key_vault_name("t", "rg", "demo")
        );
        assert_eq!(secret_name("worker-key.pem"), "worker-key-pem");
    }

    #[test]
    fn the_user_keeps_the_ca_and_the_client_identity_only() {
        let certs = ClusterCerts::generate("demo", &crate::tls::local_names(), NOW).unwrap();
        let files = user_files(&certs);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ca.pem", "client.pem", "client-key.pem"]);
        let dir = tempfile::tempdir().unwrap();
        let tls = user_dir(dir.path(), "demo");
        write_dir(&tls, &files, None).unwrap();
        let (ca, cert, key) = read_identity(&tls, Role::Client).unwrap();
        assert_eq!(ca, certs.ca_pem);
        assert_eq!(cert, certs.client.cert_pem);
        assert_eq!(key, certs.client.key_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&tls), 0o700);
            assert_eq!(mode(&tls.join("client-key.pem")), 0o600);
            assert_eq!(mode(&tls.join("client.pem")), 0o644);
        }
        let err = read_identity(&tls, Role::Worker).unwrap_err().to_string();
        assert!(err.contains("worker.pem"), "{err}");
    }
}
