//! What RFC 6121 and the XEPs require to outlive a server restart: rosters (items,
//! groups, subscription states on both sides, pending requests, pre-approvals),
//! roster versions (an old cached version still yields only the changes), block lists
//! and offline messages.
//!
//! Kept apart from the other suites because restarting is fixture-specific: a
//! cluster run will restart nodes its own way.

use aviary_tests::im::{Client, is_presence, subscribe_both, subscribe_to};
use aviary_tests::{Account, TestServer};
use aviary_xmpp::{Element, ns};

async fn states(c: &mut Client) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = c
        .roster_get(None)
        .await
        .items()
        .iter()
        .map(|i| (i.jid.clone(), i.state()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn rfc6121_rosters_subscriptions_and_versions_survive_a_restart() {
    let mut server = TestServer::start();
    let ua = server.account("pu").await;
    let names = ["both", "to", "from", "pend", "pre"];
    let mut accts: Vec<Account> = Vec::new();
    for n in names {
        accts.push(server.account(&format!("p{n}")).await);
    }
    let mut u = server.online(0, &ua, "u").await;
    let mut cs = Vec::new();
    for (i, a) in accts.iter().enumerate() {
        cs.push(server.online(i + 1, a, "c").await);
    }
    let x = server.bare("x-persist");
    let y = server.bare("y-persist");
    u.roster_add(&x, Some("X"), &["G1", "G2"]).await;
    subscribe_both(&mut u, &mut cs[0]).await;
    subscribe_to(&mut u, &mut cs[1]).await;
    subscribe_to(&mut cs[2], &mut u).await;
    u.presence(Some("subscribe"), Some(&accts[3].bare)).await;
    cs[3].expect_presence(&ua.bare, Some("subscribe")).await;
    u.presence(Some("subscribed"), Some(&accts[4].bare)).await;
    u.expect_roster_push(&accts[4].bare).await;
    let v_mid = u.roster_get(Some("")).await.ver.unwrap();
    u.roster_add(&y, None, &[]).await;
    u.roster_add(&x, Some("X2"), &["G2"]).await;
    u.roster_remove(&y).await;
    let before = states(&mut u).await;
    let v_now = u.roster_get(Some("")).await.ver.unwrap();
    let contacts_before = {
        let mut v = Vec::new();
        for c in &mut cs {
            v.push(states(c).await);
        }
        v
    };

    server.restart(|_| {});

    let mut u = server.connect(0, &ua, "u").await;
    assert_eq!(states(&mut u).await, before);
    let item = u.roster_item(&x).await.unwrap();
    assert_eq!(
        (item.name.as_deref(), item.groups),
        (Some("X2"), vec!["G2".to_owned()])
    );
    // §2.6: the version continues. The current one yields nothing ...
    let r = u.roster_get(Some(&v_now)).await;
    assert!(r.query.is_none(), "{r:?}");
    u.sync().await;
    assert!(u.take_roster_pushes().await.is_empty());
    // ... an older one exactly the changes since, in order.
    let r = u.roster_get(Some(&v_mid)).await;
    assert!(r.query.is_none(), "{r:?}");
    u.sync().await;
    let pushes: Vec<(String, String)> = u
        .take_roster_pushes()
        .await
        .into_iter()
        .map(|p| (p.item.jid, p.item.subscription))
        .collect();
    assert_eq!(
        pushes,
        vec![(x.clone(), "none".into()), (y.clone(), "remove".into())]
    );
    // A change made now gets a version never used before.
    let z = server.bare("z-persist");
    u.roster_add(&z, None, &[]).await;
    let p = u.expect_roster_push(&z).await;
    let v_new = p.ver.unwrap();
    assert!(v_new != v_now && v_new != v_mid, "{v_new}");
    let r = u.roster_get(Some(&v_now)).await;
    assert!(r.query.is_none());
    let p = u.expect_roster_push(&z).await;
    assert_eq!(p.ver.as_deref(), Some(v_new.as_str()));

    // The contacts' side survived too, and presence flows as before.
    u.available_with(None, Some("back")).await;
    for (i, a) in accts.iter().enumerate() {
        let mut c = server.connect(i + 1, a, "c2").await;
        assert_eq!(states(&mut c).await, contacts_before[i], "{}", names[i]);
        c.available(None).await;
        match names[i] {
            "both" | "from" => {
                c.expect_presence(&u.jid, None).await;
            }
            // A pending request is delivered again at the contact's next initial
            // presence (RFC 6121 §3.1.3).
            "pend" => {
                c.expect_presence(&ua.bare, Some("subscribe")).await;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn pending_requests_block_lists_and_offline_messages_survive_a_restart() {
    let mut server = TestServer::start();
    let ua = server.account("pq").await;
    let ra = server.account("preq").await;
    let sa = server.account("psend").await;
    {
        let mut u = server.connect(0, &ua, "u").await;
        let block = Element::new("block", ns::BLOCKING)
            .with_child(Element::new("item", ns::BLOCKING).with_attr("jid", "spam.test"))
            .with_child(Element::new("item", ns::BLOCKING).with_attr("jid", server.bare("pest")));
        u.iq_ok(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_child(block),
        )
        .await;
        u.close().await;
    }
    let mut r = server.online(1, &ra, "r").await;
    r.presence(Some("subscribe"), Some(&ua.bare)).await;
    let mut s = server.connect(2, &sa, "s").await;
    for i in 1..=3 {
        s.message(&ua.bare, "chat", &format!("stored {i}")).await;
    }
    s.sync_via(&ua.bare).await;
    r.sync_via(&ua.bare).await;

    server.restart(|_| {});

    let mut u = server.connect(0, &ua, "u").await;
    let list = u
        .iq_ok(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_child(Element::new("blocklist", ns::BLOCKING)),
        )
        .await;
    let mut jids: Vec<String> = list
        .get_child("blocklist", ns::BLOCKING)
        .unwrap()
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect();
    jids.sort();
    let mut want = vec!["spam.test".to_owned(), server.bare("pest")];
    want.sort();
    assert_eq!(jids, want);
    u.roster_get(None).await;
    u.available(Some(0)).await;
    u.recv("the stored request", |e| {
        is_presence(e, &ra.bare, Some("subscribe"))
    })
    .await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let m = u.recv("a stored message", |e| e.name() == "message").await;
        assert!(m.has_child("delay", ns::DELAY));
        bodies.push(m.child_text("body", ns::CLIENT).unwrap().into_owned());
    }
    assert_eq!(bodies, ["stored 1", "stored 2", "stored 3"]);
    // And they were removed once delivered.
    u.close().await;
    let mut again = server.online(0, &ua, "again").await;
    again
        .assert_none("a stored message", |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn a_node_can_restart_on_its_data_directory_while_users_were_online() {
    // `restart` stops the node and opens the same store again. The user actors live
    // on worker arbiters; if stopping returns before they are gone, the store is
    // still open and the new node cannot start. (Timing-dependent, so repeated.)
    let mut server = TestServer::start();
    for round in 0..8 {
        let mut clients = Vec::new();
        for i in 0..8 {
            let a = server.account(&format!("online{round}-")).await;
            clients.push(server.online(i, &a, "r").await);
        }
        server.restart(|_| {});
    }
    let a = server.account("after").await;
    server.online(0, &a, "r").await;
}
