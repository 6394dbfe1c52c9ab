//! Resource behaviour of the framer: limits are enforced before a stanza is
//! buffered whole, scanning is linear however bytes arrive, and an idle stream
//! holds little memory.

mod common;

use aviary_xmpp::{Event, Framer, Limits, StreamErrorCondition as C, ns};
use common::HEADER;
use std::time::{Duration, Instant};

fn opened(limits: Limits) -> Framer {
    let mut f = Framer::new(limits);
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert_eq!(f.next_event(), Ok(None));
    f
}

fn stanza_with_body(body_len: usize) -> Vec<u8> {
    format!(
        "<message to='a@b'><body>{}</body></message>",
        "x".repeat(body_len)
    )
    .into_bytes()
}

#[test]
fn rfc6120_13_9_4_oversized_stanza_rejected_before_buffered_whole() {
    let limits = Limits::PRE_AUTH;
    let chunk = 1000;
    let stanza = stanza_with_body(10 * limits.max_stanza_bytes);
    let mut f = opened(limits);
    let mut fed = 0;
    for piece in stanza.chunks(chunk) {
        f.feed(piece);
        fed += piece.len();
        assert!(
            f.buffered_len() <= limits.max_stanza_bytes + chunk,
            "holding {} bytes",
            f.buffered_len()
        );
        match f.next_event() {
            Ok(None) => {}
            Err(e) => {
                assert_eq!(e.condition, C::PolicyViolation);
                assert!(fed <= limits.max_stanza_bytes + chunk);
                assert_eq!(f.buffered_len(), 0);
                return;
            }
            Ok(Some(ev)) => panic!("unexpected {ev:?}"),
        }
    }
    panic!("no policy-violation");
}

#[test]
fn rfc6120_13_9_4_limits_follow_set_limits() {
    let stanza = stanza_with_body(10_000);
    let mut f = opened(Limits::PRE_AUTH);
    f.set_limits(Limits::AUTHENTICATED);
    assert_eq!(f.limits(), Limits::AUTHENTICATED);
    f.feed(&stanza);
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));

    let mut f = opened(Limits::PRE_AUTH);
    f.feed(&stanza);
    assert_eq!(
        f.next_event().map_err(|e| e.condition),
        Err(C::PolicyViolation)
    );
}

#[test]
fn one_byte_at_a_time_is_linear() {
    let limits = Limits::AUTHENTICATED;
    let stanza = stanza_with_body(limits.max_stanza_bytes - 100);
    let deep = format!("{}{}", "<a x='>'>".repeat(60), "</a>".repeat(60)).repeat(300);
    let nested = format!("<message>{deep}</message>").into_bytes();
    assert!(nested.len() < limits.max_stanza_bytes);

    for input in [stanza, nested] {
        let start = Instant::now();
        let mut f = opened(limits);
        let mut events = 0;
        for b in input.chunks(1) {
            f.feed(b);
            while let Some(ev) = f.next_event().expect("valid stanza") {
                assert!(matches!(ev, Event::Element(_)));
                events += 1;
            }
        }
        assert_eq!(events, 1);
        // Rescanning from the element's start on every byte would be ~3*10^10
        // steps: minutes even optimised. Linear scanning takes well under a second.
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn idle_stream_holds_little_memory() {
    let mut f = opened(Limits::AUTHENTICATED);
    assert!(f.allocated_bytes() < 8 * 1024, "{}", f.allocated_bytes());

    // After a large, deeply nested stanza has been consumed, the big buffers go.
    let deep = format!(
        "<iq>{}{}</iq>",
        "<a xmlns:p='urn:p'>".repeat(60),
        "</a>".repeat(60)
    );
    f.feed(&stanza_with_body(200_000));
    f.feed(deep.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
    assert_eq!(f.next_event(), Ok(None));
    assert_eq!(f.buffered_len(), 0);
    assert!(f.allocated_bytes() < 8 * 1024, "{}", f.allocated_bytes());

    // Many small stanzas with keepalives in between do not accumulate anything.
    for _ in 0..1000 {
        f.feed(b"<presence/> \n");
        assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
        assert_eq!(f.next_event(), Ok(None));
    }
    assert_eq!(f.buffered_len(), 0);
    assert!(f.allocated_bytes() < 8 * 1024, "{}", f.allocated_bytes());
}

#[test]
fn keepalives_are_not_buffered() {
    let mut f = opened(Limits::PRE_AUTH);
    for _ in 0..10_000 {
        f.feed(b" \n");
        assert_eq!(f.next_event(), Ok(None));
        assert_eq!(f.buffered_len(), 0);
    }
}

#[test]
fn partial_stanza_survives_between_feeds() {
    let mut f = opened(Limits::PRE_AUTH);
    f.feed(b"<presence/><message><bo");
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
    assert_eq!(f.next_event(), Ok(None));
    assert_eq!(f.buffered_len(), b"<message><bo".len());
    f.feed(b"dy>hi</body></message>");
    match f.next_event() {
        Ok(Some(Event::Element(el))) => {
            assert_eq!(el.child_text("body", ns::CLIENT).as_deref(), Some("hi"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn rfc6120_5_4_3_3_restart_discarding_drops_plaintext_after_starttls() {
    let mut f = Framer::new(Limits::PRE_AUTH);
    f.feed(
        format!(
            "{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message>injected</message>"
        )
        .as_bytes(),
    );
    assert!(matches!(f.next_event(), Ok(Some(Event::StreamOpen(_)))));
    match f.next_event() {
        Ok(Some(Event::Element(el))) => assert!(el.is("starttls", ns::TLS)),
        other => panic!("unexpected {other:?}"),
    }
    f.restart_discarding();
    assert_eq!(f.buffered_len(), 0);
    assert_eq!(f.next_event(), Ok(None));
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert_eq!(f.next_event(), Ok(None));
}

#[test]
fn rfc6120_6_4_6_restart_expects_a_new_header() {
    let mut f = opened(Limits::PRE_AUTH);
    f.feed(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AA==</auth>");
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
    f.restart();
    // A stanza where a header must be is not a header.
    f.feed(b"<message/>");
    assert_eq!(
        f.next_event().map_err(|e| e.condition),
        Err(C::InvalidNamespace)
    );
}

#[test]
fn rfc6120_4_4_bytes_after_close_are_dropped() {
    let mut f = opened(Limits::PRE_AUTH);
    f.feed(b"</stream:stream>");
    assert_eq!(f.next_event(), Ok(Some(Event::StreamClose)));
    f.feed(b"<message/>");
    assert_eq!(f.buffered_len(), 0);
    assert_eq!(f.next_event(), Ok(None));
}

#[test]
fn debug_output_never_shows_buffered_stanzas() {
    let mut f = opened(Limits::PRE_AUTH);
    f.feed(b"<message><body>secret password");
    assert_eq!(f.next_event(), Ok(None));
    let debug = format!("{f:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("buffered_len"), "{debug}");
}
