//! Unit tests of the user rules, by RFC section. Connections are plain names.

use super::*;
use crate::subscription::Subscription;
use aviary_xmpp::{Element, StanzaKind, ns};

type U = User<&'static str>;

fn jid(s: &str) -> Jid {
    Jid::new(s).unwrap()
}

fn bare(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

fn user_with(settings: Settings) -> U {
    User::new(
        bare("alice@x"),
        Arc::new(settings),
        true,
        Roster::new(1),
        BlockList::default(),
    )
}

fn user() -> U {
    user_with(Settings::default())
}

fn presence(
    from: &str,
    to: Option<&str>,
    type_: Option<&'static str>,
    priority: Option<i8>,
) -> Stanza {
    let mut st = Stanza::new(StanzaKind::Presence, to.map(jid), Some(jid(from)));
    if let Some(t) = type_ {
        st.set_type_attr(t);
    }
    if let Some(p) = priority {
        st.element_mut()
            .append_child(Element::new("priority", ns::CLIENT).with_text(p.to_string()));
    }
    st
}

fn message(from: &str, to: &str, t: &'static str) -> Stanza {
    let mut st = Stanza::new(StanzaKind::Message, Some(jid(to)), Some(jid(from)));
    st.set_type_attr(t);
    st.element_mut()
        .append_child(Element::new("body", ns::CLIENT).with_text("hi"));
    st
}

fn iq(from: &str, to: Option<&str>, t: &'static str, payload: Element) -> Stanza {
    let mut st = Stanza::new(StanzaKind::Iq, to.map(jid), Some(jid(from)));
    st.set_type_attr(t);
    st.set_id("q1");
    st.element_mut().append_child(payload);
    st
}

fn delivered(out: &[Action<&'static str>]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|a| match a {
            Action::Deliver(c, _) => Some(*c),
            _ => None,
        })
        .collect()
}

fn routed(out: &[Action<&'static str>]) -> Vec<(String, Option<String>, Option<String>)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Route(s) => Some((
                s.to.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                s.type_attr().map(str::to_owned),
                s.from.as_ref().map(|f| f.to_string()),
            )),
            _ => None,
        })
        .collect()
}

fn bind(u: &mut U, res: &'static str, conn_id: u64) {
    let mut out = Vec::new();
    u.bind(res, conn_id, res, &mut out).unwrap();
}

fn online(u: &mut U, res: &'static str, conn_id: u64, prio: i8) -> Vec<Action<&'static str>> {
    bind(u, res, conn_id);
    let mut out = Vec::new();
    u.outbound(
        presence(&format!("alice@x/{res}"), None, None, Some(prio)),
        &mut out,
    );
    out
}

/// Puts `contact` in the roster with `sub` (as if negotiated earlier).
fn with_contact(u: &mut U, contact: &str, sub: Subscription) {
    let mut changes = Vec::new();
    let state = crate::subscription::ContactState {
        subscription: sub,
        ..Default::default()
    };
    u.roster
        .set_contact_state(&bare(contact), state, None, &mut changes);
}

#[test]
fn rfc6120_7_7_2_2_newer_session_wins_the_resource() {
    let mut u = user();
    let mut out = Vec::new();
    u.bind("r", 1, "old", &mut out).unwrap();
    let b = u.bind("r", 2, "new", &mut out).unwrap();
    assert!(b.replaced);
    assert!(out.iter().any(
        |a| matches!(a, Action::Close("old", e) if e.condition == StreamErrorCondition::Conflict)
    ));
    assert!(
        !u.unbind(&b.jid, 1, &mut out),
        "a late unbind must not remove the successor"
    );
    assert!(u.unbind(&b.jid, 2, &mut out));
}

#[test]
fn rfc6121_4_2_initial_presence_broadcasts_probes_and_flushes() {
    let mut u = user();
    with_contact(&mut u, "from@y", Subscription::From);
    with_contact(&mut u, "to@y", Subscription::To);
    with_contact(&mut u, "both@y", Subscription::Both);
    with_contact(&mut u, "none@y", Subscription::None);
    let out = online(&mut u, "r1", 1, 0);
    let r = routed(&out);
    // Broadcast to From and Both only (§4.2.2).
    assert!(r.contains(&("from@y".into(), None, Some("alice@x/r1".into()))));
    assert!(r.contains(&("both@y".into(), None, Some("alice@x/r1".into()))));
    assert!(
        !r.iter()
            .any(|(to, t, _)| to == "none@y" || (to == "to@y" && t.is_none()))
    );
    // Probes to To and Both (§4.3.1), from the full JID.
    assert!(r.contains(&(
        "to@y".into(),
        Some("probe".into()),
        Some("alice@x/r1".into())
    )));
    assert!(r.contains(&(
        "both@y".into(),
        Some("probe".into()),
        Some("alice@x/r1".into())
    )));
    // The sender sees its own presence, and offline messages are flushed.
    assert_eq!(delivered(&out), vec!["r1"]);
    assert!(out.iter().any(|a| matches!(a, Action::FlushOffline("r1"))));

    // §4.4: an update is broadcast without probes or flushing.
    let mut out = Vec::new();
    u.outbound(presence("alice@x/r1", None, None, Some(1)), &mut out);
    assert!(
        !routed(&out)
            .iter()
            .any(|(_, t, _)| t.as_deref() == Some("probe"))
    );
    assert!(!out.iter().any(|a| matches!(a, Action::FlushOffline(_))));
}

#[test]
fn xep0160_negative_priority_does_not_flush_offline() {
    let mut u = user();
    let out = online(&mut u, "r1", 1, -1);
    assert!(!out.iter().any(|a| matches!(a, Action::FlushOffline(_))));
}

#[test]
fn rfc6121_4_5_2_stream_end_sends_unavailable_to_subscribers_and_directed() {
    let mut u = user();
    with_contact(&mut u, "from@y", Subscription::From);
    online(&mut u, "r1", 1, 0);
    let mut out = Vec::new();
    // §4.6: directed presence to a non-subscriber is remembered.
    u.outbound(
        presence("alice@x/r1", Some("room@muc/nick"), None, None),
        &mut out,
    );
    out.clear();
    u.unbind(&FullJid::new("alice@x/r1").unwrap(), 1, &mut out);
    let r = routed(&out);
    assert!(r.contains(&(
        "from@y".into(),
        Some("unavailable".into()),
        Some("alice@x/r1".into())
    )));
    assert!(r.contains(&(
        "room@muc/nick".into(),
        Some("unavailable".into()),
        Some("alice@x/r1".into())
    )));
}

#[test]
fn rfc6121_8_5_2_1_1_bare_messages_follow_priority() {
    let mut u = user();
    online(&mut u, "r1", 1, 5);
    online(&mut u, "r2", 2, 5);
    online(&mut u, "r3", 3, 1);
    online(&mut u, "neg", 4, -1);
    let mut out = Vec::new();
    u.inbound(message("b@y/z", "alice@x", "chat"), &mut out);
    assert_eq!(delivered(&out), vec!["r1", "r2"]);
    // 'to' is not rewritten.
    assert!(
        out.iter()
            .all(|a| !matches!(a, Action::Deliver(_, s) if s.to != Some(jid("alice@x"))))
    );
    out.clear();
    u.inbound(message("b@y/z", "alice@x", "headline"), &mut out);
    assert_eq!(delivered(&out), vec!["r1", "r2", "r3"]);
    out.clear();
    u.inbound(message("b@y/z", "alice@x", "groupchat"), &mut out);
    assert!(delivered(&out).is_empty());
    assert_eq!(routed(&out)[0].1.as_deref(), Some("error"));
    out.clear();
    u.inbound(message("b@y/z", "alice@x", "error"), &mut out);
    assert!(out.is_empty());
}

#[test]
fn rfc6121_8_5_2_2_no_available_resource_stores_offline_with_delay() {
    let mut u = user();
    bind(&mut u, "r1", 1); // connected but not available
    online(&mut u, "neg", 2, -3);
    let mut out = Vec::new();
    u.inbound(message("b@y/z", "alice@x", "chat"), &mut out);
    match &out[..] {
        [Action::StoreOffline(st)] => {
            let delay = st.element().get_child("delay", ns::DELAY).unwrap();
            assert_eq!(delay.attr("from"), Some("x"));
            assert!(delay.attr("stamp").unwrap().ends_with('Z'));
        }
        other => panic!("{other:?}"),
    }
    // Headlines are not stored.
    out.clear();
    u.inbound(message("b@y/z", "alice@x", "headline"), &mut out);
    assert!(out.is_empty());
    // A bare chat state is not worth storing: the sender is told.
    out.clear();
    let mut st = Stanza::new(
        StanzaKind::Message,
        Some(jid("alice@x")),
        Some(jid("b@y/z")),
    );
    st.set_type_attr("chat");
    st.element_mut().append_child(Element::new(
        "composing",
        "http://jabber.org/protocol/chatstates",
    ));
    u.inbound(st, &mut out);
    assert!(matches!(&out[..], [Action::Route(s)] if s.is_error()));
}

#[test]
fn rfc6121_8_5_3_2_1_full_jid_of_a_missing_resource() {
    let mut u = user();
    online(&mut u, "r1", 1, 0);
    let mut out = Vec::new();
    u.inbound(message("b@y/z", "alice@x/gone", "chat"), &mut out);
    assert_eq!(
        delivered(&out),
        vec!["r1"],
        "chat goes to the other resources"
    );
    out.clear();
    u.inbound(message("b@y/z", "alice@x/gone", "normal"), &mut out);
    assert_eq!(routed(&out)[0].1.as_deref(), Some("error"));
    out.clear();
    u.inbound(message("b@y/z", "alice@x/gone", "headline"), &mut out);
    assert!(out.is_empty());
    out.clear();
    // §8.5.3.2.3
    u.inbound(
        iq(
            "b@y/z",
            Some("alice@x/gone"),
            "get",
            Element::new("x", "urn:x"),
        ),
        &mut out,
    );
    assert_eq!(routed(&out)[0].1.as_deref(), Some("error"));
}

#[test]
fn rfc6121_8_5_1_missing_account() {
    let mut u: U = User::new(
        bare("ghost@x"),
        Arc::new(Settings::default()),
        false,
        Roster::new(1),
        BlockList::default(),
    );
    let mut out = Vec::new();
    u.inbound(message("b@y/z", "ghost@x", "chat"), &mut out);
    assert_eq!(routed(&out)[0].1.as_deref(), Some("error"));
    out.clear();
    u.inbound(
        presence("b@y/z", Some("ghost@x"), Some("subscribe"), None),
        &mut out,
    );
    assert!(out.is_empty(), "subscription requests are ignored");
    u.inbound(
        presence("b@y/z", Some("ghost@x"), Some("probe"), None),
        &mut out,
    );
    assert_eq!(
        routed(&out),
        vec![(
            "b@y".into(),
            Some("unsubscribed".into()),
            Some("ghost@x".into())
        )]
    );
}

#[test]
fn rfc6121_2_roster_set_push_and_versioning() {
    let mut u = user();
    bind(&mut u, "r1", 1);
    bind(&mut u, "r2", 2);
    let mut out = Vec::new();
    // r2 asks for the roster (becomes interested); r1 does not.
    u.outbound(
        iq(
            "alice@x/r2",
            None,
            "get",
            Element::new("query", ns::ROSTER).with_attr("ver", ""),
        ),
        &mut out,
    );
    out.clear();
    let set = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", "bob@y")
            .with_attr("name", "Bob")
            .with_child(Element::new("group", ns::ROSTER).with_text("Friends")),
    );
    u.outbound(iq("alice@x/r1", None, "set", set), &mut out);
    assert!(matches!(&out[0], Action::Persist(Persist::Roster(_, ch)) if ch.len() == 1));
    // Result to the setter, push to the interested resource only (§2.3.2).
    let d: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(c, s) => Some((*c, s.type_attr().unwrap_or("").to_owned())),
            _ => None,
        })
        .collect();
    assert_eq!(
        d,
        vec![("r1", "result".to_owned()), ("r2", "set".to_owned())]
    );
    // Removing an item that is not there (§2.5.3).
    out.clear();
    let rm = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", "nobody@y")
            .with_attr("subscription", "remove"),
    );
    u.outbound(iq("alice@x/r1", None, "set", rm), &mut out);
    match &out[..] {
        [Action::Deliver("r1", s)] => {
            assert!(
                s.element()
                    .get_child("error", ns::CLIENT)
                    .unwrap()
                    .has_child("item-not-found", ns::STANZAS)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc6121_2_5_2_remove_cancels_subscriptions_both_ways() {
    let mut u = user();
    with_contact(&mut u, "bob@y", Subscription::Both);
    online(&mut u, "r1", 1, 0);
    let mut out = Vec::new();
    let rm = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", "bob@y")
            .with_attr("subscription", "remove"),
    );
    u.outbound(iq("alice@x/r1", None, "set", rm), &mut out);
    let r = routed(&out);
    assert!(r.contains(&(
        "bob@y".into(),
        Some("unsubscribe".into()),
        Some("alice@x".into())
    )));
    assert!(r.contains(&(
        "bob@y".into(),
        Some("unsubscribed".into()),
        Some("alice@x".into())
    )));
    assert!(u.roster().item(&bare("bob@y")).is_none());
}

#[test]
fn rfc6121_2_1_5_others_may_not_touch_the_roster() {
    let mut u = user();
    let mut out = Vec::new();
    u.inbound(
        iq(
            "eve@y/z",
            Some("alice@x"),
            "get",
            Element::new("query", ns::ROSTER),
        ),
        &mut out,
    );
    let (to, t, _) = &routed(&out)[0];
    assert_eq!((to.as_str(), t.as_deref()), ("eve@y/z", Some("error")));
}

#[test]
fn rfc6121_3_1_subscription_request_handshake() {
    // Outbound (§3.1.2): item created with ask, pushed, routed from the bare JID.
    let mut u = user();
    online(&mut u, "r1", 1, 0);
    let mut out = Vec::new();
    u.outbound(
        presence("alice@x/r1", Some("bob@y/res"), Some("subscribe"), None),
        &mut out,
    );
    assert!(u.roster().item(&bare("bob@y")).unwrap().ask);
    assert_eq!(
        routed(&out),
        vec![(
            "bob@y".into(),
            Some("subscribe".into()),
            Some("alice@x".into())
        )]
    );
    // Inbound subscribed (§3.2.3 / A.3.3): To, delivered.
    out.clear();
    u.inbound(
        presence("bob@y", Some("alice@x"), Some("subscribed"), None),
        &mut out,
    );
    let item = u.roster().item(&bare("bob@y")).unwrap();
    assert_eq!((item.subscription, item.ask), (Subscription::To, false));
    assert_eq!(delivered(&out), vec!["r1"]);
}

#[test]
fn rfc6121_3_1_3_inbound_request_is_kept_until_answered() {
    let mut u = user();
    let mut out = Vec::new();
    u.inbound(
        presence("bob@y", Some("alice@x"), Some("subscribe"), None),
        &mut out,
    );
    assert!(u.roster().has_pending_in(&bare("bob@y")));
    assert!(
        u.roster().item(&bare("bob@y")).is_none(),
        "no roster item for a request"
    );
    assert!(matches!(&out[0], Action::Persist(Persist::Roster(_, _))));
    // Delivered at the next initial presence.
    let out = online(&mut u, "r1", 1, 0);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Deliver("r1", s) if s.type_attr() == Some("subscribe")))
    );
    // Approving (§3.1.5): From, routed, and the user's presence follows.
    let mut out = Vec::new();
    u.outbound(
        presence("alice@x/r1", Some("bob@y"), Some("subscribed"), None),
        &mut out,
    );
    assert_eq!(
        u.roster().item(&bare("bob@y")).unwrap().subscription,
        Subscription::From
    );
    assert!(!u.roster().has_pending_in(&bare("bob@y")));
    let r = routed(&out);
    assert!(r.contains(&(
        "bob@y".into(),
        Some("subscribed".into()),
        Some("alice@x".into())
    )));
    assert!(r.contains(&("bob@y".into(), None, Some("alice@x/r1".into()))));
    // Already subscribed: a new request is answered automatically (A.3.1 "no *").
    let mut out = Vec::new();
    u.inbound(
        presence("bob@y", Some("alice@x"), Some("subscribe"), None),
        &mut out,
    );
    assert_eq!(
        routed(&out),
        vec![(
            "bob@y".into(),
            Some("subscribed".into()),
            Some("alice@x".into())
        )]
    );
}

#[test]
fn rfc6121_3_4_pre_approval() {
    let mut u = user();
    online(&mut u, "r1", 1, 0);
    let mut out = Vec::new();
    u.outbound(
        presence("alice@x/r1", Some("bob@y"), Some("subscribed"), None),
        &mut out,
    );
    let item = u.roster().item(&bare("bob@y")).unwrap();
    assert!(item.approved);
    assert!(routed(&out).is_empty(), "a pre-approval is not routed");
    out.clear();
    u.inbound(
        presence("bob@y", Some("alice@x"), Some("subscribe"), None),
        &mut out,
    );
    let item = u.roster().item(&bare("bob@y")).unwrap();
    assert_eq!(
        (item.subscription, item.approved),
        (Subscription::From, false)
    );
    let r = routed(&out);
    assert!(r.contains(&(
        "bob@y".into(),
        Some("subscribed".into()),
        Some("alice@x".into())
    )));
    assert!(r.contains(&("bob@y".into(), None, Some("alice@x/r1".into()))));
}

#[test]
fn rfc6121_4_3_2_probes() {
    let mut u = user();
    with_contact(&mut u, "friend@y", Subscription::From);
    let mut out = Vec::new();
    u.inbound(
        presence("friend@y/a", Some("alice@x"), Some("probe"), None),
        &mut out,
    );
    assert_eq!(
        routed(&out),
        vec![(
            "friend@y/a".into(),
            Some("unavailable".into()),
            Some("alice@x".into())
        )]
    );
    online(&mut u, "r1", 1, 3);
    out.clear();
    u.inbound(
        presence("friend@y/a", Some("alice@x"), Some("probe"), None),
        &mut out,
    );
    assert_eq!(
        routed(&out),
        vec![("friend@y/a".into(), None, Some("alice@x/r1".into()))]
    );
    out.clear();
    u.inbound(
        presence("stranger@y/a", Some("alice@x"), Some("probe"), None),
        &mut out,
    );
    assert_eq!(
        routed(&out),
        vec![(
            "stranger@y".into(),
            Some("unsubscribed".into()),
            Some("alice@x".into())
        )]
    );
}

#[test]
fn xep0191_blocking() {
    let mut u = user();
    with_contact(&mut u, "bob@y", Subscription::Both);
    online(&mut u, "r1", 1, 0);
    let mut out = Vec::new();
    u.outbound(
        iq(
            "alice@x/r1",
            None,
            "get",
            Element::new("blocklist", ns::BLOCKING),
        ),
        &mut out,
    );
    out.clear();
    let block = Element::new("block", ns::BLOCKING)
        .with_child(Element::new("item", ns::BLOCKING).with_attr("jid", "bob@y"));
    u.outbound(iq("alice@x/r1", None, "set", block), &mut out);
    assert!(matches!(&out[0], Action::Persist(Persist::Block(j)) if j == &vec![jid("bob@y")]));
    // Result, push, and unavailable to the blocked contact (§3.3).
    assert_eq!(delivered(&out), vec!["r1", "r1"]);
    assert!(routed(&out).contains(&(
        "bob@y".into(),
        Some("unavailable".into()),
        Some("alice@x/r1".into())
    )));
    // Inbound from the blocked contact: messages refused, presence dropped.
    out.clear();
    u.inbound(message("bob@y/p", "alice@x", "chat"), &mut out);
    assert_eq!(routed(&out)[0].1.as_deref(), Some("error"));
    out.clear();
    u.inbound(presence("bob@y/p", Some("alice@x"), None, None), &mut out);
    assert!(out.is_empty());
    // Outbound to the blocked contact: not-acceptable with <blocked/> (§3.5).
    out.clear();
    u.outbound(message("alice@x/r1", "bob@y", "chat"), &mut out);
    match &out[..] {
        [Action::Deliver("r1", s)] => {
            let e = s.element().get_child("error", ns::CLIENT).unwrap();
            assert!(e.has_child("not-acceptable", ns::STANZAS));
            assert!(e.has_child("blocked", ns::BLOCKING_ERRORS));
        }
        other => panic!("{other:?}"),
    }
    // Unblock all: presence flows again.
    out.clear();
    u.outbound(
        iq(
            "alice@x/r1",
            None,
            "set",
            Element::new("unblock", ns::BLOCKING),
        ),
        &mut out,
    );
    assert!(matches!(&out[0], Action::Persist(Persist::UnblockAll)));
    assert!(u.blocklist().is_empty());
    let r = routed(&out);
    assert!(r.contains(&("bob@y".into(), None, Some("alice@x/r1".into()))));
    assert!(r.contains(&(
        "bob@y".into(),
        Some("probe".into()),
        Some("alice@x/r1".into())
    )));
}

#[test]
fn rfc6121_1_3_separable_services() {
    let mut u = user_with(Settings {
        presence: false,
        ..Settings::default()
    });
    bind(&mut u, "r1", 1);
    let mut out = Vec::new();
    u.outbound(presence("alice@x/r1", None, None, None), &mut out);
    assert!(matches!(&out[..], [Action::Deliver("r1", s)] if s.is_error()));

    let mut u = user_with(Settings {
        im: false,
        ..Settings::default()
    });
    online(&mut u, "r1", 1, 0);
    let mut out = Vec::new();
    u.outbound(message("alice@x/r1", "bob@y", "chat"), &mut out);
    assert!(matches!(&out[..], [Action::Deliver("r1", s)] if s.is_error()));
    out.clear();
    u.inbound(message("bob@y/z", "alice@x", "chat"), &mut out);
    assert_eq!(routed(&out)[0].1.as_deref(), Some("error"));
}
