//! The server certificate: loaded from the configured PEM files, or — for the
//! zero-configuration default — a self-signed certificate for the served domains,
//! generated once into `<data_dir>/tls/` and reused on later starts.

use crate::config::Config;
use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub struct LoadedCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub source: PathBuf,
    pub generated: bool,
}

impl LoadedCert {
    /// SHA-256 fingerprint of the leaf certificate, as clients display it.
    pub fn fingerprint(&self) -> String {
        let Some(leaf) = self.chain.first() else {
            return String::new();
        };
        Sha256::digest(leaf.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

pub fn load_or_generate(config: &Config) -> anyhow::Result<LoadedCert> {
    match (&config.tls.certificate, &config.tls.key) {
        (Some(cert), Some(key)) => Ok(LoadedCert {
            chain: read_chain(cert)?,
            key: read_key(key)?,
            source: cert.clone(),
            generated: false,
        }),
        _ => {
            let dir = config.server.data_dir.join("tls");
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            let generated = !cert.exists() || !key.exists();
            if generated {
                generate(&config.server.domains, &dir, &cert, &key)?;
            }
            Ok(LoadedCert {
                chain: read_chain(&cert)?,
                key: read_key(&key)?,
                source: cert,
                generated,
            })
        }
    }
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificate {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", path.display()))?;
    if chain.is_empty() {
        bail!("{} contains no certificate", path.display());
    }
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a PEM private key from {}", path.display()))
}

fn generate(domains: &[String], dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = domains.to_vec();
    // Clients connecting by address on the same machine still validate the name.
    for extra in ["localhost"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let ck = rcgen::generate_simple_self_signed(names).context("cannot generate a certificate")?;
    write_private(key, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, ck.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok(())
}

/// Writes a file readable by its owner only (the private key).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        let first = load_or_generate(&config).unwrap();
        assert!(first.generated);
        let second = load_or_generate(&config).unwrap();
        assert!(!second.generated);
        assert_eq!(first.fingerprint(), second.fingerprint());
    }

    #[test]
    fn missing_files_are_reported_by_name() {
        let mut config = Config::default();
        config.tls.certificate = Some("/nonexistent/cert.pem".into());
        config.tls.key = Some("/nonexistent/key.pem".into());
        let err = load_or_generate(&config).err().unwrap();
        assert!(format!("{err:#}").contains("/nonexistent/cert.pem"));
    }
}
