//! Drives a [`Framer`] the way the edge does (feed a chunk, drain events) and
//! records what comes out, so tests can compare runs with different chunkings.
#![allow(dead_code)]

use aviary_xmpp::{Event, Framer, Limits, StreamError, ns};

/// Everything a run produced: events, then possibly the error that ended it.
pub type Transcript = Vec<Result<Event, StreamError>>;

/// What a test may do to the framer after each event (e.g. restart after SASL).
pub type Hook = fn(&Event, &mut Framer);

pub fn no_hook(_: &Event, _: &mut Framer) {}

/// Feeds `chunks` in order, draining events after each, stopping at the first
/// error (which must then repeat: errors are sticky).
pub fn run<'a>(
    limits: Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
    hook: Hook,
) -> Transcript {
    let mut framer = Framer::new(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.feed(chunk);
        loop {
            match framer.next_event() {
                Ok(Some(ev)) => {
                    hook(&ev, &mut framer);
                    out.push(Ok(ev));
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(framer.next_event(), Err(e.clone()), "errors are sticky");
                    framer.feed(b"<more/>");
                    assert_eq!(framer.next_event(), Err(e.clone()), "errors are sticky");
                    assert_eq!(framer.buffered_len(), 0, "a failed stream holds no bytes");
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Runs `input` whole, split in two at every offset, and one byte at a time,
/// asserting that every run produces the same transcript; returns it.
pub fn run_all_splits(limits: Limits, input: &[u8], hook: Hook) -> Transcript {
    let whole = run(limits, [input], hook);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        let split = run(limits, [a, b], hook);
        assert_eq!(split, whole, "split at {at} differs from whole input");
    }
    let bytewise = run(limits, input.chunks(1), hook);
    assert_eq!(bytewise, whole, "byte-at-a-time differs from whole input");
    whole
}

/// The client stream header used by most fixtures.
pub const HEADER: &str = "<?xml version='1.0'?><stream:stream from='juliet@im.example.com' to='im.example.com' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// A compact, comparable rendering of an element: what our writer makes of it in
/// a `jabber:client` stream.
pub fn xml(ev: &Event) -> String {
    match ev {
        Event::Element(el) => String::from_utf8(el.to_bytes(ns::CLIENT)).unwrap_or_default(),
        other => format!("{other:?}"),
    }
}
