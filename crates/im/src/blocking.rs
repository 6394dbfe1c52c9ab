//! Blocking command (XEP-0191): the block list, its iq protocol, and JID matching.
//!
//! Items may be a domain, a domain/resource, a bare JID or a full JID; a stanza's
//! address is blocked when any of those forms of it is on the list (the XEP-0016
//! matching order XEP-0191 §3.3 refers to).

use aviary_xmpp::{Element, Jid, StanzaError, StanzaErrorCondition, ns};
use std::collections::BTreeSet;

/// One user's block list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockList {
    items: BTreeSet<String>,
}

/// A parsed blocking command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `<blocklist/>` get.
    Get,
    Block(Vec<Jid>),
    /// An empty list unblocks everything (XEP-0191 §3.4).
    Unblock(Vec<Jid>),
}

impl BlockList {
    pub fn restore(items: Vec<String>) -> BlockList {
        BlockList {
            items: items.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(String::as_str)
    }

    /// True when stanzas from or to `jid` are blocked.
    pub fn blocks(&self, jid: &Jid) -> bool {
        if self.items.is_empty() {
            return false;
        }
        if self.items.contains(jid.as_str()) {
            return true;
        }
        let domain = jid.domain().as_str();
        if jid.node().is_some() {
            let bare = jid.to_bare();
            if self.items.contains(bare.as_str()) {
                return true;
            }
        }
        if let Some(res) = jid.resource()
            && self.items.contains(&format!("{domain}/{}", res.as_str()))
        {
            return true;
        }
        self.items.contains(domain)
    }

    /// Adds items; returns those that were not already blocked.
    pub fn block(&mut self, jids: &[Jid]) -> Vec<Jid> {
        jids.iter()
            .filter(|j| self.items.insert(j.to_string()))
            .cloned()
            .collect()
    }

    /// Removes items (all when `jids` is empty); returns what was removed.
    pub fn unblock(&mut self, jids: &[Jid]) -> Vec<Jid> {
        if jids.is_empty() {
            let all = std::mem::take(&mut self.items);
            return all.iter().filter_map(|s| Jid::new(s).ok()).collect();
        }
        jids.iter()
            .filter(|j| self.items.remove(j.as_str()))
            .cloned()
            .collect()
    }

    /// The `<blocklist/>` result (XEP-0191 §3.2).
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("blocklist", ns::BLOCKING);
        for i in &self.items {
            el.append_child(Element::new("item", ns::BLOCKING).with_attr("jid", i.clone()));
        }
        el
    }
}

/// Parses a blocking iq payload; `is_set` is the iq type.
pub fn parse(payload: &Element, is_set: bool) -> Result<Command, StanzaError> {
    let bad = |t: &str| Err(StanzaError::new(StanzaErrorCondition::BadRequest).with_text(t));
    match (payload.name(), is_set) {
        ("blocklist", false) => Ok(Command::Get),
        ("block", true) | ("unblock", true) => {
            let mut jids = Vec::new();
            for item in payload.children().filter(|c| c.is("item", ns::BLOCKING)) {
                let Some(j) = item.attr("jid") else {
                    return bad("Each <item/> needs a 'jid'");
                };
                match Jid::new(j) {
                    Ok(j) => jids.push(j),
                    Err(_) => {
                        return Err(StanzaError::new(StanzaErrorCondition::JidMalformed)
                            .with_text("Not a valid JID"));
                    }
                }
            }
            if payload.name() == "block" {
                if jids.is_empty() {
                    // XEP-0191 §3.3: a block without items is a bad request.
                    return bad("Name at least one JID to block");
                }
                Ok(Command::Block(jids))
            } else {
                Ok(Command::Unblock(jids))
            }
        }
        _ => bad("Unknown blocking command"),
    }
}

/// The payload of a block or unblock push (XEP-0191 §3.3, §3.4).
pub fn push_payload(block: bool, jids: &[Jid]) -> Element {
    let mut el = Element::new(if block { "block" } else { "unblock" }, ns::BLOCKING);
    for j in jids {
        el.append_child(Element::new("item", ns::BLOCKING).with_attr("jid", j.to_string()));
    }
    el
}

/// The error a user gets for sending to a blocked JID (XEP-0191 §3.5).
pub fn blocked_error() -> StanzaError {
    StanzaError::new(StanzaErrorCondition::NotAcceptable)
        .with_app(Element::new("blocked", ns::BLOCKING_ERRORS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn xep0191_matching_covers_every_jid_form() {
        let mut b = BlockList::default();
        b.block(&[jid("spam.test")]);
        assert!(b.blocks(&jid("x@spam.test/r")));
        assert!(b.blocks(&jid("spam.test")));
        assert!(!b.blocks(&jid("x@ham.test")));

        let mut b = BlockList::default();
        b.block(&[jid("a@x.test")]);
        assert!(b.blocks(&jid("a@x.test/phone")));
        assert!(b.blocks(&jid("a@x.test")));
        assert!(!b.blocks(&jid("b@x.test")));

        let mut b = BlockList::default();
        b.block(&[jid("a@x.test/phone")]);
        assert!(b.blocks(&jid("a@x.test/phone")));
        assert!(!b.blocks(&jid("a@x.test/laptop")));
        assert!(!b.blocks(&jid("a@x.test")));
    }

    #[test]
    fn block_and_unblock_report_changes() {
        let mut b = BlockList::default();
        assert_eq!(b.block(&[jid("a@x"), jid("b@x")]).len(), 2);
        assert_eq!(b.block(&[jid("a@x")]).len(), 0);
        assert_eq!(b.unblock(&[jid("a@x"), jid("c@x")]), vec![jid("a@x")]);
        assert_eq!(b.unblock(&[]), vec![jid("b@x")]);
        assert!(b.is_empty());
    }

    #[test]
    fn xep0191_parse_rules() {
        let empty_block = Element::new("block", ns::BLOCKING);
        assert!(parse(&empty_block, true).is_err());
        let empty_unblock = Element::new("unblock", ns::BLOCKING);
        assert_eq!(
            parse(&empty_unblock, true).unwrap(),
            Command::Unblock(vec![])
        );
        assert_eq!(
            parse(&Element::new("blocklist", ns::BLOCKING), false).unwrap(),
            Command::Get
        );
        let bad = Element::new("block", ns::BLOCKING)
            .with_child(Element::new("item", ns::BLOCKING).with_attr("jid", "a@b@c"));
        assert_eq!(
            parse(&bad, true).unwrap_err().condition,
            StanzaErrorCondition::JidMalformed
        );
    }
}
