//! TLS for client streams: the rustls server configuration and the channel-binding
//! data SCRAM-PLUS needs (RFC 9266 `tls-exporter`, RFC 5929 `tls-server-end-point`).

use aviary_sasl::ChannelBindings;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::sync::Arc;

/// Everything TLS-related a listener needs, built once at start-up.
#[derive(Clone)]
pub struct TlsContext {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// RFC 5929 §4.1: the hash of our certificate, fixed for the process.
    server_end_point: Vec<u8>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the certificate chain")]
    NoCertificate,
    #[error("invalid certificate or key: {0}")]
    Invalid(#[from] rustls::Error),
}

impl TlsContext {
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let leaf = chain.first().ok_or(TlsError::NoCertificate)?;
        let server_end_point = server_end_point_hash(leaf.as_ref());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // XMPP over TLS never uses ALPN on 5222; on 5223 XEP-0368 names "xmpp-client".
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
        // Memory matters per connection: no session tickets cache beyond the default,
        // and do not keep early data.
        config.max_early_data_size = 0;
        Ok(TlsContext {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            server_end_point,
        })
    }

    /// The channel bindings of one established connection. `tls-exporter` is only
    /// offered on TLS 1.3, where it is always safe (RFC 9266 §3 requires the extended
    /// master secret on TLS 1.2, which we do not check for).
    pub fn channel_bindings(&self, conn: &rustls::ServerConnection) -> ChannelBindings {
        let exporter = if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            let mut out = vec![0u8; 32];
            let ok = conn
                .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
                .is_ok();
            ok.then_some(out)
        } else {
            None
        };
        ChannelBindings {
            tls_exporter: exporter,
            tls_server_end_point: Some(self.server_end_point.clone()),
        }
    }
}

// DER encodings of the signature-algorithm OIDs that select SHA-384 or SHA-512 for
// tls-server-end-point (RFC 5929 §4.1: the certificate's own signature hash, with
// MD5 and SHA-1 upgraded to SHA-256).
const OID_SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// RFC 5929 §4.1 hash of the certificate. The certificate's signature algorithm
/// appears twice in it (RFC 5280 §4.1.1.2 requires both to match), so finding the OID
/// anywhere in the DER identifies it.
pub fn server_end_point_hash(cert_der: &[u8]) -> Vec<u8> {
    if contains(cert_der, OID_SHA512_RSA) || contains(cert_der, OID_ECDSA_SHA512) {
        Sha512::digest(cert_der).to_vec()
    } else if contains(cert_der, OID_SHA384_RSA) || contains(cert_der, OID_ECDSA_SHA384) {
        Sha384::digest(cert_der).to_vec()
    } else {
        Sha256::digest(cert_der).to_vec()
    }
}
