//! The connection actor: one per bound client stream.
//!
//! It owns the transport and the framer. Two [`ActorFuture`]s run inside its context
//! and borrow the actor directly: the read loop (stack buffer → framer → validate →
//! stamp `from` → router) and the write loop (drains the output buffer). Because the
//! write loop runs after the mailbox in each poll of the context, every delivery
//! that arrived in one tick leaves in one write.
//!
//! Overflow policy: the output buffer is bounded by `write_high_watermark`; beyond
//! it [`ConnSink::deliver`] refuses deliveries (the session layer bounces messages
//! with `resource-constraint` and drops presence), and a client that accepts no
//! bytes for `write_timeout` is disconnected.

use crate::EdgeContext;
use crate::io::Io;
use crate::xml_stream::READ_CHUNK;
use actix::prelude::*;
use aviary_router::{ClientSink, ConnId, DeliverError, Delivery, RouteError};
use aviary_xmpp::stanza::InvalidStanza;
use aviary_xmpp::writer::{self, STREAM_CLOSE};
use aviary_xmpp::{
    Element, Event, Framer, FullJid, IqType, Jid, Stanza, StanzaError, StanzaErrorCondition,
    StanzaKind, StreamError, StreamErrorCondition, ns,
};
use dashmap::DashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Deliveries queued in the mailbox before the sink reports `Full`.
const MAILBOX_CAPACITY: usize = 256;
/// Events handled per poll of the read loop before yielding to the mailbox.
const EVENTS_PER_POLL: usize = 64;
/// Output buffers above this capacity are released once drained, so an idle
/// connection holds no large allocation.
const KEEP_OUT_CAPACITY: usize = 8 * 1024;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Delivery);

/// The session layer's handle to a connection actor.
pub struct ConnSink {
    addr: Addr<ConnActor>,
    pending: Arc<AtomicUsize>,
    high_watermark: usize,
}

impl ClientSink for ConnSink {
    #[allow(clippy::result_large_err)]
    fn deliver(&self, delivery: Delivery) -> Result<(), DeliverError> {
        let closing = matches!(delivery, Delivery::Close(_));
        if !closing && self.pending.load(Ordering::Relaxed) > self.high_watermark {
            return Err(DeliverError::Full(delivery));
        }
        match self.addr.try_send(Deliver(delivery)) {
            Ok(()) => Ok(()),
            Err(SendError::Full(Deliver(d))) => {
                if closing {
                    // A close must get through even to a congested connection.
                    self.addr.do_send(Deliver(d));
                    Ok(())
                } else {
                    Err(DeliverError::Full(d))
                }
            }
            Err(SendError::Closed(Deliver(d))) => Err(DeliverError::Gone(d)),
        }
    }
}

/// The edge's bound connections, for shutdown and (in a cluster) delivery by id.
#[derive(Default)]
pub struct Registry {
    conns: DashMap<ConnId, Arc<ConnSink>>,
}

impl Registry {
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn get(&self, id: ConnId) -> Option<Arc<ConnSink>> {
        self.conns.get(&id).map(|a| a.clone())
    }

    pub fn close_all(&self, error: StreamError) {
        for entry in self.conns.iter() {
            entry
                .value()
                .addr
                .do_send(Deliver(Delivery::Close(error.clone())));
        }
    }

    pub fn ids(&self) -> Vec<ConnId> {
        self.conns.iter().map(|e| *e.key()).collect()
    }

    /// Closes one stream with `error`; false if it is not (any more) registered.
    pub fn close(&self, id: ConnId, error: StreamError) -> bool {
        match self.get(id) {
            Some(sink) => {
                sink.addr.do_send(Deliver(Delivery::Close(error)));
                true
            }
            None => false,
        }
    }
}

/// A negotiated stream whose resource was just bound.
pub(crate) struct BoundStream {
    pub id: ConnId,
    pub jid: FullJid,
    pub io: Io,
    pub framer: Framer,
    /// The bind result, written before anything else.
    pub first_output: Vec<u8>,
    pub kind: crate::ListenerKind,
}

/// Everything needed to start a connection actor after a successful bind.
pub(crate) struct Prepared {
    pub ctx: Context<ConnActor>,
    pub sink: Arc<ConnSink>,
    pending: Arc<AtomicUsize>,
}

impl Prepared {
    pub fn new(edge: &EdgeContext) -> Self {
        let mut ctx = Context::new();
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let pending = Arc::new(AtomicUsize::new(0));
        let sink = Arc::new(ConnSink {
            addr: ctx.address(),
            pending: pending.clone(),
            high_watermark: edge.config.write_high_watermark,
        });
        Prepared { ctx, sink, pending }
    }

    /// Starts the actor on the current arbiter.
    pub fn start(self, edge: Arc<EdgeContext>, stream: BoundStream) {
        let BoundStream {
            id,
            jid,
            io,
            framer,
            first_output,
            kind,
        } = stream;
        edge.conns.conns.insert(id, self.sink.clone());
        edge.live.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let actor = ConnActor {
            _state: crate::metrics::StateGuard::new("bound", kind.name()),
            edge,
            id,
            jid,
            io,
            framer,
            pending: self.pending,
            out: Vec::new(),
            out_pos: 0,
            write_waker: None,
            last_rx: now,
            last_tx: now,
            ping_outstanding: false,
            closing: false,
            left: false,
            stalled_since: None,
        };
        let mut actor = actor;
        actor.queue(&first_output);
        self.ctx.run(actor);
    }
}

pub struct ConnActor {
    /// Counts this stream as bound for as long as the actor lives.
    _state: crate::metrics::StateGuard,
    edge: Arc<EdgeContext>,
    id: ConnId,
    jid: FullJid,
    io: Io,
    framer: Framer,
    /// Bytes not yet written, shared with [`ConnSink`] for the overflow check.
    pending: Arc<AtomicUsize>,
    out: Vec<u8>,
    out_pos: usize,
    write_waker: Option<Waker>,
    last_rx: Instant,
    last_tx: Instant,
    ping_outstanding: bool,
    /// Set once the stream is ending: input is ignored, output is flushed, then stop.
    closing: bool,
    /// Set once the connection left the registry and the router was told.
    left: bool,
    stalled_since: Option<Instant>,
}

impl Actor for ConnActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.spawn(ReadLoop);
        ctx.spawn(WriteLoop);
        let tick = self.timer_tick();
        ctx.run_interval(tick, |act, ctx| act.on_tick(ctx));
        // Bound while the edge began draining: end it at once.
        if let Some(error) = self.edge.drain_error() {
            self.close_with(Some(error), ctx);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.leave();
        self.edge.live.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(jid = %self.jid, conn = %self.id, "stream ended");
    }
}

impl Handler<Deliver> for ConnActor {
    type Result = ();

    fn handle(&mut self, Deliver(delivery): Deliver, ctx: &mut Self::Context) {
        match delivery {
            Delivery::Stanza(stanza) | Delivery::Traced(stanza, _) => {
                if self.closing {
                    // Sent before the session layer learnt of the close: hand it
                    // back rather than drop it.
                    self.edge.router.undeliverable(self.id, stanza);
                } else {
                    self.queue_stanza(&stanza);
                }
            }
            Delivery::Close(error) => self.close_with(Some(error), ctx),
        }
    }
}

impl ConnActor {
    fn timer_tick(&self) -> Duration {
        let c = &self.edge.config;
        let mut base = c.idle_timeout / 2;
        if !c.keepalive_interval.is_zero() {
            base = base.min(c.keepalive_interval);
        }
        (base / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn queue(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.out.extend_from_slice(bytes);
        self.pending.fetch_add(bytes.len(), Ordering::Relaxed);
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    fn queue_stanza(&mut self, stanza: &Stanza) {
        crate::metrics::stanza_out(stanza.kind);
        let before = self.out.len();
        stanza.write_to(&mut self.out);
        let added = self.out.len() - before;
        self.pending.fetch_add(added, Ordering::Relaxed);
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    /// Leaves the registry and tells the router the resource is gone (once): from
    /// here on deliveries are handed back.
    fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        self.edge.conns.conns.remove(&self.id);
        self.edge.router.unbind(self.jid.clone(), self.id);
    }

    /// Ends the stream: optional stream error, our close tag, flush, stop.
    fn close_with(&mut self, error: Option<StreamError>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.leave();
        let mut bytes = Vec::with_capacity(256);
        if let Some(e) = &error {
            tracing::debug!(jid = %self.jid, condition = e.condition.name(), "closing stream");
            writer::write_element(&e.to_element(), ns::CLIENT, &mut bytes);
        }
        bytes.extend_from_slice(STREAM_CLOSE);
        self.queue(&bytes);
        // Bound the flush: a peer that stopped reading does not keep us alive.
        ctx.run_later(Duration::from_secs(5), |_, ctx| ctx.stop());
    }

    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let now = Instant::now();
        let c = &self.edge.config;
        if let Some(since) = self.stalled_since
            && now.duration_since(since) > c.write_timeout
        {
            tracing::debug!(jid = %self.jid, "client not reading; disconnecting");
            crate::metrics::overflow("disconnect");
            ctx.stop();
            return;
        }
        let silent = now.duration_since(self.last_rx);
        if silent >= c.idle_timeout {
            self.close_with(
                Some(StreamError::new(StreamErrorCondition::ConnectionTimeout)),
                ctx,
            );
            return;
        }
        if silent >= c.idle_timeout / 2 && !self.ping_outstanding {
            // XEP-0199 §4.2: a server-to-client ping; any answer counts as traffic.
            self.ping_outstanding = true;
            let domain = Jid::new(self.jid.domain().as_str()).ok();
            let mut ping = Stanza::new(StanzaKind::Iq, Some(Jid::from(self.jid.clone())), domain);
            ping.set_type_attr("get");
            ping.set_id(format!("aviary-ping-{}", self.id));
            ping.element_mut()
                .append_child(Element::new("ping", ns::PING));
            self.queue_stanza(&ping);
        } else if !c.keepalive_interval.is_zero()
            && now.duration_since(self.last_tx) >= c.keepalive_interval
            && self.out_pos == self.out.len()
        {
            // RFC 6120 §4.6.1 whitespace keepalive.
            self.queue(b" ");
        }
    }

    fn on_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        match event {
            Event::Element(el) => self.on_element(el, ctx),
            Event::StreamClose => self.close_with(None, ctx),
            Event::StreamOpen(_) => self.close_with(
                Some(StreamError::with_text(
                    StreamErrorCondition::NotWellFormed,
                    "Unexpected stream header",
                )),
                ctx,
            ),
        }
    }

    fn on_element(&mut self, el: Element, ctx: &mut Context<Self>) {
        let mut stanza = match Stanza::from_element(el) {
            Ok(s) => s,
            Err(InvalidStanza::BadAddress { reply, .. }) => {
                if let Some(reply) = reply {
                    self.queue_stanza(&reply);
                }
                return;
            }
            Err(InvalidStanza::Unsupported { name, .. }) => {
                self.close_with(
                    Some(StreamError::with_text(
                        StreamErrorCondition::UnsupportedStanzaType,
                        format!("<{name}/> is not a stanza this server understands"),
                    )),
                    ctx,
                );
                return;
            }
        };
        crate::metrics::stanza_in(stanza.kind);
        // RFC 6120 §8.1.2.1: the server stamps `from` with the full JID; a client
        // claiming any other address gets <invalid-from/> (§4.9.3.9).
        if let Some(from) = &stanza.from {
            let ok = match from.try_as_full() {
                Ok(full) => *full == self.jid,
                Err(bare) => *bare == self.jid.to_bare(),
            };
            if !ok {
                self.close_with(
                    Some(StreamError::with_text(
                        StreamErrorCondition::InvalidFrom,
                        "The 'from' address does not match this stream",
                    )),
                    ctx,
                );
                return;
            }
        }
        stanza.from = Some(Jid::from(self.jid.clone()));
        if stanza.kind == StanzaKind::Iq && !self.check_iq(&stanza) {
            return;
        }
        if self.ping_outstanding
            && stanza.kind == StanzaKind::Iq
            && stanza.id().is_some_and(|id| id.starts_with("aviary-ping-"))
        {
            self.ping_outstanding = false;
            return;
        }
        if let Err(e) = self.edge.router.route(self.id, stanza) {
            let (stanza, condition) = match e {
                RouteError::Overloaded(s) => (s, StanzaErrorCondition::ResourceConstraint),
                RouteError::Unavailable(s) => (s, StanzaErrorCondition::InternalServerError),
            };
            if stanza.kind != StanzaKind::Presence
                && let Some(mut reply) = stanza.error_reply(StanzaError::new(condition))
            {
                reply.from = None;
                self.queue_stanza(&reply);
            }
        }
    }

    /// RFC 6120 §8.2.3 iq rules, plus the iqs the edge answers itself. Returns false
    /// when the iq was answered here.
    fn check_iq(&mut self, iq: &Stanza) -> bool {
        let to_server = iq
            .to
            .as_ref()
            .is_none_or(|t| t.node().is_none() && t.resource().is_none());
        let bad = |me: &mut Self, text: &str| {
            if let Some(mut r) =
                iq.error_reply(StanzaError::new(StanzaErrorCondition::BadRequest).with_text(text))
            {
                r.from = None;
                me.queue_stanza(&r);
            }
            false
        };
        let Some(kind) = iq.iq_type() else {
            return bad(self, "An iq needs a type of get, set, result or error");
        };
        if iq.id().is_none() {
            return bad(self, "An iq needs an id");
        }
        if kind.is_request() && iq.iq_payload().is_none() {
            return bad(self, "An iq get or set carries exactly one payload element");
        }
        // RFC 3921 §3 session establishment: a no-op kept for older clients (RFC 6121
        // drops it; we advertise it as optional).
        if kind == IqType::Set
            && to_server
            && iq
                .iq_payload()
                .is_some_and(|p| p.is("session", ns::SESSION))
        {
            let mut r = iq.iq_result(None);
            r.from = None;
            self.queue_stanza(&r);
            return false;
        }
        true
    }
}

/// Reads the transport into a stack buffer, feeds the framer and handles events.
struct ReadLoop;

impl ActorFuture<ConnActor> for ReadLoop {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut ConnActor,
        ctx: &mut Context<ConnActor>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let mut handled = 0;
        loop {
            if act.closing {
                return Poll::Ready(());
            }
            match act.framer.next_event() {
                Ok(Some(ev)) => {
                    act.on_event(ev, ctx);
                    handled += 1;
                    if handled >= EVENTS_PER_POLL {
                        // Let deliveries and writes run; come back right away.
                        task.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    act.close_with(Some(e), ctx);
                    return Poll::Ready(());
                }
            }
            let mut buf = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut act.io).poll_read(task, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // TCP closed without </stream:stream>: nothing left to flush to.
                        ctx.stop();
                        return Poll::Ready(());
                    }
                    act.last_rx = Instant::now();
                    act.ping_outstanding = false;
                    act.framer.feed(rb.filled());
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(jid = %act.jid, error = %e, "read failed");
                    ctx.stop();
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Drains the output buffer to the transport; parks until more output is queued.
struct WriteLoop;

impl ActorFuture<ConnActor> for WriteLoop {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut ConnActor,
        ctx: &mut Context<ConnActor>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        while act.out_pos < act.out.len() {
            match Pin::new(&mut act.io).poll_write(task, &act.out[act.out_pos..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    ctx.stop();
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    act.out_pos += n;
                    act.pending.fetch_sub(n, Ordering::Relaxed);
                    act.last_tx = Instant::now();
                    act.stalled_since = None;
                }
                Poll::Pending => {
                    act.stalled_since.get_or_insert_with(Instant::now);
                    return Poll::Pending;
                }
            }
        }
        if !act.out.is_empty() {
            act.out.clear();
            act.out_pos = 0;
            if act.out.capacity() > KEEP_OUT_CAPACITY {
                act.out = Vec::new();
            }
        }
        // TLS keeps records in its own buffer until flushed.
        match Pin::new(&mut act.io).poll_flush(task) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => {
                ctx.stop();
                return Poll::Ready(());
            }
            Poll::Ready(Ok(())) => {}
        }
        if act.closing {
            let _ = Pin::new(&mut act.io).poll_shutdown(task);
            ctx.stop();
            return Poll::Ready(());
        }
        act.write_waker = Some(task.waker().clone());
        Poll::Pending
    }
}

/// Writes an element for the negotiation-to-actor hand-over (the bind result).
pub(crate) fn element_bytes(el: &Element) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    writer::write_element(el, ns::CLIENT, &mut out);
    out
}
