//! The stanza model (RFC 6120 §8): message, presence and iq with typed addresses.
//!
//! A [`Stanza`] owns its element, but `to` and `from` live only in the typed fields
//! (the element's own `to`/`from` attributes are removed when the stanza is built and
//! written back when it is serialised), so there is exactly one source of truth for
//! the addresses the router uses and the server stamps.

use crate::element::Element;
use crate::error::{StanzaError, StanzaErrorCondition};
use crate::ns;
use jid::Jid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    /// Every kind, in declaration order: `ALL[kind as usize] == kind`.
    pub const ALL: [StanzaKind; 3] = [StanzaKind::Message, StanzaKind::Presence, StanzaKind::Iq];

    pub fn name(self) -> &'static str {
        match self {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }
}

/// RFC 6121 §5.2.2 message types. Unknown or absent values mean `normal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Chat,
    Error,
    Groupchat,
    Headline,
    Normal,
}

impl MessageType {
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Chat => "chat",
            MessageType::Error => "error",
            MessageType::Groupchat => "groupchat",
            MessageType::Headline => "headline",
            MessageType::Normal => "normal",
        }
    }
}

/// RFC 6121 §4.7.1 presence types; `Available` is the absence of the attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PresenceType {
    Available,
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Probe,
    Error,
}

impl PresenceType {
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            PresenceType::Available => return None,
            PresenceType::Unavailable => "unavailable",
            PresenceType::Subscribe => "subscribe",
            PresenceType::Subscribed => "subscribed",
            PresenceType::Unsubscribe => "unsubscribe",
            PresenceType::Unsubscribed => "unsubscribed",
            PresenceType::Probe => "probe",
            PresenceType::Error => "error",
        })
    }

    pub fn is_subscription(self) -> bool {
        matches!(
            self,
            PresenceType::Subscribe
                | PresenceType::Subscribed
                | PresenceType::Unsubscribe
                | PresenceType::Unsubscribed
        )
    }
}

/// RFC 6120 §8.2.3 iq types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

impl IqType {
    pub fn name(self) -> &'static str {
        match self {
            IqType::Get => "get",
            IqType::Set => "set",
            IqType::Result => "result",
            IqType::Error => "error",
        }
    }

    pub fn is_request(self) -> bool {
        matches!(self, IqType::Get | IqType::Set)
    }
}

/// Why an element could not become a stanza.
#[derive(Debug, thiserror::Error)]
pub enum InvalidStanza {
    /// Not `message`/`presence`/`iq` in `jabber:client`: a stream error
    /// (`unsupported-stanza-type`, RFC 6120 §4.9.3.24) for a client stream.
    #[error("unsupported stanza type <{name}/> in namespace '{ns}'")]
    Unsupported { name: String, ns: String },
    /// A `to` or `from` that is not a valid JID: the stanza is answered with
    /// `jid-malformed` (RFC 6120 §8.3.3.8); the error reply is ready to send.
    #[error("malformed address in '{attr}'")]
    BadAddress {
        attr: &'static str,
        reply: Option<Box<Stanza>>,
    },
}

/// A message, presence or iq stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    pub kind: StanzaKind,
    pub to: Option<Jid>,
    pub from: Option<Jid>,
    element: Element,
}

impl Stanza {
    /// A new stanza with no children and no attributes besides the addresses.
    pub fn new(kind: StanzaKind, to: Option<Jid>, from: Option<Jid>) -> Self {
        Stanza {
            kind,
            to,
            from,
            element: Element::new(kind.name(), ns::CLIENT),
        }
    }

    /// Builds a stanza from a parsed top-level element, validating its addresses.
    pub fn from_element(mut element: Element) -> Result<Stanza, InvalidStanza> {
        let kind = match StanzaKind::from_name(element.name()) {
            Some(k) if element.ns() == ns::CLIENT || element.ns() == ns::SERVER => k,
            _ => {
                return Err(InvalidStanza::Unsupported {
                    name: element.name().to_owned(),
                    ns: element.ns().to_owned(),
                });
            }
        };
        let to = element.remove_attr("to");
        let from = element.remove_attr("from");
        let mut stanza = Stanza {
            kind,
            to: None,
            from: None,
            element,
        };
        let parse = |s: Option<String>| s.map(|s| Jid::new(&s)).transpose();
        match (parse(to), parse(from)) {
            (Ok(to), Ok(from)) => {
                stanza.to = to;
                stanza.from = from;
                Ok(stanza)
            }
            (to, _) => {
                let attr = if to.is_err() { "to" } else { "from" };
                let reply = stanza
                    .error_reply(StanzaError::new(StanzaErrorCondition::JidMalformed))
                    .map(Box::new);
                Err(InvalidStanza::BadAddress { attr, reply })
            }
        }
    }

    pub fn element(&self) -> &Element {
        &self.element
    }

    pub fn element_mut(&mut self) -> &mut Element {
        &mut self.element
    }

    pub fn into_element(self) -> Element {
        let mut el = self.element;
        if let Some(to) = self.to {
            el.set_attr("to", to.into_inner());
        }
        if let Some(from) = self.from {
            el.set_attr("from", from.into_inner());
        }
        el
    }

    pub fn id(&self) -> Option<&str> {
        self.element.attr("id")
    }

    pub fn set_id(&mut self, id: impl Into<String>) {
        self.element.set_attr("id", id.into());
    }

    /// The raw `type` attribute.
    pub fn type_attr(&self) -> Option<&str> {
        self.element.attr("type")
    }

    pub fn set_type_attr(&mut self, t: &'static str) {
        self.element.set_attr("type", t);
    }

    /// True for a stanza of type `error`, which is never answered with an error
    /// (RFC 6120 §8.3.1).
    pub fn is_error(&self) -> bool {
        self.type_attr() == Some("error")
    }

    /// RFC 6121 §5.2.2: absent or unknown types are `normal`.
    pub fn message_type(&self) -> MessageType {
        match self.type_attr() {
            Some("chat") => MessageType::Chat,
            Some("error") => MessageType::Error,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            _ => MessageType::Normal,
        }
    }

    /// `None` for a presence `type` the RFC does not define (answered with
    /// `bad-request`).
    pub fn presence_type(&self) -> Option<PresenceType> {
        Some(match self.type_attr() {
            None => PresenceType::Available,
            Some("unavailable") => PresenceType::Unavailable,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some("probe") => PresenceType::Probe,
            Some("error") => PresenceType::Error,
            Some(_) => return None,
        })
    }

    /// `None` when the iq has no valid `type` (RFC 6120 §8.2.3: `bad-request`).
    pub fn iq_type(&self) -> Option<IqType> {
        Some(match self.type_attr()? {
            "get" => IqType::Get,
            "set" => IqType::Set,
            "result" => IqType::Result,
            "error" => IqType::Error,
            _ => return None,
        })
    }

    /// The single payload child of an iq request (RFC 6120 §8.2.3 requires exactly
    /// one for get/set).
    pub fn iq_payload(&self) -> Option<&Element> {
        let mut it = self.element.children();
        let first = it.next()?;
        match it.next() {
            None => Some(first),
            Some(_) => None,
        }
    }

    /// An error reply to this stanza (RFC 6120 §8.3.1): addresses swapped, same id
    /// and children kept for message/presence, type `error`. `None` when this stanza
    /// is itself an error, so an error is never answered with an error.
    pub fn error_reply(&self, error: StanzaError) -> Option<Stanza> {
        if self.is_error() {
            return None;
        }
        let mut reply = self.clone();
        std::mem::swap(&mut reply.to, &mut reply.from);
        reply.element.set_attr("type", "error");
        if self.kind == StanzaKind::Iq {
            // The request payload need not be echoed; keep the reply small.
            reply.element.clear_children();
        }
        reply.element.append_child(error.to_element());
        Some(reply)
    }

    /// An iq `result` to this request with an optional payload.
    pub fn iq_result(&self, payload: Option<Element>) -> Stanza {
        let mut reply = Stanza::new(StanzaKind::Iq, self.from.clone(), self.to.clone());
        if let Some(id) = self.id() {
            reply.set_id(id.to_owned());
        }
        reply.set_type_attr("result");
        if let Some(p) = payload {
            reply.element.append_child(p);
        }
        reply
    }

    /// Serialises in the `jabber:client` default namespace of a client stream.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        crate::writer::write_stanza(self, out);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_to(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_by_discriminant() {
        for (i, k) in StanzaKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i);
        }
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn addresses_move_into_typed_fields() {
        let el = Element::new("message", ns::CLIENT)
            .with_attr("to", "Juliet@Example.com/balcony")
            .with_attr("type", "chat");
        let st = Stanza::from_element(el).unwrap();
        assert_eq!(st.to, Some(jid("juliet@example.com/balcony")));
        assert_eq!(st.element().attr("to"), None);
        assert_eq!(st.message_type(), MessageType::Chat);
        let back = st.into_element();
        assert_eq!(back.attr("to"), Some("juliet@example.com/balcony"));
    }

    #[test]
    fn rfc6120_8_3_3_8_bad_to_gives_jid_malformed_reply() {
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("to", "a@b@c")
            .with_attr("id", "x")
            .with_attr("type", "get");
        match Stanza::from_element(el) {
            Err(InvalidStanza::BadAddress { attr, reply }) => {
                assert_eq!(attr, "to");
                let reply = reply.unwrap();
                assert_eq!(reply.type_attr(), Some("error"));
                assert_eq!(reply.id(), Some("x"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_top_level_element_is_unsupported() {
        let el = Element::new("foo", ns::CLIENT);
        assert!(matches!(
            Stanza::from_element(el),
            Err(InvalidStanza::Unsupported { .. })
        ));
    }

    #[test]
    fn rfc6120_8_3_1_errors_are_not_answered_with_errors() {
        let mut st = Stanza::new(StanzaKind::Message, Some(jid("a@b")), None);
        st.set_type_attr("error");
        assert!(
            st.error_reply(StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
                .is_none()
        );
    }

    #[test]
    fn rfc6121_5_2_2_unknown_message_type_is_normal() {
        let el = Element::new("message", ns::CLIENT).with_attr("type", "weird");
        assert_eq!(
            Stanza::from_element(el).unwrap().message_type(),
            MessageType::Normal
        );
    }
}
