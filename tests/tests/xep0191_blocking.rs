//! XEP-0191 blocking command, end to end: discovery, the block list, pushes, what a
//! block does to stanzas in both directions and to presence, domain and full-JID
//! items, and unblocking.
//!
//! Barriers: once the user blocks a contact, the user's pings to the contact are
//! refused by the user's own server (§3.5) and no longer pass the contact's actor.
//! The tests then use the opposite direction: after the user's own actor has handled
//! the stanza under test (the user waited for an answer from it), the contact pings
//! the user's bare JID; the refusal comes back through the user's actor, after
//! anything it routed to the contact before.

use aviary_tests::im::{
    Client, assert_error, is_presence_from_bare, status_of, subscribe_both, xml,
};
use aviary_tests::{TestServer, settle};
use aviary_xmpp::{Element, ns};

fn items(jids: &[&str]) -> Vec<Element> {
    jids.iter()
        .map(|j| Element::new("item", ns::BLOCKING).with_attr("jid", *j))
        .collect()
}

fn command(name: &str, jids: &[&str]) -> Element {
    let mut el = Element::new(name.to_owned(), ns::BLOCKING);
    for i in items(jids) {
        el.append_child(i);
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", if name == "blocklist" { "get" } else { "set" })
        .with_child(el)
}

async fn blocklist(c: &mut Client) -> Vec<String> {
    let r = c.iq_ok(command("blocklist", &[])).await;
    let list = r
        .get_child("blocklist", ns::BLOCKING)
        .unwrap_or_else(|| panic!("no <blocklist/>: {}", xml(&r)));
    let mut jids: Vec<String> = list
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect();
    jids.sort();
    jids
}

fn is_block_push(e: &Element) -> bool {
    e.name() == "iq"
        && e.attr("type") == Some("set")
        && (e.has_child("block", ns::BLOCKING) || e.has_child("unblock", ns::BLOCKING))
}

/// Waits for a block or unblock push and returns (command name, item JIDs).
async fn expect_push(c: &mut Client) -> (String, Vec<String>) {
    let e = c.recv("a blocking push", is_block_push).await;
    let from = e.attr("from");
    assert!(
        from.is_none() || from == Some(c.bare.as_str()),
        "{}",
        xml(&e)
    );
    let cmd = e
        .children()
        .find(|x| x.ns() == ns::BLOCKING)
        .expect("payload");
    let mut jids: Vec<String> = cmd
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect();
    jids.sort();
    (cmd.name().to_owned(), jids)
}

fn assert_blocked_error(e: &Element) {
    assert_error(e, "not-acceptable");
    let err = e.get_child("error", ns::CLIENT).unwrap();
    assert!(
        err.has_child("blocked", ns::BLOCKING_ERRORS),
        "no <blocked/>: {}",
        xml(e)
    );
}

#[tokio::test]
async fn xep0191_2_the_server_advertises_blocking() {
    let server = TestServer::start();
    let a = server.account("bdisco").await;
    let mut c = server.connect(0, &a, "r").await;
    let r = c
        .iq_ok(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("to", server.domain.clone())
                .with_child(Element::new("query", ns::DISCO_INFO)),
        )
        .await;
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    assert!(
        q.children().any(|f| f.attr("var") == Some(ns::BLOCKING)),
        "{}",
        xml(&r)
    );
}

#[tokio::test]
async fn xep0191_3_2_and_3_3_block_list_results_and_pushes() {
    let server = TestServer::start();
    let a = server.account("blist").await;
    let mut r1 = server.online(0, &a, "one").await;
    let mut r2 = server.connect(1, &a, "two").await;
    let mut r3 = server.online(2, &a, "three").await;
    // §3.2: an empty list is an empty <blocklist/>.
    assert!(blocklist(&mut r1).await.is_empty());
    assert!(blocklist(&mut r2).await.is_empty());
    let (x, y) = (server.bare("x-blist"), server.bare("y-blist"));
    // §3.3: result, and a push to every resource that requested the list, including
    // the one that blocked.
    r1.iq_ok(command("block", &[&x, &y])).await;
    for r in [&mut r1, &mut r2] {
        assert_eq!(
            expect_push(r).await,
            ("block".to_owned(), vec![x.clone(), y.clone()])
        );
    }
    // Not to a resource that never asked for the list.
    r3.assert_none("a blocking push", is_block_push).await;
    assert_eq!(blocklist(&mut r3).await, vec![x.clone(), y.clone()]);
    // "If the <block/> element does not contain at least one <item/> child element,
    // the server MUST return a <bad-request/> error."
    let r = r1.iq(command("block", &[])).await;
    assert_error(&r, "bad-request");
    let r = r1.iq(command("block", &["a@b@c"])).await;
    assert_error(&r, "jid-malformed");
    // The list outlives the session ("applies across sessions").
    r1.close().await;
    let mut again = server.connect(3, &a, "again").await;
    assert_eq!(blocklist(&mut again).await, vec![x, y]);
}

#[tokio::test]
async fn xep0191_3_3_a_blocked_contact_sees_the_user_go_offline_and_nothing_passes() {
    let server = TestServer::start();
    let ua = server.account("bu").await;
    let ca = server.account("bc").await;
    let mut u = server.online(0, &ua, "u").await;
    let mut c = server.online(1, &ca, "c").await;
    subscribe_both(&mut u, &mut c).await;
    let (ub, cb) = (ua.bare.clone(), ca.bare.clone());

    u.iq_ok(command("block", &[&cb])).await;
    // "the user's server MUST send unavailable presence information to the JID"
    c.expect_presence(&u.jid, Some("unavailable")).await;

    // The user's presence no longer reaches the contact.
    u.available_with(None, Some("hidden")).await;
    c.sync_via(&ub).await;
    c.assert_none("the user's presence", |e| {
        is_presence_from_bare(e, &ub) && e.attr("type").is_none()
    })
    .await;

    // From the contact: messages and iq requests are refused with
    // <service-unavailable/>; presence of every kind is dropped without an answer.
    c.send(&aviary_tests::im::message(&ub, "chat", "blocked?").with_attr("id", "bm1"))
        .await;
    let (e, cond) = c.expect_error("message", &ub).await;
    assert_eq!(
        (e.attr("id"), cond.as_str()),
        (Some("bm1"), "service-unavailable")
    );
    let r = c
        .iq(Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", u.jid.clone())
            .with_child(Element::new("query", "urn:example:q")))
        .await;
    assert_error(&r, "service-unavailable");
    c.available_with(None, Some("can you see me")).await;
    c.presence(None, Some(&ub)).await;
    c.presence(Some("probe"), Some(&ub)).await;
    c.presence(Some("subscribe"), Some(&ub)).await;
    c.sync_via(&ub).await;
    let answers: Vec<String> = c
        .take_where(|e| is_presence_from_bare(e, &ub))
        .iter()
        .map(xml)
        .collect();
    assert!(
        answers.is_empty(),
        "presence is never answered: {answers:?}"
    );
    u.assert_none("anything from the blocked contact", |e| {
        e.attr("from").is_some_and(|f| f.starts_with(&cb))
    })
    .await;

    // To the contact: refused with <not-acceptable/> and <blocked/>, never routed.
    u.send(&aviary_tests::im::message(&cb, "chat", "psst").with_attr("id", "bm2"))
        .await;
    let e = u.recv("the refusal", |e| e.attr("id") == Some("bm2")).await;
    assert_blocked_error(&e);
    let r = u
        .iq(Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", c.jid.clone())
            .with_child(Element::new("query", "urn:example:q")))
        .await;
    assert_blocked_error(&r);
    u.sync().await;
    c.sync_via(&ub).await;
    c.assert_none("anything from the user", |e| {
        e.name() != "presence"
            && e.attr("from").is_some_and(|f| f.starts_with(&ub))
            && e.attr("type") != Some("error")
    })
    .await;
}

#[tokio::test]
async fn xep0191_3_4_unblocking_restores_presence_and_delivery() {
    let server = TestServer::start();
    let ua = server.account("bun").await;
    let ca = server.account("bcn").await;
    let mut u = server.online(0, &ua, "u").await;
    let mut c = server.online(1, &ca, "c").await;
    subscribe_both(&mut u, &mut c).await;
    u.available_with(None, Some("u-status")).await;
    c.available_with(None, Some("c-status")).await;
    blocklist(&mut u).await;
    u.iq_ok(command("block", &[&ca.bare])).await;
    expect_push(&mut u).await;
    c.expect_presence(&u.jid, Some("unavailable")).await;
    settle(&mut u, &mut c).await;
    u.take_inbox();
    c.take_inbox();

    u.iq_ok(command("unblock", &[&ca.bare])).await;
    assert_eq!(
        expect_push(&mut u).await,
        ("unblock".to_owned(), vec![ca.bare.clone()])
    );
    // "the user's server MUST send the user's current presence information to the
    // JID"; and the user hears the contact's presence again.
    let p = c.expect_presence(&u.jid, None).await;
    assert_eq!(status_of(&p).as_deref(), Some("u-status"));
    let p = u.expect_presence(&c.jid, None).await;
    assert_eq!(status_of(&p).as_deref(), Some("c-status"));
    // "the user's server MUST deliver any subsequent XML stanzas from the JID"
    c.message(&ua.bare, "chat", "back again").await;
    u.expect_body("back again").await;
    u.message(&ca.bare, "chat", "welcome").await;
    c.expect_body("welcome").await;
    assert!(blocklist(&mut u).await.is_empty());
}

#[tokio::test]
async fn xep0191_3_5_unblock_all() {
    let server = TestServer::start();
    let a = server.account("ball").await;
    let mut r1 = server.online(0, &a, "one").await;
    let mut r2 = server.connect(1, &a, "two").await;
    blocklist(&mut r1).await;
    blocklist(&mut r2).await;
    let (x, y) = (server.bare("x-ball"), server.bare("y-ball"));
    r1.iq_ok(command("block", &[&x, &y])).await;
    expect_push(&mut r1).await;
    expect_push(&mut r2).await;
    // An <unblock/> without items unblocks everything; the push says the same.
    r1.iq_ok(command("unblock", &[])).await;
    for r in [&mut r1, &mut r2] {
        assert_eq!(expect_push(r).await, ("unblock".to_owned(), vec![]));
    }
    assert!(blocklist(&mut r2).await.is_empty());
}

#[tokio::test]
async fn xep0191_domain_and_full_jid_items() {
    let server = TestServer::start_with(|c| c.server.domains.push("other.test".into()));
    let ua = server.account("bdom").await;
    let oa = server.account_in("other.test", "far").await;
    let la = server.account("near").await;
    let mut u = server.online(0, &ua, "u").await;
    let mut o = server.online(1, &oa, "o").await;
    let mut l_phone = server.online(2, &la, "phone").await;
    let mut l_desk = server.online(3, &la, "desk").await;

    // A domain item blocks every JID at that domain (XEP-0016 matching order).
    u.iq_ok(command("block", &["other.test"])).await;
    o.send(&aviary_tests::im::message(&ua.bare, "chat", "from afar").with_attr("id", "d1"))
        .await;
    let (_, cond) = o.expect_error("message", &ua.bare).await;
    assert_eq!(cond, "service-unavailable");
    u.send(&aviary_tests::im::message(&oa.bare, "chat", "to afar").with_attr("id", "d2"))
        .await;
    let e = u.recv("the refusal", |e| e.attr("id") == Some("d2")).await;
    assert_blocked_error(&e);
    // Users of the user's own domain are not affected.
    l_desk.message(&ua.bare, "chat", "from near").await;
    u.expect_body("from near").await;

    // A full-JID item blocks only that resource.
    u.iq_ok(command("block", &[&format!("{}/phone", la.bare)]))
        .await;
    l_phone.message(&ua.bare, "chat", "from the phone").await;
    let (_, cond) = l_phone.expect_error("message", &ua.bare).await;
    assert_eq!(cond, "service-unavailable");
    l_desk.message(&ua.bare, "chat", "from the desk").await;
    u.expect_body("from the desk").await;
    u.assert_none("the phone's message", |e| {
        e.child_text("body", ns::CLIENT).as_deref() == Some("from the phone")
    })
    .await;
    // The user's own resources always reach each other.
    u.iq_ok(command("block", &[&ua.bare])).await;
    let mut u2 = server.online(4, &ua, "u2").await;
    u2.message(&u.jid, "chat", "self").await;
    u.expect_body("self").await;
}
