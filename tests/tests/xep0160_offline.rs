//! XEP-0160 best practices for offline messages (with XEP-0203 delay stamps), end to
//! end: what is stored, when and where it is delivered, that it is delivered once, and
//! the storage limit.

use aviary_tests::im::{Client, xml};
use aviary_tests::{Account, TestServer};
use aviary_xmpp::{Element, ns};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch of an XEP-0082 UTC DateTime (`YYYY-MM-DDThh:mm:ss[.s]Z`).
fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z');
    if !ok {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let frac = &s[19..s.len() - 1];
    if !(frac.is_empty()
        || (frac.starts_with('.') && frac[1..].bytes().all(|c| c.is_ascii_digit())))
    {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after H. Hinnant.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Checks the XEP-0203 stamp a stored message must carry.
fn assert_delayed(m: &Element, domain: &str) {
    let delay = m
        .get_child("delay", ns::DELAY)
        .unwrap_or_else(|| panic!("no <delay/>: {}", xml(m)));
    assert_eq!(delay.attr("from"), Some(domain), "{}", xml(m));
    let stamp = delay.attr("stamp").unwrap_or_default();
    let at = parse_stamp(stamp).unwrap_or_else(|| panic!("bad stamp {stamp:?}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        at <= now + 2 && now - at < 120,
        "stamp {stamp} is not recent"
    );
}

fn bodies(ms: &[Element]) -> Vec<String> {
    ms.iter()
        .filter_map(|m| m.child_text("body", ns::CLIENT).map(|b| b.into_owned()))
        .collect()
}

/// Waits for `n` messages (in arrival order).
async fn messages(c: &mut Client, n: usize) -> Vec<Element> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            c.recv("an offline message", |e| e.name() == "message")
                .await,
        );
    }
    out
}

async fn send_while_offline(s: &mut Client, to: &Account) {
    s.message(&to.bare, "chat", "one").await;
    s.message(&to.bare, "normal", "two").await;
    s.send(
        &Element::new("message", ns::CLIENT)
            .with_attr("to", to.bare.clone())
            .with_child(Element::new("body", ns::CLIENT).with_text("three")),
    )
    .await;
    // Chat to a resource that is not there falls back to the bare JID (RFC 6121
    // §8.5.3.2.1), and so to storage.
    s.message(&format!("{}/phone", to.bare), "chat", "four")
        .await;
    s.sync_via(&to.bare).await;
    // Stored, so no error (RFC 6121 §8.5.2.2.1 option (a)).
    s.assert_none("an error", |e| e.attr("type") == Some("error"))
        .await;
}

#[tokio::test]
async fn xep0160_messages_are_stored_and_delivered_in_order_after_initial_presence() {
    let server = TestServer::start();
    let ra = server.account("roff").await;
    let sa = server.account("soff").await;
    let mut s = server.connect(0, &sa, "s").await;
    send_while_offline(&mut s, &ra).await;

    // A connected resource without presence gets nothing yet.
    let mut r = server.connect(1, &ra, "r").await;
    r.roster_get(None).await;
    r.assert_none("a message before initial presence", |e| {
        e.name() == "message"
    })
    .await;
    // "When the recipient next sends non-negative available presence to the server,
    // the server delivers the message to the resource that has sent that presence."
    r.available(Some(0)).await;
    let got = messages(&mut r, 4).await;
    assert_eq!(bodies(&got), ["one", "two", "three", "four"]);
    for m in &got {
        assert_delayed(m, &server.domain);
        assert_eq!(m.attr("from"), Some(s.jid.as_str()));
    }
    assert_eq!(
        got[3].attr("to"),
        Some(format!("{}/phone", ra.bare).as_str())
    );
    // Delivered once: a second resource and a later session get nothing.
    let mut r2 = server.connect(2, &ra, "r2").await;
    r2.available(Some(0)).await;
    r2.assert_none("a stored message", |e| e.name() == "message")
        .await;
    r.close().await;
    r2.close().await;
    let mut r3 = server.online(3, &ra, "r3").await;
    r3.assert_none("a stored message", |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn xep0160_a_negative_priority_presence_does_not_receive_them() {
    let server = TestServer::start();
    let ra = server.account("rneg").await;
    let sa = server.account("sneg").await;
    let mut s = server.connect(0, &sa, "s").await;
    send_while_offline(&mut s, &ra).await;
    let mut neg = server.connect(1, &ra, "neg").await;
    neg.available(Some(-1)).await;
    neg.assert_none("a stored message", |e| e.name() == "message")
        .await;
    // Messages sent now are stored too (a negative resource is not available for
    // bare-JID messages, RFC 6121 §8.5.2.1.1).
    s.message(&ra.bare, "chat", "five").await;
    s.sync_via(&ra.bare).await;
    neg.assert_none("a message", |e| e.name() == "message")
        .await;
    let mut pos = server.connect(2, &ra, "pos").await;
    pos.available(Some(1)).await;
    let got = messages(&mut pos, 5).await;
    assert_eq!(bodies(&got), ["one", "two", "three", "four", "five"]);
    neg.assert_none("a stored message", |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn xep0160_raising_a_negative_priority_delivers_them() {
    // XEP-0160 §3: delivery happens when the recipient "next sends non-negative
    // available presence" -- an update from priority -1 to 1 is such a presence.
    let server = TestServer::start();
    let ra = server.account("rraise").await;
    let sa = server.account("sraise").await;
    let mut s = server.connect(0, &sa, "s").await;
    send_while_offline(&mut s, &ra).await;
    let mut r = server.connect(1, &ra, "r").await;
    r.available(Some(-1)).await;
    r.assert_none("a stored message", |e| e.name() == "message")
        .await;
    r.available(Some(1)).await;
    let got = messages(&mut r, 4).await;
    assert_eq!(bodies(&got), ["one", "two", "three", "four"]);
}

#[tokio::test]
async fn xep0160_what_is_not_stored() {
    let server = TestServer::start();
    let ra = server.account("rnot").await;
    let sa = server.account("snot").await;
    let mut s = server.connect(0, &sa, "s").await;
    let to = ra.bare.clone();
    // "chat -- ... with the exception of messages that contain only XEP-0085
    // content": not stored; RFC 6121 §8.5.2.2.1 then calls for an error.
    s.send_xml(&format!(
        "<message to='{to}' type='chat' id='cs1'>\
         <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ))
    .await;
    let (e, cond) = s.expect_error("message", &to).await;
    assert_eq!(
        (e.attr("id"), cond.as_str()),
        (Some("cs1"), "service-unavailable")
    );
    // headline and error: not stored, silently dropped; groupchat: an error.
    s.message(&to, "headline", "headline").await;
    s.message(&to, "error", "error").await;
    s.message(&to, "groupchat", "groupchat").await;
    let (_, cond) = s.expect_error("message", &to).await;
    assert_eq!(cond, "service-unavailable");
    // A chat state with a body is an ordinary message.
    s.send_xml(&format!(
        "<message to='{to}' type='chat'><body>with state</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ))
    .await;
    s.sync_via(&to).await;
    s.assert_none("another error", |e| e.attr("type") == Some("error"))
        .await;

    let mut r = server.online(1, &ra, "r").await;
    let m = r
        .recv("the stored message", |e| e.name() == "message")
        .await;
    assert_eq!(bodies(&[m]), ["with state"]);
    r.assert_none("anything else stored", |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn xep0160_a_full_store_bounces_with_resource_constraint() {
    let server = TestServer::start_with(|c| c.im.offline_max = 3);
    let ra = server.account("rcap").await;
    let sa = server.account("scap").await;
    let mut s = server.connect(0, &sa, "s").await;
    for i in 1..=3 {
        s.message(&ra.bare, "chat", &format!("m{i}")).await;
    }
    s.sync_via(&ra.bare).await;
    s.assert_none("an error", |e| e.attr("type") == Some("error"))
        .await;
    // The fourth does not fit. XEP-0160 §3 suggests <service-unavailable/>; this
    // server says <resource-constraint/> (RFC 6120 §8.3.3.18: "the server ... is
    // lacking the system resources necessary to service the request"), so the sender
    // can tell "full" from "not stored at all".
    let bounced = aviary_tests::im::message(&ra.bare, "chat", "m4").with_attr("id", "m4");
    s.send(&bounced).await;
    let (e, cond) = s.expect_error("message", &ra.bare).await;
    assert_eq!(
        (e.attr("id"), cond.as_str()),
        (Some("m4"), "resource-constraint")
    );
    let mut r = server.online(1, &ra, "r").await;
    let got = messages(&mut r, 3).await;
    assert_eq!(bodies(&got), ["m1", "m2", "m3"]);
    r.assert_none("the bounced message", |e| e.name() == "message")
        .await;
    // Delivered messages free the store again.
    r.close().await;
    s.message(&ra.bare, "chat", "m5").await;
    s.sync_via(&ra.bare).await;
    s.assert_none("an error", |e| e.attr("type") == Some("error"))
        .await;
}

#[tokio::test]
async fn xep0160_6_the_server_advertises_msgoffline() {
    let server = TestServer::start();
    let a = server.account("disco").await;
    let mut c = server.connect(0, &a, "r").await;
    let features = |r: &Element| -> Vec<String> {
        r.get_child("query", ns::DISCO_INFO)
            .map(|q| {
                q.children()
                    .filter_map(|f| f.attr("var").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let disco = |to: &str| {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", to)
            .with_child(Element::new("query", ns::DISCO_INFO))
    };
    let r = c.iq_ok(disco(&server.domain)).await;
    assert!(
        features(&r).iter().any(|f| f == "msgoffline"),
        "{}",
        xml(&r)
    );

    // With storage off: no feature, and an error instead of storage (RFC 6121
    // §8.5.2.2.1 option (b)).
    let off = TestServer::start_with(|c| c.im.offline_max = 0);
    let a = off.account("disco").await;
    let b = off.account("away").await;
    let mut c = off.connect(0, &a, "r").await;
    let r = c.iq_ok(disco(&off.domain)).await;
    assert!(
        !features(&r).iter().any(|f| f == "msgoffline"),
        "{}",
        xml(&r)
    );
    c.message(&b.bare, "chat", "hello?").await;
    let (_, cond) = c.expect_error("message", &b.bare).await;
    assert_eq!(cond, "service-unavailable");
}
