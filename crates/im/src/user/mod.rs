//! One user's live state and the RFC 6121 rules that act on it.
//!
//! [`User`] holds the bound resources (with their presence), the roster and the block
//! list. The host (a user actor) feeds it events — bind, unbind, a stanza from one of
//! the user's clients ([`User::outbound`]), a stanza addressed to the user
//! ([`User::inbound`]) — and carries out the returned [`Action`]s in order. Actions
//! that persist come before the deliveries that depend on them, so nothing is shown
//! to a client before it is stored.
//!
//! `C` is whatever the host uses to reach a connection; it is only cloned and handed
//! back inside actions.

mod account;
mod messages;
mod presence;

use crate::blocking::BlockList;
use crate::roster::{self, Change, Meta, PushItem, Roster};
use aviary_xmpp::{
    BareJid, FullJid, Jid, Stanza, StanzaError, StanzaErrorCondition, StreamError,
    StreamErrorCondition,
};
use std::sync::Arc;

/// What the deployment offers (RFC 6121 §1.3 lets IM and presence be separate).
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_resources: usize,
    /// The presence service: presence broadcast, probes, subscriptions.
    pub presence: bool,
    /// The IM service: messages.
    pub im: bool,
    /// Most messages kept offline per user (XEP-0160); 0 disables offline storage.
    pub offline_max: usize,
    pub roster: roster::Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_resources: 64,
            presence: true,
            im: true,
            offline_max: 1000,
            roster: roster::Limits::default(),
        }
    }
}

/// A bound resource.
#[derive(Clone, Debug)]
pub struct Resource<C> {
    pub jid: FullJid,
    pub conn_id: u64,
    pub conn: C,
    /// Sent initial presence and not yet unavailable (RFC 6121 §4.2).
    pub available: bool,
    /// Priority of the last available presence (RFC 6121 §4.7.2.3).
    pub priority: i8,
    /// The last available presence broadcast, without `to` (answers probes).
    pub presence: Option<Stanza>,
    /// Requested the roster: receives roster pushes (RFC 6121 §2.1.6).
    pub roster_interested: bool,
    /// Requested the block list: receives block pushes (XEP-0191 §3.3).
    pub blocklist_interested: bool,
    /// Recipients of directed available presence, told when this resource goes
    /// unavailable (RFC 6121 §4.6.3).
    pub directed: Vec<Jid>,
}

/// A store write the host performs before the actions that follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    Roster(Meta, Vec<Change>),
    Block(Vec<Jid>),
    Unblock(Vec<Jid>),
    UnblockAll,
}

/// What the host must do after an event, in order.
#[derive(Debug)]
pub enum Action<C> {
    /// Write this stanza to one of this user's connections.
    Deliver(C, Stanza),
    /// Close one of this user's connections with this stream error.
    Close(C, StreamError),
    /// Send this stanza onward to `stanza.to`; `from` is already correct.
    Route(Stanza),
    /// The server's generic handlers answer this iq on the account's behalf
    /// (service discovery and the like).
    HandleForAccount(Stanza),
    /// Persist before carrying out the following actions.
    Persist(Persist),
    /// Store this message offline (XEP-0160); if it cannot be stored, bounce it
    /// with `resource-constraint`.
    StoreOffline(Stanza),
    /// Deliver the stored offline messages to this connection, then discard them.
    FlushOffline(C),
    /// A resource was bound (it replaces any earlier holder of the resource). In a
    /// cluster the host records its location so another node can take the user over.
    ResourceBound(FullJid),
    /// A resource's presence or interests changed.
    ResourceChanged(FullJid),
    /// A resource's binding ended (`conn_id` is the connection that held it).
    ResourceRemoved(FullJid, u64),
}

/// The outcome of a bind.
#[derive(Debug)]
pub struct Bound {
    pub jid: FullJid,
    /// RFC 6120 §7.7.2.2: the older session that held this resource, now closed.
    pub replaced: bool,
}

/// One user's live state.
#[derive(Debug)]
pub struct User<C> {
    jid: BareJid,
    settings: Arc<Settings>,
    /// The account exists (stanzas to missing accounts follow RFC 6121 §8.5.1).
    exists: bool,
    resources: Vec<Resource<C>>,
    roster: Roster,
    blocklist: BlockList,
    push_seq: u64,
}

impl<C: Clone> User<C> {
    pub fn new(
        jid: BareJid,
        settings: Arc<Settings>,
        exists: bool,
        roster: Roster,
        blocklist: BlockList,
    ) -> Self {
        User {
            jid,
            settings,
            exists,
            resources: Vec::new(),
            roster,
            blocklist,
            push_seq: 0,
        }
    }

    pub fn jid(&self) -> &BareJid {
        &self.jid
    }

    pub fn exists(&self) -> bool {
        self.exists
    }

    pub fn resources(&self) -> &[Resource<C>] {
        &self.resources
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn blocklist(&self) -> &BlockList {
        &self.blocklist
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Binds `resource` to a new connection. If a connection already holds it, the
    /// newer session wins (RFC 6120 §7.7.2.2 option 1, as ejabberd and Prosody do by
    /// default) and the older receives `<conflict/>`; its presence ends as if its
    /// stream had closed.
    pub fn bind(
        &mut self,
        resource: &str,
        conn_id: u64,
        conn: C,
        out: &mut Vec<Action<C>>,
    ) -> Result<Bound, StanzaError> {
        let jid = self
            .jid
            .with_resource_str(resource)
            .map_err(|_| StanzaError::new(StanzaErrorCondition::BadRequest))?;
        self.exists = true;
        let mut replaced = false;
        if let Some(i) = self.resources.iter().position(|r| r.jid == jid) {
            let old = self.resources.remove(i);
            out.push(Action::Close(
                old.conn.clone(),
                StreamError::with_text(
                    StreamErrorCondition::Conflict,
                    "Replaced by a new connection for this resource",
                ),
            ));
            self.went_away(old, out);
            replaced = true;
        } else if self.resources.len() >= self.settings.max_resources {
            return Err(StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                .with_text("Too many resources bound for this account"));
        }
        self.resources.push(Resource {
            jid: jid.clone(),
            conn_id,
            conn,
            available: false,
            priority: 0,
            presence: None,
            roster_interested: false,
            blocklist_interested: false,
            directed: Vec::new(),
        });
        out.push(Action::ResourceBound(jid.clone()));
        Ok(Bound { jid, replaced })
    }

    /// Re-creates a resource from its recorded state when a new node takes the user
    /// over (no actions: nothing changed for anyone).
    pub fn restore_resource(&mut self, resource: Resource<C>) {
        self.exists = true;
        self.resources.retain(|r| r.jid != resource.jid);
        self.resources.push(resource);
    }

    /// The stream of `jid` ended. Only a binding that still belongs to `conn_id` is
    /// removed (a successor that replaced it is left alone); its presence ends with
    /// server-generated unavailable presence (RFC 6121 §4.5.2).
    pub fn unbind(&mut self, jid: &FullJid, conn_id: u64, out: &mut Vec<Action<C>>) -> bool {
        let Some(i) = self
            .resources
            .iter()
            .position(|r| &r.jid == jid && r.conn_id == conn_id)
        else {
            return false;
        };
        let old = self.resources.remove(i);
        out.push(Action::ResourceRemoved(old.jid.clone(), old.conn_id));
        self.went_away(old, out);
        true
    }

    /// A connection was found gone (a delivery to it failed): forget it as if its
    /// stream had ended.
    pub fn connection_gone(&mut self, conn_id: u64, out: &mut Vec<Action<C>>) {
        if let Some(i) = self.resources.iter().position(|r| r.conn_id == conn_id) {
            let old = self.resources.remove(i);
            out.push(Action::ResourceRemoved(old.jid.clone(), old.conn_id));
            self.went_away(old, out);
        }
    }

    /// Every resource whose connection `on_edge` selects is gone: the edge holding
    /// those connections died.
    pub fn edge_gone(&mut self, mut on_edge: impl FnMut(&C) -> bool, out: &mut Vec<Action<C>>) {
        let gone: Vec<u64> = self
            .resources
            .iter()
            .filter(|r| on_edge(&r.conn))
            .map(|r| r.conn_id)
            .collect();
        for id in gone {
            self.connection_gone(id, out);
        }
    }

    fn resource_index(&self, jid: &FullJid) -> Option<usize> {
        self.resources.iter().position(|r| &r.jid == jid)
    }

    fn resource_of(&self, stanza: &Stanza) -> Option<usize> {
        let from = stanza.from.as_ref()?.try_as_full().ok()?;
        self.resource_index(from)
    }

    /// A stanza sent by one of this user's clients (`from` stamped with its full JID).
    pub fn outbound(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        match stanza.kind {
            aviary_xmpp::StanzaKind::Presence => self.outbound_presence(stanza, out),
            aviary_xmpp::StanzaKind::Message => self.outbound_message(stanza, out),
            aviary_xmpp::StanzaKind::Iq => self.outbound_iq(stanza, out),
        }
    }

    /// A stanza addressed to this user (bare or full JID), from anyone.
    pub fn inbound(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        if let Some(from) = &stanza.from
            && self.blocklist.blocks(from)
            && from.to_bare() != self.jid
        {
            // XEP-0191 §3.5: nothing from a blocked entity reaches the user; messages
            // and iq requests are refused as if the user did not exist.
            let refuse = match stanza.kind {
                aviary_xmpp::StanzaKind::Message => true,
                aviary_xmpp::StanzaKind::Iq => stanza.iq_type().is_some_and(|t| t.is_request()),
                aviary_xmpp::StanzaKind::Presence => false,
            };
            if refuse {
                bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out);
            }
            return;
        }
        if !self.exists {
            self.inbound_no_account(stanza, out);
            return;
        }
        match stanza.kind {
            aviary_xmpp::StanzaKind::Message => self.inbound_message(stanza, out),
            aviary_xmpp::StanzaKind::Presence => self.inbound_presence(stanza, out),
            aviary_xmpp::StanzaKind::Iq => self.inbound_iq(stanza, out),
        }
    }

    /// RFC 6121 §8.5.1: the account does not exist.
    fn inbound_no_account(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        match stanza.kind {
            aviary_xmpp::StanzaKind::Message => {
                bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out)
            }
            aviary_xmpp::StanzaKind::Iq => {
                if stanza.iq_type().is_some_and(|t| t.is_request()) {
                    bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out)
                }
            }
            aviary_xmpp::StanzaKind::Presence => {
                // Probes learn the account is gone; everything else is ignored.
                if stanza.presence_type() == Some(aviary_xmpp::PresenceType::Probe)
                    && let Some(from) = &stanza.from
                {
                    out.push(Action::Route(
                        self.presence_to(from.to_bare().into(), Some("unsubscribed")),
                    ));
                }
            }
        }
    }

    /// An error reply to a stanza one of this user's own clients sent, delivered
    /// straight back to that client.
    fn reply_error_local(&self, stanza: &Stanza, error: StanzaError, out: &mut Vec<Action<C>>) {
        let Some(i) = self.resource_of(stanza) else {
            return;
        };
        if let Some(reply) = stanza.error_reply(error) {
            out.push(Action::Deliver(self.resources[i].conn.clone(), reply));
        }
    }

    /// A reply to one of this user's own clients.
    fn reply_local(&self, stanza: &Stanza, reply: Stanza, out: &mut Vec<Action<C>>) {
        if let Some(i) = self.resource_of(stanza) {
            out.push(Action::Deliver(self.resources[i].conn.clone(), reply));
        }
    }

    fn next_push_id(&mut self) -> String {
        self.push_seq += 1;
        format!("push-{}", self.push_seq)
    }

    /// Sends a roster push for `item` to every interested resource (RFC 6121 §2.1.6).
    fn push_roster(&mut self, item: &PushItem, out: &mut Vec<Action<C>>) {
        let targets: Vec<(C, FullJid)> = self
            .resources
            .iter()
            .filter(|r| r.roster_interested)
            .map(|r| (r.conn.clone(), r.jid.clone()))
            .collect();
        for (conn, jid) in targets {
            let id = self.next_push_id();
            let push = self.roster.push_stanza(&self.jid, Jid::from(jid), item, id);
            out.push(Action::Deliver(conn, push));
        }
    }

    /// Persists roster changes (if any) ahead of everything after it.
    fn persist_roster(&self, changes: Vec<Change>, out: &mut Vec<Action<C>>) {
        if !changes.is_empty() {
            out.push(Action::Persist(Persist::Roster(
                self.roster.meta(),
                changes,
            )));
        }
    }

    /// A presence stanza from the user's bare JID to `to` (subscription replies,
    /// probes' answers).
    fn presence_to(&self, to: Jid, type_: Option<&'static str>) -> Stanza {
        let mut p = Stanza::new(
            aviary_xmpp::StanzaKind::Presence,
            Some(to),
            Some(Jid::from(self.jid.clone())),
        );
        if let Some(t) = type_ {
            p.set_type_attr(t);
        }
        p
    }
}

/// Answers `stanza` with an error back to its sender (never an error to an error).
pub fn bounce<C>(stanza: Stanza, condition: StanzaErrorCondition, out: &mut Vec<Action<C>>) {
    if let Some(reply) = stanza.error_reply(StanzaError::new(condition)) {
        out.push(Action::Route(reply));
    }
}

/// RFC 6121 §4.7.2.3: an integer in -128..=127; absent or invalid means 0.
pub fn presence_priority(stanza: &Stanza) -> i8 {
    stanza
        .element()
        .child_text("priority", aviary_xmpp::ns::CLIENT)
        .and_then(|t| t.trim().parse::<i8>().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
