//! The registry of live user actors on this node, and stanza routing between them.
//!
//! Actors are spread over the node's arbiters (one per core) by a hash of the bare
//! JID, except that in a single process a user who binds a resource while it has no
//! actor gets one on its connection's arbiter. A user actor exists while the user
//! has resources, and for a while after any stanza reached it; see [`crate::actor`]
//! for how a stopping actor hands over.

use crate::actor::{Bind, Drain, EdgeGone, Inbound, Outbound, Unbind, UserActor};
use crate::cluster::{Cluster, Direction, Origin, Owner};
use crate::server::{self, ServerInfo};
use actix::prelude::*;
use aviary_im::user::Settings;
use aviary_router::{BindError, BindRequest, ConnId, RouteError};
use aviary_store::Stores;
use aviary_xmpp::{BareJid, FullJid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Handle to this node's user actors. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    inner: Arc<Inner>,
}

struct Inner {
    actors: DashMap<BareJid, Addr<UserActor>>,
    arbiters: Vec<ArbiterHandle>,
    info: ServerInfo,
    settings: Arc<Settings>,
    stores: Stores,
    /// Set once when this node runs in a cluster.
    cluster: std::sync::OnceLock<Arc<dyn Cluster>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("live", &self.inner.actors.len())
            .finish()
    }
}

impl Users {
    /// `arbiters` host the actors (at least one: the current one is used if empty).
    pub fn new(
        info: ServerInfo,
        settings: Settings,
        stores: Stores,
        mut arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        if arbiters.is_empty() {
            arbiters.push(Arbiter::current());
        }
        Users {
            inner: Arc::new(Inner {
                actors: DashMap::new(),
                arbiters,
                info,
                settings: Arc::new(settings),
                stores,
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn info(&self) -> &ServerInfo {
        &self.inner.info
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn settings_arc(&self) -> Arc<Settings> {
        self.inner.settings.clone()
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// Joins this node's users to a cluster (once, at start-up).
    pub fn set_cluster(&self, cluster: Arc<dyn Cluster>) {
        let _ = self.inner.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.inner.cluster.get()
    }

    fn owner(&self, user: &BareJid) -> Owner {
        match self.cluster() {
            Some(c) => c.owner(user),
            None => Owner::Local,
        }
    }

    /// Tells the origin edge a stanza was fully handled.
    pub(crate) fn ack(&self, origin: Option<Origin>) {
        if let (Some(o), Some(c)) = (origin, self.cluster()) {
            c.ack(o);
        }
    }

    /// Tells every live actor whose user matches `pred` to leave (its partition moved
    /// to another node).
    pub fn drain_where(&self, pred: impl Fn(&BareJid) -> bool) {
        for entry in self.inner.actors.iter() {
            if pred(entry.key()) {
                entry.value().do_send(Drain);
            }
        }
    }

    /// Every resource on `edge` is gone (its lease expired): the owners of `users`
    /// (those owned here) end them.
    pub fn edge_gone(&self, edge: &str, users: Vec<BareJid>) {
        for u in users {
            if self.owner(&u) == Owner::Local {
                self.get_or_spawn(&u).do_send(EdgeGone(edge.to_owned()));
            }
        }
    }

    /// Number of live user actors.
    pub fn live(&self) -> usize {
        self.inner.actors.len()
    }

    fn arbiter_for(&self, jid: &BareJid) -> &ArbiterHandle {
        let h = self.inner.actors.hasher().hash_one(jid);
        let n = self.inner.arbiters.len();
        &self.inner.arbiters[(h as usize) % n]
    }

    /// The live actor for `jid`, started if there is none.
    pub fn get_or_spawn(&self, jid: &BareJid) -> Addr<UserActor> {
        self.get_or_spawn_on(jid, None)
    }

    /// Like [`Users::get_or_spawn`]; a new actor starts on `arbiter` if given, else
    /// on the arbiter its JID hashes to.
    fn get_or_spawn_on(&self, jid: &BareJid, arbiter: Option<&ArbiterHandle>) -> Addr<UserActor> {
        if let Some(a) = self.inner.actors.get(jid)
            && a.connected()
        {
            return a.clone();
        }
        match self.inner.actors.entry(jid.clone()) {
            Entry::Occupied(e) if e.get().connected() => e.get().clone(),
            Entry::Occupied(mut e) => {
                let addr = self.spawn(jid, arbiter);
                e.insert(addr.clone());
                addr
            }
            Entry::Vacant(e) => {
                let addr = self.spawn(jid, arbiter);
                e.insert(addr.clone());
                addr
            }
        }
    }

    fn spawn(&self, jid: &BareJid, arbiter: Option<&ArbiterHandle>) -> Addr<UserActor> {
        let actor = UserActor::new(jid.clone(), self.clone());
        let arbiter = arbiter.unwrap_or_else(|| self.arbiter_for(jid));
        UserActor::start_in_arbiter(arbiter, move |_| actor)
    }

    /// Removes `addr` from the registry if it is still the registered actor.
    pub(crate) fn unregister(&self, jid: &BareJid, addr: &Addr<UserActor>) {
        self.inner.actors.remove_if(jid, |_, a| a == addr);
    }

    pub async fn bind(&self, req: BindRequest) -> Result<FullJid, BindError> {
        self.bind_on(req, None).await
    }

    /// Binds from a connection that lives on the current arbiter, in this process
    /// (role `all`): a user without an actor gets one on that same arbiter, so its
    /// connection and its actor share a thread and a stanza between them is a
    /// same-thread mailbox hop, not a cross-thread wake-up (which showed in profiles
    /// of chat at 1,000 msg/s as about one eventfd write per message).
    pub async fn bind_here(&self, req: BindRequest) -> Result<FullJid, BindError> {
        let here = Arbiter::try_current();
        self.bind_on(req, here.as_ref()).await
    }

    async fn bind_on(
        &self,
        req: BindRequest,
        arbiter: Option<&ArbiterHandle>,
    ) -> Result<FullJid, BindError> {
        let addr = self.get_or_spawn_on(&req.user, arbiter);
        addr.send(Bind(req))
            .await
            .map_err(|e| BindError::Unavailable(e.to_string()))?
    }

    pub fn unbind(&self, jid: FullJid, conn: ConnId) {
        let bare = jid.to_bare();
        if let Some(addr) = self.inner.actors.get(&bare).map(|a| a.clone()) {
            // Not a hot path, and an unbind must not be lost: wait for room.
            addr.do_send(Unbind { jid, conn });
        }
    }

    /// Hands a stanza from a client to its sender's actor; returns it on overload.
    pub fn send_outbound(&self, stanza: Stanza) -> Result<(), RouteError> {
        self.accept_outbound(stanza, None)
    }

    /// Like [`Users::send_outbound`], for a stanza that entered the cluster at
    /// `origin`. A sender owned by another node is forwarded there.
    pub fn accept_outbound(
        &self,
        stanza: Stanza,
        origin: Option<Origin>,
    ) -> Result<(), RouteError> {
        let Some(from) = stanza.from.as_ref().map(|j| j.to_bare()) else {
            return Err(RouteError::Unavailable(Box::new(stanza)));
        };
        if self.owner(&from) != Owner::Local
            && let Some(c) = self.cluster()
        {
            c.forward(stanza, Direction::Outbound, origin);
            return Ok(());
        }
        let mut msg = Outbound {
            stanza,
            origin,
            since: Some(std::time::Instant::now()),
        };
        for _ in 0..2 {
            match self.get_or_spawn(&from).try_send(msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(m)) => {
                    return Err(RouteError::Overloaded(Box::new(m.stanza)));
                }
                // The actor stopped between lookup and send: a fresh one takes it.
                Err(SendError::Closed(m)) => msg = m,
            }
        }
        Err(RouteError::Unavailable(Box::new(msg.stanza)))
    }

    /// Re-queues a stanza a draining actor received from its client.
    pub(crate) fn forward_outbound(
        &self,
        stanza: Stanza,
        origin: Option<Origin>,
        _since: Option<std::time::Instant>,
    ) {
        if let Err(RouteError::Overloaded(s) | RouteError::Unavailable(s)) =
            self.accept_outbound(stanza, origin.clone())
        {
            self.bounce(*s, StanzaErrorCondition::ResourceConstraint);
            self.ack(origin);
        }
    }

    /// Routes a stanza to `stanza.to`: a local user, the server itself, or (with no
    /// server-to-server support) an error for remote domains.
    pub fn route(&self, stanza: Stanza) {
        self.route_with(stanza, None);
    }

    /// A stanza its recipient's connection could not take (the stream was closing)
    /// goes through the routing rules again. Presence is not worth it (RFC 6121
    /// §8.5.3.2.2: presence to a gone resource is ignored); errors must not loop.
    pub fn redeliver(&self, stanza: Stanza) {
        if stanza.kind == StanzaKind::Presence || stanza.type_attr() == Some("error") {
            return;
        }
        self.route(stanza);
    }

    /// Routes a stanza that entered the cluster at `origin`; the origin travels with
    /// it until it is fully handled, then it is acknowledged.
    pub fn route_with(&self, stanza: Stanza, origin: Option<Origin>) {
        self.route_timed(stanza, origin, None);
    }

    /// Like [`Users::route_with`], carrying when the stanza entered the session
    /// layer (for the routing-latency histogram).
    pub(crate) fn route_timed(
        &self,
        stanza: Stanza,
        origin: Option<Origin>,
        since: Option<std::time::Instant>,
    ) {
        let Some(to) = stanza.to.clone() else {
            // Only replies to clients and server-originated stanzas reach here, and
            // those always carry `to`; nothing sensible to do otherwise.
            tracing::debug!("dropping stanza without destination");
            self.ack(origin);
            return;
        };
        if !self.inner.info.serves(to.domain().as_str()) {
            // RFC 6120 §10.4.3: no route to a remote domain without s2s.
            self.bounce(stanza, StanzaErrorCondition::RemoteServerNotFound);
            self.ack(origin);
            return;
        }
        if to.node().is_none() {
            if to.resource().is_none()
                && let Some(reply) = server::handle_domain_stanza(&self.inner.info, &stanza)
            {
                self.route(reply);
            }
            self.ack(origin);
            return;
        }
        let user = to.to_bare();
        if self.owner(&user) != Owner::Local
            && let Some(c) = self.cluster()
        {
            c.forward(stanza, Direction::Inbound, origin);
            return;
        }
        self.send_inbound(user, stanza, origin, since);
    }

    /// Delivers a stanza forwarded by another node to the local owner of its
    /// recipient (or sender, for outbound processing), forwarding again if this node
    /// no longer owns it.
    pub fn accept_forwarded(&self, stanza: Stanza, direction: Direction, origin: Option<Origin>) {
        match direction {
            Direction::Inbound => self.route_with(stanza, origin),
            Direction::Outbound => {
                if let Err(RouteError::Overloaded(s) | RouteError::Unavailable(s)) =
                    self.accept_outbound(stanza, origin.clone())
                {
                    self.bounce(*s, StanzaErrorCondition::ResourceConstraint);
                    self.ack(origin);
                }
            }
        }
    }

    fn send_inbound(
        &self,
        to: BareJid,
        stanza: Stanza,
        origin: Option<Origin>,
        since: Option<std::time::Instant>,
    ) {
        let mut msg = Inbound {
            stanza,
            origin,
            since,
        };
        for _ in 0..2 {
            match self.get_or_spawn(&to).try_send(msg) {
                Ok(()) => return,
                Err(SendError::Full(m)) => {
                    tracing::debug!(user = %to, "user mailbox full");
                    crate::metrics::overflow(if m.stanza.kind == StanzaKind::Presence {
                        "drop"
                    } else {
                        "bounce"
                    });
                    self.bounce(m.stanza, StanzaErrorCondition::ResourceConstraint);
                    self.ack(m.origin);
                    return;
                }
                Err(SendError::Closed(m)) => msg = m,
            }
        }
        self.bounce(msg.stanza, StanzaErrorCondition::ServiceUnavailable);
        self.ack(msg.origin);
    }

    /// Overflow and failure policy: presence is dropped, anything else is answered
    /// with an error to its sender (never an error to an error).
    pub fn bounce(&self, stanza: Stanza, condition: StanzaErrorCondition) {
        if stanza.kind == StanzaKind::Presence {
            return;
        }
        if let Some(reply) = stanza.error_reply(StanzaError::new(condition)) {
            // Errors are routed like any stanza; an error reply to an error is never
            // generated, so this cannot loop.
            if reply.to.is_some() {
                self.route(reply);
            }
        }
    }
}
