//! Throwaway cluster certificates: a CA of its own and one certificate it signs, written as PEM
//! files, for `rask-bench --tls` and tests. Real clusters get theirs from the operator or their
//! own CA (docs/security.md).

use std::path::Path;

use rask_core::tls::{TlsError, TlsFiles};

use crate::local::ClusterTls;

/// Why throwaway certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] TlsError),
}

/// A CA that exists only in this process: it signs member certificates for its cluster.
pub struct ThrowawayCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl ThrowawayCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<ThrowawayCa, CertError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ThrowawayCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes `ca.pem`, `<name>.pem` and `<name>.key` into `dir`: a member certificate for
    /// `localhost` and 127.0.0.1, good for both ends of a connection (server and client auth),
    /// as every rask process is both.
    pub fn write_member(&self, dir: &Path, name: &str) -> Result<TlsFiles, CertError> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = TlsFiles {
            ca_file: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        for (path, text) in [
            (&files.ca_file, self.pem.clone()),
            (&files.cert, cert.pem()),
            (&files.key, key.serialize_pem()),
        ] {
            std::fs::write(path, text).map_err(|source| CertError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(files)
    }

    /// [`ThrowawayCa::write_member`], loaded for a local cluster.
    pub fn cluster_tls(&self, dir: &Path, name: &str) -> Result<ClusterTls, CertError> {
        Ok(ClusterTls::load(self.write_member(dir, name)?)?)
    }
}
