//! The session node's side of the cluster: it implements
//! [`aviary_session::cluster::Cluster`] for the user actors.
//!
//! - **Edge links** (inbound gRPC streams from edges) are kept by edge id; a
//!   [`RemoteSink`] delivers to one connection on one edge through its link.
//! - **Peer links** (outbound streams to other session nodes) carry stanzas for
//!   users those nodes own.
//! - Stanzas for a partition with no usable owner (ownership is moving) wait in a
//!   bounded hold queue and are bounced if no owner appears in time.

use crate::codec;
use crate::pb;
use crate::view::View;
use aviary_directory::Locations;
use aviary_router::{ClientSink, DeliverError, Delivery, Origin};
use aviary_session::Users;
use aviary_session::cluster::{Cluster, Direction, Owner};
use aviary_xmpp::{BareJid, Stanza, StanzaErrorCondition};
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events queued per edge link before deliveries to that edge are refused.
pub const EDGE_QUEUE: usize = 65_536;
/// Envelopes queued per peer link.
pub const PEER_QUEUE: usize = 65_536;
/// How long a stanza may wait for its partition to get an owner.
const HOLD_FOR: Duration = Duration::from_secs(10);
const HOLD_MAX: usize = 100_000;

/// The links of connected edges, by edge id.
#[derive(Clone, Default)]
pub struct EdgeLinks {
    links: Arc<DashMap<String, mpsc::Sender<pb::EdgeEvent>>>,
}

impl EdgeLinks {
    pub fn register(&self, edge: &str, tx: mpsc::Sender<pb::EdgeEvent>) {
        self.links.insert(edge.to_owned(), tx);
    }

    /// Removes the link only if it is still `tx` (a reconnect may have replaced it).
    pub fn unregister(&self, edge: &str, tx: &mpsc::Sender<pb::EdgeEvent>) {
        self.links.remove_if(edge, |_, cur| cur.same_channel(tx));
    }

    /// Events queued on all edge links and not yet taken by their streams.
    pub fn pending(&self) -> usize {
        self.links
            .iter()
            .map(|t| t.max_capacity() - t.capacity())
            .sum()
    }

    pub fn send(&self, edge: &str, ev: pb::EdgeEvent) -> Result<(), SendFailure> {
        let Some(tx) = self.links.get(edge).map(|t| t.clone()) else {
            return Err(SendFailure::NoLink);
        };
        tx.try_send(ev).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendFailure::Full,
            mpsc::error::TrySendError::Closed(_) => SendFailure::NoLink,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendFailure {
    Full,
    NoLink,
}

/// Delivers to connection `conn` on `edge` through that edge's link.
pub struct RemoteSink {
    edge: String,
    conn: u64,
    links: EdgeLinks,
}

impl ClientSink for RemoteSink {
    #[allow(clippy::result_large_err)]
    fn deliver(&self, delivery: Delivery) -> Result<(), DeliverError> {
        let ev = match &delivery {
            Delivery::Close(e) => pb::edge_event::Event::Close(pb::Close {
                conn: self.conn,
                condition: e.condition.name().to_owned(),
                text: e.text.clone().unwrap_or_default(),
            }),
            Delivery::Stanza(s) => pb::edge_event::Event::Deliver(pb::Deliver {
                conn: self.conn,
                envelope: Some(codec::envelope(s, 0, 0, Direction::Inbound, None)),
            }),
            Delivery::Traced(s, o) => pb::edge_event::Event::Deliver(pb::Deliver {
                conn: self.conn,
                envelope: Some(codec::envelope(s, 0, 0, Direction::Inbound, Some(o))),
            }),
        };
        match self
            .links
            .send(&self.edge, pb::EdgeEvent { event: Some(ev) })
        {
            Ok(()) => Ok(()),
            Err(SendFailure::Full) => Err(DeliverError::Full(delivery)),
            Err(SendFailure::NoLink) => Err(DeliverError::Gone(delivery)),
        }
    }
}

struct Held {
    stanza: Stanza,
    direction: Direction,
    origin: Option<Origin>,
    until: Instant,
}

/// The session node's implementation of [`Cluster`].
pub struct ClusterNode {
    pub me: String,
    pub view: View,
    pub edges: EdgeLinks,
    pub peers: crate::peers::PeerLinks,
    locations: Arc<dyn Locations>,
    users: OnceLock<Users>,
    /// False once this node could not renew its lease in time: it must not act as
    /// owner of anything.
    pub serving: Arc<AtomicBool>,
    /// Partitions received by hand-over, and until when the previous owner may still
    /// be finishing (see the shard manager).
    pub grace: DashMap<u32, Instant>,
    held: Mutex<VecDeque<Held>>,
}

impl ClusterNode {
    pub fn new(
        me: String,
        view: View,
        locations: Arc<dyn Locations>,
        peers: crate::peers::PeerLinks,
    ) -> Arc<Self> {
        Arc::new(ClusterNode {
            me,
            view,
            edges: EdgeLinks::default(),
            peers,
            locations,
            users: OnceLock::new(),
            serving: Arc::new(AtomicBool::new(false)),
            grace: DashMap::new(),
            held: Mutex::new(VecDeque::new()),
        })
    }

    pub fn set_users(&self, users: Users) {
        let _ = self.users.set(users);
    }

    pub fn users(&self) -> Option<&Users> {
        self.users.get()
    }

    /// Nothing left to hand on: no user actors, nothing held, nothing queued
    /// towards edges or peers.
    pub fn idle(&self) -> bool {
        let held = match self.held.lock() {
            Ok(h) => h.len(),
            Err(p) => p.into_inner().len(),
        };
        self.users().is_none_or(|u| u.live() == 0)
            && held == 0
            && self.edges.pending() == 0
            && self.peers.pending() == 0
    }

    fn partition_owner(&self, partition: u32) -> Owner {
        let snap = self.view.get();
        match snap.owner(partition) {
            Some(c) if c.node == self.me => {
                let in_grace = self
                    .grace
                    .get(&partition)
                    .is_some_and(|until| Instant::now() < *until);
                if self.serving.load(Ordering::Acquire) && !in_grace {
                    Owner::Local
                } else {
                    Owner::Unknown
                }
            }
            Some(c) => Owner::Remote(c.node.clone()),
            None => Owner::Unknown,
        }
    }

    fn subject(stanza: &Stanza, direction: Direction) -> Option<BareJid> {
        match direction {
            Direction::Inbound => stanza.to.as_ref().map(|j| j.to_bare()),
            Direction::Outbound => stanza.from.as_ref().map(|j| j.to_bare()),
        }
    }

    fn hold(&self, stanza: Stanza, direction: Direction, origin: Option<Origin>) {
        let mut held = match self.held.lock() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        if held.len() >= HOLD_MAX {
            drop(held);
            self.give_up(stanza, origin);
            return;
        }
        held.push_back(Held {
            stanza,
            direction,
            origin,
            until: Instant::now() + HOLD_FOR,
        });
    }

    fn give_up(&self, stanza: Stanza, origin: Option<Origin>) {
        if let Some(users) = self.users() {
            users.bounce(stanza, StanzaErrorCondition::RecipientUnavailable);
        }
        if let Some(o) = origin {
            self.ack(o);
        }
    }

    /// Retries held stanzas (called periodically and after every view change).
    pub fn retry_held(&self) {
        let items: Vec<Held> = {
            let mut held = match self.held.lock() {
                Ok(h) => h,
                Err(p) => p.into_inner(),
            };
            held.drain(..).collect()
        };
        let now = Instant::now();
        for h in items {
            if now >= h.until {
                self.give_up(h.stanza, h.origin);
            } else {
                self.send_or_hold(h.stanza, h.direction, h.origin, Some(h.until));
            }
        }
    }

    fn send_or_hold(
        &self,
        stanza: Stanza,
        direction: Direction,
        origin: Option<Origin>,
        until: Option<Instant>,
    ) {
        let Some(subject) = Self::subject(&stanza, direction) else {
            return;
        };
        let partition = View::partition_of(subject.as_str());
        match self.partition_owner(partition) {
            Owner::Local => {
                if let Some(users) = self.users() {
                    users.accept_forwarded(stanza, direction, origin);
                }
            }
            Owner::Remote(node) => {
                let epoch = self.view.get().claim(partition).map_or(0, |c| c.epoch);
                let env = codec::envelope(&stanza, partition, epoch, direction, origin.as_ref());
                if self.peers.send(&node, env).is_err() {
                    self.requeue(stanza, direction, origin, until);
                }
            }
            Owner::Unknown => self.requeue(stanza, direction, origin, until),
        }
    }

    fn requeue(
        &self,
        stanza: Stanza,
        direction: Direction,
        origin: Option<Origin>,
        until: Option<Instant>,
    ) {
        match until {
            None => self.hold(stanza, direction, origin),
            Some(until) => {
                let mut held = match self.held.lock() {
                    Ok(h) => h,
                    Err(p) => p.into_inner(),
                };
                held.push_back(Held {
                    stanza,
                    direction,
                    origin,
                    until,
                });
            }
        }
    }
}

impl Cluster for ClusterNode {
    fn owner(&self, user: &BareJid) -> Owner {
        self.partition_owner(View::partition_of(user.as_str()))
    }

    fn forward(&self, stanza: Stanza, direction: Direction, origin: Option<Origin>) {
        self.send_or_hold(stanza, direction, origin, None);
    }

    fn edge_sink(&self, edge: &str, conn: u64) -> Arc<dyn ClientSink> {
        Arc::new(RemoteSink {
            edge: edge.to_owned(),
            conn,
            links: self.edges.clone(),
        })
    }

    fn edge_live(&self, edge: &str) -> bool {
        self.view.get().members.is_live(edge)
    }

    fn ack(&self, origin: Origin) {
        let ev = pb::EdgeEvent {
            event: Some(pb::edge_event::Event::Acks(pb::Acks {
                seqs: vec![origin.seq],
            })),
        };
        // A lost ack only costs a retransmission, which the edge deduplicates.
        let _ = self.edges.send(&origin.edge, ev);
    }

    fn locations(&self) -> Arc<dyn Locations> {
        self.locations.clone()
    }
}
