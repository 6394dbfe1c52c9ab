//! RFC 6121 §3, presence subscriptions, end to end: the request/approve handshake
//! with its roster pushes and presence, mutual subscriptions, cancelling, denying and
//! unsubscribing, pre-approval (§3.4), requests to offline and nonexistent contacts,
//! and the server's automatic answers. Appendix A's tables are covered row by row in
//! `rfc6121_appendix_a.rs`; this file follows the narrative sections.

use aviary_tests::im::{
    Client, is_presence, is_presence_from_bare, status_of, subscribe_both, subscribe_to, xml,
};
use aviary_tests::{TestServer, settle};
use aviary_xmpp::{Element, ns};

async fn pair(server: &TestServer, tag: &str) -> (Client, Client) {
    let ua = server.account(&format!("u{tag}")).await;
    let ca = server.account(&format!("c{tag}")).await;
    let u = server.online(0, &ua, "user").await;
    let c = server.online(1, &ca, "contact").await;
    (u, c)
}

#[tokio::test]
async fn rfc6121_3_1_subscription_request_and_approval() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "hs").await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());

    // §3.1.1: the request, sent from the user's full JID.
    u.presence(Some("subscribe"), Some(&cb)).await;
    // §3.1.2: a push with ask='subscribe' to the user's interested resources ...
    let p = u.expect_roster_push(&cb).await;
    assert_eq!(
        (p.item.subscription.as_str(), p.item.ask.as_deref()),
        ("none", Some("subscribe"))
    );
    // ... and the request is stamped with the user's bare JID.
    let req = c.expect_presence(&ub, Some("subscribe")).await;
    assert_eq!(req.attr("to"), Some(cb.as_str()), "{}", xml(&req));

    // §3.1.5: the contact approves; its server pushes subscription='from' ...
    c.presence(Some("subscribed"), Some(&ub)).await;
    let p = c.expect_roster_push(&ub).await;
    assert_eq!(
        (p.item.subscription.as_str(), p.item.ask.as_deref()),
        ("from", None)
    );
    // §3.1.6: the user gets the approval (from the contact's bare JID), a push with
    // subscription='to' and no ask, and the contact's current presence.
    u.expect_presence(&cb, Some("subscribed")).await;
    let p = u.expect_roster_push(&cb).await;
    assert_eq!(
        (p.item.subscription.as_str(), p.item.ask.as_deref()),
        ("to", None)
    );
    u.expect_presence(&c.jid, None).await;

    // One way only: the contact is not subscribed to the user.
    settle(&mut u, &mut c).await;
    assert!(
        c.take_where(|e| is_presence_from_bare(e, &ub)).is_empty(),
        "the contact must not see the user's presence: {}",
        c.inbox_xml()
    );
    assert_eq!(u.roster_item(&cb).await.unwrap().state(), "to");
    assert_eq!(c.roster_item(&ub).await.unwrap().state(), "from");

    // Later presence flows to the user only.
    c.available_with(None, Some("busy")).await;
    let p = u.expect_presence(&c.jid, None).await;
    assert_eq!(status_of(&p).as_deref(), Some("busy"));
    u.available_with(None, Some("here")).await;
    u.sync_via(&cb).await;
    c.assert_none("presence from the user", |e| is_presence_from_bare(e, &ub))
        .await;
}

#[tokio::test]
async fn rfc6121_3_1_2_a_request_to_a_full_jid_is_sent_to_the_bare_jid() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "full").await;
    let contact_full = c.jid.clone();
    u.presence(Some("subscribe"), Some(&contact_full)).await;
    let req = c.expect_presence(&u.bare, Some("subscribe")).await;
    assert_eq!(req.attr("to"), Some(c.bare.as_str()), "{}", xml(&req));
    let p = u.expect_roster_push(&c.bare).await;
    assert_eq!(p.item.ask.as_deref(), Some("subscribe"));
}

#[tokio::test]
async fn rfc6121_3_1_mutual_subscription_gives_both_and_presence_both_ways() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "mut").await;
    subscribe_both(&mut u, &mut c).await;
    assert_eq!(u.roster_item(&c.bare).await.unwrap().state(), "both");
    assert_eq!(c.roster_item(&u.bare).await.unwrap().state(), "both");
    u.available_with(None, Some("u-status")).await;
    let p = c.expect_presence(&u.jid, None).await;
    assert_eq!(status_of(&p).as_deref(), Some("u-status"));
    c.available_with(None, Some("c-status")).await;
    let p = u.expect_presence(&c.jid, None).await;
    assert_eq!(status_of(&p).as_deref(), Some("c-status"));
}

#[tokio::test]
async fn rfc6121_3_2_contact_cancels_the_users_subscription() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "can").await;
    subscribe_both(&mut u, &mut c).await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    // §3.2.1: the contact revokes the user's subscription.
    c.presence(Some("unsubscribed"), Some(&ub)).await;
    assert_eq!(c.expect_roster_push(&ub).await.item.state(), "to");
    // §3.2.3: the user is told, its item drops to 'from', and the contact's
    // unavailable presence is delivered.
    u.expect_presence(&cb, Some("unsubscribed")).await;
    assert_eq!(u.expect_roster_push(&cb).await.item.state(), "from");
    u.expect_presence(&c.jid, Some("unavailable")).await;
    // The contact's presence no longer reaches the user; the user's still reaches
    // the contact.
    c.available_with(None, Some("after")).await;
    c.sync_via(&ub).await;
    u.assert_none("presence from the contact", |e| {
        is_presence_from_bare(e, &cb)
    })
    .await;
    u.available_with(None, Some("still")).await;
    let p = c.expect_presence(&u.jid, None).await;
    assert_eq!(status_of(&p).as_deref(), Some("still"));
}

#[tokio::test]
async fn rfc6121_3_2_denying_a_request() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "deny").await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    u.presence(Some("subscribe"), Some(&cb)).await;
    c.expect_presence(&ub, Some("subscribe")).await;
    u.expect_roster_push(&cb).await;
    // §3.2.1: unsubscribed in answer to a request denies it.
    c.presence(Some("unsubscribed"), Some(&ub)).await;
    u.expect_presence(&cb, Some("unsubscribed")).await;
    let p = u.expect_roster_push(&cb).await;
    assert_eq!(p.item.state(), "none", "the ask is gone");
    settle(&mut u, &mut c).await;
    assert!(
        c.take_where(|e| is_presence_from_bare(e, &ub)).is_empty(),
        "no presence leaks to the contact"
    );
    // The denied request is not delivered again at the contact's next login.
    let acct = c.account.clone();
    c.close().await;
    let mut c2 = server.online(2, &acct, "again").await;
    c2.assert_none("a request from the user", |e| {
        is_presence(e, &ub, Some("subscribe"))
    })
    .await;
}

#[tokio::test]
async fn rfc6121_3_3_user_unsubscribes() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "uns").await;
    subscribe_both(&mut u, &mut c).await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    // §3.3.1/§3.3.2: the user unsubscribes; push with subscription='from'.
    u.presence(Some("unsubscribe"), Some(&cb)).await;
    assert_eq!(u.expect_roster_push(&cb).await.item.state(), "from");
    // §3.3.3: the contact is told, its item drops to 'to', and its server sends the
    // contact's unavailable presence to the user.
    c.expect_presence(&ub, Some("unsubscribe")).await;
    assert_eq!(c.expect_roster_push(&ub).await.item.state(), "to");
    u.expect_presence(&c.jid, Some("unavailable")).await;
    c.available_with(None, Some("after")).await;
    c.sync_via(&ub).await;
    u.assert_none("presence from the contact", |e| {
        is_presence_from_bare(e, &cb)
    })
    .await;
}

#[tokio::test]
async fn rfc6121_3_4_pre_approval() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "pre").await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    // §3.4.1: the server advertises support.
    assert!(
        u.features().has_child("sub", ns::PRE_APPROVAL),
        "{}",
        xml(u.features())
    );
    // §3.4.2: 'subscribed' without a request pre-approves: the item shows
    // approved='true' and nothing is sent to the contact.
    u.presence(Some("subscribed"), Some(&cb)).await;
    let p = u.expect_roster_push(&cb).await;
    assert_eq!(p.item.state(), "none+approved");
    u.sync_via(&cb).await;
    c.assert_quiet("after a pre-approval").await;

    // §3.4.3: the contact's later request is approved automatically, without
    // reaching the user.
    c.presence(Some("subscribe"), Some(&ub)).await;
    c.expect_presence(&ub, Some("subscribed")).await;
    c.expect_presence(&u.jid, None).await;
    let p = u.expect_roster_push(&cb).await;
    assert_eq!(p.item.state(), "from", "approved is gone once used");
    settle(&mut u, &mut c).await;
    assert!(
        u.take_where(|e| is_presence(e, &cb, Some("subscribe")))
            .is_empty(),
        "the user must not be asked"
    );
    assert_eq!(c.roster_item(&ub).await.unwrap().state(), "to");
}

#[tokio::test]
async fn rfc6121_3_4_a_pre_approval_can_be_cancelled() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "prec").await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    u.presence(Some("subscribed"), Some(&cb)).await;
    assert_eq!(
        u.expect_roster_push(&cb).await.item.state(),
        "none+approved"
    );
    // A.2.4 note [1]: 'unsubscribed' cancels the pre-approval.
    u.presence(Some("unsubscribed"), Some(&cb)).await;
    assert_eq!(u.expect_roster_push(&cb).await.item.state(), "none");
    // The contact's request is now delivered to the user like any other.
    c.presence(Some("subscribe"), Some(&ub)).await;
    u.expect_presence(&cb, Some("subscribe")).await;
    settle(&mut u, &mut c).await;
    assert!(c.take_where(|e| is_presence_from_bare(e, &ub)).is_empty());
}

#[tokio::test]
async fn rfc6121_3_1_3_request_to_an_offline_contact_is_kept_and_redelivered() {
    let server = TestServer::start();
    let ua = server.account("uoff").await;
    let ca = server.account("coff").await;
    let mut u = server.online(0, &ua, "user").await;
    // The request carries extended content, which must be kept with it.
    let req = Element::new("presence", ns::CLIENT)
        .with_attr("to", ca.bare.clone())
        .with_attr("type", "subscribe")
        .with_child(Element::new("status", ns::CLIENT).with_text("it's me"));
    u.send(&req).await;
    u.send(&req).await;
    u.sync_via(&ca.bare).await;

    // Connected but not available: not yet.
    let mut c = server.connect(1, &ca, "first").await;
    c.roster_get(None).await;
    c.assert_none("the request", |e| {
        is_presence(e, &ua.bare, Some("subscribe"))
    })
    .await;
    // §3.1.3: "deliver the request when the contact next has an available resource"
    // -- once, although it was sent twice, with its content.
    c.available(None).await;
    let got = c.expect_presence(&ua.bare, Some("subscribe")).await;
    assert_eq!(status_of(&got).as_deref(), Some("it's me"), "{}", xml(&got));
    c.assert_none("a second copy", |e| {
        is_presence(e, &ua.bare, Some("subscribe"))
    })
    .await;
    // "The contact's server MUST continue to deliver the subscription request
    // whenever the contact creates an available resource, until the contact either
    // approves or denies the request."
    c.close().await;
    let mut c = server.online(1, &ca, "second").await;
    c.expect_presence(&ua.bare, Some("subscribe")).await;
    c.presence(Some("subscribed"), Some(&ua.bare)).await;
    u.expect_presence(&ca.bare, Some("subscribed")).await;
    c.close().await;
    let mut c = server.online(1, &ca, "third").await;
    c.assert_none("an answered request", |e| {
        is_presence(e, &ua.bare, Some("subscribe"))
    })
    .await;
}

#[tokio::test]
async fn rfc6121_3_1_6_an_approval_while_the_user_is_offline_is_kept() {
    let server = TestServer::start();
    let ua = server.account("uoffa").await;
    let ca = server.account("coffa").await;
    let mut u = server.online(0, &ua, "user").await;
    let mut c = server.online(1, &ca, "contact").await;
    c.available_with(None, Some("approving")).await;
    u.presence(Some("subscribe"), Some(&ca.bare)).await;
    c.expect_presence(&ua.bare, Some("subscribe")).await;
    let gone = u.jid.clone();
    u.close().await;
    c.wait_until_unbound(&gone).await;
    c.presence(Some("subscribed"), Some(&ua.bare)).await;
    c.sync_via(&ua.bare).await;
    // The next session finds the subscription in place, and the initial presence's
    // probe brings the contact's presence.
    let mut u = server.connect(0, &ua, "again").await;
    assert_eq!(u.roster_item(&ca.bare).await.unwrap().state(), "to");
    u.available(None).await;
    let p = u.expect_presence(&c.jid, None).await;
    assert_eq!(status_of(&p).as_deref(), Some("approving"));
}

#[tokio::test]
async fn rfc6121_8_5_1_subscription_stanzas_to_a_nonexistent_user_are_ignored() {
    let server = TestServer::start();
    let ua = server.account("unx").await;
    let mut u = server.online(0, &ua, "user").await;
    let ghost = server.bare(&server.unique_user("ghost"));
    // The user's server cannot know; it records the request as pending (A.2.1).
    u.presence(Some("subscribe"), Some(&ghost)).await;
    assert_eq!(
        u.expect_roster_push(&ghost).await.item.state(),
        "none+ask=subscribe"
    );
    // §8.5.1: subscription stanzas and presence to a missing account are ignored.
    for t in [
        None,
        Some("unavailable"),
        Some("subscribed"),
        Some("unsubscribe"),
        Some("unsubscribed"),
    ] {
        u.presence(t, Some(&ghost)).await;
    }
    // Barrier through the missing account's actor.
    u.sync_via(&ghost).await;
    let back: Vec<String> = u
        .take_where(|e| is_presence_from_bare(e, &ghost))
        .iter()
        .map(xml)
        .collect();
    assert!(back.is_empty(), "nothing comes back: {back:?}");
    // (The user's own unsubscribe withdrew the request; ask again.)
    u.take_roster_pushes().await;
    u.presence(Some("subscribe"), Some(&ghost)).await;
    assert_eq!(
        u.expect_roster_push(&ghost).await.item.state(),
        "none+ask=subscribe"
    );
    // "For a presence stanza of type 'probe', the server MUST either (a) silently
    // ignore the stanza or (b) return a presence stanza of type 'unsubscribed'." This
    // server answers; the user's pending request makes the answer visible (A.3.4:
    // "None + Pending Out", delivered) and clears it.
    u.presence(Some("probe"), Some(&ghost)).await;
    u.expect_presence(&ghost, Some("unsubscribed")).await;
    let p = u.expect_roster_push(&ghost).await;
    assert_eq!(p.item.state(), "none");
}

#[tokio::test]
async fn rfc6121_3_1_3_a_resynchronising_request_is_answered_by_the_server() {
    // §3.1.3: "If the contact exists and the user already has a subscription to the
    // contact's presence, then the contact's server MUST auto-reply on behalf of the
    // contact by sending a presence stanza of type 'subscribed'". To see the reply,
    // the user's server must have lost the approval: the user blocks the contact
    // (XEP-0191 drops everything from it) while the contact approves.
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "resync").await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    u.presence(Some("subscribe"), Some(&cb)).await;
    c.expect_presence(&ub, Some("subscribe")).await;
    block(&mut u, &cb, true).await;
    c.presence(Some("subscribed"), Some(&ub)).await;
    settle(&mut u, &mut c).await;
    assert_eq!(c.roster_item(&ub).await.unwrap().state(), "from");
    assert_eq!(
        u.roster_item(&cb).await.unwrap().state(),
        "none+ask=subscribe",
        "the approval was dropped by the block"
    );
    block(&mut u, &cb, false).await;
    u.take_inbox();
    c.take_inbox();

    // The user asks again: the contact's server answers for the contact ...
    u.presence(Some("subscribe"), Some(&cb)).await;
    u.expect_presence(&cb, Some("subscribed")).await;
    assert_eq!(u.expect_roster_push(&cb).await.item.state(), "to");
    settle(&mut u, &mut c).await;
    // ... without bothering the contact.
    assert!(
        c.take_where(|e| is_presence(e, &ub, Some("subscribe")))
            .is_empty(),
        "{}",
        c.inbox_xml()
    );
}

async fn block(u: &mut Client, jid: &str, on: bool) {
    let cmd = Element::new(if on { "block" } else { "unblock" }, ns::BLOCKING)
        .with_child(Element::new("item", ns::BLOCKING).with_attr("jid", jid));
    u.iq_ok(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_child(cmd),
    )
    .await;
}

#[tokio::test]
async fn rfc6121_3_1_3_repeated_subscribe_from_a_subscriber_does_not_reach_the_contact() {
    let server = TestServer::start();
    let (mut u, mut c) = pair(&server, "rep").await;
    subscribe_to(&mut u, &mut c).await;
    u.presence(Some("subscribe"), Some(&c.bare)).await;
    settle(&mut u, &mut c).await;
    assert!(c.take_inbox().is_empty(), "the contact is not asked again");
    assert!(
        u.take_inbox().is_empty(),
        "nothing visible changes for the user"
    );
    assert_eq!(u.roster_item(&c.bare).await.unwrap().state(), "to");
}
