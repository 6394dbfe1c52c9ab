//! Strict validation of the client's SCRAM messages (RFC 5802 §7) before rsasl sees them.
//!
//! Why this exists next to rsasl's own parser: rsasl 2.3.1 slices attributes without
//! checking their length (`"n,,n"` or `"n,a,…"` panics inside `ClientFirstMessage::parse`,
//! a short attribute panics `ClientFinal::parse`), does not check the `a=` prefix, and
//! neither unescapes (`=2C`, `=3D`) nor SASLprep's the username. The server must never
//! panic on peer input and must hand the edge a prepared authcid, so every message is
//! checked against the RFC grammar here and only well-formed ones reach rsasl, which
//! then does the cryptography.
//!
//! Optional extensions (`x=…` after the nonce) are valid SCRAM but rejected: rsasl
//! rebuilds the AuthMessage from the parsed fields and drops them, so an exchange with
//! extensions would fail at the proof with a misleading `not-authorized`. No XMPP client
//! sends them.

use crate::error::Failure;

/// The GS2 channel-binding flag of a client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CbFlag {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but believes the server does not.
    NotAdvertised,
    /// `p=<name>`: the client uses channel binding of this type.
    Used(String),
}

/// What the server needs from a client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    pub(crate) cb_flag: CbFlag,
    /// Unescaped authzid; `None` when absent.
    pub(crate) authzid: Option<String>,
    /// Unescaped and SASLprep'd authcid.
    pub(crate) username: String,
}

const MALFORMED: Failure = Failure::MalformedRequest;

/// Validates a client-first message and extracts what the server needs.
pub(crate) fn parse_client_first(input: &[u8]) -> Result<ClientFirst, Failure> {
    let mut parts = input.split(|&b| b == b',');
    let flag = parts.next().ok_or(MALFORMED)?;
    let cb_flag = match flag {
        b"n" => CbFlag::NotSupported,
        b"y" => CbFlag::NotAdvertised,
        _ => {
            let name = flag.strip_prefix(b"p=").ok_or(MALFORMED)?;
            // RFC 5056 §7: channel-binding type names are ASCII alphanumerics, '.', '-'.
            if name.is_empty()
                || !name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            {
                return Err(MALFORMED);
            }
            CbFlag::Used(String::from_utf8(name.to_vec()).map_err(|_| MALFORMED)?)
        }
    };

    let authzid = match parts.next().ok_or(MALFORMED)? {
        b"" => None,
        a => Some(saslname(a.strip_prefix(b"a=").ok_or(MALFORMED)?)?),
    };

    // A leading reserved-mext ("m=…") means a mandatory extension we do not know.
    let username = saslname(
        parts
            .next()
            .and_then(|p| p.strip_prefix(b"n="))
            .ok_or(MALFORMED)?,
    )?;
    let username = stringprep::saslprep(&username).map_err(|_| MALFORMED)?;
    if username.is_empty() {
        return Err(MALFORMED);
    }

    let nonce = parts
        .next()
        .and_then(|p| p.strip_prefix(b"r="))
        .ok_or(MALFORMED)?;
    if !is_nonce(nonce) {
        return Err(MALFORMED);
    }
    if parts.next().is_some() {
        return Err(MALFORMED);
    }

    Ok(ClientFirst {
        cb_flag,
        authzid,
        username: username.into_owned(),
    })
}

/// Validates the shape of a client-final message: `c=<base64>,r=<nonce>,p=<base64>`.
/// rsasl checks the values (binding data, nonce, proof) afterwards.
pub(crate) fn check_client_final(input: &[u8]) -> Result<(), Failure> {
    let mut parts = input.split(|&b| b == b',');
    let mut attr = |name: &[u8]| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .ok_or(MALFORMED)
    };
    let binding = attr(b"c=")?;
    let nonce = attr(b"r=")?;
    let proof = attr(b"p=")?;
    if parts.next().is_some() || !is_base64(binding) || !is_nonce(nonce) || !is_base64(proof) {
        return Err(MALFORMED);
    }
    Ok(())
}

/// RFC 5802 `printable`: `%x21-2B / %x2D-7E`, at least one.
fn is_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
}

/// Non-empty, base64 alphabet with padding only at the end. The decoder has the last
/// word; this keeps obviously foreign bytes out.
fn is_base64(value: &[u8]) -> bool {
    let data = value
        .strip_suffix(b"==")
        .or_else(|| value.strip_suffix(b"="))
        .unwrap_or(value);
    !value.is_empty()
        && value.len().is_multiple_of(4)
        && data
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

/// Decodes an RFC 5802 `saslname`: UTF-8 without NUL or ',' where '=' only appears in
/// the escapes `=2C` (',') and `=3D` ('=').
fn saslname(raw: &[u8]) -> Result<String, Failure> {
    let text = std::str::from_utf8(raw).map_err(|_| MALFORMED)?;
    if text.is_empty() || text.contains('\0') {
        return Err(MALFORMED);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).ok_or(MALFORMED)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(MALFORMED),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(input: &str) -> Result<ClientFirst, Failure> {
        parse_client_first(input.as_bytes())
    }

    #[test]
    fn parses_rfc_example() {
        let cf = first("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(cf.cb_flag, CbFlag::NotSupported);
        assert_eq!(cf.authzid, None);
        assert_eq!(cf.username, "user");
    }

    #[test]
    fn flags_and_authzid() {
        let cf = first("p=tls-exporter,a=juliet@example.com,n=juliet,r=abc").unwrap();
        assert_eq!(cf.cb_flag, CbFlag::Used("tls-exporter".into()));
        assert_eq!(cf.authzid.as_deref(), Some("juliet@example.com"));
        assert_eq!(first("y,,n=u,r=x").unwrap().cb_flag, CbFlag::NotAdvertised);
    }

    #[test]
    fn unescapes_and_preps_username() {
        assert_eq!(first("n,,n=a=2Cb=3Dc,r=x").unwrap().username, "a,b=c");
        // SASLprep maps U+00AD SOFT HYPHEN to nothing (RFC 4013 §3 example).
        assert_eq!(first("n,,n=I\u{AD}X,r=x").unwrap().username, "IX");
        assert_eq!(
            first("n,a=x=3Dy,n=u,r=x").unwrap().authzid.as_deref(),
            Some("x=y")
        );
    }

    #[test]
    fn rejects_malformed_first() {
        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "n,,n",
            "n,,n=",
            "n,,n=u",
            "n,,n=u,r=",
            "n,a,n=u,r=x",
            "n,a=,n=u,r=x",
            "n,b=x,n=u,r=x",
            "x,,n=u,r=x",
            "p=,,n=u,r=x",
            "p=tls_unique,,n=u,r=x",
            "n,,m=ext,n=u,r=x",
            "n,,n=u,r=x,e=ext",
            "n,,n=u=,r=x",
            "n,,n=u=2,r=x",
            "n,,n=u=2D,r=x",
            "n,,n=u\0,r=x",
            "n,,r=x,n=u",
            "n,,n=u,r=a b",
            "n,,n=\u{AD},r=x",
        ] {
            assert_eq!(first(bad), Err(Failure::MalformedRequest), "{bad:?}");
        }
        assert_eq!(
            parse_client_first(b"n,a=\xff,n=u,r=x"),
            Err(Failure::MalformedRequest)
        );
        assert_eq!(
            parse_client_first(b"n,,n=\xc3,r=x"),
            Err(Failure::MalformedRequest)
        );
    }

    #[test]
    fn client_final_shape() {
        assert_eq!(check_client_final(b"c=biws,r=abc,p=AAAA"), Ok(()));
        assert_eq!(check_client_final(b"c=biws,r=abc,p=AAA="), Ok(()));
        for bad in [
            &b""[..],
            b"c=biws",
            b"c=biws,r=abc",
            b"c=biws,r=abc,p=",
            b"c=biws,r=abc,p=AAAA,x=1",
            b"c=biws,r=abc,x=1,p=AAAA",
            b"r=abc,c=biws,p=AAAA",
            b"c=bi,r=abc,p=AAAA",
            b"c=biws,r=a,c,p=AAAA",
            b"c=biws,r=abc,p=AA=A",
            b"c=biws,r=abc,p=A\xffAA",
            b"c,r,p",
        ] {
            assert_eq!(
                check_client_final(bad),
                Err(Failure::MalformedRequest),
                "{bad:?}"
            );
        }
    }
}
