//! The prolog of a stream: the optional XML declaration and the `<stream:stream>`
//! start tag (RFC 6120 §4.7, §4.8, §11.5, §11.6).
//!
//! The header is never a complete element, so quick-xml (which parses framed
//! elements) is not used here; the tag is small and capped, and shares the
//! attribute tokeniser and namespace rules with the stanza parser.

use super::parse::{Binding, declaration};
use super::xml::{self, Attrs};
use super::{Cond, Fail, StreamHeader, bad_prefix, nwf, restricted};

use crate::ns;

/// A parsed stream start tag.
#[derive(Debug)]
pub(super) struct Header {
    pub header: StreamHeader,
    /// The root namespace scope for every stanza of this stream.
    pub bindings: Vec<Binding>,
    /// `stream:stream` as the peer spelled it, to recognise its end tag.
    pub qname: String,
}

/// Checks a `<?...?>` found before the stream header: only an XML declaration
/// (XML §2.8) is allowed, and its encoding must be UTF-8 (RFC 6120 §11.6).
pub(super) fn parse_decl(bytes: &[u8]) -> Result<(), Fail> {
    let s = xml::check_chars(bytes)?;
    let body = s
        .strip_prefix("<?")
        .and_then(|b| b.strip_suffix("?>"))
        .ok_or_else(|| nwf("malformed processing instruction"))?;
    let target_end = body.find([' ', '\t', '\n', '\r']).unwrap_or(body.len());
    if body.get(..target_end) != Some("xml") {
        return Err(restricted("processing instructions are not allowed"));
    }
    let mut attrs = Attrs::new(body.get(target_end..).unwrap_or_default());
    // XML §2.8 `XMLDecl`: version, then optional encoding, then optional standalone.
    let mut expect = ["version", "encoding", "standalone"].as_slice();
    let mut saw_version = false;
    while let Some(attr) = attrs.next_attr()? {
        let (name, value) = (attr.name, attr.value);
        let at = expect
            .iter()
            .position(|&e| e == name)
            .ok_or_else(|| nwf("malformed XML declaration"))?;
        expect = expect.get(at + 1..).unwrap_or_default();
        match name {
            "version" => {
                let minor = value.strip_prefix("1.").unwrap_or_default();
                if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(nwf("unsupported XML version"));
                }
                saw_version = true;
            }
            "encoding" => {
                let valid_name = value
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                if !valid_name {
                    return Err(nwf("malformed encoding name"));
                }
                if !value.eq_ignore_ascii_case("UTF-8") {
                    return Err(Fail::new(
                        Cond::UnsupportedEncoding,
                        "only UTF-8 is supported",
                    ));
                }
            }
            _ => {
                if value != "yes" && value != "no" {
                    return Err(nwf("malformed standalone declaration"));
                }
            }
        }
    }
    if !saw_version {
        return Err(nwf("XML declaration without version"));
    }
    Ok(())
}

/// Parses the stream start tag (`<...>` or `<.../>`, as framed by the scanner).
pub(super) fn parse_header(bytes: &[u8], empty: bool) -> Result<Header, Fail> {
    let s = xml::check_chars(bytes)?;
    let inner = s
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .ok_or_else(|| nwf("malformed stream header"))?;
    let inner = if empty {
        inner.strip_suffix('/').unwrap_or(inner)
    } else {
        inner
    };
    let name_end = inner.find([' ', '\t', '\n', '\r']).unwrap_or(inner.len());
    let (qname, raw_attrs) = inner.split_at(name_end);
    let (prefix, local) = xml::split_qname(qname)?;

    let mut bindings: Vec<Binding> = Vec::with_capacity(2);
    let mut attrs = Attrs::new(raw_attrs);
    while let Some(attr) = attrs.next_attr()? {
        if let Some(p) = attr.declares() {
            if bindings.iter().any(|b| b.prefix == p) {
                return Err(nwf("duplicate namespace declaration"));
            }
            bindings.extend(declaration(p, attr.value)?);
        }
    }
    let lookup = |p: &str| bindings.iter().find(|b| b.prefix == p).map(|b| &*b.uri);

    // RFC 6120 §4.8.1: the stream element is qualified by the streams namespace.
    let stream_ns = match prefix {
        Some("xml") => Some(ns::XML),
        Some(p) => Some(lookup(p).ok_or_else(bad_prefix)?),
        None => lookup(""),
    };
    if stream_ns != Some(ns::STREAM) {
        return Err(invalid_namespace(
            "the stream element is not in the streams namespace",
        ));
    }
    if local != "stream" {
        return Err(Fail::new(
            Cond::BadFormat,
            "the root element must be <stream/>",
        ));
    }
    // RFC 6120 §4.8.2: the content namespace; this framer serves client streams.
    if lookup("") != Some(ns::CLIENT) {
        return Err(invalid_namespace(
            "the default namespace must be jabber:client",
        ));
    }

    let mut header = StreamHeader::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut attrs = Attrs::new(raw_attrs);
    while let Some(attr) = attrs.next_attr()? {
        if attr.declares().is_some() {
            continue;
        }
        if seen.contains(&attr.name) {
            return Err(nwf("duplicate attribute"));
        }
        seen.push(attr.name);
        let slot = match (attr.prefix(), attr.local()) {
            (None, "to") => &mut header.to,
            (None, "from") => &mut header.from,
            (None, "id") => &mut header.id,
            (None, "version") => &mut header.version,
            (Some("xml"), "lang") => &mut header.lang,
            (Some(p), _) if p != "xml" && lookup(p).is_none() => return Err(bad_prefix()),
            // Unknown attributes are ignored (RFC 6120 §4.7), but still well-formed.
            _ => {
                attr.unescaped()?;
                continue;
            }
        };
        *slot = Some(attr.unescaped()?.into_owned());
    }
    Ok(Header {
        header,
        bindings,
        qname: qname.to_owned(),
    })
}

/// True when `bytes` (an end tag as framed) closes the element named `qname`.
pub(super) fn is_end_of(bytes: &[u8], qname: &str) -> bool {
    bytes
        .strip_prefix(b"</")
        .and_then(|b| b.strip_suffix(b">"))
        .map(|name| name.trim_ascii_end())
        .is_some_and(|name| name == qname.as_bytes())
}

fn invalid_namespace(text: &'static str) -> Fail {
    Fail::new(Cond::InvalidNamespace, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::Cond as C;

    fn decl(s: &str) -> Result<(), C> {
        parse_decl(s.as_bytes()).map_err(|e| e.condition)
    }

    fn header(s: &str) -> Result<Header, C> {
        parse_header(s.as_bytes(), s.ends_with("/>")).map_err(|e| e.condition)
    }

    const NS: &str = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'";

    #[test]
    fn xml_declaration() {
        assert_eq!(decl("<?xml version='1.0'?>"), Ok(()));
        assert_eq!(
            decl("<?xml version=\"1.0\" encoding=\"utf-8\" standalone='yes' ?>"),
            Ok(())
        );
        assert_eq!(
            decl("<?xml version='1.0' encoding='ISO-8859-1'?>"),
            Err(C::UnsupportedEncoding)
        );
        assert_eq!(
            decl("<?xml encoding='UTF-8' version='1.0'?>"),
            Err(C::NotWellFormed)
        );
        assert_eq!(decl("<?xml?>"), Err(C::NotWellFormed));
        assert_eq!(decl("<?xml version='2.0'?>"), Err(C::NotWellFormed));
        assert_eq!(decl("<?xml version='1.0' foo='x'?>"), Err(C::NotWellFormed));
        assert_eq!(decl("<?xml-stylesheet href='a'?>"), Err(C::RestrictedXml));
        assert_eq!(decl("<?php x ?>"), Err(C::RestrictedXml));
    }

    #[test]
    fn rfc6120_4_7_header_attributes() {
        let h = header(&format!(
            "<stream:stream {NS} to='im.example.com' from='juliet@im.example.com' version='1.0' xml:lang='en' id='x' extra='&amp;'>"
        ))
        .unwrap();
        assert_eq!(h.header.to.as_deref(), Some("im.example.com"));
        assert_eq!(h.header.from.as_deref(), Some("juliet@im.example.com"));
        assert_eq!(h.header.version.as_deref(), Some("1.0"));
        assert_eq!(h.header.lang.as_deref(), Some("en"));
        assert_eq!(h.header.id.as_deref(), Some("x"));
        assert_eq!(h.qname, "stream:stream");
    }

    #[test]
    fn rfc6120_4_8_namespaces() {
        assert_eq!(
            header("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>").err(),
            Some(C::InvalidNamespace)
        );
        assert_eq!(
            header("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>").err(),
            Some(C::InvalidNamespace)
        );
        assert_eq!(
            header("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>").err(),
            Some(C::InvalidNamespace)
        );
        assert_eq!(
            header("<stream:stream xmlns='jabber:client'>").err(),
            Some(C::BadNamespacePrefix)
        );
        assert_eq!(
            header(&format!("<stream:stream {NS} foo:bar='1'>")).err(),
            Some(C::BadNamespacePrefix)
        );
        assert_eq!(
            header(&format!("<stream:features {NS}>")).err(),
            Some(C::BadFormat)
        );
        let h =
            header("<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'/>")
                .unwrap();
        assert_eq!(h.qname, "s:stream");
    }

    #[test]
    fn end_tag_match() {
        assert!(is_end_of(b"</stream:stream>", "stream:stream"));
        assert!(is_end_of(b"</stream:stream \n>", "stream:stream"));
        assert!(!is_end_of(b"</stream>", "stream:stream"));
        assert!(!is_end_of(b"</ stream:stream>", "stream:stream"));
    }
}
