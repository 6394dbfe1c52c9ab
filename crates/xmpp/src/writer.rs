//! Serialisation of elements, stanzas and stream framing onto a byte buffer.
//!
//! Output is always UTF-8, attributes are single-quoted, and a namespace is declared
//! only where an element's namespace differs from its parent's. Elements in the
//! streams namespace use the `stream:` prefix declared on our stream header.

use crate::element::{Element, Node};
use crate::ns;
use crate::stanza::Stanza;

/// Escapes character data: `&`, `<` and `>` (the last so `]]>` can never appear),
/// and `\r`, which a parser would otherwise turn into `\n` (XML §2.11).
pub fn escape_text(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Escapes an attribute value for single quotes; whitespace other than a space is
/// written as a character reference so attribute-value normalisation cannot alter it.
pub fn escape_attr(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' => b"&apos;",
            b'"' => b"&quot;",
            b'\t' => b"&#x9;",
            b'\n' => b"&#xA;",
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn write_attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    escape_attr(value, out);
    out.push(b'\'');
}

/// Writes `el` as if inside a parent whose default namespace is `parent_ns`.
pub fn write_element(el: &Element, parent_ns: &str, out: &mut Vec<u8>) {
    write_element_with(el, parent_ns, &[], out);
}

fn write_element_with(
    el: &Element,
    parent_ns: &str,
    leading_attrs: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    let stream_prefixed = el.ns() == ns::STREAM;
    out.push(b'<');
    if stream_prefixed {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(el.name().as_bytes());
    // The default namespace children inherit: unchanged for `stream:` elements.
    let child_ns = if stream_prefixed { parent_ns } else { el.ns() };
    if !stream_prefixed && el.ns() != parent_ns {
        write_attr(out, "xmlns", el.ns());
    }
    for (k, v) in leading_attrs {
        write_attr(out, k, v);
    }
    let mut generated = 0usize;
    for (k, v) in el.attrs() {
        if let Some(rest) = k.strip_prefix('{') {
            // Clark notation: declare a generated prefix for this attribute.
            if let Some((uri, local)) = rest.split_once('}') {
                let prefix = format!("ns{generated}");
                generated += 1;
                write_attr(out, &format!("xmlns:{prefix}"), uri);
                write_attr(out, &format!("{prefix}:{local}"), v);
                continue;
            }
        }
        write_attr(out, k, v);
    }
    if el.nodes().is_empty() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    for node in el.nodes() {
        match node {
            Node::Element(child) => write_element_with(child, child_ns, &[], out),
            Node::Text(t) => escape_text(t, out),
        }
    }
    out.extend_from_slice(b"</");
    if stream_prefixed {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(el.name().as_bytes());
    out.push(b'>');
}

/// Writes a stanza for a client stream (default namespace `jabber:client`), with
/// `to` and `from` first.
pub fn write_stanza(st: &Stanza, out: &mut Vec<u8>) {
    let to = st.to.as_ref().map(|j| j.as_str());
    let from = st.from.as_ref().map(|j| j.as_str());
    let mut lead: [(&str, &str); 2] = [("", ""); 2];
    let mut n = 0;
    if let Some(to) = to {
        lead[n] = ("to", to);
        n += 1;
    }
    if let Some(from) = from {
        lead[n] = ("from", from);
        n += 1;
    }
    write_element_with(st.element(), ns::CLIENT, &lead[..n], out);
}

/// The response stream header (RFC 6120 §4.7). `to` is the client's JID once known.
pub fn write_stream_open(out: &mut Vec<u8>, from: &str, to: Option<&str>, id: &str, lang: &str) {
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'");
    write_attr(out, "id", id);
    write_attr(out, "from", from);
    if let Some(to) = to {
        write_attr(out, "to", to);
    }
    out.extend_from_slice(b" version='1.0'");
    write_attr(out, "xml:lang", lang);
    out.push(b'>');
}

pub const STREAM_CLOSE: &[u8] = b"</stream:stream>";

#[cfg(test)]
mod tests {
    use super::*;

    fn s(el: &Element) -> String {
        String::from_utf8(el.to_bytes(ns::CLIENT)).unwrap()
    }

    #[test]
    fn namespaces_declared_only_on_change() {
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_child(
                Element::new("query", ns::ROSTER).with_child(Element::new("item", ns::ROSTER)),
            );
        assert_eq!(
            s(&el),
            "<iq type='result'><query xmlns='jabber:iq:roster'><item/></query></iq>"
        );
    }

    #[test]
    fn stream_elements_use_the_stream_prefix() {
        let el = Element::new("features", ns::STREAM).with_child(Element::new("bind", ns::BIND));
        assert_eq!(
            s(&el),
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        );
    }

    #[test]
    fn escaping() {
        let el = Element::new("body", ns::CLIENT)
            .with_attr("a", "x'\"<&\n")
            .with_text("1 < 2 && ]]> 3\r\n");
        assert_eq!(
            s(&el),
            "<body a='x&apos;&quot;&lt;&amp;&#xA;'>1 &lt; 2 &amp;&amp; ]]&gt; 3&#xD;\n</body>"
        );
    }
}
