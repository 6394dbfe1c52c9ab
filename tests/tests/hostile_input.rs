//! Hostile and malformed input (RFC 6120 §4.9.3, §11): each case ends the offending
//! stream with the specified stream error within a second, and the server keeps
//! serving everyone else.

use aviary_tests::{RawClient, TestServer};
use aviary_xmpp::{Element, Event, ns};
use std::time::Duration;

/// Reads until the stream ends, within one second; returns the error condition.
async fn stream_error_within_a_second(c: &mut RawClient) -> Option<String> {
    let mut condition = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event_within(left).await {
            Ok(Event::Element(el)) if el.is("error", ns::STREAM) => {
                condition = el
                    .children()
                    .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
                    .map(|c| c.name().to_owned());
            }
            Ok(Event::StreamClose) => return condition,
            Ok(_) => {}
            Err(e) if e.to_string().contains("closed") => return condition,
            Err(e) => panic!("stream did not end within a second: {e:#} (so far: {condition:?})"),
        }
    }
}

async fn ping_works(c: &mut RawClient, id: &str) {
    c.send(
        &Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_attr("to", "localhost")
            .with_child(Element::new("ping", ns::PING)),
    )
    .await
    .unwrap();
    let r = c.next_matching(|e| e.attr("id") == Some(id)).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"));
}

/// Each case: (name, bytes sent after binding, expected condition).
fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut deep = String::new();
    for _ in 0..200 {
        deep.push_str("<x>");
    }
    let mut big = b"<message to='a@localhost'><body>".to_vec();
    big.extend(std::iter::repeat_n(b'a', 300 * 1024));
    big.extend_from_slice(b"</body></message>");
    vec![
        // RFC 6120 §11.1: comments, PIs, DTDs and undeclared entities are restricted.
        ("comment", b"<!-- hi -->".to_vec(), "restricted-xml"),
        (
            "comment in stanza",
            b"<message><!-- x --></message>".to_vec(),
            "restricted-xml",
        ),
        (
            "processing instruction",
            b"<?php evil() ?>".to_vec(),
            "restricted-xml",
        ),
        (
            "internal DTD",
            b"<!DOCTYPE lolz [<!ENTITY lol 'lol'>]>".to_vec(),
            "restricted-xml",
        ),
        (
            "undeclared entity",
            b"<message><body>&lol;</body></message>".to_vec(),
            "restricted-xml",
        ),
        // RFC 6120 §4.9.3.13: malformed XML.
        (
            "mismatched tags",
            b"<message><body></message>".to_vec(),
            "not-well-formed",
        ),
        (
            "bad attribute",
            b"<message to=unquoted/>".to_vec(),
            "not-well-formed",
        ),
        (
            "invalid UTF-8",
            b"<message><body>\xff\xfe</body></message>".to_vec(),
            "not-well-formed",
        ),
        (
            "control character",
            b"<message><body>\x01</body></message>".to_vec(),
            "not-well-formed",
        ),
        // Limits: §13.12 stanza size, and nesting depth.
        ("oversized stanza", big, "policy-violation"),
        (
            "deep nesting",
            format!("<message>{deep}").into_bytes(),
            "policy-violation",
        ),
        // §4.9.3.24: not a stanza.
        (
            "unknown top-level element",
            b"<foo xmlns='jabber:client'/>".to_vec(),
            "unsupported-stanza-type",
        ),
        // §4.9.3.1: text between stanzas.
        ("text at stream level", b"hello".to_vec(), "bad-format"),
    ]
}

#[tokio::test]
async fn rfc6120_hostile_input_after_binding() {
    let server = TestServer::start();
    let (user, pw) = server.new_account("hostile").await;
    let (bystander, bpw) = server.new_account("bystander").await;
    let mut other = server.login(0, &bystander, &bpw, "calm").await;
    for (i, (name, bytes, expected)) in cases().into_iter().enumerate() {
        let mut c = server.login(0, &user, &pw, &format!("r{i}")).await;
        c.send_raw(&bytes).await.unwrap();
        let got = stream_error_within_a_second(&mut c).await;
        assert_eq!(got.as_deref(), Some(expected), "case: {name}");
        ping_works(&mut other, &format!("p{i}")).await;
    }
}

#[tokio::test]
async fn rfc6120_hostile_input_before_authentication() {
    let server = TestServer::start();
    let (bystander, bpw) = server.new_account("bystander").await;
    let mut other = server.login(0, &bystander, &bpw, "calm").await;
    // Pre-auth elements are capped at 8 KiB.
    let mut big = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>".to_vec();
    big.extend(std::iter::repeat_n(b'A', 16 * 1024));
    big.extend_from_slice(b"</auth>");
    let pre_auth: Vec<(&str, Vec<u8>, &str)> = vec![
        ("oversized before auth", big, "policy-violation"),
        (
            "DTD before auth",
            b"<!DOCTYPE x>".to_vec(),
            "restricted-xml",
        ),
        ("garbage", b"<<<>>>".to_vec(), "not-well-formed"),
    ];
    for (i, (name, bytes, expected)) in pre_auth.into_iter().enumerate() {
        let mut c = RawClient::connect(server.endpoint(0), &server.domain)
            .await
            .unwrap();
        c.open().await.unwrap();
        c.starttls().await.unwrap();
        c.send_raw(&bytes).await.unwrap();
        let got = stream_error_within_a_second(&mut c).await;
        assert_eq!(got.as_deref(), Some(expected), "case: {name}");
        ping_works(&mut other, &format!("q{i}")).await;
    }
}

#[tokio::test]
async fn rfc6120_4_9_3_13_garbage_instead_of_a_header() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = stream_error_within_a_second(&mut c).await;
    assert_eq!(got.as_deref(), Some("not-well-formed"));
}

#[tokio::test]
async fn rfc6120_4_9_3_10_wrong_stream_namespace() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    c.send_xml(
        "<stream:stream to='localhost' version='1.0' xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .await
    .unwrap();
    let got = stream_error_within_a_second(&mut c).await;
    assert_eq!(got.as_deref(), Some("invalid-namespace"));
}

#[tokio::test]
async fn rfc6120_4_7_5_missing_version_is_unsupported() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    c.send_xml(
        "<stream:stream to='localhost' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .await
    .unwrap();
    let got = stream_error_within_a_second(&mut c).await;
    assert_eq!(got.as_deref(), Some("unsupported-version"));
}

#[tokio::test]
async fn negotiation_timeout_ends_silent_connections() {
    let server = TestServer::start_with(|c| {
        c.c2s.negotiation_timeout = Duration::from_millis(300);
    });
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    // Say nothing at all.
    let got = stream_error_within_a_second(&mut c).await;
    assert_eq!(got.as_deref(), Some("connection-timeout"));
}
