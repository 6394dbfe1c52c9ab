//! The element tree: what a parsed stanza (or any XML fragment on the stream) is.
//!
//! Names are local names; every element carries its resolved namespace URI, so
//! prefixes used on the wire never leak into protocol logic. Attribute names are
//! local names too, except `xml:lang`-style attributes in the XML namespace, which
//! keep their `xml:` prefix, and attributes in other namespaces, which are stored in
//! Clark notation (`{uri}local`). `xmlns` declarations are not attributes.

use crate::ns::Str;
use std::borrow::Cow;

/// A child of an element: another element or character data (already unescaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element with its resolved namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: Str,
    ns: Str,
    attrs: Vec<(Str, String)>,
    children: Vec<Node>,
}

impl Element {
    /// A new, empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<Str>, ns: impl Into<Str>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets an attribute.
    #[must_use]
    pub fn with_attr(mut self, name: impl Into<Str>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: appends a child element.
    #[must_use]
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends character data.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True when this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// Sets (replacing) an attribute.
    pub fn set_attr(&mut self, name: impl Into<Str>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Appends an attribute without checking for a duplicate (the parser has already
    /// rejected duplicates).
    pub(crate) fn push_attr_unchecked(&mut self, name: Str, value: String) {
        self.attrs.push((name, value));
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(i).1)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    pub fn nodes_mut(&mut self) -> &mut Vec<Node> {
        &mut self.children
    }

    /// Child elements, in order, skipping text.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|e| e.is(name, ns))
    }

    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Removes and returns the first child element `name` in `ns`.
    pub fn remove_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let i = self
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(name, ns)))?;
        match self.children.remove(i) {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        }
    }

    pub fn append_child(&mut self, child: Element) -> &mut Element {
        self.children.push(Node::Element(child));
        match self.children.last_mut() {
            Some(Node::Element(e)) => e,
            // Invariant: the element was pushed on the line above.
            _ => unreachable!("append_child just pushed an element"),
        }
    }

    pub fn append_text(&mut self, text: impl Into<String>) {
        self.children.push(Node::Text(text.into()));
    }

    /// The concatenation of this element's direct text children.
    pub fn text(&self) -> Cow<'_, str> {
        let mut texts = self.children.iter().filter_map(|n| match n {
            Node::Text(t) => Some(t.as_str()),
            Node::Element(_) => None,
        });
        let Some(first) = texts.next() else {
            return Cow::Borrowed("");
        };
        match texts.next() {
            None => Cow::Borrowed(first),
            Some(second) => {
                let mut s = String::with_capacity(first.len() + second.len());
                s.push_str(first);
                s.push_str(second);
                texts.for_each(|t| s.push_str(t));
                Cow::Owned(s)
            }
        }
    }

    /// Text of the first child element `name` in `ns`, if that child exists.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<Cow<'_, str>> {
        self.get_child(name, ns).map(Element::text)
    }

    /// Removes every child node.
    pub fn clear_children(&mut self) {
        self.children.clear();
    }

    /// Consumes the element, returning its children.
    pub fn into_nodes(self) -> Vec<Node> {
        self.children
    }

    /// Serialises this element (see [`crate::writer`]) assuming the parent's default
    /// namespace is `parent_ns`.
    pub fn to_bytes(&self, parent_ns: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        crate::writer::write_element(self, parent_ns, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_accessors() {
        let el = Element::new("message", crate::ns::CLIENT)
            .with_attr("type", "chat")
            .with_child(Element::new("body", crate::ns::CLIENT).with_text("hi"))
            .with_child(Element::new("x", "urn:x"));
        assert_eq!(el.attr("type"), Some("chat"));
        assert_eq!(
            el.child_text("body", crate::ns::CLIENT).as_deref(),
            Some("hi")
        );
        assert!(el.has_child("x", "urn:x"));
        assert!(!el.has_child("x", "urn:y"));
        assert_eq!(el.children().count(), 2);
    }

    #[test]
    fn set_attr_replaces() {
        let mut el = Element::new("a", "").with_attr("k", "1");
        el.set_attr("k", "2");
        assert_eq!(el.attrs().count(), 1);
        assert_eq!(el.attr("k"), Some("2"));
        assert_eq!(el.remove_attr("k").as_deref(), Some("2"));
        assert_eq!(el.attr("k"), None);
    }

    #[test]
    fn text_concatenates_direct_text() {
        let el = Element::new("a", "")
            .with_text("x")
            .with_child(Element::new("b", "").with_text("no"))
            .with_text("y");
        assert_eq!(el.text(), "xy");
    }
}
