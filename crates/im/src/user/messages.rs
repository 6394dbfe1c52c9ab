//! Messages (RFC 6121 §5) and the delivery rules of §8.5, offline storage
//! (XEP-0160 with XEP-0203 delay stamps), and iq routing.

use super::{Action, User, bounce};
use crate::{blocking, datetime};
use aviary_xmpp::{
    Element, FullJid, Jid, MessageType, Stanza, StanzaError, StanzaErrorCondition, ns,
};
use std::time::SystemTime;

/// Payloads that make a message worth keeping offline even without a body.
const STORABLE_WITHOUT_BODY: &[&str] = &[
    "jabber:x:conference",
    "http://jabber.org/protocol/muc#user",
    "urn:xmpp:jingle-message:0",
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:eme:0",
];

impl<C: Clone> User<C> {
    pub(super) fn outbound_message(&mut self, mut stanza: Stanza, out: &mut Vec<Action<C>>) {
        if !self.settings.im {
            if stanza.message_type() != MessageType::Error {
                self.reply_error_local(
                    &stanza,
                    StanzaError::new(StanzaErrorCondition::ServiceUnavailable)
                        .with_text("This server does not offer instant messaging"),
                    out,
                );
            }
            return;
        }
        match stanza.to.clone() {
            // RFC 6120 §10.3.1: no 'to' means the sender's own bare JID.
            None => {
                stanza.to = Some(Jid::from(self.jid.clone()));
                self.inbound_message(stanza, out);
            }
            Some(to) if to.to_bare() == self.jid => self.inbound_message(stanza, out),
            Some(to) if self.blocklist.blocks(&to) => {
                if stanza.message_type() != MessageType::Error {
                    self.reply_error_local(&stanza, blocking::blocked_error(), out);
                }
            }
            Some(_) => out.push(Action::Route(stanza)),
        }
    }

    pub(super) fn inbound_message(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        let mtype = stanza.message_type();
        if !self.settings.im {
            if mtype != MessageType::Error {
                bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out);
            }
            return;
        }
        let full = stanza
            .to
            .as_ref()
            .and_then(|t| t.try_as_full().ok())
            .cloned();
        if let Some(full) = full {
            self.message_to_full(stanza, mtype, &full, out);
        } else {
            self.message_to_bare(stanza, mtype, out);
        }
    }

    /// RFC 6121 §8.5.3.
    fn message_to_full(
        &mut self,
        stanza: Stanza,
        mtype: MessageType,
        to: &FullJid,
        out: &mut Vec<Action<C>>,
    ) {
        // §8.5.3.1: a connected resource gets it, available or not.
        if let Some(i) = self.resource_index(to) {
            out.push(Action::Deliver(self.resources[i].conn.clone(), stanza));
            return;
        }
        // §8.5.3.2.1: no such resource.
        match mtype {
            // Chat continues on the user's other resources, or offline; 'to' is kept.
            MessageType::Chat => self.message_to_bare(stanza, mtype, out),
            // We choose (b), an error, so the sender learns the resource is gone.
            MessageType::Normal | MessageType::Groupchat => {
                bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out)
            }
            // Headlines are ephemeral and errors are never answered: ignored.
            MessageType::Headline | MessageType::Error => {}
        }
    }

    /// RFC 6121 §8.5.2 (bare JID), also used for chat to a vanished full JID.
    /// Delivery choice (§8.5.2.1.1 option a): the "most available" resources are those
    /// with the highest non-negative priority, and all of them get the message when
    /// several share it.
    fn message_to_bare(&mut self, stanza: Stanza, mtype: MessageType, out: &mut Vec<Action<C>>) {
        match mtype {
            MessageType::Error => {}
            // §8.5.2.1.1 / §8.5.2.2.1: groupchat to a bare JID is an error.
            MessageType::Groupchat => bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out),
            MessageType::Headline => {
                // All non-negative available resources, or nowhere.
                let targets: Vec<C> = self
                    .resources
                    .iter()
                    .filter(|r| r.available && r.priority >= 0)
                    .map(|r| r.conn.clone())
                    .collect();
                fan_out(stanza, targets, out);
            }
            MessageType::Chat | MessageType::Normal => {
                let best = self
                    .resources
                    .iter()
                    .filter(|r| r.available && r.priority >= 0)
                    .map(|r| r.priority)
                    .max();
                match best {
                    Some(p) => {
                        let targets: Vec<C> = self
                            .resources
                            .iter()
                            .filter(|r| r.available && r.priority == p)
                            .map(|r| r.conn.clone())
                            .collect();
                        fan_out(stanza, targets, out);
                    }
                    // §8.5.2.2.1: no available resource (negative priorities count as
                    // none): store offline, or tell the sender.
                    None => self.offline(stanza, out),
                }
            }
        }
    }

    /// XEP-0160 offline storage, with a XEP-0203 delay stamp.
    fn offline(&mut self, mut stanza: Stanza, out: &mut Vec<Action<C>>) {
        if self.settings.offline_max == 0 || !worth_storing(&stanza) {
            bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out);
            return;
        }
        stanza.element_mut().append_child(
            Element::new("delay", ns::DELAY)
                .with_attr("from", self.jid.domain().to_string())
                .with_attr("stamp", datetime::format(SystemTime::now()))
                .with_text("Offline Storage"),
        );
        out.push(Action::StoreOffline(stanza));
    }

    pub(super) fn outbound_iq(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        match stanza.to.clone() {
            None => self.account_iq(stanza, out),
            Some(to) if to.to_bare() == self.jid => self.inbound_iq(stanza, out),
            Some(to) if self.blocklist.blocks(&to) => {
                if stanza.iq_type().is_some_and(|t| t.is_request()) {
                    self.reply_error_local(&stanza, blocking::blocked_error(), out);
                }
            }
            Some(_) => out.push(Action::Route(stanza)),
        }
    }

    pub(super) fn inbound_iq(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        let full = stanza
            .to
            .as_ref()
            .and_then(|t| t.try_as_full().ok())
            .cloned();
        match full {
            // §8.5.3.1 / §8.5.3.2.3
            Some(full) => match self.resource_index(&full) {
                Some(i) => out.push(Action::Deliver(self.resources[i].conn.clone(), stanza)),
                None => {
                    if stanza.iq_type().is_some_and(|t| t.is_request()) {
                        bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out);
                    }
                }
            },
            // §8.5.2.1.3 / §8.5.2.2.3: the server answers for the account.
            None => self.account_iq(stanza, out),
        }
    }
}

fn fan_out<C: Clone>(stanza: Stanza, targets: Vec<C>, out: &mut Vec<Action<C>>) {
    let n = targets.len();
    let mut stanza = Some(stanza);
    for (i, conn) in targets.into_iter().enumerate() {
        let st = if i + 1 == n {
            stanza.take()
        } else {
            stanza.clone()
        };
        if let Some(st) = st {
            out.push(Action::Deliver(conn, st));
        }
    }
}

/// XEP-0160 §5 and XEP-0334: messages with content are kept; bare chat states and
/// receipts are not, nor messages hinted `no-store`.
fn worth_storing(stanza: &Stanza) -> bool {
    let el = stanza.element();
    if el.has_child("no-store", "urn:xmpp:hints")
        || el.has_child("no-permanent-store", "urn:xmpp:hints")
    {
        return false;
    }
    if el.has_child("store", "urn:xmpp:hints") {
        return true;
    }
    el.has_child("body", ns::CLIENT)
        || el.has_child("subject", ns::CLIENT)
        || el
            .children()
            .any(|c| STORABLE_WITHOUT_BODY.contains(&c.ns()))
}
