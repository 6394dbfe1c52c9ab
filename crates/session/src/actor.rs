//! The user actor: a thin actix adapter around [`aviary_im::user::User`]. It is the
//! single writer of one bare JID's live state; it turns messages into calls on the
//! plain struct and carries out the actions the struct returns.

use crate::server;
use crate::users::Users;
use actix::prelude::*;
use aviary_im::user::{Action, User};
use aviary_router::{BindError, BindRequest, ConnId, ConnRef, DeliverError, Delivery};
use aviary_xmpp::{BareJid, FullJid, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind};
use std::time::Duration;

/// How long a user actor without resources lingers before it stops, and how long a
/// stopping actor keeps forwarding late messages to its successor.
const IDLE_LINGER: Duration = Duration::from_secs(30);
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Bounded mailbox: a full mailbox bounces messages with `resource-constraint` and
/// drops presence (see [`Users::send_inbound`]).
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

pub struct UserActor {
    user: User<ConnRef>,
    users: Users,
    /// Set once this actor has left the registry: everything is forwarded.
    draining: bool,
    idle_check: Option<SpawnHandle>,
    scratch: Vec<Action<ConnRef>>,
}

impl UserActor {
    pub fn new(jid: BareJid, users: Users) -> Self {
        let max = users.info().max_resources;
        UserActor {
            user: User::new(jid, max),
            users,
            draining: false,
            idle_check: None,
            scratch: Vec::new(),
        }
    }

    fn run_actions(&mut self, ctx: &mut Context<Self>) {
        let mut actions = std::mem::take(&mut self.scratch);
        for action in actions.drain(..) {
            match action {
                Action::Deliver(conn, stanza) => self.deliver(conn, stanza, ctx),
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
            }
        }
        self.scratch = actions;
    }

    fn deliver(&mut self, conn: ConnRef, stanza: Stanza, ctx: &mut Context<Self>) {
        match conn.sink.deliver(Delivery::Stanza(stanza)) {
            Ok(()) => {}
            Err(DeliverError::Full(Delivery::Stanza(stanza))) => {
                // A slow client: presence may be dropped, anything else is bounced so
                // the sender learns it was not delivered.
                if stanza.kind != StanzaKind::Presence {
                    tracing::debug!(user = %self.user.jid(), "client queue full, bouncing");
                    if let Some(reply) = stanza
                        .error_reply(StanzaError::new(StanzaErrorCondition::ResourceConstraint))
                    {
                        self.users.route(reply);
                    }
                }
            }
            Err(DeliverError::Gone(Delivery::Stanza(stanza))) => {
                // The stream ended before its unbind arrived: forget the resource and,
                // for a message, apply the bare-JID rules again so it is not lost.
                if let Some(full) = self
                    .user
                    .resources()
                    .iter()
                    .find(|r| r.conn_id == conn.id.0)
                    .map(|r| r.jid.clone())
                {
                    self.user.unbind(&full, conn.id.0);
                }
                if stanza.kind == StanzaKind::Message {
                    let mut stanza = stanza;
                    stanza.to = Some(Jid::from(self.user.jid().clone()));
                    let mut more = Vec::new();
                    self.user.inbound(stanza, &mut more);
                    self.scratch.extend(more);
                    self.run_actions(ctx);
                }
            }
            Err(_) => {}
        }
    }

    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.idle_check.take() {
            ctx.cancel_future(h);
        }
        if self.user.is_empty() && !self.draining {
            self.idle_check = Some(ctx.run_later(IDLE_LINGER, |act, ctx| {
                act.idle_check = None;
                if act.user.is_empty() {
                    act.start_draining(ctx);
                }
            }));
        }
    }

    /// Leaves the registry, forwards anything that still arrives, then stops.
    fn start_draining(&mut self, ctx: &mut Context<Self>) {
        self.draining = true;
        self.users.unregister(self.user.jid(), &ctx.address());
        ctx.run_later(DRAIN_GRACE, |_, ctx| ctx.stop());
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.schedule_idle_check(ctx);
    }
}

impl Handler<Bind> for UserActor {
    type Result = ResponseFuture<Result<FullJid, BindError>>;

    fn handle(&mut self, Bind(req): Bind, ctx: &mut Self::Context) -> Self::Result {
        if self.draining {
            let users = self.users.clone();
            return Box::pin(async move { users.bind(req).await });
        }
        let resource = req.resource.clone().unwrap_or_else(generate_resource);
        let conn_id = req.conn.id.0;
        let mut actions = std::mem::take(&mut self.scratch);
        let result = self.user.bind(&resource, conn_id, req.conn, &mut actions);
        self.scratch = actions;
        self.run_actions(ctx);
        self.schedule_idle_check(ctx);
        let result = result.map(|b| b.jid).map_err(|e| match e.condition {
            StanzaErrorCondition::ResourceConstraint => BindError::TooManyResources,
            _ => BindError::BadResource,
        });
        Box::pin(async move { result })
    }
}

impl Handler<Unbind> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: Unbind, ctx: &mut Self::Context) {
        if self.draining {
            self.users.unbind(msg.jid, msg.conn);
            return;
        }
        self.user.unbind(&msg.jid, msg.conn.0);
        self.schedule_idle_check(ctx);
    }
}

impl Handler<Outbound> for UserActor {
    type Result = ();

    fn handle(&mut self, Outbound(stanza): Outbound, ctx: &mut Self::Context) {
        if self.draining {
            self.users.forward_outbound(stanza);
            return;
        }
        let mut actions = std::mem::take(&mut self.scratch);
        self.user.outbound(stanza, &mut actions);
        self.scratch = actions;
        self.run_actions(ctx);
    }
}

impl Handler<Inbound> for UserActor {
    type Result = ();

    fn handle(&mut self, Inbound(stanza): Inbound, ctx: &mut Self::Context) {
        if self.draining {
            self.users.route(stanza);
            return;
        }
        let mut actions = std::mem::take(&mut self.scratch);
        self.user.inbound(stanza, &mut actions);
        self.scratch = actions;
        self.run_actions(ctx);
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
