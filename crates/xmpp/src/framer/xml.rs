//! Lexical rules of XML 1.0 and Namespaces in XML that quick-xml leaves to us:
//! which characters and names are legal, how references and attribute values are
//! unescaped, and how the attributes of a start tag are tokenised.
//!
//! Everything here works on already complete, bounded input (a framed stanza or
//! header), so nothing needs to be resumable.

use super::{Fail, nwf, restricted};
use std::borrow::Cow;

/// XML's `S` production.
#[inline]
pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Checks that `bytes` is UTF-8 made only of characters XML 1.0 allows
/// (§2.2 `Char`); RFC 6120 §11.6 makes anything else a `not-well-formed` stream.
pub(super) fn check_chars(bytes: &[u8]) -> Result<&str, Fail> {
    let s = std::str::from_utf8(bytes).map_err(|_| nwf("invalid UTF-8"))?;
    // Branch-free fold so the compiler can vectorise the common all-legal case.
    let control = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r')
    });
    if control {
        return Err(nwf("control character"));
    }
    // U+FFFE and U+FFFF are the only non-characters below U+10000 that UTF-8 can
    // encode and XML forbids; both are EF BF BE/BF. Surrogates cannot be valid UTF-8.
    for i in memchr::memchr_iter(0xEF, bytes) {
        if bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)) {
            return Err(nwf("U+FFFE or U+FFFF"));
        }
    }
    Ok(s)
}

/// XML 1.0 §2.2 `Char` for a single code point (char references may name any).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `NameStartChar` of XML 1.0 (5th ed.) §2.3, minus `:` (Namespaces: NCName).
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Classes of ASCII bytes in names: 2 may start an NCName, 1 may only follow.
const NAME_CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' {
            2
        } else if c.is_ascii_digit() || c == b'-' || c == b'.' {
            1
        } else {
            0
        };
        b += 1;
    }
    t
};

fn ascii_class(b: u8) -> u8 {
    NAME_CLASS.get(usize::from(b)).copied().unwrap_or(0)
}

/// A namespace-aware name without a colon (Namespaces in XML §3 `NCName`).
pub(super) fn is_ncname(s: &str) -> bool {
    let bytes = s.as_bytes();
    // Nearly every name on the wire is short ASCII: avoid char decoding for it.
    if bytes.is_ascii() {
        return match bytes.split_first() {
            Some((&first, rest)) => {
                ascii_class(first) == 2 && rest.iter().all(|&b| ascii_class(b) != 0)
            }
            None => false,
        };
    }
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// Splits a `QName` into optional prefix and local part, validating both.
pub(super) fn split_qname(q: &str) -> Result<(Option<&str>, &str), Fail> {
    let bytes = q.as_bytes();
    let mut colon = None;
    // One pass for the common all-ASCII name; anything else takes the general path.
    for (i, &b) in bytes.iter().enumerate() {
        let part_start = colon.map_or(0, |c| c + 1);
        let ok = match b {
            b':' if colon.is_none() && i > 0 => {
                colon = Some(i);
                true
            }
            0x80.. => return split_qname_general(q),
            _ if i == part_start => ascii_class(b) == 2,
            _ => ascii_class(b) != 0,
        };
        if !ok {
            return Err(nwf("invalid name"));
        }
    }
    match colon {
        None if !q.is_empty() => Ok((None, q)),
        Some(c) if c + 1 < q.len() => Ok((q.get(..c), q.get(c + 1..).unwrap_or_default())),
        _ => Err(nwf("invalid name")),
    }
}

fn split_qname_general(q: &str) -> Result<(Option<&str>, &str), Fail> {
    match q.split_once(':') {
        None if is_ncname(q) => Ok((None, q)),
        Some((p, l)) if is_ncname(p) && is_ncname(l) => Ok((Some(p), l)),
        _ => Err(nwf("invalid name")),
    }
}

/// Resolves the body of a reference (`lt` for `&lt;`, `#x41` for `&#x41;`).
/// RFC 6120 §11.1 forbids every entity but the five predefined ones: naming any
/// other is `restricted-xml`, while a malformed reference is `not-well-formed`.
pub(super) fn resolve_ref(name: &str) -> Result<char, Fail> {
    Ok(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            if let Some(num) = name.strip_prefix('#') {
                let (digits, radix) = match num.strip_prefix('x') {
                    Some(hex) => (hex, 16),
                    None => (num, 10),
                };
                // from_str_radix would accept a sign; XML allows digits only.
                if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
                    return Err(nwf("malformed character reference"));
                }
                return u32::from_str_radix(digits, radix)
                    .ok()
                    .and_then(char::from_u32)
                    .filter(|&c| is_xml_char(c))
                    .ok_or_else(|| nwf("character reference to an illegal character"));
            }
            if is_ncname(name) {
                return Err(restricted("entity references other than the predefined"));
            }
            return Err(nwf("malformed entity reference"));
        }
    })
}

/// Appends character data (no references inside) to `out`, applying XML §2.11
/// line-end normalisation and rejecting the literal `]]>` that §2.4 forbids.
pub(super) fn push_text(raw: &str, out: &mut String) -> Result<(), Fail> {
    let bytes = raw.as_bytes();
    for i in memchr::memchr_iter(b'>', bytes) {
        if i >= 2 && bytes.get(i - 2..i) == Some(b"]]") {
            return Err(nwf("']]>' in character data"));
        }
    }
    push_normalised_newlines(raw, out);
    Ok(())
}

/// XML §2.11: `\r\n` and lone `\r` become `\n`.
pub(super) fn push_normalised_newlines(raw: &str, out: &mut String) {
    let mut rest = raw;
    while let Some(i) = memchr::memchr(b'\r', rest.as_bytes()) {
        out.push_str(rest.get(..i).unwrap_or_default());
        out.push('\n');
        let skip = if rest.as_bytes().get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = rest.get(i + skip..).unwrap_or_default();
    }
    out.push_str(rest);
}

/// Unescapes an attribute value: references resolved and literal whitespace
/// normalised to spaces (XML §3.3.3, CDATA-type attributes). A literal `<` is
/// not-well-formed (§3.1 `AttValue`).
pub(super) fn unescape_attr(raw: &str) -> Result<Cow<'_, str>, Fail> {
    let bytes = raw.as_bytes();
    let special = |b: u8| matches!(b, b'&' | b'<' | b'\t' | b'\n' | b'\r');
    let Some(first) = bytes.iter().position(|&b| special(b)) else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(raw.get(..first).unwrap_or_default());
    let mut i = first;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'&' => {
                let end = memchr::memchr(b';', bytes.get(i..).unwrap_or_default())
                    .ok_or_else(|| nwf("unterminated reference"))?;
                let name = raw
                    .get(i + 1..i + end)
                    .ok_or_else(|| nwf("bad reference"))?;
                out.push(resolve_ref(name)?);
                i += end + 1;
            }
            b'<' => return Err(nwf("'<' in attribute value")),
            b'\r' => {
                out.push(' ');
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
            }
            b'\t' | b'\n' => {
                out.push(' ');
                i += 1;
            }
            _ => {
                let next = bytes
                    .get(i..)
                    .and_then(|r| r.iter().position(|&b| special(b)))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(raw.get(i..next).ok_or_else(|| nwf("bad attribute"))?);
                i = next;
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// One attribute of a start tag, its name already validated as a `QName`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Attr<'a> {
    pub name: &'a str,
    /// The raw value, still escaped.
    pub value: &'a str,
    /// Index of the prefix's colon in `name`; 0 when there is none (a name
    /// cannot start with a colon).
    colon: usize,
    /// The value contains a reference or white space to normalise.
    pub escaped: bool,
}

impl<'a> Attr<'a> {
    pub(super) fn prefix(&self) -> Option<&'a str> {
        match self.colon {
            0 => None,
            c => self.name.get(..c),
        }
    }

    pub(super) fn local(&self) -> &'a str {
        match self.colon {
            0 => self.name,
            c => self.name.get(c + 1..).unwrap_or_default(),
        }
    }

    /// The prefix a namespace declaration declares (`""` for the default), if
    /// this attribute is one.
    pub(super) fn declares(&self) -> Option<&'a str> {
        match (self.prefix(), self.local()) {
            (None, "xmlns") => Some(""),
            (Some("xmlns"), p) => Some(p),
            _ => None,
        }
    }

    /// The value with references resolved and white space normalised.
    pub(super) fn unescaped(&self) -> Result<Cow<'a, str>, Fail> {
        if self.escaped {
            unescape_attr(self.value)
        } else {
            Ok(Cow::Borrowed(self.value))
        }
    }
}

/// Index of the first `needle` in `hay`. Most searches here end within a few
/// bytes, where a plain loop beats a vector search's setup; longer ones go to
/// memchr so long values and text stay fast.
#[inline]
pub(super) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    let (head, rest) = hay.split_at(hay.len().min(SHORT));
    match head.iter().position(|&b| b == needle) {
        Some(i) => Some(i),
        None => memchr::memchr(needle, rest).map(|i| i + SHORT),
    }
}

/// Tokeniser for the attributes of a start tag (the part after the element name,
/// without `<`, `>` or a trailing `/`).
///
/// Hand-written byte loops rather than vector searches: names and values are
/// a few bytes long, and the same pass validates the name and notes whether the
/// value needs unescaping.
pub(super) struct Attrs<'a> {
    rest: &'a str,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(rest: &'a str) -> Self {
        Attrs { rest }
    }

    /// The next attribute, or `None` at the end of the tag.
    pub(super) fn next_attr(&mut self) -> Result<Option<Attr<'a>>, Fail> {
        let rest = self.rest;
        let bytes = rest.as_bytes();
        let name_start = skip_ws(bytes, 0);
        if name_start == bytes.len() {
            return Ok(None);
        }
        // XML §3.1 requires white space before every attribute.
        if name_start == 0 {
            return Err(nwf("missing space between attributes"));
        }
        let name_len = bytes
            .get(name_start..)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == b'=' || is_ws(b))
            .ok_or_else(|| nwf("attribute without value"))?;
        let name_end = name_start + name_len;
        let eq = skip_ws(bytes, name_end);
        if bytes.get(eq) != Some(&b'=') {
            return Err(nwf("attribute without value"));
        }
        let open = skip_ws(bytes, eq + 1);
        let quote = match bytes.get(open) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(nwf("unquoted attribute value")),
        };
        let value_start = open + 1;
        let value_len = find_byte(quote, bytes.get(value_start..).unwrap_or_default())
            .ok_or_else(|| nwf("unterminated attribute value"))?;
        let value_end = value_start + value_len;
        // Every cut is at an ASCII byte, so these are char boundaries.
        let name = rest.get(name_start..name_end).unwrap_or_default();
        let value = rest.get(value_start..value_end).unwrap_or_default();
        let escaped = value.bytes().fold(false, |acc, b| {
            acc | matches!(b, b'&' | b'<' | b'\t' | b'\n' | b'\r')
        });
        self.rest = rest.get(value_end + 1..).unwrap_or_default();
        Ok(Some(Attr {
            name,
            value,
            colon: qname_colon(name)?,
            escaped,
        }))
    }
}

fn skip_ws(bytes: &[u8], from: usize) -> usize {
    from + bytes
        .get(from..)
        .unwrap_or_default()
        .iter()
        .position(|&b| !is_ws(b))
        .unwrap_or(bytes.len().saturating_sub(from))
}

/// Validates a `QName` and returns the index of its colon, 0 for none.
fn qname_colon(name: &str) -> Result<usize, Fail> {
    // The attributes nearly every stanza carries, without validating them again.
    match name {
        "to" | "from" | "id" | "type" | "xmlns" | "jid" | "name" | "node" | "ver" => {
            return Ok(0);
        }
        "xml:lang" => return Ok(3),
        _ => {}
    }
    let bytes = name.as_bytes();
    let valid_ascii = |b: &[u8]| {
        b.first().is_some_and(|&f| ascii_class(f) == 2) && b.iter().all(|&c| ascii_class(c) != 0)
    };
    match bytes.iter().position(|&b| b == b':') {
        _ if !bytes.is_ascii() => {
            split_qname_general(name)?;
            Ok(name.find(':').unwrap_or(0))
        }
        None if valid_ascii(bytes) => Ok(0),
        Some(c)
            if valid_ascii(bytes.get(..c).unwrap_or_default())
                && valid_ascii(bytes.get(c + 1..).unwrap_or_default()) =>
        {
            Ok(c)
        }
        _ => Err(nwf("invalid attribute name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::Cond as C;

    fn cond<T: std::fmt::Debug>(r: Result<T, Fail>) -> C {
        r.unwrap_err().condition
    }

    #[test]
    fn xml_1_0_2_2_chars() {
        assert!(check_chars("a\tb\r\n€😀".as_bytes()).is_ok());
        assert_eq!(cond(check_chars(b"a\x00")), C::NotWellFormed);
        assert_eq!(cond(check_chars(b"\x1b")), C::NotWellFormed);
        assert_eq!(cond(check_chars("\u{FFFE}".as_bytes())), C::NotWellFormed);
        assert_eq!(cond(check_chars("\u{FFFF}".as_bytes())), C::NotWellFormed);
        assert!(check_chars("\u{FFFD}\u{EFBF}".as_bytes()).is_ok());
        assert_eq!(cond(check_chars(b"\xff")), C::NotWellFormed);
        assert_eq!(cond(check_chars(b"\xed\xa0\x80")), C::NotWellFormed);
    }

    #[test]
    fn names() {
        assert!(is_ncname("message"));
        assert!(is_ncname("origin-id"));
        assert!(is_ncname("_x.1"));
        assert!(is_ncname("名前"));
        assert!(!is_ncname(""));
        assert!(!is_ncname("1a"));
        assert!(!is_ncname("-a"));
        assert!(!is_ncname("a b"));
        assert!(!is_ncname("a/"));
        assert_eq!(
            split_qname("stream:stream").unwrap(),
            (Some("stream"), "stream")
        );
        assert_eq!(split_qname("body").unwrap(), (None, "body"));
        assert!(split_qname("a:b:c").is_err());
        assert!(split_qname(":a").is_err());
        assert!(split_qname("a:").is_err());
        assert!(split_qname("").is_err());
        assert!(split_qname("a:1b").is_err());
        assert!(split_qname("a:b c").is_err());
        assert_eq!(split_qname("a-b:c.d").unwrap(), (Some("a-b"), "c.d"));
        assert_eq!(split_qname("é:名前").unwrap(), (Some("é"), "名前"));
        assert!(split_qname("é:1").is_err());
    }

    #[test]
    fn rfc6120_11_1_only_predefined_entities() {
        assert_eq!(resolve_ref("lt").unwrap(), '<');
        assert_eq!(resolve_ref("quot").unwrap(), '"');
        assert_eq!(resolve_ref("#65").unwrap(), 'A');
        assert_eq!(resolve_ref("#x1F600").unwrap(), '😀');
        assert_eq!(resolve_ref("#x1f600").unwrap(), '😀');
        assert_eq!(cond(resolve_ref("nbsp")), C::RestrictedXml);
        assert_eq!(cond(resolve_ref("#0")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#x0")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#xD800")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#xFFFE")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#x110000")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#99999999999999999999")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#X41")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#+65")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("#")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("")), C::NotWellFormed);
        assert_eq!(cond(resolve_ref("a b")), C::NotWellFormed);
    }

    #[test]
    fn xml_3_3_3_attribute_value_normalisation() {
        assert_eq!(unescape_attr("plain").unwrap(), "plain");
        assert_eq!(
            unescape_attr("a&amp;b&#x9;c\td\r\ne\rf\ng").unwrap(),
            "a&b\tc d e f g"
        );
        assert_eq!(unescape_attr("&lt;&gt;&apos;&quot;").unwrap(), "<>'\"");
        assert_eq!(cond(unescape_attr("a<b")), C::NotWellFormed);
        assert_eq!(cond(unescape_attr("a&b")), C::NotWellFormed);
        assert_eq!(cond(unescape_attr("&foo;")), C::RestrictedXml);
    }

    #[test]
    fn xml_2_11_line_ends_and_2_4_cdata_end_in_text() {
        let mut s = String::new();
        push_text("a\r\nb\rc\n", &mut s).unwrap();
        assert_eq!(s, "a\nb\nc\n");
        assert_eq!(cond(push_text("x]]>y", &mut s)), C::NotWellFormed);
        assert!(push_text("x]>y]]", &mut s).is_ok());
    }

    #[test]
    fn find_byte_short_and_long() {
        for len in [0, 1, 15, 16, 17, 40, 100] {
            let mut hay = vec![b'a'; len];
            assert_eq!(find_byte(b'x', &hay), None);
            if len > 0 {
                hay[len - 1] = b'x';
                assert_eq!(find_byte(b'x', &hay), Some(len - 1));
            }
        }
    }

    #[test]
    fn attribute_tokens() {
        let mut a = Attrs::new(" a='1' p:b = \"2'>\"\n c='&amp;' 名:前='x'");
        let next = |a: &mut Attrs<'static>| a.next_attr().unwrap().unwrap();
        let x = next(&mut a);
        assert_eq!(
            (x.name, x.prefix(), x.local(), x.value, x.escaped),
            ("a", None, "a", "1", false)
        );
        let x = next(&mut a);
        assert_eq!(
            (x.name, x.prefix(), x.local(), x.value),
            ("p:b", Some("p"), "b", "2'>")
        );
        let x = next(&mut a);
        assert_eq!(
            (x.value, x.escaped, x.unescaped().unwrap()),
            ("&amp;", true, "&".into())
        );
        let x = next(&mut a);
        assert_eq!((x.prefix(), x.local()), (Some("名"), "前"));
        assert_eq!(a.next_attr().unwrap(), None);
        let decl = Attrs::new(" xmlns:p='u' xmlns='v'");
        let mut decl = decl;
        assert_eq!(next(&mut decl).declares(), Some("p"));
        assert_eq!(next(&mut decl).declares(), Some(""));
        for bad in [
            " a='1'b='2'",
            " a",
            " a=1",
            " a='1",
            " a b='1'",
            "a='1'",
            " 1a='1'",
            " a:='1'",
            " :a='1'",
            " a:b:c='1'",
            " a:1='1'",
            " é:1='1'",
            " <a='1'",
        ] {
            let mut a = Attrs::new(bad);
            let r = (|| {
                while a.next_attr()?.is_some() {}
                Ok::<_, Fail>(())
            })();
            assert_eq!(cond(r), C::NotWellFormed, "{bad}");
        }
    }
}
