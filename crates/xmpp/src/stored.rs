//! Stanzas kept as bytes (offline messages, pending subscription requests) and read
//! back: written by [`crate::writer`] in the `jabber:client` namespace, parsed here
//! with the same framer that reads client streams, so stored data gets no special,
//! less-tested parser.

use crate::element::Element;
use crate::error::{StreamError, StreamErrorCondition};
use crate::framer::{Event, Framer, Limits};
use crate::stanza::Stanza;

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// Serialises a stanza for storage.
pub fn to_bytes(stanza: &Stanza) -> Vec<u8> {
    stanza.to_bytes()
}

/// Parses one stored top-level element.
pub fn parse_element(bytes: &[u8]) -> Result<Element, StreamError> {
    let mut framer = Framer::new(Limits {
        max_stanza_bytes: bytes.len().max(1),
        max_depth: Limits::AUTHENTICATED.max_depth,
    });
    framer.feed(HEADER);
    framer.feed(bytes);
    let bad = || StreamError::with_text(StreamErrorCondition::BadFormat, "not one stored stanza");
    match framer.next_event()? {
        Some(Event::StreamOpen(_)) => {}
        _ => return Err(bad()),
    }
    match framer.next_event()? {
        Some(Event::Element(el)) if framer.buffered_len() == 0 => Ok(el),
        _ => Err(bad()),
    }
}

/// Parses one stored stanza.
pub fn parse_stanza(bytes: &[u8]) -> Result<Stanza, StreamError> {
    let el = parse_element(bytes)?;
    Stanza::from_element(el)
        .map_err(|e| StreamError::with_text(StreamErrorCondition::BadFormat, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Jid, StanzaKind, ns};

    #[test]
    fn stored_stanzas_round_trip() {
        let mut st = Stanza::new(
            StanzaKind::Message,
            Some(Jid::new("a@b").unwrap()),
            Some(Jid::new("c@d/e").unwrap()),
        );
        st.set_type_attr("chat");
        st.element_mut()
            .append_child(Element::new("body", ns::CLIENT).with_text("x < y & 'z' \u{1F600}"));
        st.element_mut().append_child(
            Element::new("delay", ns::DELAY).with_attr("stamp", "2026-01-01T00:00:00Z"),
        );
        let back = parse_stanza(&to_bytes(&st)).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"<a>", b"<a/><b/>", b"\xff", b"text"] {
            assert!(parse_element(bad).is_err(), "{bad:?}");
        }
    }
}
