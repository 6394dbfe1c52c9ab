//! Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3) as types, with
//! their wire form.

use crate::element::Element;
use crate::ns;
use std::fmt;

/// The defined stream error conditions of RFC 6120 §4.9.3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamErrorCondition {
    BadFormat,
    BadNamespacePrefix,
    Conflict,
    ConnectionTimeout,
    HostGone,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    /// §4.9.3.19: the XML character data is the new host (and optional port).
    SeeOtherHost(String),
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamErrorCondition {
    pub fn name(&self) -> &'static str {
        use StreamErrorCondition::*;
        match self {
            BadFormat => "bad-format",
            BadNamespacePrefix => "bad-namespace-prefix",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostGone => "host-gone",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            RemoteConnectionFailed => "remote-connection-failed",
            Reset => "reset",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SeeOtherHost(_) => "see-other-host",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedFeature => "unsupported-feature",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }
}

impl StreamErrorCondition {
    /// The condition named `name` (`see-other-host` without its host).
    pub fn from_name(name: &str) -> Option<Self> {
        use StreamErrorCondition::*;
        Some(match name {
            "bad-format" => BadFormat,
            "bad-namespace-prefix" => BadNamespacePrefix,
            "conflict" => Conflict,
            "connection-timeout" => ConnectionTimeout,
            "host-gone" => HostGone,
            "host-unknown" => HostUnknown,
            "improper-addressing" => ImproperAddressing,
            "internal-server-error" => InternalServerError,
            "invalid-from" => InvalidFrom,
            "invalid-namespace" => InvalidNamespace,
            "invalid-xml" => InvalidXml,
            "not-authorized" => NotAuthorized,
            "not-well-formed" => NotWellFormed,
            "policy-violation" => PolicyViolation,
            "remote-connection-failed" => RemoteConnectionFailed,
            "reset" => Reset,
            "resource-constraint" => ResourceConstraint,
            "restricted-xml" => RestrictedXml,
            "see-other-host" => SeeOtherHost(String::new()),
            "system-shutdown" => SystemShutdown,
            "undefined-condition" => UndefinedCondition,
            "unsupported-encoding" => UnsupportedEncoding,
            "unsupported-feature" => UnsupportedFeature,
            "unsupported-stanza-type" => UnsupportedStanzaType,
            "unsupported-version" => UnsupportedVersion,
            _ => return None,
        })
    }
}

/// A stream error: the condition and an optional human-readable text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct StreamError {
    pub condition: StreamErrorCondition,
    pub text: Option<String>,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.condition.name())?;
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

impl StreamError {
    pub fn new(condition: StreamErrorCondition) -> Self {
        StreamError {
            condition,
            text: None,
        }
    }

    pub fn with_text(condition: StreamErrorCondition, text: impl Into<String>) -> Self {
        StreamError {
            condition,
            text: Some(text.into()),
        }
    }

    /// `<stream:error>` in the streams namespace, ready for [`crate::writer`].
    pub fn to_element(&self) -> Element {
        let mut cond = Element::new(self.condition.name(), ns::STREAMS);
        if let StreamErrorCondition::SeeOtherHost(host) = &self.condition {
            cond.append_text(host.clone());
        }
        let mut el = Element::new("error", ns::STREAM).with_child(cond);
        if let Some(text) = &self.text {
            el.append_child(
                Element::new("text", ns::STREAMS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.clone()),
            );
        }
        el
    }
}

/// The error types of RFC 6120 §8.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl StanzaErrorType {
    pub fn name(self) -> &'static str {
        match self {
            StanzaErrorType::Auth => "auth",
            StanzaErrorType::Cancel => "cancel",
            StanzaErrorType::Continue => "continue",
            StanzaErrorType::Modify => "modify",
            StanzaErrorType::Wait => "wait",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "auth" => StanzaErrorType::Auth,
            "cancel" => StanzaErrorType::Cancel,
            "continue" => StanzaErrorType::Continue,
            "modify" => StanzaErrorType::Modify,
            "wait" => StanzaErrorType::Wait,
            _ => return None,
        })
    }
}

/// The defined stanza error conditions of RFC 6120 §8.3.3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StanzaErrorCondition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    /// §8.3.3.5: optionally the new address as character data.
    Gone(Option<String>),
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    /// §8.3.3.14: optionally the redirect address as character data.
    Redirect(Option<String>),
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl StanzaErrorCondition {
    pub fn name(&self) -> &'static str {
        use StanzaErrorCondition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            Gone(_) => "gone",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            Redirect(_) => "redirect",
            RegistrationRequired => "registration-required",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 gives in its examples for each condition.
    pub fn default_type(&self) -> StanzaErrorType {
        use StanzaErrorCondition::*;
        use StanzaErrorType as T;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect(_) => T::Modify,
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => T::Auth,
            InternalServerError | RecipientUnavailable | RemoteServerTimeout
            | ResourceConstraint => T::Wait,
            Conflict
            | FeatureNotImplemented
            | Gone(_)
            | ItemNotFound
            | NotAllowed
            | RemoteServerNotFound
            | ServiceUnavailable
            | UndefinedCondition => T::Cancel,
            UnexpectedRequest => T::Wait,
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        use StanzaErrorCondition::*;
        Some(match s {
            "bad-request" => BadRequest,
            "conflict" => Conflict,
            "feature-not-implemented" => FeatureNotImplemented,
            "forbidden" => Forbidden,
            "gone" => Gone(None),
            "internal-server-error" => InternalServerError,
            "item-not-found" => ItemNotFound,
            "jid-malformed" => JidMalformed,
            "not-acceptable" => NotAcceptable,
            "not-allowed" => NotAllowed,
            "not-authorized" => NotAuthorized,
            "policy-violation" => PolicyViolation,
            "recipient-unavailable" => RecipientUnavailable,
            "redirect" => Redirect(None),
            "registration-required" => RegistrationRequired,
            "remote-server-not-found" => RemoteServerNotFound,
            "remote-server-timeout" => RemoteServerTimeout,
            "resource-constraint" => ResourceConstraint,
            "service-unavailable" => ServiceUnavailable,
            "subscription-required" => SubscriptionRequired,
            "undefined-condition" => UndefinedCondition,
            "unexpected-request" => UnexpectedRequest,
            _ => return None,
        })
    }
}

/// A stanza error (RFC 6120 §8.3): type, condition, optional text, optional
/// application-specific condition element, optional `by`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct StanzaError {
    pub error_type: StanzaErrorType,
    pub condition: StanzaErrorCondition,
    pub text: Option<String>,
    pub by: Option<String>,
    /// Boxed: rare, and it would otherwise make every `Result<_, StanzaError>` large.
    pub app: Option<Box<Element>>,
}

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.condition.name(), self.error_type.name())?;
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

impl StanzaError {
    /// An error with the condition's customary type.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        StanzaError {
            error_type: condition.default_type(),
            condition,
            text: None,
            by: None,
            app: None,
        }
    }

    #[must_use]
    pub fn with_type(mut self, t: StanzaErrorType) -> Self {
        self.error_type = t;
        self
    }

    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    #[must_use]
    pub fn with_by(mut self, by: impl Into<String>) -> Self {
        self.by = Some(by.into());
        self
    }

    #[must_use]
    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    /// The `<error/>` child element (in `jabber:client`).
    pub fn to_element(&self) -> Element {
        let mut cond = Element::new(self.condition.name(), ns::STANZAS);
        match &self.condition {
            StanzaErrorCondition::Gone(Some(uri)) | StanzaErrorCondition::Redirect(Some(uri)) => {
                cond.append_text(uri.clone());
            }
            _ => {}
        }
        let mut el = Element::new("error", ns::CLIENT)
            .with_attr("type", self.error_type.name())
            .with_child(cond);
        if let Some(by) = &self.by {
            el.set_attr("by", by.clone());
        }
        if let Some(text) = &self.text {
            el.append_child(
                Element::new("text", ns::STANZAS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.clone()),
            );
        }
        if let Some(app) = &self.app {
            el.append_child((**app).clone());
        }
        el
    }

    /// Reads an `<error/>` child (as found in a received error stanza).
    pub fn from_element(el: &Element) -> Option<StanzaError> {
        let error_type = StanzaErrorType::from_name(el.attr("type")?)?;
        let mut condition = None;
        let mut text = None;
        let mut app = None;
        for child in el.children() {
            if child.ns() == ns::STANZAS {
                if child.name() == "text" {
                    text = Some(child.text().into_owned());
                } else if condition.is_none() {
                    condition = StanzaErrorCondition::from_name(child.name()).map(|c| match c {
                        StanzaErrorCondition::Gone(_) => {
                            StanzaErrorCondition::Gone(non_empty(child.text().into_owned()))
                        }
                        StanzaErrorCondition::Redirect(_) => {
                            StanzaErrorCondition::Redirect(non_empty(child.text().into_owned()))
                        }
                        c => c,
                    });
                }
            } else if app.is_none() {
                app = Some(Box::new(child.clone()));
            }
        }
        Some(StanzaError {
            error_type,
            condition: condition?,
            text,
            by: el.attr("by").map(str::to_owned),
            app,
        })
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_error_round_trips_through_element() {
        let e = StanzaError::new(StanzaErrorCondition::Redirect(Some("xmpp:a@b".into())))
            .with_text("moved")
            .with_app(Element::new("blocked", ns::BLOCKING_ERRORS));
        let back = StanzaError::from_element(&e.to_element()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn default_types_follow_rfc6120_8_3_3() {
        assert_eq!(
            StanzaErrorCondition::ServiceUnavailable.default_type(),
            StanzaErrorType::Cancel
        );
        assert_eq!(
            StanzaErrorCondition::BadRequest.default_type(),
            StanzaErrorType::Modify
        );
        assert_eq!(
            StanzaErrorCondition::NotAuthorized.default_type(),
            StanzaErrorType::Auth
        );
        assert_eq!(
            StanzaErrorCondition::ResourceConstraint.default_type(),
            StanzaErrorType::Wait
        );
    }

    #[test]
    fn see_other_host_carries_the_host() {
        let el = StreamError::new(StreamErrorCondition::SeeOtherHost("h:5222".into())).to_element();
        let cond = el.get_child("see-other-host", ns::STREAMS).unwrap();
        assert_eq!(cond.text(), "h:5222");
    }
}
