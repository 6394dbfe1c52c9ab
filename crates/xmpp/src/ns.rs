//! Namespace URIs and the intern table that lets the parser avoid allocating the
//! element names and namespaces that occur in nearly every stanza.

use std::borrow::Cow;

/// An element name, attribute name or namespace: static for the common ones.
pub type Str = Cow<'static, str>;

pub const CLIENT: &str = "jabber:client";
pub const SERVER: &str = "jabber:server";
pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
pub const ROSTER: &str = "jabber:iq:roster";
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const PING: &str = "urn:xmpp:ping";
pub const VERSION: &str = "jabber:iq:version";
pub const TIME: &str = "urn:xmpp:time";
pub const REGISTER: &str = "jabber:iq:register";
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
pub const DELAY: &str = "urn:xmpp:delay";
pub const BLOCKING: &str = "urn:xmpp:blocking";
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
pub const DATA_FORMS: &str = "jabber:x:data";
pub const OFFLINE: &str = "msgoffline";

/// Returns a static string for names and namespaces seen in almost every stanza, so
/// that parsing a typical message allocates only for attribute values and text.
#[inline]
pub fn intern(s: &str) -> Str {
    match known(s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_owned()),
    }
}

/// Like [`intern`], but reuses the caller's allocation when `s` is not a known
/// string (for values that had to be unescaped anyway).
#[inline]
pub fn intern_cow(s: Cow<'_, str>) -> Str {
    match known(&s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.into_owned()),
    }
}

#[inline]
fn known(s: &str) -> Option<&'static str> {
    Some(match s {
        "" => "",
        "message" => "message",
        "presence" => "presence",
        "iq" => "iq",
        "body" => "body",
        "subject" => "subject",
        "thread" => "thread",
        "show" => "show",
        "status" => "status",
        "priority" => "priority",
        "query" => "query",
        "item" => "item",
        "group" => "group",
        "error" => "error",
        "to" => "to",
        "from" => "from",
        "id" => "id",
        "type" => "type",
        "xml:lang" => "xml:lang",
        "name" => "name",
        "jid" => "jid",
        "subscription" => "subscription",
        "ask" => "ask",
        "ver" => "ver",
        "c" => "c",
        "hash" => "hash",
        "node" => "node",
        "delay" => "delay",
        "stamp" => "stamp",
        "active" => "active",
        "composing" => "composing",
        "paused" => "paused",
        "request" => "request",
        "received" => "received",
        "origin-id" => "origin-id",
        "stanza-id" => "stanza-id",
        "by" => "by",
        "ping" => "ping",
        "bind" => "bind",
        "resource" => "resource",
        "session" => "session",
        "text" => "text",
        CLIENT => CLIENT,
        STREAM => STREAM,
        STANZAS => STANZAS,
        SASL => SASL,
        TLS => TLS,
        BIND => BIND,
        SESSION => SESSION,
        ROSTER => ROSTER,
        DISCO_INFO => DISCO_INFO,
        DISCO_ITEMS => DISCO_ITEMS,
        PING => PING,
        DELAY => DELAY,
        BLOCKING => BLOCKING,
        "http://jabber.org/protocol/chatstates" => "http://jabber.org/protocol/chatstates",
        "http://jabber.org/protocol/caps" => "http://jabber.org/protocol/caps",
        "urn:xmpp:receipts" => "urn:xmpp:receipts",
        "urn:xmpp:sid:0" => "urn:xmpp:sid:0",
        "urn:xmpp:hints" => "urn:xmpp:hints",
        "urn:xmpp:chat-markers:0" => "urn:xmpp:chat-markers:0",
        "urn:xmpp:sm:3" => "urn:xmpp:sm:3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_borrowed() {
        assert!(matches!(intern("message"), Cow::Borrowed("message")));
        assert!(matches!(intern(CLIENT), Cow::Borrowed(CLIENT)));
        assert!(matches!(intern("x-unknown"), Cow::Owned(_)));
        assert_eq!(intern("x-unknown"), "x-unknown");
        assert!(matches!(
            intern_cow(Cow::Owned(PING.into())),
            Cow::Borrowed(PING)
        ));
        assert_eq!(intern_cow(Cow::Borrowed("urn:other")), "urn:other");
    }
}
