//! The user actor: a thin actix adapter around [`aviary_im::user::User`]. It is the
//! single writer of one bare JID's state. It loads that state from the stores before
//! handling anything, feeds every message to the plain struct, and carries out the
//! actions it returns in order — store writes first, then what depends on them.
//!
//! Actions that need no I/O (the common case: a message to an online contact) run
//! synchronously. Anything that touches a store runs as one future under
//! `ctx.wait`, so later messages see its effects in order.

use crate::persist;
use crate::server;
use crate::users::Users;
use actix::prelude::*;
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
pub struct Outbound(pub Stanza);

/// A stanza addressed to this user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub Stanza);

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

    /// Carries out `actions`.
    fn run(&mut self, actions: Vec<Action<ConnRef>>, ctx: &mut Context<Self>) {
        if actions.is_empty() {
            return;
        }
        let needs_io = actions.iter().any(|a| {
            matches!(
                a,
                Action::Persist(_) | Action::StoreOffline(_) | Action::FlushOffline(_)
            )
        });
        if !needs_io {
            let mut gone = Vec::new();
            for a in actions {
                self.run_one_sync(a, &mut gone);
            }
            self.after(gone, ctx);
            return;
        }
        let users = self.users.clone();
        let jid = self.jid.clone();
        let fut = async move {
            let mut feedback = Vec::new();
            for a in actions {
                if !run_one_async(&users, &jid, a, &mut feedback).await {
                    // A store write failed: nothing that depends on it may happen.
                    break;
                }
            }
            feedback
        };
        ctx.wait(fut.into_actor(self).map(|feedback, act, ctx| {
            let mut gone = Vec::new();
            for f in feedback {
                match f {
                    Feedback::ConnectionGone(id) => gone.push(id),
                    Feedback::StoreFailed => {
                        // The in-memory state may now differ from the store: stop, and
                        // let the next actor reload what was really stored.
                        act.state = State::Failed;
                        act.start_draining(ctx);
                    }
                }
            }
            act.after(gone, ctx);
        }));
    }

    fn run_one_sync(&mut self, action: Action<ConnRef>, gone: &mut Vec<u64>) {
        match action {
            Action::Deliver(conn, stanza) => {
                if let Some(id) = deliver(&self.users, &conn, stanza) {
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
            Action::Persist(_) | Action::StoreOffline(_) | Action::FlushOffline(_) => {}
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
        self.run(more, ctx);
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

    fn failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }
}

/// Delivers one stanza; returns the connection id if the connection is gone. A full
/// client queue bounces messages and iqs (`resource-constraint`) and drops presence.
fn deliver(users: &Users, conn: &ConnRef, stanza: Stanza) -> Option<u64> {
    match conn.sink.deliver(Delivery::Stanza(stanza)) {
        Ok(()) => None,
        Err(DeliverError::Full(Delivery::Stanza(stanza))) => {
            if stanza.kind != StanzaKind::Presence
                && let Some(reply) =
                    stanza.error_reply(StanzaError::new(StanzaErrorCondition::ResourceConstraint))
            {
                users.route(reply);
            }
            None
        }
        Err(DeliverError::Gone(Delivery::Stanza(stanza))) => {
            // The message is not lost: it goes back through the routing rules once
            // the dead resource is forgotten.
            if stanza.kind == StanzaKind::Message {
                // Queued behind the unbind this failure triggers, so the routing rules
                // run again without the dead resource.
                users.route(stanza);
            }
            Some(conn.id.0)
        }
        Err(_) => None,
    }
}

/// Carries out one action in the asynchronous path; false stops the list.
async fn run_one_async(
    users: &Users,
    jid: &BareJid,
    action: Action<ConnRef>,
    feedback: &mut Vec<Feedback>,
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
                Ok(true) => {}
                Ok(false) => {
                    // The stated policy for a full queue: the sender is told to retry
                    // later.
                    users.bounce(stanza, StanzaErrorCondition::ResourceConstraint);
                }
                Err(e) => {
                    tracing::warn!(user = %jid, error = %e, "offline store failed");
                    // Not stored, not delivered: the sender must know.
                    users.bounce(stanza, StanzaErrorCondition::InternalServerError);
                }
            }
        }
        Action::FlushOffline(conn) => flush_offline(users, jid, &conn, feedback).await,
        Action::Deliver(conn, stanza) => {
            if let Some(id) = deliver(users, &conn, stanza) {
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
    }
    true
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
    if let Some(last) = delivered_through
        && let Err(e) = stores.offline.remove_offline(jid, last).await
    {
        // Delivered but not removed: they would be delivered again (at least once).
        tracing::warn!(user = %jid, error = %e, "cannot remove delivered offline messages");
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let users = self.users.clone();
        let jid = self.jid.clone();
        let load = async move { persist::load(users.stores(), &jid).await };
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| {
            match loaded {
                Ok(l) => {
                    act.state = State::Ready(Box::new(User::new(
                        act.jid.clone(),
                        act.users.settings_arc(),
                        l.exists,
                        l.roster,
                        l.blocklist,
                    )));
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
        let conn_id = req.conn.id.0;
        let mut actions = Vec::new();
        let result = match self.user() {
            Some(user) => user
                .bind(&resource, conn_id, req.conn, &mut actions)
                .map(|b| b.jid)
                .map_err(|e| match e.condition {
                    StanzaErrorCondition::ResourceConstraint => BindError::TooManyResources,
                    _ => BindError::BadResource,
                }),
            None => Err(BindError::Unavailable("user state unavailable".into())),
        };
        self.run(actions, ctx);
        self.schedule_idle_check(ctx);
        Box::pin(async move { result })
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
        self.run(actions, ctx);
        self.schedule_idle_check(ctx);
    }
}

impl Handler<Outbound> for UserActor {
    type Result = ();

    fn handle(&mut self, Outbound(stanza): Outbound, ctx: &mut Self::Context) {
        if self.failed() {
            // Nothing this actor accepts could be stored or delivered reliably.
            self.users
                .bounce(stanza, StanzaErrorCondition::InternalServerError);
            return;
        }
        if self.draining {
            self.users.forward_outbound(stanza);
            return;
        }
        let mut actions = Vec::new();
        if let Some(user) = self.user() {
            user.outbound(stanza, &mut actions);
        }
        self.run(actions, ctx);
    }
}

impl Handler<Inbound> for UserActor {
    type Result = ();

    fn handle(&mut self, Inbound(stanza): Inbound, ctx: &mut Self::Context) {
        if self.failed() {
            self.users
                .bounce(stanza, StanzaErrorCondition::InternalServerError);
            return;
        }
        if self.draining {
            self.users.route(stanza);
            return;
        }
        let mut actions = Vec::new();
        if let Some(user) = self.user() {
            user.inbound(stanza, &mut actions);
        }
        self.run(actions, ctx);
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
