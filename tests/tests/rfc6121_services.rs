//! RFC 6121 §1.3: instant messaging and presence are separable services. A
//! deployment may switch either off (`im.presence`, `im.messages`); the other one,
//! and the roster, keep working, and the disabled one answers
//! <service-unavailable/>.

use aviary_tests::TestServer;
use aviary_tests::im::{assert_error, is_presence_from_bare, xml};
use aviary_xmpp::{Element, ns};

#[tokio::test]
async fn rfc6121_1_3_presence_service_off() {
    let server = TestServer::start_with(|c| c.im.presence = false);
    let ua = server.account("nopres").await;
    let ca = server.account("nopresc").await;
    let mut u = server.connect(0, &ua, "u").await;
    let mut c = server.connect(1, &ca, "c").await;
    // No pre-approval without subscriptions (RFC 6121 §3.4.1); versioned rosters
    // stay.
    assert!(
        !u.features().has_child("sub", ns::PRE_APPROVAL),
        "{}",
        xml(u.features())
    );
    assert!(u.features().has_child("ver", ns::ROSTER_VER));
    // The roster works.
    u.roster_get(None).await;
    u.roster_add(&ca.bare, Some("C"), &["G"]).await;
    let p = u.expect_roster_push(&ca.bare).await;
    assert_eq!(p.item.name.as_deref(), Some("C"));
    // Every kind of presence is refused, and nothing reaches the contact.
    let kinds = [
        (None, None),
        (None, Some(ca.bare.clone())),
        (Some("unavailable"), None),
        (Some("subscribe"), Some(ca.bare.clone())),
        (Some("subscribed"), Some(ca.bare.clone())),
        (Some("probe"), Some(ca.bare.clone())),
    ];
    for (i, (t, to)) in kinds.iter().enumerate() {
        let mut p = Element::new("presence", ns::CLIENT).with_attr("id", format!("p{i}"));
        if let Some(t) = t {
            p.set_attr("type", *t);
        }
        if let Some(to) = to {
            p.set_attr("to", to.clone());
        }
        u.send(&p).await;
        let id = format!("p{i}");
        let e = u
            .recv("the refusal", |e| {
                e.name() == "presence" && e.attr("id") == Some(id.as_str())
            })
            .await;
        assert_error(&e, "service-unavailable");
    }
    u.sync_via(&ca.bare).await;
    c.assert_none("presence", |e| is_presence_from_bare(e, &ua.bare))
        .await;
    // Messages still work.
    u.message(&c.jid, "chat", "no presence needed").await;
    c.expect_body("no presence needed").await;
    assert_eq!(
        u.roster_item(&ca.bare).await.unwrap().state(),
        "none",
        "no subscription state appeared"
    );
}

#[tokio::test]
async fn rfc6121_1_3_messaging_service_off() {
    let server = TestServer::start_with(|c| c.im.messages = false);
    let ua = server.account("nomsg").await;
    let ca = server.account("nomsgc").await;
    let mut u = server.online(0, &ua, "u").await;
    let mut c = server.online(1, &ca, "c").await;
    // Messages are refused, to a bare or a full JID, online or not.
    for to in [ca.bare.clone(), c.jid.clone(), server.bare("offline-nomsg")] {
        u.send(&aviary_tests::im::message(&to, "chat", "hello").with_attr("id", "m1"))
            .await;
        let e = u.recv("the refusal", |e| e.attr("id") == Some("m1")).await;
        assert_error(&e, "service-unavailable");
    }
    u.sync_via(&ca.bare).await;
    c.assert_none("a message", |e| e.name() == "message").await;
    // Presence, subscriptions and the roster still work.
    assert!(u.features().has_child("sub", ns::PRE_APPROVAL));
    aviary_tests::im::subscribe_both(&mut u, &mut c).await;
    u.available_with(None, Some("present")).await;
    c.expect_presence(&u.jid, None).await;
    assert_eq!(u.roster_item(&ca.bare).await.unwrap().state(), "both");
    // No offline storage is advertised.
    let r = u
        .iq_ok(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("to", server.domain.clone())
                .with_child(Element::new("query", ns::DISCO_INFO)),
        )
        .await;
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    assert!(
        !q.children().any(|f| f.attr("var") == Some("msgoffline")),
        "{}",
        xml(&r)
    );
}
