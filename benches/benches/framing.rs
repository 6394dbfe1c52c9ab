//! Stream framing throughput: small chat messages through the framer (scanning,
//! parsing and building each `Element`, then dropping it, as the server does),
//! against quick-xml reading the same bytes without building anything.
//!
//! Run with `cargo bench -p aviary-benches --bench framing`.
// The inputs are constants: failing on them means a broken benchmark, like a
// failed assertion in a test, never peer input.
#![allow(clippy::expect_used, clippy::panic)]

use aviary_xmpp::{Event, Framer, Limits};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use quick_xml::events::Event as X;
use quick_xml::reader::Reader;
use std::hint::black_box;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='capulet.lit' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const MESSAGE: &str = "<message to='juliet@capulet.lit/balcony' id='ktx72v49' type='chat' xml:lang='en'><body>Art thou not Romeo, and a Montague?</body></message>";
const STANZAS: usize = 1000;
/// A typical socket read.
const CHUNK: usize = 4096;

fn opened_framer() -> Framer {
    let mut f = Framer::new(Limits::AUTHENTICATED);
    f.feed(HEADER);
    match f.next_event() {
        Ok(Some(Event::StreamOpen(_))) => f,
        other => panic!("header not accepted: {other:?}"),
    }
}

/// Feeds `input` in `chunk`-sized pieces, draining events; returns the count.
fn frame(mut f: Framer, input: &[u8], chunk: usize) -> usize {
    let mut n = 0;
    for piece in input.chunks(chunk) {
        f.feed(piece);
        while let Some(ev) = f.next_event().expect("valid stream") {
            black_box(&ev);
            n += 1;
        }
    }
    n
}

/// Like [`frame`], but keeps the events so that criterion drops them outside
/// the timed section: the cost of building without the cost of freeing.
fn frame_keep(mut f: Framer, input: &[u8], chunk: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(STANZAS);
    for piece in input.chunks(chunk) {
        f.feed(piece);
        while let Some(ev) = f.next_event().expect("valid stream") {
            out.push(ev);
        }
    }
    out
}

fn quick_xml_events(input: &[u8], with_attrs: bool) -> usize {
    let mut reader = Reader::from_reader(input);
    let mut n = 0;
    loop {
        match reader.read_event().expect("valid XML") {
            X::Eof => return n,
            X::Start(e) if with_attrs => {
                for a in e.attributes() {
                    black_box(a.expect("valid attribute"));
                }
                n += 1;
            }
            ev => {
                black_box(&ev);
                n += 1;
            }
        }
    }
}

fn framing(c: &mut Criterion) {
    let input = MESSAGE.repeat(STANZAS).into_bytes();
    assert_eq!(frame(opened_framer(), &input, CHUNK), STANZAS);

    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::ElementsAndBytes {
        elements: STANZAS as u64,
        bytes: input.len() as u64,
    });
    group.bench_function("framer/4KiB-chunks", |b| {
        b.iter_batched(
            opened_framer,
            |f| frame(f, &input, CHUNK),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("framer/one-feed", |b| {
        b.iter_batched(
            opened_framer,
            |f| frame(f, &input, input.len()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("framer/4KiB-chunks/drop-untimed", |b| {
        b.iter_batched(
            opened_framer,
            |f| frame_keep(f, &input, CHUNK),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("quick-xml/events", |b| {
        b.iter(|| quick_xml_events(black_box(&input), false))
    });
    group.bench_function("quick-xml/events+attributes", |b| {
        b.iter(|| quick_xml_events(black_box(&input), true))
    });
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
