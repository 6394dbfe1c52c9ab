//! Stanza builders and predicates shared by the suites.

use aviary_xmpp::{Element, ns};

/// A message with a body.
pub fn message(to: &str, type_: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", type_)
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

/// A stanza as XML text, for failure messages.
pub fn xml(el: &Element) -> String {
    String::from_utf8_lossy(&el.to_bytes(ns::CLIENT)).into_owned()
}

/// Presence from exactly `from` with this type (`None` is available).
pub fn is_presence(el: &Element, from: &str, type_: Option<&str>) -> bool {
    el.name() == "presence" && el.attr("from") == Some(from) && el.attr("type") == type_
}

/// Presence whose sender's bare JID is `bare` (any resource, or none).
pub fn is_presence_from_bare(el: &Element, bare: &str) -> bool {
    el.name() == "presence"
        && el
            .attr("from")
            .is_some_and(|f| f == bare || f.split_once('/').is_some_and(|(b, _)| b == bare))
}

pub fn is_roster_push_for(el: &Element, jid: Option<&str>) -> bool {
    el.name() == "iq"
        && el.attr("type") == Some("set")
        && el.get_child("query", ns::ROSTER).is_some_and(|q| {
            jid.is_none_or(|j| {
                q.children()
                    .any(|i| i.is("item", ns::ROSTER) && i.attr("jid") == Some(j))
            })
        })
}

pub fn status_of(el: &Element) -> Option<String> {
    el.child_text("status", ns::CLIENT).map(|s| s.into_owned())
}

/// The defined condition of an error stanza (RFC 6120 §8.3.3).
pub fn error_condition(el: &Element) -> Option<String> {
    el.get_child("error", ns::CLIENT)?
        .children()
        .find(|c| c.ns() == ns::STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
}

/// Asserts `el` is an error with this defined condition.
pub fn assert_error(el: &Element, condition: &str) {
    assert_eq!(el.attr("type"), Some("error"), "not an error: {}", xml(el));
    assert_eq!(
        error_condition(el).as_deref(),
        Some(condition),
        "wrong condition: {}",
        xml(el)
    );
}
