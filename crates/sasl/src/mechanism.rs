//! The mechanisms Aviary offers, the channel bindings of a TLS connection, and the choice
//! of what to advertise in `<mechanisms/>` (RFC 6120 §6.4.1) and XEP-0440.

/// Channel-binding type of RFC 9266 (`tls-exporter`), the one to use with TLS 1.3.
pub const TLS_EXPORTER: &str = "tls-exporter";
/// Channel-binding type of RFC 5929 (`tls-server-end-point`): a hash of the server
/// certificate, the fallback for TLS 1.2 deployments.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// A SASL mechanism this crate implements on the server side.
///
/// The declaration order is the preference order of [`offered_mechanisms`]: strongest
/// first, so a client that takes the first one it knows picks the best.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// `SCRAM-SHA-256-PLUS` (RFC 7677 with channel binding).
    ScramSha256Plus,
    /// `SCRAM-SHA-1-PLUS` (RFC 5802 with channel binding).
    ScramSha1Plus,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-1` (RFC 5802).
    ScramSha1,
    /// `PLAIN` (RFC 4616): the password travels to the server, so only over TLS.
    Plain,
}

/// The hash a SCRAM mechanism runs on; also picks which half of the stored credentials
/// a session needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha1,
    Sha256,
}

impl Mechanism {
    /// Every mechanism, in preference order.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA-registered name, as it appears in `<mechanism/>` and `<auth mechanism=…>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Parses a mechanism name from `<auth mechanism=…>`. Names are matched exactly:
    /// SASL mechanism names are upper case by definition (RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a channel-binding (`-PLUS`) variant.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub(crate) fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Channel bindings of this TLS connection (RFC 9266 `tls-exporter`, RFC 5929
/// `tls-server-end-point`). The edge fills in what its TLS stack can export; an empty
/// value means no binding, and then no `-PLUS` mechanism is offered.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct ChannelBindings {
    /// RFC 9266: 32 bytes exported with label `EXPORTER-Channel-Binding` and no context.
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 §4: the hash of the server's certificate.
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// Names of the binding types available, for the XEP-0440 `<sasl-channel-binding/>`
    /// advertisement. `tls-exporter` comes first because it binds to the TLS session
    /// itself rather than only to the certificate.
    pub fn types(&self) -> impl Iterator<Item = &'static str> {
        [
            (TLS_EXPORTER, self.tls_exporter.is_some()),
            (TLS_SERVER_END_POINT, self.tls_server_end_point.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
    }

    /// The binding data for a type name from a client's `p=` flag.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            TLS_EXPORTER => self.tls_exporter.as_deref(),
            TLS_SERVER_END_POINT => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }

    /// Whether any binding is available.
    pub fn is_empty(&self) -> bool {
        self.types().next().is_none()
    }
}

/// The mechanisms a connection may use, in preference order.
///
/// `-PLUS` variants only when the stream is encrypted and some channel binding is known;
/// PLAIN only when `allow_plain` (the edge decides: over TLS, or with an explicit
/// insecure switch for development).
pub fn offered_mechanisms(tls: bool, cb: &ChannelBindings, allow_plain: bool) -> Vec<Mechanism> {
    let plus = tls && !cb.is_empty();
    Mechanism::ALL
        .into_iter()
        .filter(|m| match m {
            Mechanism::Plain => allow_plain,
            m if m.is_plus() => plus,
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("SCRAM-SHA-512"), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn plus_flags() {
        assert!(Mechanism::ScramSha256Plus.is_plus());
        assert!(Mechanism::ScramSha1Plus.is_plus());
        assert!(!Mechanism::ScramSha256.is_plus());
        assert!(!Mechanism::Plain.is_plus());
    }

    #[test]
    fn binding_types() {
        let none = ChannelBindings::default();
        assert_eq!(none.types().count(), 0);
        assert!(none.is_empty());
        let both = ChannelBindings {
            tls_exporter: Some(vec![1]),
            tls_server_end_point: Some(vec![2]),
        };
        assert_eq!(
            both.types().collect::<Vec<_>>(),
            [TLS_EXPORTER, TLS_SERVER_END_POINT]
        );
        assert_eq!(both.get(TLS_SERVER_END_POINT), Some(&[2u8][..]));
        assert_eq!(both.get("tls-unique"), None);
        let endpoint = ChannelBindings {
            tls_exporter: None,
            tls_server_end_point: Some(vec![2]),
        };
        assert_eq!(endpoint.types().collect::<Vec<_>>(), [TLS_SERVER_END_POINT]);
    }

    #[test]
    fn offers() {
        use Mechanism::*;
        let cb = ChannelBindings {
            tls_exporter: Some(vec![0; 32]),
            tls_server_end_point: None,
        };
        assert_eq!(
            offered_mechanisms(true, &cb, true),
            [
                ScramSha256Plus,
                ScramSha1Plus,
                ScramSha256,
                ScramSha1,
                Plain
            ]
        );
        assert_eq!(
            offered_mechanisms(true, &ChannelBindings::default(), true),
            [ScramSha256, ScramSha1, Plain]
        );
        // Bindings without TLS cannot be genuine; never offer -PLUS then.
        assert_eq!(
            offered_mechanisms(false, &cb, false),
            [ScramSha256, ScramSha1]
        );
        assert_eq!(
            offered_mechanisms(true, &cb, false),
            [ScramSha256Plus, ScramSha1Plus, ScramSha256, ScramSha1]
        );
    }
}
