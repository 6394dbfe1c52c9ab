//! Sockets and TLS: connecting from a chosen loopback source address, the stream type
//! that is either plaintext or TLS, and reading straight into a [`Framer`] through a
//! per-thread scratch buffer, so an idle connection holds no read buffer at all.

use crate::loadgen::args::Args;
use anyhow::Context as _;
use aviary_xmpp::Framer;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bytes read per system call. Shared per thread and only used synchronously inside
/// a poll, so 20,000 connections cost 16 KiB per thread, not per connection.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// A client stream, plaintext or TLS.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// Reads what is available into `framer`; `Ready(Ok(0))` is end of stream.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        framer: &mut Framer,
    ) -> Poll<io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return Poll::Ready(Err(io::Error::other("scratch buffer busy")));
            };
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *self).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let filled = buf.filled();
                    framer.feed(filled);
                    Poll::Ready(Ok(filled.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to `server`, from `source` if given (port chosen by the kernel).
pub async fn connect(server: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The `i`-th source address: 127.0.1.1, 127.0.1.2, … 127.0.1.254, 127.0.2.1, …
/// (never .0 or .255, and never 127.0.0.x where servers usually listen).
pub fn source_ip(i: u32) -> Ipv4Addr {
    let x = 1 + i / 254;
    let y = 1 + i % 254;
    Ipv4Addr::new(127, (x >> 8) as u8, x as u8, y as u8)
}

/// Source addresses to rotate over: `--source-ips` if given, else on loopback one per
/// 10,000 users (a source address has ~28,000 ephemeral ports, and closed connections
/// hold theirs in TIME_WAIT for a minute), at least 4; off for remote servers.
pub fn source_ips(args: &Args, servers: &[SocketAddr]) -> Vec<Ipv4Addr> {
    let count = match args.source_ips {
        Some(k) => k,
        None if servers.iter().all(|s| s.ip().is_loopback() && s.is_ipv4()) => {
            (args.users.div_ceil(10_000)).max(4)
        }
        None => 0,
    };
    (0..count).map(source_ip).collect()
}

/// The TLS client configuration for `--tls starttls`.
pub fn tls_connector(args: &Args) -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = if args.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &args.ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read --ca {}", path.display()))?;
                let mut added = 0;
                for cert in rustls_pemfile_certs(&pem)? {
                    roots.add(cert).context("--ca: bad certificate")?;
                    added += 1;
                }
                if added == 0 {
                    anyhow::bail!("--ca {}: no certificate found", path.display());
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if !args.tls_resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

fn rustls_pemfile_certs(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--ca: {e}"))
}

/// `--insecure`: trusts any certificate. Signatures are still checked, so the
/// handshake is the real one and costs what it costs.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_skip_zero_and_broadcast() {
        assert_eq!(source_ip(0), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(source_ip(253), Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(source_ip(254), Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(source_ip(254 * 255), Ipv4Addr::new(127, 1, 0, 1));
    }
}
