//! A per-run test PKI: a CA and a server certificate for the test domains, written to
//! a temporary directory so servers and third-party clients (which take a CA file)
//! can use them.

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::PathBuf;
use std::sync::OnceLock;

pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub ca_der: Vec<u8>,
}

/// Names the test server certificate is valid for.
pub const TEST_DOMAINS: &[&str] = &["localhost", "example.test", "other.test"];

impl TestPki {
    fn generate() -> anyhow::Result<TestPki> {
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Aviary test CA");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = TEST_DOMAINS.iter().map(|s| s.to_string()).collect();
        let leaf_params = CertificateParams::new(names)?;
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

        let ca_pem = dir.path().join("ca.pem");
        let cert_pem = dir.path().join("cert.pem");
        let key_pem = dir.path().join("key.pem");
        std::fs::write(&ca_pem, ca_cert.pem())?;
        std::fs::write(&cert_pem, leaf.pem())?;
        std::fs::write(&key_pem, leaf_key.serialize_pem())?;
        Ok(TestPki {
            ca_der: ca_cert.der().to_vec(),
            _dir: dir,
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// The process-wide test PKI (generated on first use).
    pub fn get() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(|| {
            TestPki::generate()
                .context("generating the test PKI")
                .unwrap_or_else(|e| panic!("{e:#}"))
        })
    }

    /// A rustls client configuration trusting only the test CA.
    pub fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.ca_der.clone()))
            .unwrap_or_else(|e| panic!("test CA rejected: {e}"));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    }

    /// Makes third-party clients in this process trust the test CA (they read
    /// `SSL_CERT_FILE` through rustls-native-certs). Idempotent; call it before the
    /// first such client starts.
    #[allow(unsafe_code)]
    pub fn trust_globally(&self) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: called under a Once before any test starts a client that reads
            // the environment; no other code in this test process writes it.
            unsafe { std::env::set_var("SSL_CERT_FILE", &self.ca_pem) };
        });
    }
}
