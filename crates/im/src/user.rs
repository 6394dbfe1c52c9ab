//! One user's live state — the bound resources and their presence — and the rules
//! that route stanzas from and to that user (RFC 6120 §7, §10; RFC 6121 §4, §8).
//!
//! `C` is whatever the host uses to reach a connection; this module only clones it
//! and hands it back inside actions.

use aviary_xmpp::{
    BareJid, FullJid, Jid, PresenceType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind,
    StreamError, StreamErrorCondition,
};

/// A bound resource.
#[derive(Clone, Debug)]
pub struct Resource<C> {
    pub jid: FullJid,
    pub conn_id: u64,
    pub conn: C,
    /// Has sent initial presence and not yet unavailable presence (RFC 6121 §4.2).
    pub available: bool,
    /// The priority of the last available presence (RFC 6121 §4.7.2.3), -128..=127.
    pub priority: i8,
}

/// What the host must do after an event, in order.
#[derive(Debug)]
pub enum Action<C> {
    /// Write this stanza to one of this user's connections.
    Deliver(C, Stanza),
    /// Close one of this user's connections with this stream error.
    Close(C, StreamError),
    /// Send this stanza onward to `stanza.to` (another user, the server, or a remote
    /// domain); `from` is already correct.
    Route(Stanza),
    /// The server answers this stanza on the user's behalf (RFC 6120 §10.3: no `to`,
    /// or an iq to the user's bare JID).
    HandleForAccount(Stanza),
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
    resources: Vec<Resource<C>>,
    max_resources: usize,
}

impl<C: Clone> User<C> {
    pub fn new(jid: BareJid, max_resources: usize) -> Self {
        User {
            jid,
            resources: Vec::new(),
            max_resources: max_resources.max(1),
        }
    }

    pub fn jid(&self) -> &BareJid {
        &self.jid
    }

    pub fn resources(&self) -> &[Resource<C>] {
        &self.resources
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Binds `resource` to a new connection. If a connection already holds it, the
    /// newer session wins (RFC 6120 §7.7.2.2 option 1, as ejabberd and Prosody do by
    /// default) and the older receives `<conflict/>`.
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
        if let Some(i) = self.resources.iter().position(|r| r.jid == jid) {
            let old = self.resources.remove(i);
            out.push(Action::Close(
                old.conn,
                StreamError::with_text(
                    StreamErrorCondition::Conflict,
                    "Replaced by a new connection for this resource",
                ),
            ));
            self.resources.push(Resource {
                jid: jid.clone(),
                conn_id,
                conn,
                available: false,
                priority: 0,
            });
            return Ok(Bound {
                jid,
                replaced: true,
            });
        }
        if self.resources.len() >= self.max_resources {
            return Err(StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                .with_text("Too many resources bound for this account"));
        }
        self.resources.push(Resource {
            jid: jid.clone(),
            conn_id,
            conn,
            available: false,
            priority: 0,
        });
        Ok(Bound {
            jid,
            replaced: false,
        })
    }

    /// Removes a binding when its stream ended, but only if it still belongs to
    /// `conn_id` (a successor that replaced it is left alone).
    pub fn unbind(&mut self, jid: &FullJid, conn_id: u64) -> Option<Resource<C>> {
        let i = self
            .resources
            .iter()
            .position(|r| &r.jid == jid && r.conn_id == conn_id)?;
        Some(self.resources.remove(i))
    }

    fn resource_mut(&mut self, jid: &FullJid) -> Option<&mut Resource<C>> {
        self.resources.iter_mut().find(|r| &r.jid == jid)
    }

    /// A stanza sent by one of this user's clients (`from` stamped with its full JID).
    pub fn outbound(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        match stanza.to.clone() {
            None => self.outbound_without_to(stanza, out),
            Some(to) if to.to_bare() == self.jid => self.inbound(stanza, out),
            Some(_) => out.push(Action::Route(stanza)),
        }
    }

    /// RFC 6120 §10.3: a stanza without `to` is handled on behalf of the account.
    fn outbound_without_to(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        match stanza.kind {
            StanzaKind::Presence => self.presence_broadcast(stanza, out),
            // RFC 6120 §10.3.1: as if addressed to the sender's bare JID.
            StanzaKind::Message => {
                let mut stanza = stanza;
                stanza.to = Some(Jid::from(self.jid.clone()));
                self.inbound(stanza, out);
            }
            StanzaKind::Iq => out.push(Action::HandleForAccount(stanza)),
        }
    }

    /// RFC 6121 §4.2/§4.5: presence broadcast by a client. Tracks availability and
    /// priority and reflects it to the user's own available resources.
    fn presence_broadcast(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        let Some(Ok(from)) = stanza.from.as_ref().map(|j| j.try_as_full()) else {
            return;
        };
        let from = from.clone();
        let kind = stanza.presence_type();
        let Some(res) = self.resource_mut(&from) else {
            return;
        };
        match kind {
            Some(PresenceType::Available) => {
                res.available = true;
                res.priority = presence_priority(&stanza);
            }
            Some(PresenceType::Unavailable) => res.available = false,
            // Other types without `to` have no meaning for a broadcast (RFC 6121 §4.7.1).
            _ => return,
        }
        for r in self
            .resources
            .iter()
            .filter(|r| r.available || r.jid == from)
        {
            let mut copy = stanza.clone();
            copy.to = Some(Jid::from(r.jid.clone()));
            out.push(Action::Deliver(r.conn.clone(), copy));
        }
    }

    /// A stanza addressed to this user (bare or full JID), from anyone.
    pub fn inbound(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        let full = stanza
            .to
            .as_ref()
            .and_then(|j| j.try_as_full().ok())
            .cloned();
        match full {
            Some(full) => self.inbound_full(full, stanza, out),
            None => self.inbound_bare(stanza, out),
        }
    }

    fn inbound_full(&mut self, to: FullJid, stanza: Stanza, out: &mut Vec<Action<C>>) {
        if let Some(r) = self.resources.iter().find(|r| r.jid == to) {
            out.push(Action::Deliver(r.conn.clone(), stanza));
            return;
        }
        // RFC 6121 §8.5.3.2: no such resource.
        match stanza.kind {
            StanzaKind::Message => match stanza.message_type() {
                aviary_xmpp::MessageType::Chat | aviary_xmpp::MessageType::Normal => {
                    self.inbound_bare(stanza, out)
                }
                aviary_xmpp::MessageType::Groupchat => {
                    bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out)
                }
                aviary_xmpp::MessageType::Headline | aviary_xmpp::MessageType::Error => {}
            },
            StanzaKind::Presence => {}
            StanzaKind::Iq => bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out),
        }
    }

    fn inbound_bare(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        match stanza.kind {
            StanzaKind::Message => {
                let targets = self.message_targets();
                if targets.is_empty() {
                    // Offline storage arrives with RFC 6121 support; until then the
                    // sender learns the message was not delivered.
                    bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out);
                    return;
                }
                let last = targets.len() - 1;
                let mut stanza = Some(stanza);
                for (i, conn) in targets.into_iter().enumerate() {
                    let st = if i == last {
                        stanza.take()
                    } else {
                        stanza.clone()
                    };
                    if let Some(st) = st {
                        out.push(Action::Deliver(conn, st));
                    }
                }
            }
            StanzaKind::Presence => {
                for r in self.resources.iter().filter(|r| r.available) {
                    out.push(Action::Deliver(r.conn.clone(), stanza.clone()));
                }
            }
            // RFC 6121 §8.5.2.1.3 / RFC 6120 §10.5.2: the server answers for the account.
            StanzaKind::Iq => out.push(Action::HandleForAccount(stanza)),
        }
    }

    /// RFC 6121 §8.5.2.1.1: the available resources with the highest non-negative
    /// priority; when several share it, all of them receive the message.
    fn message_targets(&self) -> Vec<C> {
        let best = self
            .resources
            .iter()
            .filter(|r| r.available && r.priority >= 0)
            .map(|r| r.priority)
            .max();
        match best {
            None => Vec::new(),
            Some(p) => self
                .resources
                .iter()
                .filter(|r| r.available && r.priority == p)
                .map(|r| r.conn.clone())
                .collect(),
        }
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

/// Answers `stanza` with an error back to its sender (never an error to an error).
pub fn bounce<C>(stanza: Stanza, condition: StanzaErrorCondition, out: &mut Vec<Action<C>>) {
    if let Some(reply) = stanza.error_reply(StanzaError::new(condition)) {
        out.push(Action::Route(reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_xmpp::{Element, ns};

    type U = User<&'static str>;

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    fn presence(from: &str, priority: Option<i8>) -> Stanza {
        let mut st = Stanza::new(StanzaKind::Presence, None, Some(jid(from)));
        if let Some(p) = priority {
            st.element_mut()
                .append_child(Element::new("priority", ns::CLIENT).with_text(p.to_string()));
        }
        st
    }

    fn message(to: &str) -> Stanza {
        let mut st = Stanza::new(StanzaKind::Message, Some(jid(to)), Some(jid("x@y/z")));
        st.set_type_attr("chat");
        st
    }

    fn delivered(out: &[Action<&'static str>]) -> Vec<&'static str> {
        out.iter()
            .filter_map(|a| match a {
                Action::Deliver(c, _) => Some(*c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rfc6120_7_7_2_2_newer_session_wins_the_resource() {
        let mut u = U::new(bare("a@b"), 10);
        let mut out = Vec::new();
        u.bind("r", 1, "old", &mut out).unwrap();
        let b = u.bind("r", 2, "new", &mut out).unwrap();
        assert!(b.replaced);
        assert!(
            matches!(&out[0], Action::Close("old", e) if e.condition == StreamErrorCondition::Conflict)
        );
        assert_eq!(u.resources().len(), 1);
        // The old stream's late unbind must not remove the successor.
        assert!(u.unbind(&b.jid, 1).is_none());
        assert!(u.unbind(&b.jid, 2).is_some());
    }

    #[test]
    fn resource_limit_is_enforced() {
        let mut u = U::new(bare("a@b"), 1);
        let mut out = Vec::new();
        u.bind("r1", 1, "c1", &mut out).unwrap();
        let e = u.bind("r2", 2, "c2", &mut out).unwrap_err();
        assert_eq!(e.condition, StanzaErrorCondition::ResourceConstraint);
    }

    #[test]
    fn rfc6121_8_5_2_1_1_bare_message_goes_to_highest_priority() {
        let mut u = U::new(bare("a@b"), 10);
        let mut out = Vec::new();
        u.bind("r1", 1, "c1", &mut out).unwrap();
        u.bind("r2", 2, "c2", &mut out).unwrap();
        u.bind("r3", 3, "c3", &mut out).unwrap();
        u.outbound(presence("a@b/r1", Some(5)), &mut out);
        u.outbound(presence("a@b/r2", Some(5)), &mut out);
        u.outbound(presence("a@b/r3", Some(1)), &mut out);
        out.clear();
        u.inbound(message("a@b"), &mut out);
        assert_eq!(delivered(&out), vec!["c1", "c2"]);
    }

    #[test]
    fn rfc6121_8_5_2_1_1_negative_priority_never_gets_bare_messages() {
        let mut u = U::new(bare("a@b"), 10);
        let mut out = Vec::new();
        u.bind("r1", 1, "c1", &mut out).unwrap();
        u.outbound(presence("a@b/r1", Some(-1)), &mut out);
        out.clear();
        u.inbound(message("a@b"), &mut out);
        assert!(delivered(&out).is_empty());
        assert!(matches!(&out[0], Action::Route(s) if s.is_error()));
    }

    #[test]
    fn full_jid_delivery_ignores_availability() {
        let mut u = U::new(bare("a@b"), 10);
        let mut out = Vec::new();
        u.bind("r1", 1, "c1", &mut out).unwrap();
        u.inbound(message("a@b/r1"), &mut out);
        assert_eq!(delivered(&out), vec!["c1"]);
    }
}
