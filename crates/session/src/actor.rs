//! The user actor: a thin actix adapter around [`aviary_im::user::User`]. It is the
//! single writer of one bare JID's state. It loads that state from the stores before
//! handling anything, feeds every message to the plain struct, and carries out the
//! actions it returns in order — store writes first, then what depends on them.
//!
//! Actions that need no I/O (the common case: a message to an online contact) run
//! synchronously. Anything that touches a store runs as one future under
//! `ctx.wait`, so later messages see its effects in order.

use crate::cluster::Origin;
use crate::persist;
use crate::server;
use crate::users::Users;
use actix::prelude::*;
use aviary_directory::Location;
use aviary_im::user::{Action, User};
use aviary_router::{BindError, BindRequest, ConnId, ConnRef, DeliverError, Delivery};
use aviary_xmpp::{
    BareJid, FullJid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, stored,
};
use std::time::{Duration, Instant};

/// How long a user actor without resources lingers before it stops, and how long a
/// stopping actor keeps forwarding late messages to its successor.
const IDLE_LINGER: Duration = Duration::from_secs(30);
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long delivering stored offline messages may wait for a slow client.
const FLUSH_PATIENCE: Duration = Duration::from_secs(10);

/// Bounded mailbox: a full mailbox bounces messages with `resource-constraint` and
/// drops presence (see [`Users::route`]).
pub const MAILBOX_CAPACITY: usize = 1024;

#[derive(Message)]
#[rtype(result = "Result<FullJid, BindError>")]
pub struct Bind(pub BindRequest);

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unbind {
    pub jid: FullJid,
    pub conn: ConnId,
}

/// A stanza sent by one of this user's clients.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outbound {
    pub stanza: Stanza,
    pub origin: Option<Origin>,
    /// When it entered the session layer (routing latency).
    pub since: Option<Instant>,
}

/// A stanza addressed to this user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub stanza: Stanza,
    pub origin: Option<Origin>,
    pub since: Option<Instant>,
}

/// The edge with this id died: its connections are gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EdgeGone(pub String);

/// This node no longer owns the user: leave, forwarding whatever still arrives to
/// the new owner.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// The second half of a bind in a cluster: the location is recorded, now bind.
#[derive(Message)]
#[rtype(result = "Result<FullJid, BindError>")]
struct BindCommit(BindRequest, String);

enum State {
    Loading,
    Ready(Box<User<ConnRef>>),
    /// The stores could not be read: everything is refused until a fresh actor
    /// retries.
    Failed,
}

pub struct UserActor {
    jid: BareJid,
    state: State,
    users: Users,
    /// Set once this actor has left the registry: everything is forwarded.
    draining: bool,
    idle_check: Option<SpawnHandle>,
}

/// What the asynchronous part of an action list reports back.
enum Feedback {
    ConnectionGone(u64),
    StoreFailed,
}

/// A resource-location write for the cluster directory, computed from the user's
/// state when the action was produced.
enum LocationOp {
    Update(String, Location),
    Unbind(String, u64),
}

impl UserActor {
    pub fn new(jid: BareJid, users: Users) -> Self {
        UserActor {
            jid,
            state: State::Loading,
            users,
            draining: false,
            idle_check: None,
        }
    }

    fn user(&mut self) -> Option<&mut User<ConnRef>> {
        match &mut self.state {
            State::Ready(u) => Some(u),
            _ => None,
        }
    }

    /// Carries out `actions`; acknowledges `origin` once all of them are done.
    fn run(
        &mut self,
        actions: Vec<Action<ConnRef>>,
        ctx: &mut Context<Self>,
        origin: Option<Origin>,
    ) {
        let (actions, locations) = self.split_locations(actions);
        if actions.is_empty() && locations.is_empty() {
            self.users.ack(origin);
            return;
        }
        let needs_io = !locations.is_empty()
            || actions.iter().any(|a| {
                matches!(
                    a,
                    Action::Persist(_) | Action::StoreOffline(_) | Action::FlushOffline(_)
                )
            });
        if !needs_io {
            let mut gone = Vec::new();
            for a in actions {
                self.run_one_sync(a, &mut gone, origin.as_ref());
            }
            self.users.ack(origin);
            self.after(gone, ctx);
            return;
        }
        let users = self.users.clone();
        let jid = self.jid.clone();
        let trace = origin.clone();
        let fut = async move {
            let mut feedback = Vec::new();
            if let Some(c) = users.cluster() {
                let dir = c.locations();
                for op in locations {
                    let r = match &op {
                        LocationOp::Update(res, loc) => {
                            dir.update(&jid, res, loc).await.map(|_| ())
                        }
                        LocationOp::Unbind(res, conn) => {
                            dir.unbind(&jid, res, *conn).await.map(|_| ())
                        }
                    };
                    if let Err(e) = r {
                        // Availability over precision: a takeover might miss this change.
                        tracing::warn!(user = %jid, error = %e, "resource location not recorded");
                    }
                }
            }
            for a in actions {
                if !run_one_async(&users, &jid, a, &mut feedback, trace.as_ref()).await {
                    // A store write failed: nothing that depends on it may happen.
                    break;
                }
            }
            feedback
        };
        ctx.wait(fut.into_actor(self).map(move |feedback, act, ctx| {
            let mut gone = Vec::new();
            let mut failed = false;
            for f in feedback {
                match f {
                    Feedback::ConnectionGone(id) => gone.push(id),
                    Feedback::StoreFailed => failed = true,
                }
            }
            if failed {
                // The in-memory state may now differ from the store: stop, and let the
                // next actor reload what was really stored. The origin is not acked,
                // so its edge sends the stanza again.
                act.state = State::Failed;
                act.start_draining(ctx);
            } else {
                act.users.ack(origin);
            }
            act.after(gone, ctx);
        }));
    }

    /// Separates resource-location actions (cluster only) from the rest, turning
    /// them into directory writes of the resource's current state.
    fn split_locations(
        &mut self,
        actions: Vec<Action<ConnRef>>,
    ) -> (Vec<Action<ConnRef>>, Vec<LocationOp>) {
        let clustered = self.users.cluster().is_some();
        let mut rest = Vec::with_capacity(actions.len());
        let mut ops = Vec::new();
        for a in actions {
            match a {
                // Recorded before the bind itself (see `BindCommit`).
                Action::ResourceBound(_) => {}
                Action::ResourceChanged(jid) if clustered => {
                    if let Some(r) = self
                        .user()
                        .and_then(|u| u.resources().iter().find(|r| r.jid == jid).cloned())
                    {
                        ops.push(LocationOp::Update(
                            r.jid.resource().to_string(),
                            location_of(&r),
                        ));
                    }
                }
                Action::ResourceRemoved(jid, conn) if clustered => {
                    ops.push(LocationOp::Unbind(jid.resource().to_string(), conn));
                }
                Action::ResourceChanged(_) | Action::ResourceRemoved(..) => {}
                other => rest.push(other),
            }
        }
        (rest, ops)
    }

    fn run_one_sync(
        &mut self,
        action: Action<ConnRef>,
        gone: &mut Vec<u64>,
        origin: Option<&Origin>,
    ) {
        match action {
            Action::Deliver(conn, stanza) => {
                if let Some(id) = deliver(&self.users, &conn, stanza, origin) {
                    gone.push(id);
                }
            }
            Action::Close(conn, error) => {
                // The old connection may already be gone; nothing else to do then.
                let _ = conn.sink.deliver(Delivery::Close(error));
            }
            Action::Route(stanza) => self.users.route(stanza),
            Action::HandleForAccount(stanza) => {
                if let Some(reply) = server::handle_account_iq(self.users.info(), &stanza) {
                    self.users.route(reply);
                }
            }
            // Filtered out by `run` before the synchronous path is taken.
            Action::Persist(_)
            | Action::StoreOffline(_)
            | Action::FlushOffline(_)
            | Action::ResourceBound(_)
            | Action::ResourceChanged(_)
            | Action::ResourceRemoved(..) => {}
        }
    }

    /// Connections found gone while delivering are unbound, which may produce more
    /// actions (unavailable presence).
    fn after(&mut self, gone: Vec<u64>, ctx: &mut Context<Self>) {
        if gone.is_empty() {
            return;
        }
        let mut more = Vec::new();
        if let Some(user) = self.user() {
            for id in gone {
                user.connection_gone(id, &mut more);
            }
        }
        self.run(more, ctx, None);
        self.schedule_idle_check(ctx);
    }

    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.idle_check.take() {
            ctx.cancel_future(h);
        }
        let empty = self.user().is_none_or(|u| u.is_empty());
        if empty && !self.draining {
            self.idle_check = Some(ctx.run_later(IDLE_LINGER, |act, ctx| {
                act.idle_check = None;
                if act.user().is_none_or(|u| u.is_empty()) {
                    act.start_draining(ctx);
                }
            }));
        }
    }

    /// Leaves the registry, forwards anything that still arrives, then stops.
    fn start_draining(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.users.unregister(&self.jid, &ctx.address());
        ctx.run_later(DRAIN_GRACE, |_, ctx| ctx.stop());
    }

    /// Rebuilds resources recorded in the directory; those on dead edges are
    /// forgotten there.
    fn restore_resources(&self, user: &mut User<ConnRef>, resources: Vec<(String, Location)>) {
        let Some(cluster) = self.users.cluster() else {
            return;
        };
        for (res, loc) in resources {
            let Ok(jid) = self.jid.with_resource_str(&res) else {
                continue;
            };
            if !cluster.edge_live(&loc.edge) {
                let dir = cluster.locations();
                let bare = self.jid.clone();
                actix::spawn(async move {
                    let _ = dir.unbind(&bare, &res, loc.conn).await;
                });
                continue;
            }
            let presence = loc
                .presence
                .as_deref()
                .and_then(|b| stored::parse_stanza(b).ok());
            user.restore_resource(aviary_im::user::Resource {
                jid,
                conn_id: loc.conn,
                conn: ConnRef {
                    edge: aviary_router::EdgeId(loc.edge.clone()),
                    id: ConnId(loc.conn),
                    sink: cluster.edge_sink(&loc.edge, loc.conn),
                },
                available: loc.available,
                priority: loc.priority,
                presence,
                roster_interested: loc.roster_interested,
                blocklist_interested: loc.blocklist_interested,
                directed: Vec::new(),
            });
        }
    }

    fn failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }
}

/// Delivers one stanza; returns the connection id if the connection is gone. A full
/// client queue bounces messages and iqs (`resource-constraint`) and drops presence.
fn deliver(users: &Users, conn: &ConnRef, stanza: Stanza, origin: Option<&Origin>) -> Option<u64> {
    // Messages that entered the cluster carry their origin so the edge can drop a
    // retransmitted copy.
    let delivery = match origin {
        Some(o) if stanza.kind == StanzaKind::Message => Delivery::Traced(stanza, o.clone()),
        _ => Delivery::Stanza(stanza),
    };
    match conn.sink.deliver(delivery) {
        Ok(()) => None,
        Err(DeliverError::Full(d)) => {
            let stanza = d.into_stanza()?;
            if stanza.kind == StanzaKind::Presence {
                crate::metrics::overflow("drop");
            } else {
                crate::metrics::overflow("bounce");
                if let Some(reply) =
                    stanza.error_reply(StanzaError::new(StanzaErrorCondition::ResourceConstraint))
                {
                    users.route(reply);
                }
            }
            None
        }
        Err(DeliverError::Gone(d)) => {
            let Some(stanza) = d.into_stanza() else {
                return Some(conn.id.0);
            };
            // The message is not lost: it goes back through the routing rules once
            // the dead resource is forgotten.
            if stanza.kind == StanzaKind::Message {
                // Queued behind the unbind this failure triggers, so the routing rules
                // run again without the dead resource.
                users.route(stanza);
            }
            Some(conn.id.0)
        }
    }
}

/// Carries out one action in the asynchronous path; false stops the list.
async fn run_one_async(
    users: &Users,
    jid: &BareJid,
    action: Action<ConnRef>,
    feedback: &mut Vec<Feedback>,
    origin: Option<&Origin>,
) -> bool {
    let stores = users.stores();
    match action {
        Action::Persist(p) => {
            if let Err(e) = persist::apply(stores, jid, p).await {
                tracing::error!(user = %jid, error = %e, "store write failed");
                feedback.push(Feedback::StoreFailed);
                return false;
            }
        }
        Action::StoreOffline(stanza) => {
            let max = users.settings().offline_max;
            match stores
                .offline
                .push_offline(jid, &stored::to_bytes(&stanza), max)
                .await
            {
                Ok(true) => crate::metrics::offline_write("stored"),
                Ok(false) => {
                    // The stated policy for a full queue: the sender is told to retry
                    // later.
                    crate::metrics::offline_write("full");
                    users.bounce(stanza, StanzaErrorCondition::ResourceConstraint);
                }
                Err(e) => {
                    crate::metrics::offline_write("error");
                    tracing::warn!(user = %jid, error = %e, "offline store failed");
                    // Not stored, not delivered: the sender must know.
                    users.bounce(stanza, StanzaErrorCondition::InternalServerError);
                }
            }
        }
        Action::FlushOffline(conn) => flush_offline(users, jid, &conn, feedback).await,
        Action::Deliver(conn, stanza) => {
            if let Some(id) = deliver(users, &conn, stanza, origin) {
                feedback.push(Feedback::ConnectionGone(id));
            }
        }
        Action::Close(conn, error) => {
            let _ = conn.sink.deliver(Delivery::Close(error));
        }
        Action::Route(stanza) => users.route(stanza),
        Action::HandleForAccount(stanza) => {
            if let Some(reply) = server::handle_account_iq(users.info(), &stanza) {
                users.route(reply);
            }
        }
        Action::ResourceBound(_) | Action::ResourceChanged(_) | Action::ResourceRemoved(..) => {}
    }
    true
}

/// The directory record of a resource.
fn location_of(r: &aviary_im::user::Resource<ConnRef>) -> Location {
    Location {
        edge: r.conn.edge.0.clone(),
        conn: r.conn_id,
        available: r.available,
        priority: r.priority,
        presence: r.presence.as_ref().map(stored::to_bytes),
        roster_interested: r.roster_interested,
        blocklist_interested: r.blocklist_interested,
    }
}

/// XEP-0160: delivers stored messages in order, then discards those delivered. A
/// slow client is waited for (bounded); what is not delivered stays stored.
async fn flush_offline(users: &Users, jid: &BareJid, conn: &ConnRef, feedback: &mut Vec<Feedback>) {
    let stores = users.stores();
    let records = match stores.offline.load_offline(jid).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(user = %jid, error = %e, "cannot read offline messages");
            return;
        }
    };
    let mut delivered_through = None;
    let mut delivered = 0u64;
    'records: for rec in records {
        let stanza = match stored::parse_stanza(&rec.stanza) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(user = %jid, error = %e, "dropping an unreadable offline message");
                delivered_through = Some(rec.id);
                continue;
            }
        };
        let deadline = Instant::now() + FLUSH_PATIENCE;
        let mut delivery = Delivery::Stanza(stanza);
        loop {
            match conn.sink.deliver(delivery) {
                Ok(()) => {
                    delivered_through = Some(rec.id);
                    delivered += 1;
                    break;
                }
                Err(DeliverError::Full(d)) if Instant::now() < deadline => {
                    delivery = d;
                    // Backpressure from a slow client: let it drain a little.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(DeliverError::Gone(_)) => {
                    feedback.push(Feedback::ConnectionGone(conn.id.0));
                    break 'records;
                }
                Err(_) => break 'records,
            }
        }
    }
    crate::metrics::offline_delivered(delivered);
    if let Some(last) = delivered_through
        && let Err(e) = stores.offline.remove_offline(jid, last).await
    {
        // Delivered but not removed: they would be delivered again (at least once).
        tracing::warn!(user = %jid, error = %e, "cannot remove delivered offline messages");
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        crate::metrics::actor_stopped();
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::metrics::actor_started();
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let users = self.users.clone();
        let jid = self.jid.clone();
        let load = async move {
            let state = persist::load(users.stores(), &jid).await?;
            // In a cluster, the user's live resources are in the directory: this
            // actor may be taking over from a node that died.
            let resources = match users.cluster() {
                Some(c) => c
                    .locations()
                    .resources(&jid)
                    .await
                    .map_err(|e| aviary_store::StoreError::Unavailable(e.to_string()))?,
                None => Vec::new(),
            };
            Ok::<_, aviary_store::StoreError>((state, resources))
        };
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| {
            match loaded {
                Ok((l, resources)) => {
                    let mut user = User::new(
                        act.jid.clone(),
                        act.users.settings_arc(),
                        l.exists,
                        l.roster,
                        l.blocklist,
                    );
                    act.restore_resources(&mut user, resources);
                    act.state = State::Ready(Box::new(user));
                }
                Err(e) => {
                    tracing::warn!(user = %act.jid, error = %e, "cannot load user state");
                    act.state = State::Failed;
                    act.start_draining(ctx);
                }
            }
            act.schedule_idle_check(ctx);
        }));
    }
}

impl Handler<Bind> for UserActor {
    type Result = ResponseFuture<Result<FullJid, BindError>>;

    fn handle(&mut self, Bind(req): Bind, ctx: &mut Self::Context) -> Self::Result {
        if self.failed() {
            return Box::pin(async {
                Err(BindError::Unavailable("user state unavailable".into()))
            });
        }
        if self.draining {
            let users = self.users.clone();
            return Box::pin(async move { users.bind(req).await });
        }
        let resource = req.resource.clone().unwrap_or_else(generate_resource);
        let Some(cluster) = self.users.cluster().cloned() else {
            return Box::pin(std::future::ready(self.commit_bind(req, &resource, ctx)));
        };
        // In a cluster the location is recorded first: a login is only successful
        // once another node could take the user over (and fails clearly if the
        // directory is down).
        let addr = ctx.address();
        let jid = self.jid.clone();
        let loc = Location {
            edge: req.conn.edge.0.clone(),
            conn: req.conn.id.0,
            ..Location::default()
        };
        Box::pin(async move {
            cluster
                .locations()
                .bind(&jid, &resource, &loc)
                .await
                .map_err(|e| BindError::Unavailable(format!("directory: {e}")))?;
            let result = addr
                .send(BindCommit(req, resource.clone()))
                .await
                .map_err(|e| BindError::Unavailable(e.to_string()))?;
            if result.is_err() {
                let _ = cluster.locations().unbind(&jid, &resource, loc.conn).await;
            }
            result
        })
    }
}

impl Handler<BindCommit> for UserActor {
    type Result = Result<FullJid, BindError>;

    fn handle(
        &mut self,
        BindCommit(req, resource): BindCommit,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        if self.failed() {
            return Err(BindError::Unavailable("user state unavailable".into()));
        }
        self.commit_bind(req, &resource, ctx)
    }
}

impl UserActor {
    fn commit_bind(
        &mut self,
        req: BindRequest,
        resource: &str,
        ctx: &mut Context<Self>,
    ) -> Result<FullJid, BindError> {
        let conn_id = req.conn.id.0;
        let mut actions = Vec::new();
        let result = match self.user() {
            Some(user) => user
                .bind(resource, conn_id, req.conn, &mut actions)
                .map(|b| b.jid)
                .map_err(|e| match e.condition {
                    StanzaErrorCondition::ResourceConstraint => BindError::TooManyResources,
                    _ => BindError::BadResource,
                }),
            None => Err(BindError::Unavailable("user state unavailable".into())),
        };
        self.run(actions, ctx, None);
        self.schedule_idle_check(ctx);
        result
    }
}

impl Handler<Unbind> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: Unbind, ctx: &mut Self::Context) {
        if self.failed() {
            return;
        }
        if self.draining {
            self.users.unbind(msg.jid, msg.conn);
            return;
        }
        let mut actions = Vec::new();
        if let Some(user) = self.user() {
            user.unbind(&msg.jid, msg.conn.0, &mut actions);
        }
        self.run(actions, ctx, None);
        self.schedule_idle_check(ctx);
    }
}

impl Handler<Drain> for UserActor {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        self.start_draining(ctx);
    }
}

impl Handler<EdgeGone> for UserActor {
    type Result = ();

    fn handle(&mut self, EdgeGone(edge): EdgeGone, ctx: &mut Self::Context) {
        if self.failed() || self.draining {
            return;
        }
        let mut actions = Vec::new();
        if let Some(user) = self.user() {
            user.edge_gone(|c| c.edge.0 == edge, &mut actions);
        }
        self.run(actions, ctx, None);
        self.schedule_idle_check(ctx);
    }
}

impl Handler<Outbound> for UserActor {
    type Result = ();

    fn handle(
        &mut self,
        Outbound {
            stanza,
            origin,
            since,
        }: Outbound,
        ctx: &mut Self::Context,
    ) {
        if self.failed() {
            // Nothing this actor accepts could be stored or delivered reliably; the
            // origin is not acked, so its edge tries again later.
            return;
        }
        if self.draining {
            self.users.forward_outbound(stanza, origin, since);
            return;
        }
        let is_message = stanza.kind == StanzaKind::Message;
        let mut actions = Vec::new();
        if let Some(user) = self.user() {
            user.outbound(stanza, &mut actions);
        }
        // A message routed onward carries its origin to the recipient's owner, which
        // acknowledges it (otherwise it ends here), and when it entered, for the
        // routing-latency histogram.
        let mut origin = origin;
        if is_message
            && let Some(pos) = actions
                .iter()
                .position(|a| matches!(a, Action::Route(s) if s.kind == StanzaKind::Message))
            && let Action::Route(onward) = actions.remove(pos)
        {
            self.users.route_timed(onward, origin.take(), since);
        }
        self.run(actions, ctx, origin);
    }
}

impl Handler<Inbound> for UserActor {
    type Result = ();

    fn handle(
        &mut self,
        Inbound {
            stanza,
            origin,
            since,
        }: Inbound,
        ctx: &mut Self::Context,
    ) {
        if self.failed() {
            return;
        }
        if self.draining {
            self.users.route_timed(stanza, origin, since);
            return;
        }
        let is_message = stanza.kind == StanzaKind::Message;
        let mut actions = Vec::new();
        if let Some(user) = self.user() {
            user.inbound(stanza, &mut actions);
        }
        self.run(actions, ctx, origin);
        if let (true, Some(since)) = (is_message, since) {
            crate::metrics::routed(since);
        }
        self.schedule_idle_check(ctx);
    }
}

/// A server-generated resourcepart (RFC 6120 §7.6): random, unguessable, URL-safe.
fn generate_resource() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut s = String::from("aviary-");
    for _ in 0..12 {
        let i = rng.random_range(0..ALPHABET.len());
        s.push(char::from(ALPHABET[i]));
    }
    s
}
