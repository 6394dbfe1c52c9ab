//! The edge's [`Router`] over gRPC: one `EdgeLink` stream to every session node.
//!
//! Reliability: every stanza a client sends gets an origin `(edge, seq)` and stays in
//! a bounded retransmission table until the session layer acknowledges it end to end
//! (delivered, stored offline, answered or bounced). Unacknowledged stanzas are sent
//! again to whichever node owns the sender's partition by then, so a session node
//! dying loses nothing; a copy delivered twice is dropped here by its origin.

use crate::codec;
use crate::pb;
use crate::pb::node_client::NodeClient;
use crate::view::View;
use async_trait::async_trait;
use aviary_edge::EdgeContext;
use aviary_router::{
    BindError, BindRequest, ConnId, DeliverError, Delivery, Origin, RouteError, Router,
};
use aviary_session::cluster::Direction;
use aviary_xmpp::{
    FullJid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, StreamError,
    StreamErrorCondition,
};
use dashmap::DashMap;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// Requests queued per session link.
const LINK_QUEUE: usize = 65_536;
/// Most stanzas awaiting acknowledgement on this edge; beyond it clients get
/// `resource-constraint`.
const MAX_UNACKED: usize = 200_000;
/// Origins remembered for duplicate detection.
const SEEN: usize = 65_536;

/// Timing of retransmission and binds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub retransmit_after: Duration,
    pub give_up_after: Duration,
    pub bind_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            retransmit_after: Duration::from_secs(2),
            give_up_after: Duration::from_secs(30),
            bind_timeout: Duration::from_secs(10),
        }
    }
}

struct Pending {
    env: pb::Envelope,
    partition: u32,
    conn: ConnId,
    first: Instant,
    last: Instant,
}

/// The edge's gRPC router.
pub struct GrpcRouter {
    this: Weak<GrpcRouter>,
    me: String,
    hello: pb::Hello,
    view: View,
    rt: tokio::runtime::Handle,
    timing: Timing,
    links: DashMap<String, mpsc::Sender<pb::EdgeRequest>>,
    edge: OnceLock<Weak<EdgeContext>>,
    next_seq: AtomicU64,
    next_req: AtomicU64,
    unacked: DashMap<u64, Pending>,
    binds: DashMap<u64, oneshot::Sender<pb::bind_response::Result>>,
    seen: Mutex<Seen>,
}

/// (origin edge, origin seq, connection) of recent deliveries, oldest first.
type SeenKey = (String, u64, u64);
#[derive(Default)]
struct Seen {
    set: HashSet<SeenKey>,
    order: VecDeque<SeenKey>,
}

impl GrpcRouter {
    pub fn new(
        me: String,
        incarnation: u64,
        view: View,
        rt: tokio::runtime::Handle,
        timing: Timing,
    ) -> Arc<Self> {
        let router = Arc::new_cyclic(|this| GrpcRouter {
            this: this.clone(),
            hello: pb::Hello {
                node_id: me.clone(),
                incarnation,
            },
            me,
            view,
            rt: rt.clone(),
            timing,
            links: DashMap::new(),
            edge: OnceLock::new(),
            next_seq: AtomicU64::new(1),
            next_req: AtomicU64::new(1),
            unacked: DashMap::new(),
            binds: DashMap::new(),
            seen: Mutex::new(Seen::default()),
        });
        let weak = Arc::downgrade(&router);
        rt.spawn(retransmit_loop(weak));
        router
    }

    /// Connects the router to the edge whose connections it delivers to.
    pub fn attach(&self, edge: &Arc<EdgeContext>) {
        let _ = self.edge.set(Arc::downgrade(edge));
    }

    /// Stanzas awaiting end-to-end acknowledgement.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    fn edge(&self) -> Option<Arc<EdgeContext>> {
        self.edge.get().and_then(Weak::upgrade)
    }

    fn link(&self, node: &str) -> mpsc::Sender<pb::EdgeRequest> {
        self.links
            .entry(node.to_owned())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(LINK_QUEUE);
                self.rt
                    .spawn(run_link(self.this.clone(), node.to_owned(), rx, tx.clone()));
                tx
            })
            .clone()
    }

    fn send_to_owner(&self, partition: u32, req: pb::EdgeRequest) -> bool {
        let Some(owner) = self.view.get().owner(partition).map(|c| c.node.clone()) else {
            return false;
        };
        self.link(&owner).try_send(req).is_ok()
    }

    fn resend(&self, seq: u64) {
        let Some((env, partition)) = self.unacked.get_mut(&seq).map(|mut p| {
            p.last = Instant::now();
            if let Some(c) = self.view.get().claim(p.partition) {
                p.env.epoch = c.epoch;
            }
            (p.env.clone(), p.partition)
        }) else {
            return;
        };
        let req = pb::EdgeRequest {
            request: Some(pb::edge_request::Request::Route(env)),
        };
        self.send_to_owner(partition, req);
    }

    /// A stanza could not be handled in time: its sender is told.
    fn give_up(&self, seq: u64) {
        let Some((_, p)) = self.unacked.remove(&seq) else {
            return;
        };
        let (Some(edge), Ok(stanza)) = (self.edge(), codec::stanza(&p.env)) else {
            return;
        };
        if let Some(mut reply) = stanza.error_reply(
            StanzaError::new(StanzaErrorCondition::RemoteServerTimeout)
                .with_text("The server could not process this in time"),
        ) {
            reply.from = None;
            let _ = edge.deliver(p.conn, Delivery::Stanza(reply));
        }
    }

    fn first_time(&self, key: SeenKey) -> bool {
        let mut seen = match self.seen.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if !seen.set.insert(key.clone()) {
            return false;
        }
        seen.order.push_back(key);
        if seen.order.len() > SEEN
            && let Some(old) = seen.order.pop_front()
        {
            seen.set.remove(&old);
        }
        true
    }

    fn on_event(&self, ev: pb::EdgeEvent) {
        let Some(ev) = ev.event else { return };
        match ev {
            pb::edge_event::Event::Acks(a) => {
                for s in a.seqs {
                    if let Some((_, p)) = self.unacked.remove(&s) {
                        crate::metrics::acked(p.first);
                    }
                }
            }
            pb::edge_event::Event::Bind(b) => {
                if let (Some((_, tx)), Some(r)) = (self.binds.remove(&b.request_id), b.result) {
                    let _ = tx.send(r);
                }
            }
            pb::edge_event::Event::Close(c) => {
                if let Some(edge) = self.edge() {
                    let e = StreamError {
                        condition: StreamErrorCondition::from_name(&c.condition)
                            .unwrap_or(StreamErrorCondition::UndefinedCondition),
                        text: (!c.text.is_empty()).then_some(c.text),
                    };
                    let _ = edge.deliver(ConnId(c.conn), Delivery::Close(e));
                }
            }
            pb::edge_event::Event::Deliver(d) => self.on_deliver(d),
        }
    }

    fn on_deliver(&self, d: pb::Deliver) {
        let Some(env) = d.envelope else { return };
        let origin = codec::origin_from(env.origin.as_ref());
        if let Some(o) = &origin
            && !self.first_time((o.edge.clone(), o.seq, d.conn))
        {
            return;
        }
        let Ok(stanza) = codec::stanza(&env) else {
            return;
        };
        let Some(edge) = self.edge() else { return };
        let delivery = match origin {
            Some(o) => Delivery::Traced(stanza, o),
            None => Delivery::Stanza(stanza),
        };
        if let Err(DeliverError::Gone(d_back)) = edge.deliver(ConnId(d.conn), delivery) {
            // The owner still believes this connection is bound: tell it otherwise,
            // then hand the stanza back to be routed without it.
            if let Some(to) = env.header.as_ref().and_then(|h| FullJid::new(&h.to).ok()) {
                self.unbind(to, ConnId(d.conn));
            }
            if let Some(stanza) = d_back.into_stanza() {
                Router::undeliverable(self, ConnId(d.conn), stanza);
            }
        }
    }
}

#[async_trait]
impl Router for GrpcRouter {
    async fn bind(&self, req: BindRequest) -> Result<FullJid, BindError> {
        let partition = View::partition_of(req.user.as_str());
        let deadline = Instant::now() + self.timing.bind_timeout;
        // A session node that answers "unavailable" (its directory or store is down)
        // is asked again only briefly, so the client gets its error in time.
        let unavailable_until =
            Instant::now() + self.timing.bind_timeout.min(Duration::from_secs(3));
        loop {
            if Instant::now() >= deadline {
                return Err(BindError::Unavailable(
                    "no session node answered in time".into(),
                ));
            }
            let Some(owner) = self.view.get().owner(partition).map(|c| c.node.clone()) else {
                // Ownership is moving: wait for the next view.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let id = self.next_req.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            self.binds.insert(id, tx);
            let msg = pb::EdgeRequest {
                request: Some(pb::edge_request::Request::Bind(pb::BindRequest {
                    request_id: id,
                    user: req.user.to_string(),
                    resource: req.resource.clone().unwrap_or_default(),
                    conn: req.conn.id.0,
                })),
            };
            if self.link(&owner).try_send(msg).is_err() {
                self.binds.remove(&id);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(left, rx).await;
            self.binds.remove(&id);
            use pb::bind_response::Result as R;
            match result {
                Ok(Ok(R::FullJid(j))) => {
                    return FullJid::new(&j).map_err(|e| BindError::Unavailable(e.to_string()));
                }
                Ok(Ok(R::Failure(f))) if f == pb::BindFailure::BadResource as i32 => {
                    return Err(BindError::BadResource);
                }
                Ok(Ok(R::Failure(f))) if f == pb::BindFailure::TooManyResources as i32 => {
                    return Err(BindError::TooManyResources);
                }
                // Ownership is moving (hand-over grace) or the directory is briefly
                // unreachable: worth another try, for a while.
                Ok(Ok(R::Failure(_))) => {
                    if Instant::now() >= unavailable_until {
                        return Err(BindError::Unavailable(
                            "the session layer is unavailable".into(),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // Our view was stale, or the link broke: try again with a fresh view.
                Ok(Ok(R::Redirect(_))) | Ok(Err(_)) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {
                    return Err(BindError::Unavailable(
                        "the session node did not answer".into(),
                    ));
                }
            }
        }
    }

    fn unbind(&self, jid: FullJid, conn: ConnId) {
        let partition = View::partition_of(jid.to_bare().as_str());
        let req = pb::EdgeRequest {
            request: Some(pb::edge_request::Request::Unbind(pb::UnbindRequest {
                full_jid: jid.to_string(),
                conn: conn.0,
            })),
        };
        self.send_to_owner(partition, req);
    }

    fn route(&self, conn: ConnId, stanza: Stanza) -> Result<(), RouteError> {
        let Some(from) = stanza.from.as_ref().map(|f| f.to_bare()) else {
            return Err(RouteError::Unavailable(Box::new(stanza)));
        };
        if self.unacked.len() >= MAX_UNACKED {
            return Err(RouteError::Overloaded(Box::new(stanza)));
        }
        let partition = View::partition_of(from.as_str());
        self.send_reliably(conn, &stanza, partition, Direction::Outbound);
        Ok(())
    }

    fn undeliverable(&self, conn: ConnId, stanza: Stanza) {
        if stanza.kind == StanzaKind::Presence || stanza.type_attr() == Some("error") {
            return;
        }
        let Some(to) = stanza.to.as_ref().map(|t| t.to_bare()) else {
            return;
        };
        // Back to the recipient's owner, as inbound, with a fresh origin: retransmitted
        // until that owner has handled it (delivered elsewhere, stored or bounced).
        // It travels on the same link as the unbind sent before it, so the owner
        // forgets the resource first.
        let partition = View::partition_of(to.as_str());
        self.send_reliably(conn, &stanza, partition, Direction::Inbound);
    }
}

impl GrpcRouter {
    /// Sends `stanza` to the owner of `partition` under a new origin sequence number
    /// and keeps it for retransmission until acknowledged.
    fn send_reliably(&self, conn: ConnId, stanza: &Stanza, partition: u32, direction: Direction) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let origin = Origin {
            edge: self.me.clone(),
            seq,
        };
        let epoch = self.view.get().claim(partition).map_or(0, |c| c.epoch);
        let env = codec::envelope(stanza, partition, epoch, direction, Some(&origin));
        let now = Instant::now();
        self.unacked.insert(
            seq,
            Pending {
                env: env.clone(),
                partition,
                conn,
                first: now,
                last: now,
            },
        );
        let req = pb::EdgeRequest {
            request: Some(pb::edge_request::Request::Route(env)),
        };
        // If no owner is known or the link is full, the retransmission loop sends it.
        self.send_to_owner(partition, req);
    }
}

async fn retransmit_loop(router: Weak<GrpcRouter>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(r) = router.upgrade() else { return };
        crate::metrics::unacked(r.unacked.len());
        let now = Instant::now();
        let mut again = Vec::new();
        let mut expired = Vec::new();
        for p in r.unacked.iter() {
            if now.duration_since(p.first) >= r.timing.give_up_after {
                expired.push(*p.key());
            } else if now.duration_since(p.last) >= r.timing.retransmit_after {
                again.push(*p.key());
            }
        }
        for seq in expired {
            r.give_up(seq);
        }
        for seq in again {
            r.resend(seq);
        }
    }
}

async fn run_link(
    router: Weak<GrpcRouter>,
    node: String,
    mut rx: mpsc::Receiver<pb::EdgeRequest>,
    me: mpsc::Sender<pb::EdgeRequest>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first_attempt = true;
    loop {
        if !std::mem::take(&mut first_attempt) {
            crate::metrics::reconnect("edge");
        }
        let Some(r) = router.upgrade() else { return };
        let Some(addr) = r.view.get().node(&node).map(|n| n.addr.clone()) else {
            r.links.remove_if(&node, |_, tx| tx.same_channel(&me));
            return;
        };
        let hello = r.hello.clone();
        drop(r);
        match connect(&addr).await {
            Ok(mut client) => {
                backoff = Duration::from_millis(100);
                let (stx, srx) = mpsc::channel::<pb::EdgeUp>(16);
                let first = pb::EdgeUp {
                    hello: Some(hello),
                    requests: Vec::new(),
                };
                if stx.send(first).await.is_ok()
                    && let Ok(resp) = client.edge_link(ReceiverStream::new(srx)).await
                {
                    tracing::debug!(session = %node, "linked to session node");
                    let _open = crate::metrics::StreamGuard::new("edge");
                    let mut down = resp.into_inner();
                    loop {
                        tokio::select! {
                            msg = down.message() => match msg {
                                Ok(Some(frame)) => {
                                    let Some(r) = router.upgrade() else { return };
                                    for ev in frame.events {
                                        r.on_event(ev);
                                    }
                                }
                                Ok(None) => break,
                                Err(_) => {
                                    crate::metrics::stream_error("edge");
                                    break;
                                }
                            },
                            first = rx.recv() => {
                                let Some(first) = first else { return };
                                let mut requests = Vec::with_capacity(16);
                                requests.push(first);
                                while requests.len() < crate::peers::BATCH {
                                    match rx.try_recv() {
                                        Ok(e) => requests.push(e),
                                        Err(_) => break,
                                    }
                                }
                                if stx.send(pb::EdgeUp { hello: None, requests }).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => {
                crate::metrics::stream_error("edge");
                tracing::debug!(session = %node, error = %e, "cannot reach session node");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn connect(addr: &str) -> Result<NodeClient<tonic::transport::Channel>, String> {
    let ep = crate::peers::endpoint(addr).map_err(|e| e.to_string())?;
    let ch = tokio::time::timeout(Duration::from_secs(3), ep.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(NodeClient::new(ch).max_decoding_message_size(64 * 1024 * 1024))
}
