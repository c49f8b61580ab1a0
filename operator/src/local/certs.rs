//! A local cluster's certificates, as files in its directory: `{dir}/tls/ca.pem`,
//! `scheduler.pem`, `scheduler-key.pem`, ... (see [`crate::tls`]). Made once; a directory that
//! already holds them (`up --dir` again) keeps them, so clients set up for it keep working.
//! Keys are readable by their owner only (0600), in a directory only the owner can enter.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::tls::{CA_FILE, ClusterCerts, Role, local_names};

/// The subdirectory of a cluster's directory holding its certificates.
pub const SUBDIR: &str = "tls";

#[derive(Debug, thiserror::Error)]
pub enum LocalCertsError {
    #[error("cannot write the cluster's certificates in {path}: {reason}")]
    Write { path: String, reason: String },
    #[error(
        "the certificates in {dir} cannot be used: {problems}; delete that directory to have new ones made"
    )]
    Malformed { dir: String, problems: String },
    #[error("{0}")]
    Generate(String),
}

/// The cluster's certificates under `dir`: read back and checked when there, else made and
/// written. Returns the directory holding them.
pub fn ensure(dir: &Path, cluster: &str, now_unix: i64) -> Result<PathBuf, LocalCertsError> {
    let tls = dir.join(SUBDIR);
    if tls.join(CA_FILE).exists() {
        let get = |f: &str| std::fs::read_to_string(tls.join(f)).ok();
        return match ClusterCerts::from_files(get, "localhost", now_unix) {
            Ok(_) => Ok(tls),
            Err(e) => Err(LocalCertsError::Malformed {
                dir: tls.display().to_string(),
                problems: e.to_string(),
            }),
        };
    }
    let certs = ClusterCerts::generate(cluster, &local_names(), now_unix)
        .map_err(|e| LocalCertsError::Generate(e.to_string()))?;
    write(&tls, &certs)?;
    Ok(tls)
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> LocalCertsError + '_ {
    move |e| LocalCertsError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes `certs` into `tls` (made 0700): keys 0600, certificates 0644, the CA last.
pub fn write(tls: &Path, certs: &ClusterCerts) -> Result<(), LocalCertsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(tls).map_err(write_error(tls))?;
    // The CA last: its presence says the set is complete.
    let mut files = certs.files();
    files.rotate_left(1);
    for (name, text) in files {
        let path = tls.join(&name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(
            &mut options,
            if ClusterCerts::is_key_file(&name) {
                0o600
            } else {
                0o644
            },
        );
        let mut f = options.open(&path).map_err(write_error(&path))?;
        f.write_all(text.as_bytes()).map_err(write_error(&path))?;
    }
    Ok(())
}

/// `--tls-ca-file`, `--tls-cert`, `--tls-key` for a `rask` process playing `role`.
pub fn tls_args(tls: &Path, role: Role) -> Vec<std::ffi::OsString> {
    vec![
        "--tls-ca-file".into(),
        tls.join(CA_FILE).into(),
        "--tls-cert".into(),
        tls.join(role.cert_file()).into(),
        "--tls-key".into(),
        tls.join(role.key_file()).into(),
    ]
}

/// Dask's TLS settings of a client (a DaskJob's runner) with the users' certificate.
pub fn client_env(tls: &Path) -> Vec<(String, String)> {
    let path = |f: String| tls.join(f).display().to_string();
    vec![
        (
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE".into(),
            path(CA_FILE.into()),
        ),
        (
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT".into(),
            path(Role::Client.cert_file()),
        ),
        (
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY".into(),
            path(Role::Client.key_file()),
        ),
        (
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION".into(),
            "True".into(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_428_800;

    #[test]
    fn written_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure(dir.path(), "local", NOW).unwrap();
        assert_eq!(tls, dir.path().join("tls"));
        let ca = std::fs::read_to_string(tls.join("ca.pem")).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |f: &str| std::fs::metadata(tls.join(f)).unwrap().permissions().mode() & 0o777;
            for role in Role::ALL {
                assert_eq!(mode(&role.key_file()), 0o600, "{role:?}");
                assert_eq!(mode(&role.cert_file()), 0o644, "{role:?}");
            }
            let dir_mode = std::fs::metadata(&tls).unwrap().permissions().mode() & 0o777;
            assert_eq!(dir_mode, 0o700);
        }
        // A second `up` in the same directory keeps them.
        assert_eq!(ensure(dir.path(), "local", NOW).unwrap(), tls);
        assert_eq!(std::fs::read_to_string(tls.join("ca.pem")).unwrap(), ca);
        let get = |f: &str| std::fs::read_to_string(tls.join(f)).ok();
        let certs = ClusterCerts::from_files(get, "127.0.0.1", NOW).unwrap();
        assert_eq!(certs.ca_pem, ca);
    }

    #[test]
    fn damaged_files_are_an_error_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure(dir.path(), "local", NOW).unwrap();
        std::fs::write(tls.join("worker.pem"), "garbage").unwrap();
        std::fs::remove_file(tls.join("client-key.pem")).unwrap();
        let err = ensure(dir.path(), "local", NOW).unwrap_err().to_string();
        assert!(err.contains("client-key.pem: missing"), "{err}");
        assert!(err.contains("delete that directory"), "{err}");
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = ensure(&file, "local", NOW).unwrap_err().to_string();
        assert!(err.contains("not-a-dir/tls"), "{err}");
    }

    #[test]
    fn processes_get_their_roles_files() {
        let tls = Path::new("/s/tls");
        let args: Vec<String> = tls_args(tls, Role::Worker)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--tls-ca-file",
                "/s/tls/ca.pem",
                "--tls-cert",
                "/s/tls/worker.pem",
                "--tls-key",
                "/s/tls/worker-key.pem"
            ]
        );
        let env = client_env(tls);
        assert!(env.contains(&(
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY".into(),
            "/s/tls/client-key.pem".into()
        )));
    }
}
