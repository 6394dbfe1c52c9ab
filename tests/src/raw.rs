//! A deliberately small XMPP client for tests that need exact control of the bytes:
//! hostile input, precise negotiation steps, and protocol assertions. Third-party
//! clients (tokio-xmpp, slixmpp) cover interoperability; this one covers the RFC
//! details they would never send.

use crate::pki::TestPki;
use anyhow::{Context, anyhow, bail};
use aviary_sasl::client::{ClientBinding, ScramClient};
use aviary_sasl::{ChannelBindings, Mechanism};
use aviary_xmpp::{Element, Event, Framer, Limits, ns, writer};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long any single expected event may take before the test fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Detached,
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Detached => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Detached => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Detached => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Detached => Poll::Ready(Ok(())),
        }
    }
}

/// A raw client stream.
pub struct RawClient {
    io: Io,
    framer: Framer,
    pub domain: String,
    /// The bound full JID, once bound.
    pub jid: Option<String>,
    /// Stream features of the current stream.
    pub features: Option<Element>,
}

impl RawClient {
    /// A TCP connection (no stream opened yet).
    pub async fn connect(addr: SocketAddr, domain: &str) -> anyhow::Result<RawClient> {
        let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        tcp.set_nodelay(true)?;
        Ok(RawClient {
            io: Io::Plain(tcp),
            framer: Framer::new(Limits::AUTHENTICATED),
            domain: domain.to_owned(),
            jid: None,
            features: None,
        })
    }

    /// A direct-TLS connection (XEP-0368).
    pub async fn connect_direct_tls(addr: SocketAddr, domain: &str) -> anyhow::Result<RawClient> {
        let mut c = Self::connect(addr, domain).await?;
        c.upgrade_tls().await?;
        Ok(c)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    async fn upgrade_tls(&mut self) -> anyhow::Result<()> {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Detached) else {
            bail!("already TLS");
        };
        let connector = tokio_rustls::TlsConnector::from(TestPki::get().client_config());
        let name = rustls::pki_types::ServerName::try_from(self.domain.clone())?;
        let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, tcp))
            .await
            .context("TLS handshake timed out")??;
        self.io = Io::Tls(Box::new(tls));
        Ok(())
    }

    /// Channel-binding data of this connection, as a client computes it.
    pub fn channel_bindings(&self) -> ChannelBindings {
        let Io::Tls(tls) = &self.io else {
            return ChannelBindings::default();
        };
        let conn = tls.get_ref().1;
        let mut out = vec![0u8; 32];
        let ok = conn
            .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
            .is_ok();
        let exporter = ok.then_some(out);
        ChannelBindings {
            tls_exporter: exporter,
            tls_server_end_point: None,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    pub async fn send(&mut self, el: &Element) -> anyhow::Result<()> {
        let bytes = el.to_bytes(ns::CLIENT);
        self.send_raw(&bytes).await
    }

    /// Sends a stanza written as XML text (in the `jabber:client` default namespace).
    pub async fn send_xml(&mut self, xml: &str) -> anyhow::Result<()> {
        self.send_raw(xml.as_bytes()).await
    }

    pub async fn next_event(&mut self) -> anyhow::Result<Event> {
        self.next_event_within(STEP_TIMEOUT).await
    }

    pub async fn next_event_within(&mut self, limit: Duration) -> anyhow::Result<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(ev) = self
                .framer
                .next_event()
                .map_err(|e| anyhow!("server sent bad XML: {e}"))?
            {
                return Ok(ev);
            }
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut buf))
                .await
                .context("timed out waiting for the server")??;
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.framer.feed(&buf[..n]);
        }
    }

    /// The next top-level element (stanza or negotiation element).
    pub async fn next_element(&mut self) -> anyhow::Result<Element> {
        match self.next_event().await? {
            Event::Element(el) => Ok(el),
            other => bail!("expected an element, got {other:?}"),
        }
    }

    /// The next stanza for which `pred` holds, skipping others (e.g. presence).
    pub async fn next_matching(
        &mut self,
        mut pred: impl FnMut(&Element) -> bool,
    ) -> anyhow::Result<Element> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event_within(left).await? {
                Event::Element(el) if pred(&el) => return Ok(el),
                Event::Element(_) => {}
                other => bail!("expected a stanza, got {other:?}"),
            }
        }
    }

    /// Opens a stream and reads the server's header and features.
    pub async fn open(&mut self) -> anyhow::Result<Element> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            self.domain
        );
        self.send_raw(header.as_bytes()).await?;
        match self.next_event().await? {
            Event::StreamOpen(_) => {}
            other => bail!("expected the server's stream header, got {other:?}"),
        }
        let features = self.next_element().await?;
        if !features.is("features", ns::STREAM) {
            bail!("expected stream features, got {features:?}");
        }
        self.features = Some(features.clone());
        Ok(features)
    }

    /// STARTTLS (RFC 6120 §5) and the new stream's features.
    pub async fn starttls(&mut self) -> anyhow::Result<Element> {
        self.send(&Element::new("starttls", ns::TLS)).await?;
        let proceed = self.next_element().await?;
        if !proceed.is("proceed", ns::TLS) {
            bail!("expected <proceed/>, got {proceed:?}");
        }
        self.framer.restart_discarding();
        self.upgrade_tls().await?;
        self.open().await
    }

    /// The mechanisms offered in the current features.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .as_ref()
            .and_then(|f| f.get_child("mechanisms", ns::SASL))
            .map(|m| m.children().map(|c| c.text().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Runs a SASL exchange; `Ok(Ok(()))` on success, `Ok(Err(condition))` on a SASL
    /// failure. Restarts the stream on success.
    pub async fn authenticate(
        &mut self,
        mech: Mechanism,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Result<(), String>> {
        if mech == Mechanism::Plain {
            let data = aviary_sasl::client::plain(None, user, password);
            let auth = Element::new("auth", ns::SASL)
                .with_attr("mechanism", "PLAIN")
                .with_text(B64.encode(data));
            self.send(&auth).await?;
            return self.sasl_outcome(None).await;
        }
        let cb = self.channel_bindings();
        let mut client = ScramClient::new(mech, user, password, &cb)
            .map_err(|e| anyhow!("client setup: {e}"))?;
        if mech.is_plus() {
            let data = cb.tls_exporter.clone().context("no tls-exporter binding")?;
            client = client.with_binding(ClientBinding::Use {
                name: "tls-exporter".into(),
                data,
            });
        } else if self.mechanisms().iter().any(|m| m.ends_with("-PLUS")) {
            client = client.with_binding(ClientBinding::NotSupported);
        } else if self.is_tls() {
            client = client.with_binding(ClientBinding::NotAdvertised);
        }
        let auth = Element::new("auth", ns::SASL)
            .with_attr("mechanism", mech.name())
            .with_text(B64.encode(client.first()));
        self.send(&auth).await?;
        let el = self.next_element().await?;
        if el.is("failure", ns::SASL) {
            return Ok(Err(failure_condition(&el)));
        }
        if !el.is("challenge", ns::SASL) {
            bail!("expected a challenge, got {el:?}");
        }
        let server_first = B64.decode(el.text().as_bytes())?;
        let client_final = client
            .respond(&server_first)
            .map_err(|e| anyhow!("server-first rejected: {e}"))?;
        self.send(&Element::new("response", ns::SASL).with_text(B64.encode(client_final)))
            .await?;
        self.sasl_outcome(Some(client)).await
    }

    async fn sasl_outcome(
        &mut self,
        client: Option<ScramClient>,
    ) -> anyhow::Result<Result<(), String>> {
        let el = self.next_element().await?;
        if el.is("failure", ns::SASL) {
            return Ok(Err(failure_condition(&el)));
        }
        if !el.is("success", ns::SASL) {
            bail!("expected success or failure, got {el:?}");
        }
        if let Some(mut client) = client {
            let data = B64.decode(el.text().as_bytes())?;
            client
                .verify(&data)
                .map_err(|e| anyhow!("server signature rejected: {e}"))?;
        }
        self.framer.restart();
        self.open().await?;
        Ok(Ok(()))
    }

    /// Binds a resource (RFC 6120 §7); returns the full JID.
    pub async fn bind(&mut self, resource: Option<&str>) -> anyhow::Result<String> {
        let mut bind = Element::new("bind", ns::BIND);
        if let Some(r) = resource {
            bind.append_child(Element::new("resource", ns::BIND).with_text(r));
        }
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "bind-1")
            .with_child(bind);
        self.send(&iq).await?;
        let reply = self.next_element().await?;
        if reply.attr("type") != Some("result") {
            bail!("bind failed: {reply:?}");
        }
        let jid = reply
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("jid", ns::BIND))
            .context("bind result without jid")?
            .into_owned();
        self.jid = Some(jid.clone());
        Ok(jid)
    }

    /// Creates an account through in-band registration (XEP-0077) over STARTTLS.
    pub async fn register(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let mut c = RawClient::connect(addr, domain).await?;
        c.open().await?;
        c.starttls().await?;
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "reg1")
            .with_child(
                Element::new("query", ns::REGISTER)
                    .with_child(Element::new("username", ns::REGISTER).with_text(user))
                    .with_child(Element::new("password", ns::REGISTER).with_text(password)),
            );
        c.send(&iq).await?;
        let reply = c.next_element().await.context("registration reply")?;
        if reply.attr("type") != Some("result") {
            bail!("registration of {user} failed: {reply:?}");
        }
        Ok(())
    }

    /// STARTTLS + SCRAM-SHA-256 + bind: the common path.
    pub async fn login(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
        resource: Option<&str>,
    ) -> anyhow::Result<RawClient> {
        let mut c = RawClient::connect(addr, domain).await?;
        c.open().await?;
        c.starttls().await?;
        c.authenticate(Mechanism::ScramSha256, user, password)
            .await?
            .map_err(|cond| anyhow!("authentication failed: {cond}"))?;
        c.bind(resource).await?;
        Ok(c)
    }

    /// Reads until the stream ends; returns the stream error condition it carried
    /// (`None` for a clean close). Fails if the stream does not end in time.
    pub async fn expect_stream_end(&mut self) -> anyhow::Result<Option<String>> {
        let mut condition = None;
        loop {
            match self.next_event().await {
                Ok(Event::Element(el)) if el.is("error", ns::STREAM) => {
                    condition = el
                        .children()
                        .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
                        .map(|c| c.name().to_owned());
                }
                Ok(Event::Element(_)) | Ok(Event::StreamOpen(_)) => {}
                Ok(Event::StreamClose) => return Ok(condition),
                Err(e) if e.to_string().contains("closed") => return Ok(condition),
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops the connection without closing the stream or TLS: the socket is reset
    /// (RST), as when a client's network disappears.
    pub fn abort(self) {
        let tcp = match &self.io {
            Io::Plain(s) => Some(s),
            Io::Tls(s) => Some(s.get_ref().0),
            Io::Detached => None,
        };
        if let Some(tcp) = tcp {
            // A zero linger resets the connection on drop instead of blocking.
            #[allow(deprecated)]
            let _ = tcp.set_linger(Some(Duration::ZERO));
        }
        drop(self);
    }

    /// Sends `</stream:stream>` and waits for the server's close.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.send_raw(writer::STREAM_CLOSE).await?;
        self.expect_stream_end().await?;
        Ok(())
    }
}

fn failure_condition(el: &Element) -> String {
    el.children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}
