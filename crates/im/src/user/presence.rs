//! Presence (RFC 6121 §4) and presence subscriptions (§3): broadcast, probes,
//! directed presence, unavailable on stream end, and the Appendix A transitions.

use super::{Action, Resource, User, presence_priority};
use crate::blocking;
use crate::subscription::{self, ContactState};
use aviary_xmpp::{BareJid, FullJid, Jid, PresenceType, Stanza, StanzaError, StanzaErrorCondition};

impl<C: Clone> User<C> {
    pub(super) fn outbound_presence(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        let Some(ptype) = stanza.presence_type() else {
            self.reply_error_local(
                &stanza,
                StanzaError::new(StanzaErrorCondition::BadRequest)
                    .with_text("Unknown presence type"),
                out,
            );
            return;
        };
        if !self.settings.presence {
            if ptype != PresenceType::Error {
                self.reply_error_local(
                    &stanza,
                    StanzaError::new(StanzaErrorCondition::ServiceUnavailable)
                        .with_text("This server does not offer presence"),
                    out,
                );
            }
            return;
        }
        let to = stanza.to.clone();
        match (ptype, to) {
            (PresenceType::Available | PresenceType::Unavailable, None) => {
                self.broadcast(stanza, ptype == PresenceType::Available, out)
            }
            (_, None) => {
                // Subscription types, probes and errors need a recipient; without one
                // they mean nothing (RFC 6121 §3, §4.3) and are dropped.
            }
            (_, Some(to)) if to.to_bare() == self.jid => {
                // Presence to oneself is delivered like any inbound presence.
                if !ptype.is_subscription() {
                    self.inbound_presence(stanza, out);
                }
            }
            (_, Some(to)) if self.blocklist.blocks(&to) => {
                self.reply_error_local(&stanza, blocking::blocked_error(), out);
            }
            (PresenceType::Available | PresenceType::Unavailable, Some(to)) => {
                self.directed(stanza, to, ptype == PresenceType::Available, out)
            }
            (PresenceType::Probe | PresenceType::Error, Some(_)) => out.push(Action::Route(stanza)),
            (kind, Some(to)) => self.outbound_subscription(kind, to.to_bare(), stanza, out),
        }
    }

    /// RFC 6121 §4.2 (initial), §4.4 (update) and §4.5 (unavailable) broadcast.
    fn broadcast(&mut self, stanza: Stanza, available: bool, out: &mut Vec<Action<C>>) {
        let Some(i) = self.resource_of(&stanza) else {
            return;
        };
        let was_available = self.resources[i].available;
        let was_negative = was_available && self.resources[i].priority < 0;
        if !available && !was_available {
            // Unavailable from a resource that never became available: nothing to end.
            return;
        }
        {
            let r = &mut self.resources[i];
            r.available = available;
            if available {
                r.priority = presence_priority(&stanza);
                let mut kept = stanza.clone();
                kept.to = None;
                r.presence = Some(kept);
            } else {
                r.presence = None;
            }
        }
        let directed = if available {
            Vec::new()
        } else {
            std::mem::take(&mut self.resources[i].directed)
        };
        out.push(Action::ResourceChanged(self.resources[i].jid.clone()));
        self.send_to_subscribers(&stanza, &directed, out);
        // RFC 6121 §4.2.2/§4.4.2: the user's own available resources, including the
        // sender, see the new presence too.
        for r in self
            .resources
            .iter()
            .filter(|r| r.available || r.jid == self.resources[i].jid)
        {
            let mut copy = stanza.clone();
            copy.to = Some(Jid::from(r.jid.clone()));
            out.push(Action::Deliver(r.conn.clone(), copy));
        }
        if available && !was_available {
            self.became_available(i, out);
        } else if available
            && was_negative
            && self.resources[i].priority >= 0
            && self.settings.im
            && self.settings.offline_max > 0
        {
            // XEP-0160 §3: stored messages go to the resource that "next sends
            // non-negative available presence", which includes raising a negative
            // priority.
            out.push(Action::FlushOffline(self.resources[i].conn.clone()));
        }
    }

    /// Sends `stanza` to every contact subscribed to the user's presence and to
    /// `also` (directed-presence recipients), skipping blocked ones.
    fn send_to_subscribers(&self, stanza: &Stanza, also: &[Jid], out: &mut Vec<Action<C>>) {
        let contacts = self.roster.contacts_where(|s| s.has_from());
        for c in contacts {
            let c = Jid::from(c);
            if self.blocklist.blocks(&c) {
                continue;
            }
            let mut copy = stanza.clone();
            copy.to = Some(c);
            out.push(Action::Route(copy));
        }
        for j in also {
            if self.blocklist.blocks(j)
                || self
                    .roster
                    .item(&j.to_bare())
                    .is_some_and(|i| i.subscription.has_from())
            {
                continue;
            }
            let mut copy = stanza.clone();
            copy.to = Some(j.clone());
            out.push(Action::Route(copy));
        }
    }

    /// Initial presence (RFC 6121 §4.2): probe contacts, show the other resources'
    /// presence, deliver pending subscription requests and offline messages.
    fn became_available(&mut self, i: usize, out: &mut Vec<Action<C>>) {
        let me = self.resources[i].jid.clone();
        let conn = self.resources[i].conn.clone();
        // §4.3.1: probes on the user's behalf, from the full JID.
        for c in self.roster.contacts_where(|s| s.has_to()) {
            let c = Jid::from(c);
            if self.blocklist.blocks(&c) {
                continue;
            }
            let mut probe = Stanza::new(
                aviary_xmpp::StanzaKind::Presence,
                Some(c),
                Some(Jid::from(me.clone())),
            );
            probe.set_type_attr("probe");
            out.push(Action::Route(probe));
        }
        for r in self.resources.iter().filter(|r| r.available && r.jid != me) {
            if let Some(p) = &r.presence {
                let mut copy = p.clone();
                copy.from = Some(Jid::from(r.jid.clone()));
                copy.to = Some(Jid::from(me.clone()));
                out.push(Action::Deliver(conn.clone(), copy));
            }
        }
        // §3.1.3: requests that arrived while the user was away.
        for (_, req) in self.roster.pending_in() {
            out.push(Action::Deliver(conn.clone(), req.clone()));
        }
        // XEP-0160: offline messages go to the first resource with a non-negative
        // priority.
        if self.settings.im && self.settings.offline_max > 0 && self.resources[i].priority >= 0 {
            out.push(Action::FlushOffline(conn));
        }
    }

    /// RFC 6121 §4.6: directed presence, remembered so it can be ended later.
    fn directed(&mut self, stanza: Stanza, to: Jid, available: bool, out: &mut Vec<Action<C>>) {
        if let Some(i) = self.resource_of(&stanza) {
            let subscribed = self
                .roster
                .item(&to.to_bare())
                .is_some_and(|it| it.subscription.has_from());
            let list = &mut self.resources[i].directed;
            if available {
                if !subscribed && !list.contains(&to) {
                    list.push(to);
                }
            } else {
                list.retain(|j| *j != to);
            }
        }
        out.push(Action::Route(stanza));
    }

    /// A resource's stream ended: server-generated unavailable presence to everyone
    /// who saw it available (RFC 6121 §4.5.2, §4.6.3).
    pub(super) fn went_away(&mut self, old: Resource<C>, out: &mut Vec<Action<C>>) {
        if !old.available || !self.settings.presence {
            return;
        }
        let mut unavailable = Stanza::new(
            aviary_xmpp::StanzaKind::Presence,
            None,
            Some(Jid::from(old.jid.clone())),
        );
        unavailable.set_type_attr("unavailable");
        self.send_to_subscribers(&unavailable, &old.directed, out);
        for r in self.resources.iter().filter(|r| r.available) {
            let mut copy = unavailable.clone();
            copy.to = Some(Jid::from(r.jid.clone()));
            out.push(Action::Deliver(r.conn.clone(), copy));
        }
    }

    /// The user's current presence, one stanza per available resource, to `to`
    /// (after a subscription is approved, RFC 6121 §3.1.5; in answer to a probe,
    /// §4.3.2).
    pub(super) fn send_current_presence(&self, to: &Jid, out: &mut Vec<Action<C>>) {
        for r in self.resources.iter().filter(|r| r.available) {
            if let Some(p) = &r.presence {
                let mut copy = p.clone();
                copy.from = Some(Jid::from(r.jid.clone()));
                copy.to = Some(to.clone());
                out.push(Action::Route(copy));
            }
        }
    }

    /// Unavailable presence from every available resource to `to` (a subscription
    /// was cancelled, RFC 6121 §3.2.2, §3.3.3; or `to` was blocked, XEP-0191 §3.3).
    pub(super) fn send_unavailable(&self, to: &Jid, out: &mut Vec<Action<C>>) {
        for r in self.resources.iter().filter(|r| r.available) {
            let mut p = Stanza::new(
                aviary_xmpp::StanzaKind::Presence,
                Some(to.clone()),
                Some(Jid::from(r.jid.clone())),
            );
            p.set_type_attr("unavailable");
            out.push(Action::Route(p));
        }
    }

    /// Probes `to` on the user's behalf from every available resource (after an
    /// unblock, so the user learns the contact's presence again).
    pub(super) fn probe_from_available(&self, to: &Jid, out: &mut Vec<Action<C>>) {
        for r in self.resources.iter().filter(|r| r.available) {
            let mut probe = Stanza::new(
                aviary_xmpp::StanzaKind::Presence,
                Some(to.clone()),
                Some(Jid::from(r.jid.clone())),
            );
            probe.set_type_attr("probe");
            out.push(Action::Route(probe));
        }
    }

    /// RFC 6121 §3 outbound subscription stanzas (Appendix A.2).
    fn outbound_subscription(
        &mut self,
        kind: PresenceType,
        contact: BareJid,
        stanza: Stanza,
        out: &mut Vec<Action<C>>,
    ) {
        let before = self.roster.contact_state(&contact);
        let t = subscription::outbound(before, kind);
        let mut changes = Vec::new();
        let push = self
            .roster
            .set_contact_state(&contact, t.new, None, &mut changes);
        self.persist_roster(changes, out);
        if let Some(item) = push {
            self.push_roster(&item, out);
        }
        if t.route {
            // §3.1.2: stamped with the user's bare JID, addressed to the contact's.
            let mut routed = stanza;
            routed.from = Some(Jid::from(self.jid.clone()));
            routed.to = Some(Jid::from(contact.clone()));
            out.push(Action::Route(routed));
        }
        self.presence_follows(before, t.new, &Jid::from(contact), out);
    }

    /// When the contact gains or loses a subscription to the user's presence, the
    /// user's server shows or ends the user's presence for it.
    fn presence_follows(
        &self,
        before: ContactState,
        after: ContactState,
        contact: &Jid,
        out: &mut Vec<Action<C>>,
    ) {
        let had = before.subscription.has_from();
        let has = after.subscription.has_from();
        if !had && has {
            self.send_current_presence(contact, out);
        } else if had && !has {
            self.send_unavailable(contact, out);
        }
    }

    pub(super) fn inbound_presence(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        if !self.settings.presence {
            return;
        }
        let Some(ptype) = stanza.presence_type() else {
            return;
        };
        let full = stanza
            .to
            .as_ref()
            .and_then(|t| t.try_as_full().ok())
            .cloned();
        match ptype {
            PresenceType::Probe => self.inbound_probe(stanza, out),
            PresenceType::Subscribe
            | PresenceType::Subscribed
            | PresenceType::Unsubscribe
            | PresenceType::Unsubscribed => {
                // §8.5.3.2.2: subscription stanzas to a full JID other than a request
                // are ignored; requests are handled for the bare JID.
                if full.is_some() && ptype != PresenceType::Subscribe {
                    return;
                }
                if let Some(from) = stanza.from.as_ref().map(|f| f.to_bare()) {
                    self.inbound_subscription(ptype, from, stanza, out);
                }
            }
            PresenceType::Available | PresenceType::Unavailable | PresenceType::Error => {
                self.deliver_presence(stanza, full.as_ref(), out)
            }
        }
    }

    /// §8.5.2.1.2 / §8.5.3: presence to a bare JID goes to every available resource;
    /// to a full JID, to that resource if it exists.
    fn deliver_presence(&self, stanza: Stanza, full: Option<&FullJid>, out: &mut Vec<Action<C>>) {
        match full {
            Some(full) => {
                if let Some(i) = self.resource_index(full) {
                    out.push(Action::Deliver(self.resources[i].conn.clone(), stanza));
                }
            }
            None => {
                for r in self.resources.iter().filter(|r| r.available) {
                    out.push(Action::Deliver(r.conn.clone(), stanza.clone()));
                }
            }
        }
    }

    /// RFC 6121 §3 inbound subscription stanzas (Appendix A.3).
    fn inbound_subscription(
        &mut self,
        kind: PresenceType,
        contact: BareJid,
        stanza: Stanza,
        out: &mut Vec<Action<C>>,
    ) {
        let before = self.roster.contact_state(&contact);
        let t = subscription::inbound(before, kind);
        let mut changes = Vec::new();
        let mut request = stanza.clone();
        request.to = Some(Jid::from(self.jid.clone()));
        request.from = Some(Jid::from(contact.clone()));
        let push = self.roster.set_contact_state(
            &contact,
            t.new,
            (kind == PresenceType::Subscribe).then_some(&request),
            &mut changes,
        );
        self.persist_roster(changes, out);
        if let Some(item) = push {
            self.push_roster(&item, out);
        }
        if t.deliver {
            // Delivered to every available resource; a request is also kept (pending
            // in) and delivered again at the next initial presence until answered.
            for r in self.resources.iter().filter(|r| r.available) {
                out.push(Action::Deliver(r.conn.clone(), request.clone()));
            }
        }
        if let Some(reply) = t.auto_reply {
            out.push(Action::Route(
                self.presence_to(Jid::from(contact.clone()), reply.name()),
            ));
        }
        self.presence_follows(before, t.new, &Jid::from(contact), out);
    }

    /// RFC 6121 §4.3.2: answer a probe with the last presence of each available
    /// resource, or unavailable; entities not entitled to it learn nothing.
    fn inbound_probe(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        let Some(prober) = stanza.from.clone() else {
            return;
        };
        let bare = prober.to_bare();
        let subscribed = self
            .roster
            .item(&bare)
            .is_some_and(|i| i.subscription.has_from());
        let directed = self.resources.iter().any(|r| {
            r.directed
                .iter()
                .any(|d| *d == prober || d.to_bare() == bare)
        });
        if !subscribed && !directed {
            out.push(Action::Route(
                self.presence_to(Jid::from(bare), Some("unsubscribed")),
            ));
            return;
        }
        if self.resources.iter().any(|r| r.available) {
            self.send_current_presence(&prober, out);
        } else {
            out.push(Action::Route(self.presence_to(prober, Some("unavailable"))));
        }
    }
}
