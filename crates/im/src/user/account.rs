//! Iqs the server answers on the account's behalf: roster management (RFC 6121 §2)
//! and the blocking command (XEP-0191); anything else goes to the server's generic
//! handlers.

use super::{Action, Persist, User};
use crate::blocking::{self, Command};
use crate::roster::{self, RosterGet, RosterSet};
use aviary_xmpp::{IqType, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, ns};

impl<C: Clone> User<C> {
    pub(super) fn account_iq(&mut self, stanza: Stanza, out: &mut Vec<Action<C>>) {
        let Some(kind) = stanza.iq_type() else {
            return;
        };
        if !kind.is_request() {
            // Answers to our pushes and the like: nothing to do.
            return;
        }
        let from_owner = stanza
            .from
            .as_ref()
            .is_some_and(|f| f.to_bare() == self.jid);
        let ns_ = stanza
            .iq_payload()
            .map(|p| p.ns().to_owned())
            .unwrap_or_default();
        match ns_.as_str() {
            ns::ROSTER => {
                if from_owner {
                    self.roster_iq(stanza, kind, out);
                } else {
                    // RFC 6121 §2.1.5: only the account may touch its roster.
                    super::bounce(stanza, StanzaErrorCondition::Forbidden, out);
                }
            }
            ns::BLOCKING => {
                if from_owner {
                    self.blocking_iq(stanza, kind, out);
                } else {
                    super::bounce(stanza, StanzaErrorCondition::ServiceUnavailable, out);
                }
            }
            _ => out.push(Action::HandleForAccount(stanza)),
        }
    }

    fn roster_iq(&mut self, stanza: Stanza, kind: IqType, out: &mut Vec<Action<C>>) {
        let Some(i) = self.resource_of(&stanza) else {
            return;
        };
        let Some(query) = stanza.iq_payload().cloned() else {
            return;
        };
        if kind == IqType::Get {
            if !self.resources[i].roster_interested {
                self.resources[i].roster_interested = true;
                out.push(Action::ResourceChanged(self.resources[i].jid.clone()));
            }
            match self.roster.get(query.attr("ver")) {
                RosterGet::Full { items, ver } => {
                    let reply = stanza.iq_result(Some(roster::Roster::result_query(&items, ver)));
                    self.reply_local(&stanza, reply, out);
                }
                RosterGet::Pushes(pushes) => {
                    // §2.6.3: an empty result, then the changes as pushes.
                    self.reply_local(&stanza, stanza.iq_result(None), out);
                    let conn = self.resources[i].conn.clone();
                    let to = Jid::from(self.resources[i].jid.clone());
                    for p in pushes {
                        let id = self.next_push_id();
                        let push = self.roster.push_stanza(&self.jid, to.clone(), &p, id);
                        out.push(Action::Deliver(conn.clone(), push));
                    }
                }
            }
            return;
        }
        let set = match roster::parse_set(&query, &self.settings.roster) {
            Ok(s) => s,
            Err(e) => {
                self.reply_error_local(&stanza, e, out);
                return;
            }
        };
        let mut changes = Vec::new();
        match set {
            RosterSet::Update { jid, name, groups } => {
                match self
                    .roster
                    .update(&jid, name, groups, &self.settings.roster, &mut changes)
                {
                    Ok(push) => {
                        self.persist_roster(changes, out);
                        self.reply_local(&stanza, stanza.iq_result(None), out);
                        self.push_roster(&push, out);
                    }
                    Err(e) => self.reply_error_local(&stanza, e, out),
                }
            }
            RosterSet::Remove { jid } => {
                let pending_in = self.roster.has_pending_in(&jid);
                let Some((item, push)) = self.roster.remove(&jid, &mut changes) else {
                    // §2.5.3
                    self.reply_error_local(
                        &stanza,
                        StanzaError::new(StanzaErrorCondition::ItemNotFound),
                        out,
                    );
                    return;
                };
                self.persist_roster(changes, out);
                self.reply_local(&stanza, stanza.iq_result(None), out);
                self.push_roster(&push, out);
                // §2.5.2: cancel the subscriptions both ways (and any pending ones).
                let contact = Jid::from(jid.clone());
                if item.subscription.has_to() || item.ask {
                    out.push(Action::Route(
                        self.presence_to(contact.clone(), Some("unsubscribe")),
                    ));
                }
                if item.subscription.has_from() || pending_in {
                    out.push(Action::Route(
                        self.presence_to(contact.clone(), Some("unsubscribed")),
                    ));
                }
                if item.subscription.has_from() {
                    self.send_unavailable(&contact, out);
                }
            }
        }
    }

    fn blocking_iq(&mut self, stanza: Stanza, kind: IqType, out: &mut Vec<Action<C>>) {
        let Some(i) = self.resource_of(&stanza) else {
            return;
        };
        let Some(payload) = stanza.iq_payload().cloned() else {
            return;
        };
        let cmd = match blocking::parse(&payload, kind == IqType::Set) {
            Ok(c) => c,
            Err(e) => {
                self.reply_error_local(&stanza, e, out);
                return;
            }
        };
        match cmd {
            Command::Get => {
                if !self.resources[i].blocklist_interested {
                    self.resources[i].blocklist_interested = true;
                    out.push(Action::ResourceChanged(self.resources[i].jid.clone()));
                }
                let reply = stanza.iq_result(Some(self.blocklist.to_element()));
                self.reply_local(&stanza, reply, out);
            }
            Command::Block(jids) => {
                let added = self.blocklist.block(&jids);
                if !added.is_empty() {
                    out.push(Action::Persist(Persist::Block(added.clone())));
                }
                self.reply_local(&stanza, stanza.iq_result(None), out);
                self.push_blocking(true, &jids, out);
                // XEP-0191 §3.3: blocked contacts stop seeing the user.
                for j in &added {
                    if self.sees_presence(j) {
                        self.send_unavailable(j, out);
                    }
                }
            }
            Command::Unblock(jids) => {
                let all = jids.is_empty();
                let removed = self.blocklist.unblock(&jids);
                if all && !removed.is_empty() {
                    out.push(Action::Persist(Persist::UnblockAll));
                } else if !removed.is_empty() {
                    out.push(Action::Persist(Persist::Unblock(removed.clone())));
                }
                self.reply_local(&stanza, stanza.iq_result(None), out);
                self.push_blocking(false, &jids, out);
                // XEP-0191 §3.4: presence flows again both ways.
                for j in &removed {
                    if self.sees_presence(j) {
                        self.send_current_presence(j, out);
                    }
                    if self
                        .roster
                        .item(&j.to_bare())
                        .is_some_and(|it| it.subscription.has_to())
                    {
                        self.probe_from_available(j, out);
                    }
                }
            }
        }
    }

    /// True when `jid` would receive the user's presence broadcasts.
    fn sees_presence(&self, jid: &Jid) -> bool {
        self.roster
            .item(&jid.to_bare())
            .is_some_and(|it| it.subscription.has_from())
            || self
                .resources
                .iter()
                .any(|r| r.directed.iter().any(|d| d == jid))
    }

    /// XEP-0191 §3.3/§3.4: block and unblock pushes to resources that asked for the
    /// list.
    fn push_blocking(&mut self, block: bool, jids: &[Jid], out: &mut Vec<Action<C>>) {
        let targets: Vec<(C, Jid)> = self
            .resources
            .iter()
            .filter(|r| r.blocklist_interested)
            .map(|r| (r.conn.clone(), Jid::from(r.jid.clone())))
            .collect();
        for (conn, to) in targets {
            let mut push = Stanza::new(StanzaKind::Iq, Some(to), Some(Jid::from(self.jid.clone())));
            push.set_type_attr("set");
            push.set_id(self.next_push_id());
            push.element_mut()
                .append_child(blocking::push_payload(block, jids));
            out.push(Action::Deliver(conn, push));
        }
    }
}
