//! Stanzas the server answers itself: those addressed to a served domain, and iqs
//! handled on behalf of an account (RFC 6120 §10.3–§10.5). Service discovery
//! (XEP-0030), ping (XEP-0199), software version (XEP-0092), entity time
//! (XEP-0202); anything else gets `service-unavailable` (never an error to an error).

use aviary_im::datetime;
use aviary_xmpp::{Element, IqType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, ns};
use std::time::SystemTime;

/// What the server says about itself.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub domains: Vec<String>,
    /// XEP-0092 answer; `None` hides the software version entirely.
    pub version: Option<SoftwareVersion>,
    /// Extra disco#info features of the server (e.g. in-band registration).
    pub extra_features: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SoftwareVersion {
    pub name: String,
    pub version: String,
    /// `None` keeps the operating system private (XEP-0092 §4 security considerations).
    pub os: Option<String>,
}

impl ServerInfo {
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }

    fn server_features(&self) -> Vec<&str> {
        let mut f = vec![
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            ns::PING,
            ns::TIME,
            ns::BLOCKING,
            "urn:xmpp:sasl-cb:0",
        ];
        if self.version.is_some() {
            f.push(ns::VERSION);
        }
        f.extend(self.extra_features.iter().map(String::as_str));
        f.sort_unstable();
        f.dedup();
        f
    }
}

/// Answers a stanza addressed to a served domain. Returns the reply to route, if any.
pub fn handle_domain_stanza(info: &ServerInfo, stanza: &Stanza) -> Option<Stanza> {
    match stanza.kind {
        StanzaKind::Iq => handle_iq(info, stanza, Target::Server),
        // Messages to the server have no handler yet (RFC 6120 §10.4.1 lets us refuse).
        StanzaKind::Message => {
            stanza.error_reply(StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
        }
        // Presence to the server itself carries no meaning here; ignore it.
        StanzaKind::Presence => None,
    }
}

/// Answers an iq the server handles on behalf of an account (no `to`, or an iq to the
/// account's bare JID).
pub fn handle_account_iq(info: &ServerInfo, stanza: &Stanza) -> Option<Stanza> {
    match stanza.kind {
        StanzaKind::Iq => handle_iq(info, stanza, Target::Account),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Server,
    Account,
}

fn handle_iq(info: &ServerInfo, iq: &Stanza, target: Target) -> Option<Stanza> {
    let Some(kind) = iq.iq_type() else {
        return iq.error_reply(StanzaError::new(StanzaErrorCondition::BadRequest));
    };
    if !kind.is_request() {
        // Results and errors addressed to us are swallowed (never answer them).
        return None;
    }
    let Some(payload) = iq.iq_payload() else {
        // RFC 6120 §8.2.3: a get/set carries exactly one payload element.
        return iq.error_reply(StanzaError::new(StanzaErrorCondition::BadRequest));
    };
    let reply = |p: Option<Element>| {
        let mut r = iq.iq_result(p);
        // Answer from where the request was addressed (RFC 6120 §8.1.2.1).
        r.from = iq.to.clone();
        Some(r)
    };
    match (kind, payload.ns(), payload.name(), target) {
        (IqType::Get, ns::PING, "ping", _) => reply(None),
        (IqType::Get, ns::DISCO_INFO, "query", _) => {
            if payload.attr("node").is_some() {
                return iq.error_reply(StanzaError::new(StanzaErrorCondition::ItemNotFound));
            }
            reply(Some(disco_info(info, target)))
        }
        (IqType::Get, ns::DISCO_ITEMS, "query", _) => {
            if payload.attr("node").is_some() {
                return iq.error_reply(StanzaError::new(StanzaErrorCondition::ItemNotFound));
            }
            reply(Some(Element::new("query", ns::DISCO_ITEMS)))
        }
        (IqType::Get, ns::VERSION, "query", Target::Server) => match &info.version {
            Some(v) => {
                let mut q = Element::new("query", ns::VERSION)
                    .with_child(Element::new("name", ns::VERSION).with_text(v.name.clone()))
                    .with_child(Element::new("version", ns::VERSION).with_text(v.version.clone()));
                if let Some(os) = &v.os {
                    q.append_child(Element::new("os", ns::VERSION).with_text(os.clone()));
                }
                reply(Some(q))
            }
            None => iq.error_reply(StanzaError::new(StanzaErrorCondition::ServiceUnavailable)),
        },
        (IqType::Get, ns::TIME, "time", Target::Server) => reply(Some(
            Element::new("time", ns::TIME)
                .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
                .with_child(
                    Element::new("utc", ns::TIME).with_text(datetime::format(SystemTime::now())),
                ),
        )),
        _ => iq.error_reply(StanzaError::new(StanzaErrorCondition::ServiceUnavailable)),
    }
}

fn disco_info(info: &ServerInfo, target: Target) -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO);
    match target {
        Target::Server => {
            q.append_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "server")
                    .with_attr("type", "im")
                    .with_attr("name", "Aviary"),
            );
            for f in info.server_features() {
                q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
            }
        }
        Target::Account => {
            q.append_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "account")
                    .with_attr("type", "registered"),
            );
            for f in [ns::DISCO_INFO, ns::DISCO_ITEMS] {
                q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
            }
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_xmpp::Jid;

    fn info() -> ServerInfo {
        ServerInfo {
            domains: vec!["example.com".into()],
            version: Some(SoftwareVersion {
                name: "Aviary".into(),
                version: "1".into(),
                os: None,
            }),
            extra_features: vec![],
        }
    }

    fn iq(t: &'static str, payload: Element) -> Stanza {
        let mut st = Stanza::new(
            StanzaKind::Iq,
            Some(Jid::new("example.com").unwrap()),
            Some(Jid::new("a@example.com/r").unwrap()),
        );
        st.set_type_attr(t);
        st.set_id("1");
        st.element_mut().append_child(payload);
        st
    }

    #[test]
    fn xep0030_server_identity_is_server_im() {
        let r = handle_domain_stanza(&info(), &iq("get", Element::new("query", ns::DISCO_INFO)))
            .unwrap();
        assert_eq!(r.type_attr(), Some("result"));
        assert_eq!(r.to, Some(Jid::new("a@example.com/r").unwrap()));
        let q = r.element().get_child("query", ns::DISCO_INFO).unwrap();
        let id = q.get_child("identity", ns::DISCO_INFO).unwrap();
        assert_eq!(id.attr("category"), Some("server"));
        assert_eq!(id.attr("type"), Some("im"));
        assert!(q.children().any(|f| f.attr("var") == Some(ns::PING)));
    }

    #[test]
    fn xep0199_ping_gets_empty_result() {
        let r = handle_domain_stanza(&info(), &iq("get", Element::new("ping", ns::PING))).unwrap();
        assert_eq!(r.type_attr(), Some("result"));
        assert_eq!(r.element().children().count(), 0);
    }

    #[test]
    fn unknown_payload_is_service_unavailable() {
        let r =
            handle_domain_stanza(&info(), &iq("get", Element::new("query", "urn:nope"))).unwrap();
        let err = r.element().get_child("error", ns::CLIENT).unwrap();
        assert!(err.has_child("service-unavailable", ns::STANZAS));
    }

    #[test]
    fn results_are_not_answered() {
        assert!(handle_domain_stanza(&info(), &iq("result", Element::new("x", "urn:x"))).is_none());
    }

    #[test]
    fn xep0092_version_can_be_hidden() {
        let mut i = info();
        i.version = None;
        let r = handle_domain_stanza(&i, &iq("get", Element::new("query", ns::VERSION))).unwrap();
        assert!(r.is_error());
    }
}
