//! Roster helpers (RFC 6121 §2): items as the server shows them, gets, sets and
//! pushes.

use super::{Client, is_roster_push_for, xml};
use aviary_xmpp::{Element, ns};

/// One roster item as the server shows it (RFC 6121 §2.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: String,
    pub name: Option<String>,
    pub subscription: String,
    pub ask: Option<String>,
    pub approved: bool,
    pub groups: Vec<String>,
}

impl RosterItem {
    pub fn parse(el: &Element) -> RosterItem {
        assert!(el.is("item", ns::ROSTER), "not a roster item: {}", xml(el));
        RosterItem {
            jid: el.attr("jid").unwrap_or_default().to_owned(),
            name: el.attr("name").map(str::to_owned),
            subscription: el.attr("subscription").unwrap_or("none").to_owned(),
            ask: el.attr("ask").map(str::to_owned),
            approved: matches!(el.attr("approved"), Some("true" | "1")),
            groups: el
                .children()
                .filter(|c| c.is("group", ns::ROSTER))
                .map(|g| g.text().into_owned())
                .collect(),
        }
    }

    /// `subscription`, plus `+ask` and `+approved` when set: compact for tables.
    pub fn state(&self) -> String {
        let mut s = self.subscription.clone();
        if let Some(a) = &self.ask {
            s.push_str(&format!("+ask={a}"));
        }
        if self.approved {
            s.push_str("+approved");
        }
        s
    }
}

/// The answer to a roster get.
#[derive(Clone, Debug)]
pub struct RosterResult {
    /// `None` for an empty result (RFC 6121 §2.6.3: changes follow as pushes).
    pub query: Option<Vec<RosterItem>>,
    pub ver: Option<String>,
}

impl RosterResult {
    pub fn items(&self) -> &[RosterItem] {
        self.query.as_deref().unwrap_or(&[])
    }

    pub fn item(&self, jid: &str) -> Option<&RosterItem> {
        self.items().iter().find(|i| i.jid == jid)
    }
}

/// A roster push (RFC 6121 §2.1.6).
#[derive(Clone, Debug)]
pub struct RosterPush {
    pub item: RosterItem,
    pub ver: Option<String>,
    pub id: String,
}

impl Client {
    pub async fn roster_get(&mut self, ver: Option<&str>) -> RosterResult {
        let mut q = Element::new("query", ns::ROSTER);
        if let Some(v) = ver {
            q.set_attr("ver", v);
        }
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_child(q);
        let r = self.iq_ok(iq).await;
        match r.get_child("query", ns::ROSTER) {
            Some(q) => RosterResult {
                query: Some(
                    q.children()
                        .filter(|c| c.is("item", ns::ROSTER))
                        .map(RosterItem::parse)
                        .collect(),
                ),
                ver: q.attr("ver").map(str::to_owned),
            },
            None => RosterResult {
                query: None,
                ver: None,
            },
        }
    }

    /// The roster item for `jid`, from a fresh roster get.
    pub async fn roster_item(&mut self, jid: &str) -> Option<RosterItem> {
        self.roster_get(None).await.item(jid).cloned()
    }

    /// Sends a roster set for one item; returns the server's answer.
    pub async fn roster_set(&mut self, jid: &str, name: Option<&str>, groups: &[&str]) -> Element {
        let mut item = Element::new("item", ns::ROSTER).with_attr("jid", jid);
        if let Some(n) = name {
            item.set_attr("name", n);
        }
        for g in groups {
            item.append_child(Element::new("group", ns::ROSTER).with_text(*g));
        }
        self.roster_set_item(item).await
    }

    /// Sends a roster set carrying `item` as given.
    pub async fn roster_set_item(&mut self, item: Element) -> Element {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_child(Element::new("query", ns::ROSTER).with_child(item));
        self.iq(iq).await
    }

    /// A roster set that must succeed.
    pub async fn roster_add(&mut self, jid: &str, name: Option<&str>, groups: &[&str]) {
        let r = self.roster_set(jid, name, groups).await;
        assert_eq!(r.attr("type"), Some("result"), "roster set: {}", xml(&r));
    }

    pub async fn roster_remove(&mut self, jid: &str) -> Element {
        let item = Element::new("item", ns::ROSTER)
            .with_attr("jid", jid)
            .with_attr("subscription", "remove");
        self.roster_set_item(item).await
    }

    /// Waits for a roster push about `jid`, checks it (RFC 6121 §2.1.6: an iq set
    /// from the user's bare JID or without `from`, with exactly one item) and answers
    /// it with a result as a client should.
    pub async fn expect_roster_push(&mut self, jid: &str) -> RosterPush {
        let what = format!("a roster push for {jid}");
        let el = self.recv(&what, |e| is_roster_push_for(e, Some(jid))).await;
        self.check_push(el).await
    }

    async fn check_push(&mut self, el: Element) -> RosterPush {
        let from = el.attr("from");
        assert!(
            from.is_none() || from == Some(self.bare.as_str()),
            "roster push from a foreign JID: {}",
            xml(&el)
        );
        let q = el.get_child("query", ns::ROSTER).expect("query");
        let items: Vec<&Element> = q.children().filter(|c| c.is("item", ns::ROSTER)).collect();
        assert_eq!(items.len(), 1, "a push carries one item: {}", xml(&el));
        let id = el.attr("id").unwrap_or_default().to_owned();
        let push = RosterPush {
            item: RosterItem::parse(items[0]),
            ver: q.attr("ver").map(str::to_owned),
            id: id.clone(),
        };
        let ack = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", id);
        self.send(&ack).await;
        push
    }

    /// Removes the roster pushes received so far (after a barrier), in order.
    pub async fn take_roster_pushes(&mut self) -> Vec<RosterPush> {
        let pushes = self.take_where(|e| is_roster_push_for(e, None));
        let mut out = Vec::new();
        for p in pushes {
            out.push(self.check_push(p).await);
        }
        out
    }
}
