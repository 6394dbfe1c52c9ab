//! Turns one complete, framed top-level element into an [`Element`] tree.
//!
//! quick-xml tokenises the bytes and checks that end tags match; we resolve
//! namespaces ourselves, because the root scope is the stream header's, which
//! quick-xml never sees (each stanza is parsed on its own). Names, attribute
//! values, references and characters are validated here too (see [`super::xml`]).
//! The scratch stacks live in the [`Parser`] and are reused, so a typical stanza
//! allocates only its own nodes, attribute values and text.

use super::xml::{self, Attrs};
use super::{Fail, bad_prefix, nwf, restricted};
use crate::element::{Element, Node};
use crate::ns::{self, Str};
use memchr::memmem::Finder;
use quick_xml::events::{BytesStart, Event as X};
use quick_xml::reader::Reader;
use std::borrow::Cow;

/// The namespace name that `xmlns` attributes themselves live in (reserved).
const XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// A namespace declaration in scope; `prefix` is empty for the default namespace
/// (whose `uri` is empty after `xmlns=''`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Binding {
    pub prefix: Str,
    pub uri: Str,
}

/// Checks a declaration against Namespaces in XML 1.0 §3 and returns the binding
/// to push, or `None` for the (redundant but legal) `xmlns:xml` declaration.
pub(super) fn declaration(prefix: &str, raw_uri: &str) -> Result<Option<Binding>, Fail> {
    let uri = xml::unescape_attr(raw_uri)?;
    if prefix == "xml" {
        return if uri == ns::XML {
            Ok(None)
        } else {
            Err(nwf("the xml prefix is reserved"))
        };
    }
    if prefix == "xmlns" || uri == ns::XML || uri == XMLNS {
        return Err(nwf("reserved namespace"));
    }
    if !prefix.is_empty() {
        if !xml::is_ncname(prefix) {
            return Err(nwf("invalid prefix"));
        }
        // XML 1.0 namespaces cannot undeclare a prefix (only 1.1 can).
        if uri.is_empty() {
            return Err(nwf("empty namespace for a prefix"));
        }
    }
    Ok(Some(Binding {
        prefix: ns::intern(prefix),
        uri: ns::intern_cow(uri),
    }))
}

struct Open {
    el: Element,
    /// Length of `scopes` before this element's declarations.
    mark: usize,
}

/// Reusable parsing state; the root scope is set from each stream header.
pub(super) struct Parser {
    /// Finds `xmlns` in a tag's attributes: most tags declare nothing.
    xmlns: Finder<'static>,
    scopes: Vec<Binding>,
    root_len: usize,
    stack: Vec<Open>,
    /// Character data not yet attached to the innermost open element, so adjacent
    /// text, references and CDATA become one [`Node::Text`].
    text: Option<String>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            xmlns: Finder::new(b"xmlns"),
            scopes: Vec::new(),
            root_len: 0,
            stack: Vec::new(),
            text: None,
        }
    }
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("root", &self.scopes.get(..self.root_len))
            .finish_non_exhaustive()
    }
}

/// Scratch capacity kept between stanzas; more is released so an idle stream stays
/// small after one deep stanza.
const KEEP_OPEN: usize = 8;
const KEEP_SCOPES: usize = 16;

impl Parser {
    /// Installs the stream header's declarations as the root scope.
    pub(super) fn set_root(&mut self, bindings: Vec<Binding>) {
        self.root_len = bindings.len();
        self.scopes = bindings;
    }

    /// Heap bytes held by the scratch state.
    pub(super) fn allocated(&self) -> usize {
        let strings: usize = self
            .scopes
            .iter()
            .map(|b| owned_len(&b.prefix) + owned_len(&b.uri))
            .sum();
        self.scopes.capacity() * size_of::<Binding>()
            + strings
            + self.stack.capacity() * size_of::<Open>()
            + self.text.as_ref().map_or(0, String::capacity)
    }

    /// Parses `bytes`, which the scanner framed as exactly one element.
    pub(super) fn parse(&mut self, bytes: &[u8]) -> Result<Element, Fail> {
        let result = xml::check_chars(bytes).and_then(|base| self.run(base));
        self.stack.clear();
        self.stack.shrink_to(KEEP_OPEN);
        self.scopes.truncate(self.root_len);
        self.scopes.shrink_to(KEEP_SCOPES.max(self.root_len));
        self.text = None;
        result
    }

    fn run(&mut self, base: &str) -> Result<Element, Fail> {
        let mut reader = Reader::from_reader(base.as_bytes());
        loop {
            let event = reader.read_event().map_err(|_| nwf("malformed XML"))?;
            match event {
                X::Start(start) => {
                    self.flush_text();
                    let mark = self.scopes.len();
                    let el = self.open(base, &start)?;
                    self.stack.push(Open { el, mark });
                }
                X::Empty(start) => {
                    self.flush_text();
                    let mark = self.scopes.len();
                    let el = self.open(base, &start)?;
                    self.scopes.truncate(mark);
                    if let Some(done) = self.attach(el) {
                        return Ok(done);
                    }
                }
                X::End(_) => {
                    self.flush_text();
                    let open = self.stack.pop().ok_or_else(|| nwf("unmatched end tag"))?;
                    self.scopes.truncate(open.mark);
                    if let Some(done) = self.attach(open.el) {
                        return Ok(done);
                    }
                }
                X::Text(t) => {
                    let s = sub_str(base, &t)?;
                    let text = self
                        .text
                        .get_or_insert_with(|| String::with_capacity(s.len()));
                    xml::push_text(s, text)?;
                }
                X::GeneralRef(r) => {
                    let c = xml::resolve_ref(sub_str(base, &r)?)?;
                    self.text.get_or_insert_with(String::new).push(c);
                }
                X::CData(c) => {
                    let s = sub_str(base, &c)?;
                    let text = self
                        .text
                        .get_or_insert_with(|| String::with_capacity(s.len()));
                    xml::push_normalised_newlines(s, text);
                }
                // The scanner rejects these before framing; kept for defence in depth.
                X::Comment(_) | X::PI(_) | X::Decl(_) | X::DocType(_) => {
                    return Err(restricted("RFC 6120 §11.1 forbids this markup"));
                }
                X::Eof => return Err(nwf("unclosed element")),
            }
        }
    }

    /// Puts a finished element into its parent, or returns it when it is the root.
    fn attach(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.el.nodes_mut().push(Node::Element(el));
                None
            }
            None => Some(el),
        }
    }

    fn flush_text(&mut self) {
        if let Some(text) = self.text.take()
            && let (Some(top), false) = (self.stack.last_mut(), text.is_empty())
        {
            top.el.nodes_mut().push(Node::Text(text));
        }
    }

    fn lookup(&self, prefix: &str) -> Option<&Str> {
        self.scopes
            .iter()
            .rev()
            .find(|b| b.prefix == prefix)
            .map(|b| &b.uri)
    }

    /// Builds the element for a start tag, pushing its declarations (the caller
    /// pops them when the element closes).
    fn open(&mut self, base: &str, start: &BytesStart<'_>) -> Result<Element, Fail> {
        let qname = start.name();
        let (prefix, local) = xml::split_qname(sub_str(base, qname.as_ref())?)?;
        let raw_attrs = sub_str(base, start.attributes_raw())?;

        // Declarations apply to the element's own name and attributes, so they are
        // bound first, in a separate pass only taken when there are any.
        let mark = self.scopes.len();
        let declarations = self.xmlns.find(raw_attrs.as_bytes()).is_some();
        if declarations {
            let mut attrs = Attrs::new(raw_attrs);
            while let Some(attr) = attrs.next_attr()? {
                let Some(p) = attr.declares() else {
                    continue;
                };
                if self
                    .scopes
                    .get(mark..)
                    .unwrap_or_default()
                    .iter()
                    .any(|b| b.prefix == p)
                {
                    return Err(nwf("duplicate namespace declaration"));
                }
                if let Some(binding) = declaration(p, attr.value)? {
                    self.scopes.push(binding);
                }
            }
        }

        let ns: Str = match prefix {
            None => self.lookup("").cloned().unwrap_or(Cow::Borrowed("")),
            Some("xml") => Cow::Borrowed(ns::XML),
            Some("xmlns") => return Err(nwf("element with the xmlns prefix")),
            Some(p) => self.lookup(p).cloned().ok_or_else(bad_prefix)?,
        };
        let mut el = Element::new(ns::intern(local), ns);
        let mut attrs = Attrs::new(raw_attrs);
        while let Some(attr) = attrs.next_attr()? {
            if declarations && attr.declares().is_some() {
                continue;
            }
            let key: Str = match attr.prefix() {
                None => ns::intern(attr.local()),
                Some("xml") => ns::intern(attr.name),
                Some(p) => {
                    let uri = self.lookup(p).ok_or_else(bad_prefix)?;
                    Cow::Owned(format!("{{{uri}}}{}", attr.local()))
                }
            };
            // Compared after resolution: `a:x` and `b:x` clash when a and b are
            // bound to the same namespace (Namespaces in XML §6.3).
            if el.attr(&key).is_some() {
                return Err(nwf("duplicate attribute"));
            }
            el.push_attr_unchecked(key, attr.unescaped()?.into_owned());
        }
        Ok(el)
    }
}

/// `part`, a piece of `base` that quick-xml cut at ASCII delimiters, as a `str`:
/// `base` is already validated, so slicing it is O(1) where `from_utf8` would
/// validate again. Falls back to validating when `part` is not inside `base`.
fn sub_str<'a>(base: &'a str, part: &'a [u8]) -> Result<&'a str, Fail> {
    let offset = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    match base.get(offset..offset.wrapping_add(part.len())) {
        // Live allocations are disjoint, so a match in address is the same bytes.
        Some(s) if s.as_ptr() == part.as_ptr() => Ok(s),
        _ => utf8(part),
    }
}

fn owned_len(s: &Str) -> usize {
    match s {
        Cow::Borrowed(_) => 0,
        Cow::Owned(o) => o.capacity(),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, Fail> {
    std::str::from_utf8(bytes).map_err(|_| nwf("invalid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::Cond as C;

    fn parser() -> Parser {
        let mut p = Parser::default();
        p.set_root(vec![
            Binding {
                prefix: "".into(),
                uri: ns::CLIENT.into(),
            },
            Binding {
                prefix: "stream".into(),
                uri: ns::STREAM.into(),
            },
        ]);
        p
    }

    fn parse(s: &str) -> Result<Element, C> {
        parser().parse(s.as_bytes()).map_err(|e| e.condition)
    }

    #[test]
    fn resolves_default_and_prefixed_namespaces() {
        let el = parse(
            "<iq type='get' xmlns:a='urn:a'><query xmlns='jabber:iq:roster'><item a:x='1'/></query><a:p/></iq>",
        )
        .unwrap();
        assert!(el.is("iq", ns::CLIENT));
        let q = el.get_child("query", ns::ROSTER).unwrap();
        let item = q.get_child("item", ns::ROSTER).unwrap();
        assert_eq!(item.attr("{urn:a}x"), Some("1"));
        assert!(el.has_child("p", "urn:a"));
        let features = parse("<stream:features/>").unwrap();
        assert!(features.is("features", ns::STREAM));
    }

    #[test]
    fn common_names_are_not_allocated() {
        let el = parse("<message type='chat'><body>x</body></message>").unwrap();
        assert!(matches!(el.attrs().next(), Some(("type", "chat"))));
        let nodes = el.nodes();
        assert!(matches!(&nodes[0], Node::Element(b) if b.text() == "x"));
    }

    #[test]
    fn text_pieces_merge() {
        let el = parse("<a>x&amp;<![CDATA[<y>]]>&#x7A;\r\n</a>").unwrap();
        assert_eq!(el.nodes(), &[Node::Text("x&<y>z\n".into())]);
    }

    #[test]
    fn namespace_errors() {
        assert_eq!(parse("<a:b/>"), Err(C::BadNamespacePrefix));
        assert_eq!(parse("<b a:x='1'/>"), Err(C::BadNamespacePrefix));
        assert_eq!(parse("<b xmlns:a='' />"), Err(C::NotWellFormed));
        assert_eq!(parse("<b xmlns:xml='urn:x'/>"), Err(C::NotWellFormed));
        assert_eq!(
            parse("<b xmlns:x='http://www.w3.org/XML/1998/namespace'/>"),
            Err(C::NotWellFormed)
        );
        assert_eq!(parse("<xmlns:b/>"), Err(C::NotWellFormed));
        assert_eq!(
            parse("<b xmlns:p='urn:x' xmlns:q='urn:x' p:a='1' q:a='2'/>"),
            Err(C::NotWellFormed)
        );
        assert_eq!(
            parse("<b xmlns='urn:x' xmlns='urn:y'/>"),
            Err(C::NotWellFormed)
        );
        let el = parse("<b xmlns='' xml:lang='en'/>").unwrap();
        assert_eq!(el.ns(), "");
        assert_eq!(el.attr("xml:lang"), Some("en"));
    }

    #[test]
    fn scopes_end_with_their_element() {
        assert_eq!(
            parse("<a><b xmlns:p='urn:p'/><p:c/></a>"),
            Err(C::BadNamespacePrefix)
        );
        let mut p = parser();
        assert!(p.parse(b"<a xmlns:p='urn:p'><p:b/></a>").is_ok());
        assert_eq!(
            p.parse(b"<p:b/>").map_err(|e| e.condition),
            Err(C::BadNamespacePrefix)
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "<a></b>",
            "<a x='1' x='2'/>",
            "<a x=1/>",
            "<a>&</a>",
            "<a>&#0;</a>",
            "<a>]]></a>",
            "<a x='<'/>",
            "<a><b></a>",
            "<a>\u{1}</a>",
            "<1a/>",
        ] {
            assert_eq!(parse(bad), Err(C::NotWellFormed), "{bad}");
        }
        assert_eq!(parse("<a>&nbsp;</a>"), Err(C::RestrictedXml));
        assert_eq!(parse("<a x='&nbsp;'/>"), Err(C::RestrictedXml));
    }
}
