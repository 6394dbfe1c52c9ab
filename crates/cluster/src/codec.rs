//! Stanzas in and out of envelopes. The stanza travels serialised (it is parsed at
//! most once per node); the header repeats the routing fields so routers can decide
//! without parsing.

use crate::pb;
use aviary_session::cluster::{Direction, Origin};
use aviary_xmpp::{Stanza, StanzaKind, StreamError, stored};

pub fn kind(k: StanzaKind) -> pb::Kind {
    match k {
        StanzaKind::Message => pb::Kind::Message,
        StanzaKind::Presence => pb::Kind::Presence,
        StanzaKind::Iq => pb::Kind::Iq,
    }
}

pub fn direction(d: Direction) -> pb::Direction {
    match d {
        Direction::Outbound => pb::Direction::Outbound,
        Direction::Inbound => pb::Direction::Inbound,
    }
}

pub fn direction_from(d: i32) -> Direction {
    if d == pb::Direction::Outbound as i32 {
        Direction::Outbound
    } else {
        Direction::Inbound
    }
}

pub fn origin(o: &Origin) -> pb::Origin {
    pb::Origin {
        edge: o.edge.clone(),
        seq: o.seq,
    }
}

pub fn origin_from(o: Option<&pb::Origin>) -> Option<Origin> {
    o.filter(|o| !o.edge.is_empty()).map(|o| Origin {
        edge: o.edge.clone(),
        seq: o.seq,
    })
}

/// Wraps a stanza for the wire.
pub fn envelope(
    stanza: &Stanza,
    partition: u32,
    epoch: u64,
    dir: Direction,
    origin_: Option<&Origin>,
) -> pb::Envelope {
    pb::Envelope {
        header: Some(pb::Header {
            from: stanza
                .from
                .as_ref()
                .map(|j| j.to_string())
                .unwrap_or_default(),
            to: stanza
                .to
                .as_ref()
                .map(|j| j.to_string())
                .unwrap_or_default(),
            kind: kind(stanza.kind) as i32,
            r#type: stanza.type_attr().unwrap_or_default().to_owned(),
            id: stanza.id().unwrap_or_default().to_owned(),
        }),
        stanza: stored::to_bytes(stanza),
        partition,
        epoch,
        origin: origin_.map(origin),
        traceparent: String::new(),
        direction: direction(dir) as i32,
    }
}

/// The stanza inside an envelope.
pub fn stanza(env: &pb::Envelope) -> Result<Stanza, StreamError> {
    stored::parse_stanza(&env.stanza)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_xmpp::{Element, Jid, ns};

    #[test]
    fn envelopes_round_trip() {
        let mut st = Stanza::new(
            StanzaKind::Message,
            Some(Jid::new("b@x/r").unwrap()),
            Some(Jid::new("a@x/p").unwrap()),
        );
        st.set_type_attr("chat");
        st.set_id("m1");
        st.element_mut()
            .append_child(Element::new("body", ns::CLIENT).with_text("héllo <&>"));
        let o = Origin {
            edge: "e1".into(),
            seq: 42,
        };
        let env = envelope(&st, 7, 3, Direction::Inbound, Some(&o));
        let h = env.header.as_ref().unwrap();
        assert_eq!(
            (h.from.as_str(), h.to.as_str(), h.id.as_str()),
            ("a@x/p", "b@x/r", "m1")
        );
        assert_eq!(stanza(&env).unwrap(), st);
        assert_eq!(origin_from(env.origin.as_ref()), Some(o));
        assert_eq!(direction_from(env.direction), Direction::Inbound);
    }
}
