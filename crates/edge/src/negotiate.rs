//! Client stream negotiation, as a sequence of stages (RFC 6120 §4–§7):
//!
//! ```text
//! TCP ─▶ [direct TLS] ─▶ open ─▶ STARTTLS? ─▶ open ─▶ SASL (+ XEP-0077) ─▶ open ─▶ bind ─▶ actor
//! ```
//!
//! Each stage is an async function that takes the stream and returns what the next
//! stage needs, so the order of the protocol is the order of the code. The whole
//! sequence runs under one deadline (`negotiation_timeout`).

use crate::EdgeContext;
use crate::conn::{self, Prepared};
use crate::io::Io;
use crate::listener::ListenerKind;
use crate::register;
use crate::xml_stream::{Ended, XmlStream};
use aviary_router::{BindError, BindRequest, ConnRef};
use aviary_sasl::{ChannelBindings, Failure, Mechanism, ServerSession, Step, StoredCredentials};
use aviary_xmpp::{
    BareJid, Element, Limits, Stanza, StanzaError, StanzaErrorCondition, StreamError,
    StreamErrorCondition, ns,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Runs one client connection from accept to the start of its actor.
pub(crate) async fn run(
    edge: Arc<EdgeContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
) {
    let _ = tcp.set_nodelay(true);
    let _state = crate::metrics::StateGuard::new("negotiating", kind.name());
    let deadline = Instant::now() + edge.config.negotiation_timeout;
    let io = match kind {
        ListenerKind::StartTls => Io::Plain(tcp),
        ListenerKind::DirectTls => match direct_tls(&edge, tcp, deadline).await {
            Some(io) => io,
            None => return,
        },
    };
    let mut s = XmlStream::new(io, deadline);
    s.framer.set_limits(Limits {
        max_stanza_bytes: edge.config.pre_auth_max_stanza_bytes,
        ..Limits::PRE_AUTH
    });
    let user = match authenticate(&edge, &mut s, peer).await {
        Ok(user) => user,
        Err(_) => return,
    };
    s.framer.set_limits(Limits {
        max_stanza_bytes: edge.config.max_stanza_bytes,
        ..Limits::AUTHENTICATED
    });
    s.framer.restart();
    let _ = bind(edge, s, user, kind).await;
}

async fn direct_tls(edge: &EdgeContext, tcp: TcpStream, deadline: Instant) -> Option<Io> {
    let tls = edge.tls.as_ref()?;
    let r = match tokio::time::timeout_at(deadline, tls.acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(Io::Tls(Box::new(stream))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    };
    crate::metrics::tls_handshake(r.is_some());
    r
}

/// Stage: stream header(s), STARTTLS, SASL. Returns the authenticated account.
async fn authenticate(
    edge: &EdgeContext,
    s: &mut XmlStream,
    peer: SocketAddr,
) -> Result<BareJid, Ended> {
    let cfg = &edge.config;
    s.open(&cfg.domains).await?;
    if !s.io.is_tls() && edge.tls.is_some() {
        let mut features = Element::new("features", ns::STREAM);
        let mut starttls = Element::new("starttls", ns::TLS);
        if cfg.require_tls {
            starttls.append_child(Element::new("required", ns::TLS));
        }
        features.append_child(starttls);
        if !cfg.require_tls {
            add_sasl_features(edge, s, &mut features);
        }
        s.send(&features).await?;
        let el = s.next_element().await?;
        if el.is("starttls", ns::TLS) {
            starttls_upgrade(edge, s).await?;
            s.open(&cfg.domains).await?;
        } else if cfg.require_tls {
            return Err(refuse_before_tls(s, &el).await);
        } else {
            return sasl(edge, s, peer, Some(el)).await;
        }
    } else if !s.io.is_tls() && cfg.require_tls {
        // TLS is required but no certificate is configured: nothing can succeed.
        return Err(s
            .fail(StreamError::with_text(
                StreamErrorCondition::PolicyViolation,
                "TLS is required but not available on this listener",
            ))
            .await);
    }
    let mut features = Element::new("features", ns::STREAM);
    add_sasl_features(edge, s, &mut features);
    s.send(&features).await?;
    sasl(edge, s, peer, None).await
}

/// RFC 6120 §5.4.3.3: `<proceed/>`, drop buffered plaintext, handshake.
async fn starttls_upgrade(edge: &EdgeContext, s: &mut XmlStream) -> Result<(), Ended> {
    let Some(tls) = edge.tls.clone() else {
        return Err(Ended::Closed);
    };
    s.send(&Element::new("proceed", ns::TLS)).await?;
    s.framer.restart_discarding();
    let Io::Plain(tcp) = std::mem::replace(&mut s.io, Io::Detached) else {
        return Err(Ended::Closed);
    };
    match tokio::time::timeout_at(s.deadline(), tls.acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            crate::metrics::tls_handshake(true);
            s.io = Io::Tls(Box::new(stream));
            Ok(())
        }
        Ok(Err(e)) => {
            crate::metrics::tls_handshake(false);
            tracing::debug!(error = %e, "STARTTLS handshake failed");
            Err(Ended::Closed)
        }
        Err(_) => {
            crate::metrics::tls_handshake(false);
            Err(Ended::Closed)
        }
    }
}

/// Before TLS when TLS is mandatory-to-negotiate (RFC 6120 §5.3.1): an `<auth/>` gets
/// `<encryption-required/>` (§6.5.4), then the stream ends with `<not-authorized/>`
/// (§4.9.3.12), as it does for anything else sent before TLS.
async fn refuse_before_tls(s: &mut XmlStream, el: &Element) -> Ended {
    if el.is("auth", ns::SASL) {
        let failure = sasl_failure(Failure::EncryptionRequired, Some("Use STARTTLS first"));
        if s.send(&failure).await.is_err() {
            return Ended::Closed;
        }
    }
    s.fail(StreamError::with_text(
        StreamErrorCondition::NotAuthorized,
        "TLS is required before authentication",
    ))
    .await
}

fn channel_bindings(edge: &EdgeContext, s: &XmlStream) -> ChannelBindings {
    match (&edge.tls, s.io.tls()) {
        (Some(tls), Some(conn)) => tls.channel_bindings(conn),
        _ => ChannelBindings::default(),
    }
}

fn offered(edge: &EdgeContext, s: &XmlStream) -> (Vec<Mechanism>, ChannelBindings) {
    let cb = channel_bindings(edge, s);
    let tls = s.io.is_tls();
    let mechs = aviary_sasl::offered_mechanisms(tls, &cb, tls || edge.config.allow_insecure_plain);
    (mechs, cb)
}

fn registration_open(edge: &EdgeContext, s: &XmlStream) -> bool {
    edge.config.registration && (s.io.is_tls() || !edge.config.require_tls)
}

fn add_sasl_features(edge: &EdgeContext, s: &XmlStream, features: &mut Element) {
    let (mechs, cb) = offered(edge, s);
    let mut m = Element::new("mechanisms", ns::SASL);
    for mech in &mechs {
        m.append_child(Element::new("mechanism", ns::SASL).with_text(mech.name()));
    }
    features.append_child(m);
    // XEP-0440: which channel-binding types the -PLUS mechanisms can use here.
    if mechs.iter().any(|m| m.is_plus()) {
        let mut cbe = Element::new("sasl-channel-binding", ns::SASL_CB);
        for t in cb.types() {
            cbe.append_child(Element::new("channel-binding", ns::SASL_CB).with_attr("type", t));
        }
        features.append_child(cbe);
    }
    if registration_open(edge, s) {
        features.append_child(Element::new("register", ns::REGISTER_FEATURE));
    }
}

fn sasl_failure(f: Failure, text: Option<&str>) -> Element {
    let mut el = Element::new("failure", ns::SASL).with_child(Element::new(f.name(), ns::SASL));
    if let Some(t) = text {
        el.append_child(
            Element::new("text", ns::SASL)
                .with_attr("xml:lang", "en")
                .with_text(t),
        );
    }
    el
}

fn sasl_data(tag: &'static str, data: &[u8]) -> Element {
    let el = Element::new(tag, ns::SASL);
    // RFC 6120 §6.4.2: an empty initial response or challenge is sent as "=".
    if data.is_empty() {
        el.with_text("=")
    } else {
        el.with_text(B64.encode(data))
    }
}

/// RFC 6120 §6.4.2: absent text means no data; "=" means empty data.
fn decode_sasl_text(el: &Element) -> Result<Option<Vec<u8>>, ()> {
    let text = el.text();
    let text: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match text.as_str() {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        t => B64.decode(t).map(Some).map_err(|_| ()),
    }
}

/// The SASL stage, including in-band registration iqs before authentication.
async fn sasl(
    edge: &EdgeContext,
    s: &mut XmlStream,
    peer: SocketAddr,
    mut pending: Option<Element>,
) -> Result<BareJid, Ended> {
    let (mechs, cb) = offered(edge, s);
    let plus_offered = mechs.iter().any(|m| m.is_plus());
    let mut session: Option<ServerSession> = None;
    let mut account: Option<BareJid> = None;
    let mut failures = 0u32;
    loop {
        let el = match pending.take() {
            Some(el) => el,
            None => s.next_element().await?,
        };
        if el.ns() != ns::SASL {
            if el.is("iq", ns::CLIENT) && registration_open(edge, s) {
                register::handle_unauthenticated(edge, s, peer, el).await?;
                continue;
            }
            return Err(s
                .fail(StreamError::with_text(
                    StreamErrorCondition::NotAuthorized,
                    "Authenticate first",
                ))
                .await);
        }
        let step = match el.name() {
            "auth" => {
                let mech = el
                    .attr("mechanism")
                    .and_then(Mechanism::from_name)
                    .filter(|m| mechs.contains(m));
                let Some(mech) = mech else {
                    s.send(&sasl_failure(Failure::InvalidMechanism, None))
                        .await?;
                    continue;
                };
                let mut sess = ServerSession::new(mech, cb.clone(), plus_offered);
                let step = match decode_sasl_text(&el) {
                    Err(()) => Step::Failure(Failure::IncorrectEncoding),
                    // No initial response: an empty challenge asks for it.
                    Ok(None) => sess.step(&[]),
                    Ok(Some(data)) => sess.step(&data),
                };
                session = Some(sess);
                account = None;
                step
            }
            "response" => match (session.as_mut(), decode_sasl_text(&el)) {
                (None, _) => Step::Failure(Failure::MalformedRequest),
                (Some(_), Err(())) => Step::Failure(Failure::IncorrectEncoding),
                (Some(sess), Ok(data)) => sess.step(&data.unwrap_or_default()),
            },
            "abort" => match session.as_mut() {
                Some(sess) => sess.abort(),
                None => Step::Failure(Failure::Aborted),
            },
            _ => Step::Failure(Failure::MalformedRequest),
        };
        let mech_name = session.as_ref().map_or("none", |s| s.mechanism().name());
        let outcome = drive(edge, s, &mut session, &mut account, step).await?;
        match &outcome {
            Outcome::Authenticated(_) => crate::metrics::auth(mech_name, true),
            Outcome::Failed => crate::metrics::auth(mech_name, false),
            Outcome::Continue => {}
        }
        match outcome {
            Outcome::Continue => {}
            Outcome::Authenticated(jid) => {
                edge.auth_failures.clear(&jid.to_string());
                tracing::debug!(user = %jid, "authenticated");
                return Ok(jid);
            }
            Outcome::Failed => {
                session = None;
                failures += 1;
                if let Some(jid) = account.take() {
                    edge.auth_failures.record(&jid.to_string());
                }
                if failures >= edge.config.max_auth_failures_per_connection {
                    // RFC 6120 §6.4.5: a bounded number of retries, then the stream ends.
                    return Err(s
                        .fail(StreamError::with_text(
                            StreamErrorCondition::PolicyViolation,
                            "Too many failed authentication attempts",
                        ))
                        .await);
                }
            }
        }
    }
}

enum Outcome {
    Continue,
    Authenticated(BareJid),
    Failed,
}

/// Carries a SASL step through credential lookup to what is sent to the client.
async fn drive(
    edge: &EdgeContext,
    s: &mut XmlStream,
    session: &mut Option<ServerSession>,
    account: &mut Option<BareJid>,
    mut step: Step,
) -> Result<Outcome, Ended> {
    loop {
        step = match step {
            Step::Challenge(data) => {
                s.send(&sasl_data("challenge", &data)).await?;
                return Ok(Outcome::Continue);
            }
            Step::NeedCredentials { username } => {
                let Some(sess) = session.as_mut() else {
                    return Ok(Outcome::Failed);
                };
                let jid = BareJid::new(&format!("{username}@{}", s.domain)).ok();
                *account = jid.clone();
                match jid {
                    Some(jid) if edge.auth_failures.is_limited(&jid.to_string()) => {
                        s.send(&sasl_failure(
                            Failure::TemporaryAuthFailure,
                            Some("Too many failed attempts for this account; try again later"),
                        ))
                        .await?;
                        *account = None;
                        return Ok(Outcome::Failed);
                    }
                    Some(jid) => match lookup(edge, &jid).await {
                        Ok(creds) => provide(sess, creds).await,
                        Err(()) => Step::Failure(Failure::TemporaryAuthFailure),
                    },
                    None => provide(sess, None).await,
                }
            }
            Step::Success {
                username,
                authzid,
                additional_data,
            } => {
                let Ok(jid) = BareJid::new(&format!("{username}@{}", s.domain)) else {
                    return send_failure(s, Failure::NotAuthorized).await;
                };
                // The authzid may only name the account itself (no proxy
                // authorisation for clients).
                if let Some(z) = authzid.as_deref().filter(|z| !z.is_empty())
                    && BareJid::new(z).ok().as_ref() != Some(&jid)
                {
                    return send_failure(s, Failure::InvalidAuthzid).await;
                }
                let el = match additional_data {
                    Some(d) => Element::new("success", ns::SASL).with_text(B64.encode(d)),
                    None => Element::new("success", ns::SASL),
                };
                s.send(&el).await?;
                *session = None;
                return Ok(Outcome::Authenticated(jid));
            }
            Step::Failure(f) => return send_failure(s, f).await,
        };
    }
}

async fn send_failure(s: &mut XmlStream, f: Failure) -> Result<Outcome, Ended> {
    s.send(&sasl_failure(f, None)).await?;
    Ok(Outcome::Failed)
}

async fn lookup(edge: &EdgeContext, jid: &BareJid) -> Result<Option<StoredCredentials>, ()> {
    match edge.accounts.credentials(jid).await {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => match StoredCredentials::from_bytes(&bytes) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::error!(user = %jid, error = %e, "stored credentials are unreadable");
                Err(())
            }
        },
        Err(e) => {
            tracing::warn!(user = %jid, error = %e, "account lookup failed");
            Err(())
        }
    }
}

/// Hands credentials to the session; PLAIN's PBKDF2 runs on the blocking pool so a
/// login storm cannot stall the event loop.
async fn provide(sess: &mut ServerSession, creds: Option<StoredCredentials>) -> Step {
    if !sess.credentials_check_is_expensive() {
        return sess.provide_credentials(creds.as_ref());
    }
    let placeholder = ServerSession::new(sess.mechanism(), ChannelBindings::default(), false);
    let mut owned = std::mem::replace(sess, placeholder);
    match tokio::task::spawn_blocking(move || {
        let step = owned.provide_credentials(creds.as_ref());
        (owned, step)
    })
    .await
    {
        Ok((owned, step)) => {
            *sess = owned;
            step
        }
        Err(_) => Step::Failure(Failure::TemporaryAuthFailure),
    }
}

/// Stage: the post-authentication stream and resource binding (RFC 6120 §7).
async fn bind(
    edge: Arc<EdgeContext>,
    mut s: XmlStream,
    user: BareJid,
    kind: ListenerKind,
) -> Result<(), Ended> {
    let domain = s.domain.clone();
    s.open(std::slice::from_ref(&domain)).await?;
    let mut features = Element::new("features", ns::STREAM)
        .with_child(Element::new("bind", ns::BIND))
        .with_child(
            Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)),
        )
        // RFC 6121 §2.6.1: roster versioning.
        .with_child(Element::new("ver", ns::ROSTER_VER));
    if edge.config.pre_approval {
        // RFC 6121 §3.4.1: subscription pre-approval.
        features.append_child(Element::new("sub", ns::PRE_APPROVAL));
    }
    s.send(&features).await?;
    loop {
        let el = s.next_element().await?;
        let bind_payload = el.is("iq", ns::CLIENT)
            && el.attr("type") == Some("set")
            && el.children().count() == 1
            && el.has_child("bind", ns::BIND);
        if !bind_payload {
            // RFC 6120 §7.1: nothing is processed before a resource is bound.
            return Err(s
                .fail(StreamError::with_text(
                    StreamErrorCondition::NotAuthorized,
                    "Bind a resource first",
                ))
                .await);
        }
        let Ok(iq) = Stanza::from_element(el) else {
            return Err(s
                .fail(StreamError::new(StreamErrorCondition::BadFormat))
                .await);
        };
        let requested = iq
            .element()
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("resource", ns::BIND))
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let id = edge.next_conn_id();
        let prepared = Prepared::new(&edge);
        let req = BindRequest {
            user: user.clone(),
            resource: requested,
            conn: ConnRef {
                edge: edge.config.edge_id.clone(),
                id,
                sink: prepared.sink.clone(),
            },
        };
        match edge.router.bind(req).await {
            Ok(full) => {
                let mut result = iq
                    .iq_result(Some(Element::new("bind", ns::BIND).with_child(
                        Element::new("jid", ns::BIND).with_text(full.to_string()),
                    )));
                result.from = None;
                let first = conn::element_bytes(&result.into_element());
                tracing::debug!(jid = %full, conn = %id, "resource bound");
                prepared.start(
                    edge,
                    conn::BoundStream {
                        id,
                        jid: full,
                        io: s.io,
                        framer: s.framer,
                        first_output: first,
                        kind,
                    },
                );
                return Ok(());
            }
            Err(e) => {
                let condition = match e {
                    // RFC 6120 §7.7.2.1 / §7.6.2.1
                    BindError::BadResource => StanzaErrorCondition::BadRequest,
                    BindError::TooManyResources => StanzaErrorCondition::ResourceConstraint,
                    BindError::Unavailable(ref why) => {
                        tracing::warn!(user = %user, error = %why, "bind failed");
                        StanzaErrorCondition::InternalServerError
                    }
                };
                if let Some(mut reply) = iq.error_reply(StanzaError::new(condition)) {
                    reply.from = None;
                    s.send(&reply.into_element()).await?;
                }
            }
        }
    }
}
