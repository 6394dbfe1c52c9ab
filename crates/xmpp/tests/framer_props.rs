//! Property tests: escaping round-trips through writer and framer, and arbitrary
//! input never panics and gives the same result however it is chunked.

mod common;

use aviary_xmpp::writer::write_element;
use aviary_xmpp::{Element, Event, Limits, Node, ns};
use common::{HEADER, Transcript, no_hook, run};
use proptest::prelude::*;

/// Characters XML can carry, weighted towards the ones escaping must handle.
fn xml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>().prop_map(|c| match c {
            '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => c,
            _ => '?',
        }),
        3 => prop::sample::select(vec!['<', '>', '&', '\'', '"', ']', '\r', '\n', '\t', ' ', ';', '#']),
        2 => prop::sample::select(vec!['a', 'é', '中', '😀', '\u{FFFD}', '\u{10FFFF}']),
    ]
}

fn xml_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(xml_char(), 0..max).prop_map(|cs| cs.into_iter().collect())
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["message", "body", "x", "a-b.c_d", "名前", "q1"])
}

fn namespace() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        ns::CLIENT,
        ns::STREAM,
        "",
        "urn:x",
        "urn:&<>'\" spaced\tns",
        "http://jabber.org/protocol/chatstates",
    ])
}

fn attr_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "to", "id", "type", "a", "xml:lang", "{urn:x}a", "{urn:y}a", "{urn:x}b",
    ])
}

fn element() -> impl Strategy<Value = Element> {
    let leaf = (
        name(),
        namespace(),
        prop::collection::vec((attr_name(), xml_string(12)), 0..4),
    )
        .prop_map(|(n, ns, attrs)| {
            let mut el = Element::new(n, ns);
            for (k, v) in attrs {
                el.set_attr(k, v);
            }
            el
        });
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            inner.clone(),
            prop::collection::vec(
                prop_oneof![
                    inner.prop_map(Node::Element),
                    xml_string(16).prop_map(Node::Text)
                ],
                0..5,
            ),
        )
            .prop_map(|(mut el, children)| {
                for child in children {
                    push_normalised(&mut el, child);
                }
                el
            })
    })
}

/// Adjacent text is one node once parsed, and empty text is nothing, so the
/// generated tree is kept in that canonical form.
fn push_normalised(el: &mut Element, child: Node) {
    let nodes = el.nodes_mut();
    match (nodes.last_mut(), child) {
        (_, Node::Text(t)) if t.is_empty() => {}
        (Some(Node::Text(prev)), Node::Text(t)) => prev.push_str(&t),
        (_, child) => nodes.push(child),
    }
}

/// Cuts `input` at the given (sorted, deduplicated) fractions of its length.
fn chunked(input: &[u8], cuts: &[u16]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) * input.len() / usize::from(u16::MAX))
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([input.len()]) {
        out.push(input[start..p].to_vec());
        start = p;
    }
    out
}

fn run_chunks(limits: Limits, chunks: &[Vec<u8>]) -> Transcript {
    run(limits, chunks.iter().map(Vec::as_slice), no_hook)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever an element holds, writing it into a stream and framing it back
    /// gives the same element (escaping, namespaces and normalisation agree).
    #[test]
    fn writer_and_framer_round_trip(el in element(), cuts in prop::collection::vec(any::<u16>(), 0..6)) {
        let mut input = HEADER.as_bytes().to_vec();
        write_element(&el, ns::CLIENT, &mut input);
        let got = run_chunks(Limits::default(), &chunked(&input, &cuts));
        prop_assert_eq!(got.len(), 2, "{:?}", got);
        prop_assert!(matches!(got[0], Ok(Event::StreamOpen(_))));
        prop_assert_eq!(&got[1], &Ok(Event::Element(el)));
    }

    /// Arbitrary bytes never panic, and chunking never changes the outcome.
    #[test]
    fn arbitrary_bytes_split_invariant(
        body in prop::collection::vec(any::<u8>(), 0..300),
        with_header in any::<bool>(),
        cuts in prop::collection::vec(any::<u16>(), 0..8),
    ) {
        let mut input = if with_header { HEADER.as_bytes().to_vec() } else { Vec::new() };
        input.extend_from_slice(&body);
        check_invariant(&input, &cuts)?;
    }

    /// Valid streams with a few bytes changed reach deeper into the parser than
    /// random bytes do.
    #[test]
    fn mutated_streams_split_invariant(
        el in element(),
        edits in prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..4),
        cuts in prop::collection::vec(any::<u16>(), 0..8),
    ) {
        let mut input = HEADER.as_bytes().to_vec();
        write_element(&el, ns::CLIENT, &mut input);
        input.extend_from_slice(b" <presence/></stream:stream>");
        for (at, byte, op) in edits {
            let i = usize::from(at) % input.len();
            match op {
                0 => input[i] = byte,
                1 => input.insert(i, byte),
                _ => { input.remove(i); }
            }
        }
        check_invariant(&input, &cuts)?;
    }
}

fn check_invariant(input: &[u8], cuts: &[u16]) -> Result<(), TestCaseError> {
    for limits in [
        Limits::default(),
        Limits {
            max_stanza_bytes: 48,
            max_depth: 3,
        },
    ] {
        let whole = run(limits, [input], no_hook);
        prop_assert_eq!(&run_chunks(limits, &chunked(input, cuts)), &whole);
        prop_assert_eq!(&run(limits, input.chunks(1), no_hook), &whole);
    }
    Ok(())
}
