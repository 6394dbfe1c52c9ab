//! The roster (RFC 6121 §2): items, their subscription states, pending inbound
//! requests, roster sets and gets, pushes, and versioning (§2.6).
//!
//! Every change bumps the roster version and is returned as a [`Change`] for the host
//! to persist; versions are unique and increase, so "changes since version N" are
//! the items (and tombstones of removed items) with a larger version.

use crate::subscription::{ContactState, Subscription};
use aviary_xmpp::{
    BareJid, Element, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, ns,
};
use std::collections::BTreeMap;

/// One roster item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub jid: BareJid,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub subscription: Subscription,
    /// Pending out (`ask='subscribe'`).
    pub ask: bool,
    /// Pre-approved (`approved='true'`, §3.4).
    pub approved: bool,
    /// The roster version at which this item last changed.
    pub version: u64,
}

impl Item {
    pub fn new(jid: BareJid) -> Item {
        Item {
            jid,
            name: None,
            groups: Vec::new(),
            subscription: Subscription::None,
            ask: false,
            approved: false,
            version: 0,
        }
    }

    /// The `<item/>` of a roster result or push (§2.1.2).
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("item", ns::ROSTER)
            .with_attr("jid", self.jid.to_string())
            .with_attr("subscription", self.subscription.name());
        if let Some(name) = &self.name {
            el.set_attr("name", name.clone());
        }
        if self.ask {
            el.set_attr("ask", "subscribe");
        }
        if self.approved {
            el.set_attr("approved", "true");
        }
        for g in &self.groups {
            el.append_child(Element::new("group", ns::ROSTER).with_text(g.clone()));
        }
        el
    }
}

/// Limits on roster contents (RFC 6121 §2.3.3 lets the server set them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_items: usize,
    pub max_name_len: usize,
    pub max_group_len: usize,
    pub max_groups: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_items: 2000,
            max_name_len: 1023,
            max_group_len: 1023,
            max_groups: 64,
        }
    }
}

/// How many tombstones are kept before the oldest are dropped (clients whose cached
/// version is older than the oldest kept then get the full roster).
const MAX_TOMBSTONES: usize = 256;

/// A roster change to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Upsert(Item),
    Remove { jid: BareJid, version: u64 },
    SetPendingIn(BareJid, Box<Stanza>),
    ClearPendingIn(BareJid),
    PruneTombstones,
}

/// Roster-wide versioning state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub epoch: u64,
    pub version: u64,
    pub tombstone_floor: u64,
}

/// A parsed, validated roster set (§2.3–§2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterSet {
    Update {
        jid: BareJid,
        name: Option<String>,
        groups: Vec<String>,
    },
    Remove {
        jid: BareJid,
    },
}

/// The answer to a roster get (§2.1.3, §2.6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterGet {
    /// The whole roster; `ver` is set when the client uses versioning.
    Full {
        items: Vec<Item>,
        ver: Option<String>,
    },
    /// An empty result; the listed changes follow as roster pushes, in order of
    /// modification (none if the client's version is current).
    Pushes(Vec<PushItem>),
}

/// One roster push's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushItem {
    Item(Item),
    Removed { jid: BareJid, version: u64 },
}

impl PushItem {
    pub fn version(&self) -> u64 {
        match self {
            PushItem::Item(i) => i.version,
            PushItem::Removed { version, .. } => *version,
        }
    }

    fn element(&self) -> Element {
        match self {
            PushItem::Item(i) => i.to_element(),
            PushItem::Removed { jid, .. } => Element::new("item", ns::ROSTER)
                .with_attr("jid", jid.to_string())
                .with_attr("subscription", "remove"),
        }
    }
}

/// One user's roster.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    meta: Meta,
    items: BTreeMap<BareJid, Item>,
    tombstones: BTreeMap<BareJid, u64>,
    pending_in: BTreeMap<BareJid, Stanza>,
}

impl Roster {
    /// A new, empty roster incarnation.
    pub fn new(epoch: u64) -> Roster {
        Roster {
            meta: Meta {
                epoch,
                version: 0,
                tombstone_floor: 0,
            },
            ..Roster::default()
        }
    }

    /// A roster rebuilt from storage.
    pub fn restore(
        meta: Meta,
        items: Vec<Item>,
        tombstones: Vec<(BareJid, u64)>,
        pending_in: Vec<(BareJid, Stanza)>,
    ) -> Roster {
        Roster {
            meta,
            items: items.into_iter().map(|i| (i.jid.clone(), i)).collect(),
            tombstones: tombstones.into_iter().collect(),
            pending_in: pending_in.into_iter().collect(),
        }
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    pub fn item(&self, jid: &BareJid) -> Option<&Item> {
        self.items.get(jid)
    }

    pub fn pending_in(&self) -> impl Iterator<Item = (&BareJid, &Stanza)> {
        self.pending_in.iter()
    }

    /// The opaque version string clients cache (§2.6.1): epoch and counter.
    pub fn ver(&self) -> String {
        format!("{:x}-{}", self.meta.epoch, self.meta.version)
    }

    fn parse_ver(&self, ver: &str) -> Option<u64> {
        let (epoch, n) = ver.split_once('-')?;
        if u64::from_str_radix(epoch, 16).ok()? != self.meta.epoch {
            return None;
        }
        n.parse().ok()
    }

    fn bump(&mut self) -> u64 {
        self.meta.version += 1;
        self.meta.version
    }

    /// Contacts whose subscription satisfies `pred` (e.g. those receiving presence
    /// broadcasts: `has_from`).
    pub fn contacts_where(&self, pred: impl Fn(Subscription) -> bool) -> Vec<BareJid> {
        self.items
            .values()
            .filter(|i| pred(i.subscription))
            .map(|i| i.jid.clone())
            .collect()
    }

    /// The Appendix A state of the relationship with `jid`.
    pub fn contact_state(&self, jid: &BareJid) -> ContactState {
        let pending_in = self.pending_in.contains_key(jid);
        match self.items.get(jid) {
            Some(i) => ContactState {
                subscription: i.subscription,
                pending_out: i.ask,
                pending_in,
                approved: i.approved,
            },
            None => ContactState {
                pending_in,
                ..ContactState::default()
            },
        }
    }

    /// Moves the relationship with `jid` to `new`, creating the item when the new
    /// state needs one. Returns the item to push if the visible item changed.
    /// `request` is the inbound `subscribe` to keep while pending in.
    pub fn set_contact_state(
        &mut self,
        jid: &BareJid,
        new: ContactState,
        request: Option<&Stanza>,
        changes: &mut Vec<Change>,
    ) -> Option<PushItem> {
        let old = self.contact_state(jid);
        if new.pending_in != old.pending_in {
            if new.pending_in {
                if let Some(req) = request {
                    self.pending_in.insert(jid.clone(), req.clone());
                    changes.push(Change::SetPendingIn(jid.clone(), Box::new(req.clone())));
                }
            } else {
                self.pending_in.remove(jid);
                changes.push(Change::ClearPendingIn(jid.clone()));
            }
        }
        let visible_changed = new.subscription != old.subscription
            || new.pending_out != old.pending_out
            || new.approved != old.approved;
        if !visible_changed {
            return None;
        }
        let needs_item = new.subscription != Subscription::None || new.pending_out || new.approved;
        if !needs_item && !self.items.contains_key(jid) {
            return None;
        }
        let version = self.bump();
        let item = self
            .items
            .entry(jid.clone())
            .or_insert_with(|| Item::new(jid.clone()));
        item.subscription = new.subscription;
        item.ask = new.pending_out;
        item.approved = new.approved;
        item.version = version;
        self.tombstones.remove(jid);
        changes.push(Change::Upsert(item.clone()));
        Some(PushItem::Item(item.clone()))
    }

    /// Stores a pending request again (e.g. a repeated `subscribe` with a new
    /// status) without changing the state.
    pub fn has_pending_in(&self, jid: &BareJid) -> bool {
        self.pending_in.contains_key(jid)
    }

    /// Applies a validated roster set's update (§2.3, §2.4). The item is replaced
    /// exactly as provided (name, groups); subscription state is kept.
    pub fn update(
        &mut self,
        jid: &BareJid,
        name: Option<String>,
        groups: Vec<String>,
        limits: &Limits,
        changes: &mut Vec<Change>,
    ) -> Result<PushItem, StanzaError> {
        if !self.items.contains_key(jid) && self.items.len() >= limits.max_items {
            return Err(
                StanzaError::new(StanzaErrorCondition::NotAllowed).with_text("The roster is full")
            );
        }
        let version = self.bump();
        let item = self
            .items
            .entry(jid.clone())
            .or_insert_with(|| Item::new(jid.clone()));
        item.name = name;
        item.groups = groups;
        item.version = version;
        self.tombstones.remove(jid);
        changes.push(Change::Upsert(item.clone()));
        Ok(PushItem::Item(item.clone()))
    }

    /// Removes an item (§2.5), leaving a tombstone for versioning. Returns the item as
    /// it was, or `None` if there was none.
    pub fn remove(&mut self, jid: &BareJid, changes: &mut Vec<Change>) -> Option<(Item, PushItem)> {
        let item = self.items.remove(jid)?;
        let version = self.bump();
        self.tombstones.insert(jid.clone(), version);
        changes.push(Change::Remove {
            jid: jid.clone(),
            version,
        });
        if self.pending_in.remove(jid).is_some() {
            changes.push(Change::ClearPendingIn(jid.clone()));
        }
        if self.tombstones.len() > MAX_TOMBSTONES {
            // Forget the oldest tombstones; older client versions get the full roster.
            let mut versions: Vec<u64> = self.tombstones.values().copied().collect();
            versions.sort_unstable();
            let floor = versions[versions.len() - MAX_TOMBSTONES];
            self.tombstones.retain(|_, v| *v >= floor);
            self.meta.tombstone_floor = floor;
            changes.push(Change::PruneTombstones);
        }
        Some((
            item,
            PushItem::Removed {
                jid: jid.clone(),
                version,
            },
        ))
    }

    /// A roster get (§2.1.3) with the client's cached version, if any (§2.6).
    pub fn get(&self, client_ver: Option<&str>) -> RosterGet {
        let full = |ver: Option<String>| RosterGet::Full {
            items: self.items.values().cloned().collect(),
            ver,
        };
        let Some(ver) = client_ver else {
            return full(None);
        };
        match self.parse_ver(ver) {
            // Empty ver ("bootstrap", §2.6.2), another incarnation, or a version older
            // than the tombstones we kept: the whole roster.
            Some(n) if n <= self.meta.version && n >= self.meta.tombstone_floor => {
                let mut changed: Vec<PushItem> = self
                    .items
                    .values()
                    .filter(|i| i.version > n)
                    .cloned()
                    .map(PushItem::Item)
                    .chain(
                        self.tombstones
                            .iter()
                            .filter(|(_, v)| **v > n)
                            .map(|(jid, v)| PushItem::Removed {
                                jid: jid.clone(),
                                version: *v,
                            }),
                    )
                    .collect();
                // §2.6.3: pushes in order of modification.
                changed.sort_by_key(PushItem::version);
                RosterGet::Pushes(changed)
            }
            _ => full(Some(self.ver())),
        }
    }

    /// The `ver` a push carries: the version at which that change happened (§2.6.3:
    /// unique per push).
    pub fn ver_of(&self, version: u64) -> String {
        format!("{:x}-{}", self.meta.epoch, version)
    }

    /// A roster push to one resource (§2.1.6); `from` is the user's bare JID.
    pub fn push_stanza(&self, owner: &BareJid, to: Jid, item: &PushItem, id: String) -> Stanza {
        let mut st = Stanza::new(StanzaKind::Iq, Some(to), Some(Jid::from(owner.clone())));
        st.set_type_attr("set");
        st.set_id(id);
        st.element_mut().append_child(
            Element::new("query", ns::ROSTER)
                .with_attr("ver", self.ver_of(item.version()))
                .with_child(item.element()),
        );
        st
    }

    /// The result payload of a full roster get.
    pub fn result_query(items: &[Item], ver: Option<String>) -> Element {
        let mut q = Element::new("query", ns::ROSTER);
        if let Some(v) = ver {
            q.set_attr("ver", v);
        }
        for i in items {
            q.append_child(i.to_element());
        }
        q
    }
}

/// Validates a roster set's `<query/>` (§2.1.5, §2.3.3).
pub fn parse_set(query: &Element, limits: &Limits) -> Result<RosterSet, StanzaError> {
    let bad = |t: &str| Err(StanzaError::new(StanzaErrorCondition::BadRequest).with_text(t));
    let not_acceptable =
        |t: &str| Err(StanzaError::new(StanzaErrorCondition::NotAcceptable).with_text(t));
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let Some(item) = items.next() else {
        return bad("A roster set carries one <item/>");
    };
    if items.next().is_some() {
        return bad("A roster set carries exactly one <item/>");
    }
    let Some(jid) = item.attr("jid") else {
        return bad("The <item/> needs a 'jid'");
    };
    let jid = match Jid::new(jid) {
        Ok(j) => match j.try_into_full() {
            Err(bare) => bare,
            Ok(_) => return bad("Roster items are bare JIDs"),
        },
        Err(_) => {
            return Err(StanzaError::new(StanzaErrorCondition::JidMalformed)
                .with_text("The 'jid' is not a valid JID"));
        }
    };
    // §2.1.5: values other than "remove" are ignored.
    if item.attr("subscription") == Some("remove") {
        return Ok(RosterSet::Remove { jid });
    }
    let name = item
        .attr("name")
        .map(str::to_owned)
        .filter(|n| !n.is_empty());
    if name
        .as_ref()
        .is_some_and(|n| n.chars().count() > limits.max_name_len)
    {
        return not_acceptable("The name is too long");
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let text = g.text().into_owned();
        if text.is_empty() {
            return not_acceptable("A group name may not be empty");
        }
        if text.chars().count() > limits.max_group_len {
            return not_acceptable("A group name is too long");
        }
        if groups.contains(&text) {
            return bad("The same group is listed twice");
        }
        groups.push(text);
    }
    if groups.len() > limits.max_groups {
        return not_acceptable("Too many groups");
    }
    Ok(RosterSet::Update { jid, name, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    fn set(xml_items: Vec<Element>) -> Element {
        let mut q = Element::new("query", ns::ROSTER);
        for i in xml_items {
            q.append_child(i);
        }
        q
    }

    fn item(jid: &str) -> Element {
        Element::new("item", ns::ROSTER).with_attr("jid", jid)
    }

    fn cond(r: Result<RosterSet, StanzaError>) -> StanzaErrorCondition {
        r.unwrap_err().condition
    }

    #[test]
    fn rfc6121_2_3_3_set_errors() {
        let l = Limits::default();
        assert_eq!(
            cond(parse_set(&set(vec![]), &l)),
            StanzaErrorCondition::BadRequest
        );
        assert_eq!(
            cond(parse_set(&set(vec![item("a@b"), item("c@d")]), &l)),
            StanzaErrorCondition::BadRequest
        );
        let dup = item("a@b")
            .with_child(Element::new("group", ns::ROSTER).with_text("g"))
            .with_child(Element::new("group", ns::ROSTER).with_text("g"));
        assert_eq!(
            cond(parse_set(&set(vec![dup]), &l)),
            StanzaErrorCondition::BadRequest
        );
        let empty = item("a@b").with_child(Element::new("group", ns::ROSTER));
        assert_eq!(
            cond(parse_set(&set(vec![empty]), &l)),
            StanzaErrorCondition::NotAcceptable
        );
        let long = item("a@b").with_attr("name", "x".repeat(l.max_name_len + 1));
        assert_eq!(
            cond(parse_set(&set(vec![long]), &l)),
            StanzaErrorCondition::NotAcceptable
        );
        assert_eq!(
            cond(parse_set(&set(vec![item("a@b@c")]), &l)),
            StanzaErrorCondition::JidMalformed
        );
    }

    #[test]
    fn rfc6121_2_1_5_other_subscription_values_are_ignored() {
        let l = Limits::default();
        let r = parse_set(
            &set(vec![item("a@b").with_attr("subscription", "both")]),
            &l,
        )
        .unwrap();
        assert!(matches!(r, RosterSet::Update { .. }));
        let r = parse_set(
            &set(vec![item("a@b").with_attr("subscription", "remove")]),
            &l,
        )
        .unwrap();
        assert_eq!(r, RosterSet::Remove { jid: bare("a@b") });
    }

    #[test]
    fn rfc6121_2_6_versioning_sends_only_changes_in_order() {
        let mut r = Roster::new(7);
        let mut ch = Vec::new();
        let l = Limits::default();
        r.update(&bare("a@x"), None, vec![], &l, &mut ch).unwrap();
        let v1 = r.ver();
        r.update(&bare("b@x"), None, vec![], &l, &mut ch).unwrap();
        r.update(&bare("c@x"), None, vec![], &l, &mut ch).unwrap();
        r.remove(&bare("b@x"), &mut ch).unwrap();
        r.update(&bare("a@x"), Some("A".into()), vec![], &l, &mut ch)
            .unwrap();
        match r.get(Some(&v1)) {
            RosterGet::Pushes(p) => {
                let order: Vec<String> = p
                    .iter()
                    .map(|x| match x {
                        PushItem::Item(i) => format!("+{}", i.jid),
                        PushItem::Removed { jid, .. } => format!("-{jid}"),
                    })
                    .collect();
                assert_eq!(order, vec!["+c@x", "-b@x", "+a@x"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.get(Some(&r.ver())), RosterGet::Pushes(vec![]));
        // Bootstrap, foreign epoch, garbage: the full roster with the current ver.
        for v in ["", "8-1", "nonsense"] {
            match r.get(Some(v)) {
                RosterGet::Full { items, ver } => {
                    assert_eq!(items.len(), 2);
                    assert_eq!(ver.as_deref(), Some(r.ver().as_str()));
                }
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(matches!(r.get(None), RosterGet::Full { ver: None, .. }));
    }

    #[test]
    fn tombstones_are_bounded() {
        let mut r = Roster::new(1);
        let mut ch = Vec::new();
        let l = Limits::default();
        let first = r.ver();
        for i in 0..(MAX_TOMBSTONES + 10) {
            let j = bare(&format!("u{i}@x"));
            r.update(&j, None, vec![], &l, &mut ch).unwrap();
            r.remove(&j, &mut ch).unwrap();
        }
        assert!(r.tombstones.len() <= MAX_TOMBSTONES);
        assert!(matches!(r.get(Some(&first)), RosterGet::Full { .. }));
    }

    #[test]
    fn contact_state_round_trips_through_items() {
        let mut r = Roster::new(1);
        let mut ch = Vec::new();
        let j = bare("c@x");
        let s = ContactState {
            subscription: Subscription::To,
            pending_out: false,
            pending_in: false,
            approved: false,
        };
        assert!(r.set_contact_state(&j, s, None, &mut ch).is_some());
        assert_eq!(r.contact_state(&j), s);
        assert_eq!(r.item(&j).unwrap().subscription, Subscription::To);
        // Pending in without a visible change: no push, but remembered.
        let req = Stanza::new(StanzaKind::Presence, None, None);
        let s2 = ContactState {
            pending_in: true,
            ..s
        };
        assert!(r.set_contact_state(&j, s2, Some(&req), &mut ch).is_none());
        assert!(r.has_pending_in(&j));
    }
}
