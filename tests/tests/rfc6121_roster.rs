//! RFC 6121 §2, roster management, end to end: get, add, update, remove, pushes to
//! interested resources, the §2.3.3 error cases, and roster versioning (§2.6).

use aviary_tests::im::{
    Client, assert_error, is_roster_push_for, subscribe_both, subscribe_to, xml,
};
use aviary_tests::{RosterItem, TestServer, settle};
use aviary_xmpp::{Element, ns};

fn item(jid: &str, name: Option<&str>, groups: &[&str]) -> RosterItem {
    RosterItem {
        jid: jid.to_owned(),
        name: name.map(str::to_owned),
        subscription: "none".to_owned(),
        ask: None,
        approved: false,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

#[tokio::test]
async fn rfc6121_2_1_3_roster_get_empty_then_with_items() {
    let server = TestServer::start();
    let a = server.account("rget").await;
    let mut c = server.connect(0, &a, "r").await;
    // §2.1.4: an empty roster is a result with an empty <query/>.
    let r = c.roster_get(None).await;
    assert_eq!(r.query.as_deref(), Some(&[][..]));
    let (x, y) = (server.bare("x-rget"), server.bare("y-rget"));
    c.roster_add(&x, Some("Ex"), &["Friends"]).await;
    c.roster_add(&y, None, &[]).await;
    let mut items = c.roster_get(None).await.query.unwrap();
    items.sort_by(|a, b| a.jid.cmp(&b.jid));
    assert_eq!(
        items,
        vec![item(&x, Some("Ex"), &["Friends"]), item(&y, None, &[])]
    );
    // §2.1.3: a roster get may be addressed to the user's bare JID.
    let to_self = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", c.bare.clone())
        .with_child(Element::new("query", ns::ROSTER));
    let r = c.iq_ok(to_self).await;
    let q = r.get_child("query", ns::ROSTER).unwrap();
    assert_eq!(q.children().count(), 2, "{}", xml(&r));
}

#[tokio::test]
async fn rfc6121_2_3_2_add_result_to_setter_and_push_to_interested_resources_only() {
    let server = TestServer::start();
    let a = server.account("radd").await;
    // Interested and available; interested but only connected; available but never
    // asked for the roster.
    let mut setter = server.online(0, &a, "setter").await;
    let mut quiet = server.connect(1, &a, "quiet").await;
    quiet.roster_get(None).await;
    let mut uninterested = server.connect(2, &a, "uninterested").await;
    uninterested.available(None).await;
    setter.take_inbox();

    let contact = server.bare("contact-radd");
    let r = setter
        .roster_set(&contact, Some("Contact"), &["Work", "Chess"])
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let want = item(&contact, Some("Contact"), &["Work", "Chess"]);
    // §2.3.2: the push goes to all interested resources, including the setter.
    for c in [&mut setter, &mut quiet] {
        let push = c.expect_roster_push(&contact).await;
        let mut got = push.item.clone();
        got.groups.sort();
        let mut want = want.clone();
        want.groups.sort();
        assert_eq!(got, want, "push to {}", c.jid);
    }
    // §2.1.6: not to a resource that never requested the roster. Its own barrier
    // passes the user's actor after the set was handled.
    uninterested
        .assert_none("roster push", |e| is_roster_push_for(e, None))
        .await;
}

#[tokio::test]
async fn rfc6121_2_4_update_replaces_the_item_exactly() {
    let server = TestServer::start();
    let a = server.account("rupd").await;
    let mut c = server.online(0, &a, "r").await;
    let x = server.bare("x-rupd");
    c.roster_add(&x, Some("Old"), &["A", "B"]).await;
    c.expect_roster_push(&x).await;

    // §2.4: "the item MUST be updated exactly as provided": add a group, drop one,
    // change the handle, drop the handle.
    let steps: [(Option<&str>, &[&str]); 4] = [
        (Some("Old"), &["A", "B", "C"]),
        (Some("Old"), &["C"]),
        (Some("New"), &["C"]),
        (None, &[]),
    ];
    for (name, groups) in steps {
        c.roster_add(&x, name, groups).await;
        let push = c.expect_roster_push(&x).await;
        let want = item(&x, name, groups);
        let mut got = push.item;
        got.groups.sort();
        assert_eq!(got, want, "push after setting {name:?} {groups:?}");
        assert_eq!(
            c.roster_item(&x).await.map(|mut i| {
                i.groups.sort();
                i
            }),
            Some(want)
        );
    }
}

#[tokio::test]
async fn rfc6121_2_1_5_subscription_and_state_attributes_in_a_set_are_ignored() {
    let server = TestServer::start();
    let a = server.account("rign").await;
    let mut c = server.online(0, &a, "r").await;
    let x = server.bare("x-rign");
    // §2.1.5: "The server MUST ignore any value of the 'subscription' attribute other
    // than 'remove'". A client may not set 'ask' or 'approved' either (§2.1.2.1,
    // §2.1.2.2); this server ignores them rather than erroring.
    for sub in ["both", "to", "from", "none", "bogus"] {
        let el = Element::new("item", ns::ROSTER)
            .with_attr("jid", x.clone())
            .with_attr("subscription", sub)
            .with_attr("ask", "subscribe")
            .with_attr("approved", "true");
        let r = c.roster_set_item(el).await;
        assert_eq!(r.attr("type"), Some("result"), "{sub}: {}", xml(&r));
        let push = c.expect_roster_push(&x).await;
        assert_eq!(push.item, item(&x, None, &[]), "{sub}");
    }
    assert_eq!(c.roster_item(&x).await, Some(item(&x, None, &[])));
}

#[tokio::test]
async fn rfc6121_2_3_3_roster_set_errors() {
    let server = TestServer::start();
    let a = server.account("rerr").await;
    let mut c = server.online(0, &a, "r").await;
    let x = server.bare("x-rerr");
    let group = |g: &str| Element::new("group", ns::ROSTER).with_text(g);
    let plain = || Element::new("item", ns::ROSTER).with_attr("jid", x.clone());
    let set = |items: Vec<Element>| {
        let mut q = Element::new("query", ns::ROSTER);
        for i in items {
            q.append_child(i);
        }
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_child(q)
    };
    let cases: Vec<(&str, Element, &str)> = vec![
        // "The <query/> element contains more than one <item/> child element."
        (
            "two items",
            set(vec![
                plain(),
                Element::new("item", ns::ROSTER).with_attr("jid", server.bare("y-rerr")),
            ]),
            "bad-request",
        ),
        // "...there are duplicate groups"
        (
            "duplicate groups",
            set(vec![plain().with_child(group("G")).with_child(group("G"))]),
            "bad-request",
        ),
        // "The XML character data of the <group/> element is of zero length"
        (
            "empty group",
            set(vec![plain().with_child(Element::new("group", ns::ROSTER))]),
            "not-acceptable",
        ),
        // "The length of the 'name' attribute is greater than a server-configured
        // limit" (1023 characters here).
        (
            "over-long name",
            set(vec![plain().with_attr("name", "n".repeat(5000))]),
            "not-acceptable",
        ),
        (
            "over-long group",
            set(vec![plain().with_child(group(&"g".repeat(5000)))]),
            "not-acceptable",
        ),
        ("no item", set(vec![]), "bad-request"),
        (
            "item without jid",
            set(vec![Element::new("item", ns::ROSTER)]),
            "bad-request",
        ),
        (
            "malformed jid",
            set(vec![
                Element::new("item", ns::ROSTER).with_attr("jid", "a@b@c"),
            ]),
            "jid-malformed",
        ),
        // Roster items are bare JIDs on this server.
        (
            "full jid",
            set(vec![
                Element::new("item", ns::ROSTER).with_attr("jid", format!("{x}/res")),
            ]),
            "bad-request",
        ),
    ];
    for (what, iq, condition) in cases {
        let r = c.iq(iq).await;
        assert_eq!(r.attr("type"), Some("error"), "{what}: {}", xml(&r));
        assert_error(&r, condition);
    }
    // Nothing was added and nothing was pushed.
    c.assert_none("roster push", |e| is_roster_push_for(e, None))
        .await;
    assert_eq!(c.roster_get(None).await.items(), &[]);
}

#[tokio::test]
async fn rfc6121_2_1_5_another_users_roster_is_forbidden() {
    let server = TestServer::start();
    let a = server.account("rown").await;
    let b = server.account("rvictim").await;
    let mut c = server.online(0, &a, "r").await;
    let mut victim = server.online(1, &b, "r").await;
    victim
        .roster_add(&server.bare("secret"), Some("S"), &[])
        .await;
    victim.expect_roster_push(&server.bare("secret")).await;
    // §2.1.5 / §2.3.3: "the entity that processes a roster set MUST verify that the
    // sender of the roster set is authorized to update the roster, and if not return
    // a <forbidden/> error." The same holds for reading it.
    let get = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", b.bare.clone())
        .with_child(Element::new("query", ns::ROSTER));
    let r = c.iq(get).await;
    assert_error(&r, "forbidden");
    assert!(
        r.get_child("query", ns::ROSTER)
            .is_none_or(|q| q.children().count() == 0)
    );
    let set = Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", b.bare.clone())
        .with_child(
            Element::new("query", ns::ROSTER)
                .with_child(Element::new("item", ns::ROSTER).with_attr("jid", a.bare.clone())),
        );
    let r = c.iq(set).await;
    assert_error(&r, "forbidden");
    settle(&mut c, &mut victim).await;
    let seen = victim.inbox_xml();
    assert!(victim.take_inbox().is_empty(), "the victim saw {seen}");
    assert_eq!(victim.roster_get(None).await.items().len(), 1);
}

/// The contact's view after the user removes it, per §2.5.2.
struct RemoveCase {
    /// How the pair is set up.
    setup: &'static str,
    /// Presence types the contact receives from the user's bare JID.
    contact_gets: &'static [&'static str],
    /// The contact's item for the user afterwards.
    contact_item: &'static str,
    /// The contact receives the user's unavailable presence (it was subscribed to the
    /// user, §3.2.2), and the user the contact's (the user was subscribed, §3.3.3).
    unavailable: (bool, bool),
}

async fn setup(kind: &str, u: &mut Client, c: &mut Client) {
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    match kind {
        "none" => u.roster_add(&cb, None, &[]).await,
        "to" => subscribe_to(u, c).await,
        "from" => subscribe_to(c, u).await,
        "both" => subscribe_both(u, c).await,
        "pending-out" => {
            u.presence(Some("subscribe"), Some(&cb)).await;
            c.expect_presence(&ub, Some("subscribe")).await;
        }
        "pending-in" => {
            u.roster_add(&cb, None, &[]).await;
            c.presence(Some("subscribe"), Some(&ub)).await;
            u.expect_presence(&cb, Some("subscribe")).await;
        }
        other => panic!("{other}"),
    }
    settle(u, c).await;
    u.take_inbox();
    c.take_inbox();
}

#[tokio::test]
async fn rfc6121_2_5_2_remove_cancels_subscriptions_in_every_state() {
    let cases = [
        RemoveCase {
            setup: "none",
            contact_gets: &[],
            contact_item: "none",
            unavailable: (false, false),
        },
        // "If the user has a presence subscription to the contact, then the user's
        // server MUST send a presence stanza of type 'unsubscribe' to the contact"
        RemoveCase {
            setup: "to",
            contact_gets: &["unsubscribe"],
            contact_item: "none",
            unavailable: (false, true),
        },
        // "If the contact has a presence subscription to the user, then the user's
        // server MUST send a presence stanza of type 'unsubscribed' to the contact"
        RemoveCase {
            setup: "from",
            contact_gets: &["unsubscribed"],
            contact_item: "none",
            unavailable: (true, false),
        },
        // "If the presence subscription is mutual, then the user's server MUST send
        // both ..."
        RemoveCase {
            setup: "both",
            contact_gets: &["unsubscribe", "unsubscribed"],
            contact_item: "none",
            unavailable: (true, true),
        },
        // A pending request of the user's is withdrawn ...
        RemoveCase {
            setup: "pending-out",
            contact_gets: &["unsubscribe"],
            contact_item: "none",
            unavailable: (false, false),
        },
        // ... and one from the contact is denied.
        RemoveCase {
            setup: "pending-in",
            contact_gets: &["unsubscribed"],
            contact_item: "none",
            unavailable: (false, false),
        },
    ];
    let server = TestServer::start();
    for case in cases {
        let ua = server.account("rrm").await;
        let ca = server.account("crm").await;
        let mut u = server.online(0, &ua, "user").await;
        let mut c = server.online(1, &ca, "contact").await;
        setup(case.setup, &mut u, &mut c).await;
        let (ub, cb) = (u.bare.clone(), c.bare.clone());

        let r = u.roster_remove(&cb).await;
        assert_eq!(
            r.attr("type"),
            Some("result"),
            "{}: {}",
            case.setup,
            xml(&r)
        );
        let push = u.expect_roster_push(&cb).await;
        assert_eq!(push.item.subscription, "remove", "{}", case.setup);
        settle(&mut u, &mut c).await;

        let got: Vec<String> = c
            .take_where(|e| e.name() == "presence" && e.attr("from") == Some(ub.as_str()))
            .iter()
            .map(|e| e.attr("type").unwrap_or("available").to_owned())
            .collect();
        assert_eq!(
            got, case.contact_gets,
            "{}: what the contact got",
            case.setup
        );
        let (to_contact, to_user) = case.unavailable;
        let (uj, cj) = (u.jid.clone(), c.jid.clone());
        for (who, client, from, want) in [
            ("contact", &mut c, &uj, to_contact),
            ("user", &mut u, &cj, to_user),
        ] {
            let got: Vec<String> = client
                .take_where(|e| e.name() == "presence" && e.attr("from") == Some(from.as_str()))
                .iter()
                .map(|e| e.attr("type").unwrap_or("available").to_owned())
                .collect();
            let want: &[&str] = if want { &["unavailable"] } else { &[] };
            assert_eq!(got, want, "{}: presence to the {who}", case.setup);
        }
        let contact_item = c
            .roster_item(&ub)
            .await
            .map_or_else(|| "none".to_owned(), |i| i.state());
        assert_eq!(contact_item, case.contact_item, "{}", case.setup);
        assert_eq!(u.roster_item(&cb).await, None, "{}", case.setup);
        // One push per change of the contact's item, the last one showing the final
        // state (both directions end for a mutual subscription: two changes).
        let pushes: Vec<String> = c
            .take_roster_pushes()
            .await
            .into_iter()
            .map(|p| {
                assert_eq!(p.item.jid, ub);
                p.item.state()
            })
            .collect();
        let changes = match case.setup {
            "none" | "pending-out" => 0,
            "both" => 2,
            _ => 1,
        };
        assert_eq!(pushes.len(), changes, "{}: {pushes:?}", case.setup);
        if let Some(last) = pushes.last() {
            assert_eq!(last, case.contact_item, "{}", case.setup);
        }
        assert!(
            c.take_inbox().is_empty() && u.take_inbox().is_empty(),
            "{}: extra stanzas",
            case.setup
        );
    }
}

#[tokio::test]
async fn rfc6121_2_5_3_removing_a_missing_item_is_item_not_found() {
    let server = TestServer::start();
    let a = server.account("rnf").await;
    let mut c = server.online(0, &a, "r").await;
    let r = c.roster_remove(&server.bare("never-added")).await;
    assert_error(&r, "item-not-found");
    c.assert_none("roster push", |e| is_roster_push_for(e, None))
        .await;
}

#[tokio::test]
async fn rfc6121_2_6_1_versioning_is_advertised() {
    let server = TestServer::start();
    let a = server.account("rvf").await;
    let c = server.connect(0, &a, "r").await;
    assert!(
        c.features().has_child("ver", ns::ROSTER_VER),
        "{}",
        xml(c.features())
    );
}

#[tokio::test]
async fn rfc6121_2_6_3_versioned_gets() {
    let server = TestServer::start();
    let a = server.account("rver").await;
    let mut c = server.connect(0, &a, "r").await;
    let (x, y, z) = (
        server.bare("x-rver"),
        server.bare("y-rver"),
        server.bare("z-rver"),
    );
    // Bootstrap (§2.6.2, ver=""): the complete roster, with a version.
    let r = c.roster_get(Some("")).await;
    assert_eq!(r.query.as_deref(), Some(&[][..]));
    let v0 = r.ver.expect("a ver on the bootstrap result");

    c.roster_add(&x, Some("X"), &[]).await;
    let p = c.expect_roster_push(&x).await;
    // "When roster versioning is enabled, the server MUST include the updated roster
    // version with each roster push."
    let v1 = p.ver.expect("ver on a push");
    assert_ne!(v1, v0);

    // The current version: an empty result and no pushes.
    let r = c.roster_get(Some(&v1)).await;
    assert!(r.query.is_none(), "expected an empty result, got {r:?}");
    c.assert_none("roster push", |e| is_roster_push_for(e, None))
        .await;

    c.roster_add(&y, None, &[]).await;
    c.roster_add(&z, None, &[]).await;
    c.roster_remove(&y).await;
    c.roster_add(&x, Some("X2"), &["G"]).await;
    c.sync().await;
    let live = c.take_roster_pushes().await;
    assert_eq!(live.len(), 4);
    let mut seen: Vec<String> = vec![v0.clone(), v1.clone()];
    for p in &live {
        let v = p.ver.clone().expect("ver on a push");
        // "the version contained in a roster push MUST be unique"
        assert!(!seen.contains(&v), "version {v} repeated");
        seen.push(v);
    }
    let current = live.last().unwrap().ver.clone().unwrap();

    // From v1: an empty result, then one push per changed item with only its final
    // state, "in order of modification": z, y (removed), x.
    let r = c.roster_get(Some(&v1)).await;
    assert!(r.query.is_none(), "expected an empty result, got {r:?}");
    c.sync().await;
    let pushes = c.take_roster_pushes().await;
    let summary: Vec<(String, String, Option<String>)> = pushes
        .iter()
        .map(|p| {
            (
                p.item.jid.clone(),
                p.item.subscription.clone(),
                p.item.name.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (z.clone(), "none".into(), None),
            (y.clone(), "remove".into(), None),
            (x.clone(), "none".into(), Some("X2".into())),
        ]
    );
    assert_eq!(
        pushes.last().unwrap().ver.as_deref(),
        Some(current.as_str())
    );

    // Unknown or foreign versions: the complete roster with the current version.
    for bad in ["garbage", "0-0", &format!("{current}0")] {
        let r = c.roster_get(Some(bad)).await;
        let mut jids: Vec<&str> = r.items().iter().map(|i| i.jid.as_str()).collect();
        jids.sort();
        assert_eq!(jids, vec![x.as_str(), z.as_str()], "ver {bad:?}");
        assert_eq!(r.ver.as_deref(), Some(current.as_str()), "ver {bad:?}");
    }
    // Bootstrap again: the complete roster with the current version.
    let r = c.roster_get(Some("")).await;
    assert_eq!(r.items().len(), 2);
    assert_eq!(r.ver.as_deref(), Some(current.as_str()));
}

#[tokio::test]
async fn rfc6121_2_6_3_subscription_changes_count_as_modifications() {
    let server = TestServer::start();
    let ua = server.account("rvs").await;
    let ca = server.account("cvs").await;
    let mut u = server.online(0, &ua, "r").await;
    let mut c = server.online(1, &ca, "r").await;
    let v = u.roster_get(Some("")).await.ver.unwrap();
    subscribe_to(&mut u, &mut c).await;
    // A second resource with the cached version learns the new state by push.
    let mut other = server.connect(2, &ua, "other").await;
    let r = other.roster_get(Some(&v)).await;
    assert!(r.query.is_none());
    let p = other.expect_roster_push(&c.bare).await;
    assert_eq!(p.item.subscription, "to");
    assert_eq!(p.item.ask, None);
}

#[tokio::test]
async fn rfc6121_2_1_6_pushes_reach_every_interested_resource_of_the_user() {
    let server = TestServer::start();
    let ua = server.account("rpa").await;
    let ca = server.account("cpa").await;
    let mut u1 = server.online(0, &ua, "one").await;
    let mut u2 = server.online(1, &ua, "two").await;
    let mut c = server.online(2, &ca, "r").await;
    u1.take_inbox();
    // A subscription change caused by the contact pushes to both resources.
    c.presence(Some("subscribe"), Some(&ua.bare)).await;
    u1.expect_presence(&ca.bare, Some("subscribe")).await;
    u2.expect_presence(&ca.bare, Some("subscribe")).await;
    u1.presence(Some("subscribed"), Some(&ca.bare)).await;
    for u in [&mut u1, &mut u2] {
        let p = u.expect_roster_push(&ca.bare).await;
        assert_eq!(p.item.subscription, "from", "push to {}", u.jid);
    }
    let _ = &mut c;
}
