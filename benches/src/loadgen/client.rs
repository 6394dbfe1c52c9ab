//! One client connection: the login sequence (stream, STARTTLS, SASL, bind, session
//! if required, roster, initial presence), non-blocking read/write progress for the
//! traffic loop, and a clean logout. Everything a server sends is checked; anything
//! unexpected becomes a [`Fail`] with a short category, never a panic.

use crate::loadgen::args::{SaslMech, TlsMode};
use crate::loadgen::net::{self, Io};
use crate::loadgen::run::Ctx;
use aviary_sasl::client::ScramClient;
use aviary_sasl::{ChannelBindings, Mechanism};
use aviary_xmpp::{Element, Event, Framer, Limits, ns, writer};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::future::poll_fn;
use std::io::Write as _;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

/// Output kept queued for a connection before its sends are skipped (the server is
/// not reading).
pub const OUT_BACKLOG: usize = 64 * 1024;
/// Output buffer capacity kept once drained; more is released.
const OUT_IDLE_CAPACITY: usize = 4096;

/// Why a connection failed: `kind` is a short category for the error tally.
#[derive(Debug)]
pub struct Fail {
    pub kind: String,
    pub detail: String,
}

impl Fail {
    pub fn new(kind: impl Into<String>, detail: impl Into<String>) -> Fail {
        Fail {
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

fn io_fail(step: &str, e: std::io::Error) -> Fail {
    Fail::new(format!("io:{step}"), e.to_string())
}

fn timeout_fail(step: &str) -> Fail {
    Fail::new(
        format!("timeout:{step}"),
        format!("no answer in time during {step}"),
    )
}

/// Durations of the login steps, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoginTimes {
    pub tls_us: Option<u64>,
    pub auth_us: u64,
    pub total_us: u64,
}

/// What the login should include beyond bind.
#[derive(Clone, Copy, Debug)]
pub struct LoginOpts {
    pub roster: bool,
    pub presence: bool,
}

/// A logged-in (or logging-in) client connection.
pub struct Conn {
    io: Io,
    pub framer: Framer,
    /// Bytes waiting to be written.
    pub out: Vec<u8>,
    flush_pending: bool,
}

/// What one step of [`Conn::io_step`] did.
pub enum Progress {
    Read,
    Wrote,
}

impl Conn {
    /// Progress on the socket: writes queued output and reads into the framer,
    /// whichever is possible first. End of stream is an error.
    pub async fn io_step(&mut self) -> Result<Progress, Fail> {
        poll_fn(|cx| {
            if !self.out.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Fail::new("io:write", "wrote zero bytes")));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.out.drain(..n);
                        if self.out.is_empty() && self.out.capacity() > OUT_IDLE_CAPACITY {
                            self.out = Vec::new();
                        }
                        self.flush_pending = true;
                        return Poll::Ready(Ok(Progress::Wrote));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(io_fail("write", e))),
                    Poll::Pending => {}
                }
            } else if self.flush_pending {
                // TLS may hold records back until flushed.
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flush_pending = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(io_fail("write", e))),
                    Poll::Pending => {}
                }
            }
            match self.io.poll_read_into(cx, &mut self.framer) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(Fail::new(
                    "closed-by-server",
                    "the server closed the connection",
                ))),
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(Progress::Read)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(io_fail("read", e))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Writes everything queued, by `deadline`.
    async fn flush_out(&mut self, deadline: Instant, step: &str) -> Result<(), Fail> {
        let out = std::mem::take(&mut self.out);
        let write = async {
            self.io.write_all(&out).await?;
            self.io.flush().await
        };
        match timeout_at(deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_fail(step, e)),
            Err(_) => Err(timeout_fail(step)),
        }
    }

    async fn send(&mut self, bytes: &[u8], deadline: Instant, step: &str) -> Result<(), Fail> {
        self.out.extend_from_slice(bytes);
        self.flush_out(deadline, step).await
    }

    async fn next_event(&mut self, deadline: Instant, step: &str) -> Result<Event, Fail> {
        loop {
            match self.framer.next_event() {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => return Err(Fail::new("bad-xml", e.to_string())),
            }
            match timeout_at(deadline, self.io_step()).await {
                Ok(Ok(_)) => {}
                Ok(Err(f)) => return Err(f),
                Err(_) => return Err(timeout_fail(step)),
            }
        }
    }

    /// The next top-level element; a stream error or close is a failure.
    async fn next_element(&mut self, deadline: Instant, step: &str) -> Result<Element, Fail> {
        match self.next_event(deadline, step).await? {
            Event::Element(el) if el.is("error", ns::STREAM) => Err(stream_error(&el)),
            Event::Element(el) => Ok(el),
            Event::StreamOpen(_) => Err(Fail::new("protocol", "unexpected stream header")),
            Event::StreamClose => Err(Fail::new("closed-by-server", "stream closed")),
        }
    }

    /// Opens a stream; returns the features.
    async fn open(&mut self, domain: &str, deadline: Instant) -> Result<Element, Fail> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        self.send(header.as_bytes(), deadline, "stream").await?;
        match self.next_event(deadline, "stream").await? {
            Event::StreamOpen(_) => {}
            Event::Element(el) if el.is("error", ns::STREAM) => return Err(stream_error(&el)),
            _ => return Err(Fail::new("protocol", "expected a stream header")),
        }
        let features = self.next_element(deadline, "features").await?;
        if !features.is("features", ns::STREAM) {
            return Err(Fail::new("protocol", "expected stream features"));
        }
        Ok(features)
    }

    /// Waits for the `iq` result with `id`; other stanzas are kept in `stray`.
    async fn iq_result(
        &mut self,
        id: &str,
        deadline: Instant,
        step: &str,
        stray: &mut Vec<Element>,
    ) -> Result<Element, Fail> {
        loop {
            let el = self.next_element(deadline, step).await?;
            if el.name() == "iq" && el.attr("id") == Some(id) {
                return match el.attr("type") {
                    Some("result") => Ok(el),
                    _ => Err(Fail::new(format!("iq-error:{step}"), stanza_error(&el))),
                };
            }
            // Bounded: a server flooding us before the answer ends the login.
            if stray.len() >= 1024 {
                return Err(Fail::new(
                    "protocol",
                    "too many stanzas before an iq result",
                ));
            }
            stray.push(el);
        }
    }

    /// Sends `</stream:stream>` (after `prefix`), waits for the server to close, and
    /// shuts the socket down. Elements arriving meanwhile go to `on_element`.
    pub async fn logout(
        mut self,
        prefix: &[u8],
        deadline: Instant,
        mut on_element: impl FnMut(Element),
    ) -> Result<(), Fail> {
        self.out.extend_from_slice(prefix);
        self.out.extend_from_slice(writer::STREAM_CLOSE);
        loop {
            match self.framer.next_event() {
                Ok(Some(Event::Element(el))) => {
                    on_element(el);
                    continue;
                }
                Ok(Some(Event::StreamClose)) => break,
                Ok(Some(Event::StreamOpen(_))) => continue,
                Ok(None) => {}
                Err(e) => return Err(Fail::new("bad-xml", e.to_string())),
            }
            match timeout_at(deadline, self.io_step()).await {
                Ok(Ok(_)) => {}
                // The server may close the socket right after its own close tag.
                Ok(Err(f)) if f.kind == "closed-by-server" && self.out.is_empty() => break,
                Ok(Err(f)) => return Err(f),
                Err(_) => return Err(timeout_fail("logout")),
            }
        }
        let _ = timeout_at(deadline, self.io.shutdown()).await;
        Ok(())
    }

    /// Resets the connection instead of closing it (for abandoned connections).
    pub fn abort(self) {
        // A zero linger makes the close send RST rather than wait.
        #[allow(deprecated)]
        let _ = self.io.tcp().set_linger(Some(Duration::ZERO));
    }
}

/// Connects and logs in user `user`; returns the connection, the step timings, the
/// roster result (when asked) and stanzas that arrived before the login finished.
pub async fn login(
    ctx: &Ctx,
    user: u32,
    source: Option<std::net::Ipv4Addr>,
    opts: LoginOpts,
) -> Result<(Conn, LoginTimes, Option<Element>, Vec<Element>), Fail> {
    let args = &ctx.args;
    let start = Instant::now();
    let deadline = start + args.timeout;
    let server = ctx.servers[user as usize % ctx.servers.len()];
    let tcp = match timeout_at(deadline, net::connect(server, source)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Fail::new("connect", e.to_string())),
        Err(_) => return Err(timeout_fail("connect")),
    };
    let mut conn = Conn {
        io: Io::Plain(tcp),
        framer: Framer::new(Limits::AUTHENTICATED),
        out: Vec::new(),
        flush_pending: false,
    };
    let mut times = LoginTimes::default();
    let domain = args.domain.as_str();
    let mut features = conn.open(domain, deadline).await?;

    if args.tls == TlsMode::Starttls {
        if !features.has_child("starttls", ns::TLS) {
            return Err(Fail::new(
                "no-starttls",
                "the server does not offer STARTTLS",
            ));
        }
        conn.send(
            b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            deadline,
            "starttls",
        )
        .await?;
        let el = conn.next_element(deadline, "starttls").await?;
        if !el.is("proceed", ns::TLS) {
            return Err(Fail::new(
                "starttls-refused",
                format!("got <{}/>", el.name()),
            ));
        }
        conn.framer.restart_discarding();
        let t = Instant::now();
        let Io::Plain(tcp) = conn.io else {
            return Err(Fail::new("protocol", "TLS twice"));
        };
        let Some(tls) = &ctx.tls else {
            return Err(Fail::new("config", "no TLS configuration"));
        };
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())
            .map_err(|e| Fail::new("config", e.to_string()))?;
        let stream = match timeout_at(deadline, tls.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Fail::new("tls", e.to_string())),
            Err(_) => return Err(timeout_fail("tls")),
        };
        conn.io = Io::Tls(Box::new(stream));
        times.tls_us = Some(t.elapsed().as_micros() as u64);
        features = conn.open(domain, deadline).await?;
    }

    let mech = args.sasl.name();
    let offered = features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().any(|c| c.text() == mech));
    if !offered {
        return Err(Fail::new(
            format!("mechanism-not-offered:{mech}"),
            "the server does not offer the SASL mechanism",
        ));
    }
    let username = args.localpart(user);
    let t = Instant::now();
    authenticate(&mut conn, args.sasl, &username, &args.password, deadline).await?;
    times.auth_us = t.elapsed().as_micros() as u64;
    conn.framer.restart();
    let features = conn.open(domain, deadline).await?;

    let mut stray = Vec::new();
    let mut iq = Vec::with_capacity(192);
    let _ = write!(
        iq,
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{}</resource></bind></iq>",
        args.resource
    );
    conn.send(&iq, deadline, "bind").await?;
    conn.iq_result("b1", deadline, "bind", &mut stray).await?;

    // RFC 3921 sessions: only servers that still require them get one.
    let session_required = features
        .get_child("session", ns::SESSION)
        .is_some_and(|s| !s.has_child("optional", ns::SESSION));
    if session_required {
        conn.send(
            b"<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
            deadline,
            "session",
        )
        .await?;
        conn.iq_result("s1", deadline, "session", &mut stray)
            .await?;
    }

    let mut roster = None;
    if opts.roster {
        conn.send(
            b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
            deadline,
            "roster",
        )
        .await?;
        roster = Some(conn.iq_result("r1", deadline, "roster", &mut stray).await?);
    }
    if opts.presence {
        conn.send(b"<presence/>", deadline, "presence").await?;
    }
    conn.framer.set_limits(Limits::AUTHENTICATED);
    times.total_us = start.elapsed().as_micros() as u64;
    Ok((conn, times, roster, stray))
}

async fn authenticate(
    conn: &mut Conn,
    mech: SaslMech,
    user: &str,
    password: &str,
    deadline: Instant,
) -> Result<(), Fail> {
    let scram_mech = match mech {
        SaslMech::Plain => {
            let data = aviary_sasl::client::plain(None, user, password);
            let auth = format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                B64.encode(data)
            );
            conn.send(auth.as_bytes(), deadline, "sasl").await?;
            let el = conn.next_element(deadline, "sasl").await?;
            return sasl_outcome(&el).map(|_| ());
        }
        SaslMech::ScramSha1 => Mechanism::ScramSha1,
        SaslMech::ScramSha256 => Mechanism::ScramSha256,
    };
    // No channel binding ("n"): the binding variants are not what we measure.
    let mut client = ScramClient::new(scram_mech, user, password, &ChannelBindings::default())
        .map_err(|e| Fail::new("sasl-client", e.to_string()))?;
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
        scram_mech.name(),
        B64.encode(client.first())
    );
    conn.send(auth.as_bytes(), deadline, "sasl").await?;
    let el = conn.next_element(deadline, "sasl").await?;
    if !el.is("challenge", ns::SASL) {
        sasl_outcome(&el)?;
        return Err(Fail::new("protocol", "SCRAM success without a challenge"));
    }
    let server_first = B64
        .decode(el.text().trim().as_bytes())
        .map_err(|_| Fail::new("protocol", "challenge is not base64"))?;
    let client_final = client
        .respond(&server_first)
        .map_err(|e| Fail::new("sasl-server-first", e.to_string()))?;
    let response = format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        B64.encode(client_final)
    );
    conn.send(response.as_bytes(), deadline, "sasl").await?;
    let el = conn.next_element(deadline, "sasl").await?;
    let data = sasl_outcome(&el)?;
    let data = B64
        .decode(data.trim().as_bytes())
        .map_err(|_| Fail::new("protocol", "success data is not base64"))?;
    client
        .verify(&data)
        .map_err(|e| Fail::new("sasl-server-signature", e.to_string()))
}

/// `<success/>` gives its text; `<failure/>` becomes a `sasl:<condition>` failure.
fn sasl_outcome(el: &Element) -> Result<String, Fail> {
    if el.is("success", ns::SASL) {
        return Ok(el.text().into_owned());
    }
    if el.is("failure", ns::SASL) {
        let cond = el
            .children()
            .find(|c| c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_default();
        return Err(Fail::new(format!("sasl:{cond}"), "authentication failed"));
    }
    Err(Fail::new(
        "protocol",
        format!("expected a SASL answer, got <{}/>", el.name()),
    ))
}

/// A `<stream:error/>` as a failure `stream-error:<condition>`.
pub fn stream_error(el: &Element) -> Fail {
    let cond = el
        .children()
        .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let text = el
        .child_text("text", ns::STREAMS)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    Fail::new(format!("stream-error:{cond}"), text)
}

fn stanza_error(el: &Element) -> String {
    el.get_child("error", ns::CLIENT)
        .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "no condition".to_owned())
}
