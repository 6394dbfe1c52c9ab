//! RFC 6121 §5 and §8.5, stanza delivery for local users, end to end: messages of
//! every type to a bare JID with zero, one or several resources at different
//! priorities, to full JIDs (available, connected-only, missing), iqs to bare and full
//! JIDs, and stanzas to accounts that do not exist.
//!
//! Negative assertions use the barrier of `aviary_tests::im`: the sender pings the
//! recipient's bare JID (processed by the recipient's actor after the stanza), then
//! each recipient resource syncs with its own actor.

use aviary_tests::im::{Client, assert_error, error_condition, xml};
use aviary_tests::{Account, TestServer};
use aviary_xmpp::{Element, ns};

/// Resources for one account: (resource, priority), `None` = connected only.
async fn resources(
    server: &TestServer,
    acct: &Account,
    specs: &[(&str, Option<i8>)],
) -> Vec<Client> {
    let mut out = Vec::new();
    for (i, (res, prio)) in specs.iter().enumerate() {
        let mut c = server.connect(i + 1, acct, res).await;
        if let Some(p) = prio {
            c.available(Some(*p)).await;
        }
        out.push(c);
    }
    // Each resource sees the others' presence; none of that matters here.
    for c in &mut out {
        c.sync().await;
        c.take_inbox();
    }
    out
}

/// After the sender's barrier, checks which resources got a message with `body`.
async fn check_delivery(
    sender: &mut Client,
    to: &Account,
    rs: &mut [Client],
    body: &str,
    want: &[&str],
) -> Vec<Element> {
    sender.sync_via(&to.bare).await;
    let mut got = Vec::new();
    let mut names = Vec::new();
    for r in rs.iter_mut() {
        r.sync().await;
        let m = r.take_where(|e| {
            e.name() == "message" && e.child_text("body", ns::CLIENT).as_deref() == Some(body)
        });
        assert!(m.len() <= 1, "{}: delivered twice", r.jid);
        if let Some(m) = m.into_iter().next() {
            names.push(r.jid.rsplit('/').next().unwrap().to_owned());
            got.push(m);
        }
    }
    assert_eq!(names, want, "who got {body:?}");
    got
}

const MIXED: [(&str, Option<i8>); 5] = [
    ("hi-a", Some(5)),
    ("hi-b", Some(5)),
    ("lo", Some(1)),
    ("neg", Some(-1)),
    ("conn", None),
];

#[tokio::test]
async fn rfc6121_8_5_2_1_1_chat_and_normal_go_to_the_highest_priority_resources() {
    let server = TestServer::start();
    let ua = server.account("mbare").await;
    let sa = server.account("sbare").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &MIXED).await;
    // Option (a) of §8.5.2.1.1: the "most available" resources, here all those that
    // share the highest non-negative priority.
    for (i, t) in ["chat", "normal"].iter().enumerate() {
        let body = format!("to bare {t}");
        s.message(&ua.bare, t, &body).await;
        let got = check_delivery(&mut s, &ua, &mut rs, &body, &["hi-a", "hi-b"]).await;
        for m in &got {
            // "the server MUST NOT rewrite the 'to' attribute"
            assert_eq!(m.attr("to"), Some(ua.bare.as_str()), "{}", xml(m));
            assert_eq!(m.attr("from"), Some(s.jid.as_str()));
        }
        // A message without a type is a normal message.
        let body = format!("untyped {i}");
        let untyped = Element::new("message", ns::CLIENT)
            .with_attr("to", ua.bare.clone())
            .with_child(Element::new("body", ns::CLIENT).with_text(body.clone()));
        s.send(&untyped).await;
        check_delivery(&mut s, &ua, &mut rs, &body, &["hi-a", "hi-b"]).await;
    }
    // When the top priority drops, the next one takes over.
    rs[0].available(Some(0)).await;
    rs[1].available(Some(0)).await;
    s.message(&ua.bare, "chat", "after the drop").await;
    check_delivery(&mut s, &ua, &mut rs, "after the drop", &["lo"]).await;
}

#[tokio::test]
async fn rfc6121_8_5_2_1_1_headline_goes_to_every_non_negative_resource() {
    let server = TestServer::start();
    let ua = server.account("mhead").await;
    let sa = server.account("shead").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &MIXED).await;
    s.message(&ua.bare, "headline", "news").await;
    let got = check_delivery(&mut s, &ua, &mut rs, "news", &["hi-a", "hi-b", "lo"]).await;
    for m in &got {
        assert_eq!(m.attr("to"), Some(ua.bare.as_str()));
    }
}

#[tokio::test]
async fn rfc6121_8_5_2_1_1_a_single_resource_gets_chat_normal_and_headline() {
    let server = TestServer::start();
    let ua = server.account("mone").await;
    let sa = server.account("sone").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &[("only", Some(0))]).await;
    for t in ["chat", "normal", "headline"] {
        s.message(&ua.bare, t, t).await;
        check_delivery(&mut s, &ua, &mut rs, t, &["only"]).await;
    }
}

#[tokio::test]
async fn rfc6121_8_5_2_1_1_negative_priority_resources_never_get_bare_jid_messages() {
    let server = TestServer::start();
    let ua = server.account("mneg").await;
    let sa = server.account("sneg").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &[("neg", Some(-5)), ("conn", None)]).await;
    // "for any message type the server MUST NOT deliver the stanza to any available
    // resource with a negative priority"; headline is then silently ignored, chat and
    // normal are handled as if no resource were available (stored offline here).
    for t in ["chat", "normal", "headline"] {
        s.message(&ua.bare, t, t).await;
        check_delivery(&mut s, &ua, &mut rs, t, &[]).await;
    }
    s.assert_none("an error", |e| e.attr("type") == Some("error"))
        .await;
    // The stored ones arrive at the next non-negative resource; the headline does not.
    let mut next = server.connect(9, &ua, "next").await;
    next.available(Some(0)).await;
    next.expect_body("chat").await;
    next.expect_body("normal").await;
    next.assert_none("the headline", |e| {
        e.child_text("body", ns::CLIENT).as_deref() == Some("headline")
    })
    .await;
}

#[tokio::test]
async fn rfc6121_8_5_2_groupchat_and_error_messages_to_a_bare_jid() {
    let server = TestServer::start();
    let ua = server.account("mgc").await;
    let sa = server.account("sgc").await;
    let mut s = server.connect(0, &sa, "s").await;
    // §8.5.2.2.1 with no resource, then §8.5.2.1.1 with one.
    for online in [false, true] {
        let mut rs = if online {
            resources(&server, &ua, &[("r", Some(0))]).await
        } else {
            Vec::new()
        };
        // groupchat: "MUST return a stanza error to the sender", not delivered.
        s.message(&ua.bare, "groupchat", "gc").await;
        let (_, cond) = s.expect_error("message", &ua.bare).await;
        assert_eq!(cond, "service-unavailable");
        check_delivery(&mut s, &ua, &mut rs, "gc", &[]).await;
        // error: "the server MUST silently ignore the message".
        s.message(&ua.bare, "error", "err").await;
        check_delivery(&mut s, &ua, &mut rs, "err", &[]).await;
        s.assert_none("an answer to an error", |e| e.name() == "message")
            .await;
    }
}

#[tokio::test]
async fn rfc6121_8_5_3_1_a_full_jid_gets_the_message_whatever_its_priority() {
    let server = TestServer::start();
    let ua = server.account("mfull").await;
    let sa = server.account("sfull").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &MIXED).await;
    // "For a message stanza, the server MUST deliver the stanza to the resource":
    // available or only connected, negative priority or not, any type.
    for target in ["lo", "neg", "conn"] {
        let to = format!("{}/{target}", ua.bare);
        for t in ["chat", "normal", "headline", "groupchat"] {
            let body = format!("{t} to {target}");
            s.message(&to, t, &body).await;
            let got = check_delivery(&mut s, &ua, &mut rs, &body, &[target]).await;
            assert_eq!(got[0].attr("to"), Some(to.as_str()));
        }
    }
}

#[tokio::test]
async fn rfc6121_8_5_3_2_1_messages_to_a_missing_resource() {
    let server = TestServer::start();
    let ua = server.account("mmiss").await;
    let sa = server.account("smiss").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &MIXED).await;
    let gone = format!("{}/gone", ua.bare);
    // chat: "treat as if addressed to the bare JID" -- 'to' is left as sent.
    s.message(&gone, "chat", "chat to gone").await;
    let got = check_delivery(&mut s, &ua, &mut rs, "chat to gone", &["hi-a", "hi-b"]).await;
    assert_eq!(got[0].attr("to"), Some(gone.as_str()));
    // normal and groupchat: an error (option (b); the sender learns it is gone).
    for t in ["normal", "groupchat"] {
        s.message(&gone, t, t).await;
        let (_, cond) = s.expect_error("message", &gone).await;
        assert_eq!(cond, "service-unavailable", "{t}");
        check_delivery(&mut s, &ua, &mut rs, t, &[]).await;
    }
    // headline and error: silently ignored.
    for t in ["headline", "error"] {
        s.message(&gone, t, t).await;
        check_delivery(&mut s, &ua, &mut rs, t, &[]).await;
    }
    s.assert_none("an error", |e| e.attr("type") == Some("error"))
        .await;
}

#[tokio::test]
async fn rfc6121_8_5_3_2_2_presence_to_a_missing_resource_is_ignored() {
    let server = TestServer::start();
    let ua = server.account("mpm").await;
    let sa = server.account("spm").await;
    let mut s = server.online(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &[("r", Some(0))]).await;
    let gone = format!("{}/gone", ua.bare);
    s.presence(None, Some(&gone)).await;
    s.presence(Some("unavailable"), Some(&gone)).await;
    s.sync_via(&ua.bare).await;
    rs[0]
        .assert_none("presence for another resource", |e| e.name() == "presence")
        .await;
    s.assert_none("an error", |e| e.attr("type") == Some("error"))
        .await;
    // To the existing full JID, directed presence is delivered (§8.5.3.1).
    s.presence(None, Some(&rs[0].jid.clone())).await;
    rs[0].expect_presence(&s.jid, None).await;
}

#[tokio::test]
async fn rfc6121_8_5_2_1_2_presence_to_a_bare_jid_goes_to_every_available_resource() {
    let server = TestServer::start();
    let ua = server.account("mpb").await;
    let sa = server.account("spb").await;
    let mut s = server.online(0, &sa, "s").await;
    let mut rs = resources(
        &server,
        &ua,
        &[("a", Some(2)), ("b", Some(-1)), ("c", None)],
    )
    .await;
    // "For a presence stanza with no type ..., the server MUST deliver it to all
    // available resources" -- negative priority included, 'to' left as the bare JID.
    let p = Element::new("presence", ns::CLIENT)
        .with_attr("to", ua.bare.clone())
        .with_child(Element::new("status", ns::CLIENT).with_text("hi all"));
    s.send(&p).await;
    for r in &mut rs[..2] {
        let got = r.expect_presence(&s.jid, None).await;
        assert_eq!(got.attr("to"), Some(ua.bare.as_str()), "{}", xml(&got));
    }
    s.sync_via(&ua.bare).await;
    rs[2]
        .assert_none("presence at a connected-only resource", |e| {
            e.name() == "presence"
        })
        .await;
    // §8.5.3.1: a connected resource addressed by its full JID does get it.
    let conn = rs[2].jid.clone();
    s.presence(None, Some(&conn)).await;
    rs[2].expect_presence(&s.jid, None).await;
    // §8.5.2.2.2: with no available resource, presence is not kept for later.
    for r in rs {
        r.close().await;
    }
    s.presence(None, Some(&ua.bare)).await;
    s.sync_via(&ua.bare).await;
    let mut later = server.online(1, &ua, "later").await;
    later
        .assert_none("stored presence", |e| {
            e.name() == "presence" && e.attr("from") == Some(s.jid.as_str())
        })
        .await;
}

#[tokio::test]
async fn rfc6121_5_content_is_delivered_untouched() {
    let server = TestServer::start();
    let ua = server.account("mcontent").await;
    let sa = server.account("scontent").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut u = server.online(1, &ua, "r").await;
    // §5.2.5 thread, §5.2.4 subject, an id and an extension: all kept.
    s.send_xml(&format!(
        "<message to='{}' type='chat' id='m-42' xml:lang='en'>\
         <subject>Plans</subject><body>Shall we?</body>\
         <thread parent='e0ffe42b28561960c6b12b944a092794b9683a38'>\
         0e3141cd80894871a68e6fe6b1ec56fa</thread>\
         <x xmlns='urn:example:ext' a='1'><y>z</y></x></message>",
        ua.bare
    ))
    .await;
    let m = u.expect_body("Shall we?").await;
    assert_eq!(m.attr("id"), Some("m-42"));
    assert_eq!(m.attr("type"), Some("chat"));
    assert_eq!(
        m.child_text("subject", ns::CLIENT).as_deref(),
        Some("Plans")
    );
    let thread = m.get_child("thread", ns::CLIENT).expect("thread");
    assert_eq!(thread.text(), "0e3141cd80894871a68e6fe6b1ec56fa");
    assert_eq!(
        thread.attr("parent"),
        Some("e0ffe42b28561960c6b12b944a092794b9683a38")
    );
    let x = m.get_child("x", "urn:example:ext").expect("extension");
    assert_eq!(x.attr("a"), Some("1"));
    assert_eq!(x.child_text("y", "urn:example:ext").as_deref(), Some("z"));
}

#[tokio::test]
async fn rfc6121_8_5_2_1_3_iqs_to_a_bare_jid_are_answered_by_the_server() {
    let server = TestServer::start();
    let ua = server.account("miq").await;
    let sa = server.account("siq").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &[("a", Some(0)), ("b", None)]).await;
    // A namespace the server can answer for the account: disco#info.
    let disco = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", ua.bare.clone())
        .with_child(Element::new("query", ns::DISCO_INFO));
    let r = s.iq_ok(disco).await;
    assert_eq!(r.attr("from"), Some(ua.bare.as_str()));
    let id = r
        .get_child("query", ns::DISCO_INFO)
        .and_then(|q| q.get_child("identity", ns::DISCO_INFO))
        .expect("identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("account"), Some("registered"))
    );
    // One it cannot: "the server MUST reply with a <service-unavailable/> stanza
    // error".
    let unknown = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", ua.bare.clone())
        .with_child(Element::new("query", "urn:example:unknown"));
    let r = s.iq(unknown).await;
    assert_error(&r, "service-unavailable");
    // "and MUST NOT deliver the IQ stanza to any of the user's available resources"
    for r in &mut rs {
        r.assert_none("an iq for the bare JID", |e| e.name() == "iq")
            .await;
    }
    // §8.5.2.2.3: the same with no resources at all.
    for r in rs {
        r.close().await;
    }
    let r = s
        .iq(Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", ua.bare.clone())
            .with_child(Element::new("query", "urn:example:unknown")))
        .await;
    assert_error(&r, "service-unavailable");
}

#[tokio::test]
async fn rfc6121_8_5_3_iqs_to_full_jids() {
    let server = TestServer::start();
    let ua = server.account("miqf").await;
    let sa = server.account("siqf").await;
    let mut s = server.connect(0, &sa, "s").await;
    let mut rs = resources(&server, &ua, &[("a", Some(0)), ("b", None)]).await;
    // §8.5.3.1: delivered to the resource, available or only connected; its answer
    // goes back to the requester.
    for (i, r) in rs.iter_mut().enumerate() {
        let to = r.jid.clone();
        let q = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", to.clone())
            .with_attr("id", format!("q{i}"))
            .with_child(Element::new("query", "urn:example:q"));
        s.send(&q).await;
        let got = r
            .recv("the iq", |e| {
                e.name() == "iq" && e.attr("type") == Some("get")
            })
            .await;
        assert_eq!(got.attr("from"), Some(s.jid.as_str()));
        let answer = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("to", s.jid.clone())
            .with_attr("id", format!("q{i}"));
        r.send(&answer).await;
        let r = s
            .recv("the answer", |e| {
                e.attr("id") == Some(format!("q{i}").as_str())
            })
            .await;
        assert_eq!(
            (r.attr("type"), r.attr("from")),
            (Some("result"), Some(to.as_str()))
        );
    }
    // §8.5.3.2.3: to a missing resource, a request gets service-unavailable and a
    // result or error is dropped.
    let gone = format!("{}/gone", ua.bare);
    let r = s
        .iq(Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", gone.clone())
            .with_child(Element::new("query", "urn:example:q")))
        .await;
    assert_error(&r, "service-unavailable");
    for t in ["result", "error"] {
        s.send_xml(&format!("<iq type='{t}' to='{gone}' id='late-{t}'/>"))
            .await;
    }
    s.sync_via(&ua.bare).await;
    s.assert_none("an answer to a result or error", |e| {
        e.attr("id").is_some_and(|id| id.starts_with("late-"))
    })
    .await;
    for r in &mut rs {
        r.assert_none("someone else's iq", |e| e.name() == "iq")
            .await;
    }
}

#[tokio::test]
async fn rfc6121_8_5_1_stanzas_to_a_nonexistent_account() {
    let server = TestServer::start();
    let sa = server.account("snx").await;
    let mut s = server.online(0, &sa, "s").await;
    let ghost = server.bare(&server.unique_user("nobody"));
    let ghost_full = format!("{ghost}/res");
    for to in [ghost.clone(), ghost_full.clone()] {
        // "For a message stanza, the server MUST either (a) silently ignore the
        // message or (b) return a <service-unavailable/> stanza error" -- (b) here.
        for t in ["chat", "normal", "headline"] {
            s.message(&to, t, "anyone?").await;
            let (_, cond) = s.expect_error("message", &to).await;
            assert_eq!(cond, "service-unavailable", "{t} to {to}");
        }
        // "For an IQ stanza, the server MUST return a <service-unavailable/> error"
        let r = s
            .iq(Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("to", to.clone())
                .with_child(Element::new("query", ns::DISCO_INFO)))
            .await;
        assert_error(&r, "service-unavailable");
        // Presence with no type or 'unavailable': silently ignored.
        s.presence(None, Some(&to)).await;
        s.presence(Some("unavailable"), Some(&to)).await;
        s.sync_via(&ghost).await;
        s.assert_none("anything from the missing account", |e| {
            e.attr("from").is_some_and(|f| f.starts_with(&ghost))
        })
        .await;
    }
    // An error message is never answered.
    s.message(&ghost, "error", "x").await;
    s.sync_via(&ghost).await;
    let answers: Vec<String> = s
        .take_where(|e| e.name() == "message")
        .iter()
        .map(|e| format!("{:?} {}", error_condition(e), xml(e)))
        .collect();
    assert!(answers.is_empty(), "{answers:?}");
}
