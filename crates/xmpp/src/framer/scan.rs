//! The resumable boundary scanner: finds where the stream header, each top-level
//! element and the stream's end tag stop, without building anything.
//!
//! It keeps its position and state between calls, so a stanza that arrives one
//! byte at a time is still scanned once (linear), and it enforces the size and
//! depth limits while the element is still incomplete, so an oversized stanza is
//! rejected before it is ever buffered whole. It only tracks what framing needs:
//! quotes inside tags (`>` is legal in attribute values), `/>`, end tags, CDATA
//! sections (which may contain `<` and `>`) and depth. It rejects early what
//! RFC 6120 §11.1 forbids (comments, processing instructions, DTDs); everything
//! else about well-formedness is checked when the complete element is parsed.

use super::xml::find_byte;
use super::{Fail, bad_format, nwf, policy, restricted};
use std::ops::Range;

/// What the bytes before the stream header may contain differs from what the
/// stream body may; the scanner is told which it is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Header,
    Stream,
}

/// A boundary found by [`Scanner::scan`]; ranges index the scanned buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// The buffer ends inside (or before) the next unit.
    More,
    /// Header mode: a `<?...?>` (the framer accepts only the XML declaration).
    Pi(Range<usize>),
    /// Header mode: the stream's start tag; `empty` for `<stream:stream/>`.
    HeaderTag { range: Range<usize>, empty: bool },
    /// Stream mode: a complete top-level element.
    Element(Range<usize>),
    /// Stream mode: an end tag at depth 0 (the end of the stream, if it matches).
    EndTag(Range<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Character data, or white space between top-level units at depth 0.
    Text,
    /// Just after `<`.
    Lt,
    /// Inside a start tag; `quote` is the open quote byte, or 0 outside values.
    StartTag {
        quote: u8,
    },
    EndTag,
    /// After `<!`: `matched` bytes of `pattern` seen so far.
    Bang {
        pattern: &'static [u8],
        matched: u8,
    },
    CData {
        brackets: u8,
    },
    Pi,
}

const COMMENT: &[u8] = b"--";
const CDATA: &[u8] = b"[CDATA[";
const DOCTYPE: &[u8] = b"DOCTYPE";

#[derive(Debug)]
pub(super) struct Scanner {
    mode: Mode,
    state: State,
    /// Absolute index of the next byte to look at.
    cursor: usize,
    /// Nesting depth in stream mode; the stanza itself is depth 1.
    depth: usize,
    /// Where the unit being scanned began (its `<`); limits count from here.
    anchor: Option<usize>,
    /// Start of the current tag or section, to report its range.
    markup: usize,
    /// Name (start, length) of each open element of the current unit, so a
    /// mismatched end tag fails at once instead of leaving the element open until
    /// it hits the size limit.
    open: Vec<(usize, usize)>,
}

/// Per-call limits, taken from the framer's current [`super::Limits`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    pub max_bytes: usize,
    pub max_depth: usize,
}

enum Step {
    /// State changed: go round again (the window may have moved).
    Continue,
    /// Ran out of bytes inside the window.
    Exhausted,
    Done(Found),
}

impl Scanner {
    pub(super) fn new(mode: Mode, at: usize) -> Self {
        Scanner {
            mode,
            state: State::Text,
            cursor: at,
            depth: 0,
            anchor: None,
            markup: at,
            open: Vec::new(),
        }
    }

    /// The buffer dropped its first `n` bytes (all before `cursor`).
    pub(super) fn shift(&mut self, n: usize) {
        self.cursor = self.cursor.saturating_sub(n);
        self.markup = self.markup.saturating_sub(n);
        self.anchor = self.anchor.map(|a| a.saturating_sub(n));
        for (start, _) in &mut self.open {
            *start = start.saturating_sub(n);
        }
    }

    /// Heap bytes held.
    pub(super) fn allocated(&self) -> usize {
        self.open.capacity() * size_of::<(usize, usize)>()
    }

    /// Header mode carries its anchor from the declaration to the start tag so the
    /// cap covers the whole prolog; stream mode begins afresh.
    pub(super) fn enter_stream(&mut self) {
        self.mode = Mode::Stream;
        self.state = State::Text;
        self.depth = 0;
        self.anchor = None;
    }

    /// The position before which every byte is consumed, when the scanner is
    /// between units (only white space skipped since the last one), so the framer
    /// can drop those bytes. Never inside a unit: its limit counts from its start.
    pub(super) fn rest_point(&self) -> Option<usize> {
        (self.state == State::Text && self.depth == 0 && self.anchor.is_none())
            .then_some(self.cursor)
    }

    /// Scans `buf` from where the last call stopped.
    pub(super) fn scan(&mut self, buf: &[u8], bounds: Bounds) -> Result<Found, Fail> {
        'window: loop {
            // The window only moves when a unit starts, so it is computed once per
            // unit rather than once per state change.
            let anchor = self.anchor;
            let window_end = match anchor {
                Some(a) => buf.len().min(a.saturating_add(bounds.max_bytes)),
                None => buf.len(),
            };
            let hay = buf.get(..window_end).unwrap_or(buf);
            let step = loop {
                match self.step(hay, bounds)? {
                    Step::Continue if self.anchor == anchor => {}
                    Step::Continue => continue 'window,
                    step => break step,
                }
            };
            match step {
                Step::Continue => {}
                Step::Done(found) => return Ok(found),
                Step::Exhausted if window_end < buf.len() => {
                    return Err(policy(match self.mode {
                        Mode::Header => "stream header too large",
                        Mode::Stream => "stanza too large",
                    }));
                }
                Step::Exhausted => return Ok(Found::More),
            }
        }
    }

    #[inline(always)]
    fn step(&mut self, hay: &[u8], bounds: Bounds) -> Result<Step, Fail> {
        match self.state {
            State::Text if self.depth == 0 => self.top_level_text(hay),
            State::Text => Ok(match find_byte(b'<', tail(hay, self.cursor)) {
                Some(i) => {
                    self.markup = self.cursor + i;
                    self.cursor += i + 1;
                    self.state = State::Lt;
                    Step::Continue
                }
                None => self.exhaust(hay),
            }),
            State::Lt => self.after_lt(hay, bounds),
            State::StartTag { quote } => self.start_tag(hay, quote),
            State::EndTag => match find_byte(b'>', tail(hay, self.cursor)) {
                Some(i) => {
                    self.cursor += i + 1;
                    self.state = State::Text;
                    let range = self.markup..self.cursor;
                    if self.depth == 0 {
                        self.anchor = None;
                        return Ok(Step::Done(Found::EndTag(range)));
                    }
                    let name = hay
                        .get(range.start + 2..range.end - 1)
                        .unwrap_or_default()
                        .trim_ascii_end();
                    let open = self.open.pop().and_then(|(s, n)| hay.get(s..s + n));
                    if open != Some(name) {
                        return Err(nwf("mismatched end tag"));
                    }
                    Ok(self.close_element())
                }
                None => Ok(self.exhaust(hay)),
            },
            State::Bang { pattern, matched } => self.bang(hay, pattern, matched),
            State::CData { brackets } => Ok(self.cdata(hay, brackets)),
            State::Pi => Ok(self.pi(hay)),
        }
    }

    #[inline(always)]
    fn exhaust(&mut self, hay: &[u8]) -> Step {
        self.cursor = self.cursor.max(hay.len());
        Step::Exhausted
    }

    /// Between units only white space may appear (RFC 6120 §4.6.1 keepalives);
    /// other character data is `bad-format` in the stream, `not-well-formed`
    /// before the root element.
    #[inline(always)]
    fn top_level_text(&mut self, hay: &[u8]) -> Result<Step, Fail> {
        while let Some(&b) = hay.get(self.cursor) {
            if b == b'<' {
                self.markup = self.cursor;
                self.anchor.get_or_insert(self.cursor);
                self.cursor += 1;
                self.state = State::Lt;
                return Ok(Step::Continue);
            }
            if !super::xml::is_ws(b) {
                return Err(match self.mode {
                    Mode::Header => nwf("text before the stream header"),
                    Mode::Stream => bad_format("text between stanzas"),
                });
            }
            self.cursor += 1;
        }
        Ok(Step::Exhausted)
    }

    #[inline(always)]
    fn after_lt(&mut self, hay: &[u8], bounds: Bounds) -> Result<Step, Fail> {
        let Some(&b) = hay.get(self.cursor) else {
            return Ok(Step::Exhausted);
        };
        self.cursor += 1;
        self.state = match b {
            b'/' if self.mode == Mode::Header => return Err(nwf("end tag before stream header")),
            b'/' => State::EndTag,
            b'?' if self.mode == Mode::Header => State::Pi,
            b'?' => return Err(restricted("processing instructions are not allowed")),
            b'!' => match hay.get(self.cursor) {
                None => {
                    // Undo so the pattern is chosen when the next byte arrives.
                    self.cursor -= 1;
                    return Ok(Step::Exhausted);
                }
                Some(b'-') => State::Bang {
                    pattern: COMMENT,
                    matched: 0,
                },
                Some(b'[') => State::Bang {
                    pattern: CDATA,
                    matched: 0,
                },
                Some(b'D') => State::Bang {
                    pattern: DOCTYPE,
                    matched: 0,
                },
                Some(_) => return Err(nwf("malformed markup declaration")),
            },
            // A name must follow; rejecting anything else here stops `<>` or `< a`
            // from being framed as an element that can never be parsed.
            b if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                if self.mode == Mode::Stream {
                    self.depth += 1;
                    if self.depth > bounds.max_depth {
                        return Err(policy("elements nested too deeply"));
                    }
                }
                State::StartTag { quote: 0 }
            }
            _ => return Err(nwf("malformed tag")),
        };
        Ok(Step::Continue)
    }

    #[inline(always)]
    fn start_tag(&mut self, hay: &[u8], mut quote: u8) -> Result<Step, Fail> {
        'tag: loop {
            if quote != 0 {
                match find_byte(quote, tail(hay, self.cursor)) {
                    Some(i) => self.cursor += i + 1,
                    None => {
                        self.state = State::StartTag { quote };
                        return Ok(self.exhaust(hay));
                    }
                }
            }
            // Between values there are only a few bytes (` id=`): a plain loop
            // beats setting up a vector search for each gap.
            loop {
                let Some(&b) = hay.get(self.cursor) else {
                    self.state = State::StartTag { quote: 0 };
                    return Ok(Step::Exhausted);
                };
                self.cursor += 1;
                match b {
                    b'>' => break 'tag,
                    b'\'' | b'"' => {
                        quote = b;
                        continue 'tag;
                    }
                    _ => {}
                }
            }
        }
        self.state = State::Text;
        // Outside quotes, so a `/` just before `>` cannot be inside a value.
        let empty = self.cursor >= 2 && hay.get(self.cursor - 2) == Some(&b'/');
        let range = self.markup..self.cursor;
        if self.mode == Mode::Header {
            return Ok(Step::Done(Found::HeaderTag { range, empty }));
        }
        if empty {
            return Ok(self.close_element());
        }
        let name_start = range.start + 1;
        let name_len = tail(hay, name_start)
            .iter()
            .position(|&b| super::xml::is_ws(b) || b == b'>' || b == b'/')
            .unwrap_or(0);
        self.open.push((name_start, name_len));
        Ok(Step::Continue)
    }

    #[inline(always)]
    fn close_element(&mut self) -> Step {
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            self.open.clear();
            if self.open.capacity() > 16 {
                self.open.shrink_to(16);
            }
            let start = self.anchor.take().unwrap_or(self.markup);
            return Step::Done(Found::Element(start..self.cursor));
        }
        Step::Continue
    }

    #[inline(always)]
    fn bang(&mut self, hay: &[u8], pattern: &'static [u8], mut matched: u8) -> Result<Step, Fail> {
        while let Some(&want) = pattern.get(usize::from(matched)) {
            match hay.get(self.cursor) {
                None => {
                    self.state = State::Bang { pattern, matched };
                    return Ok(Step::Exhausted);
                }
                Some(&b) if b == want => {
                    matched += 1;
                    self.cursor += 1;
                }
                Some(_) => return Err(nwf("malformed markup declaration")),
            }
        }
        if pattern == COMMENT {
            return Err(restricted("comments are not allowed"));
        }
        if pattern == DOCTYPE {
            return Err(restricted("document type declarations are not allowed"));
        }
        if self.depth == 0 {
            return Err(match self.mode {
                Mode::Header => nwf("CDATA before the stream header"),
                Mode::Stream => bad_format("CDATA between stanzas"),
            });
        }
        self.state = State::CData { brackets: 0 };
        Ok(Step::Continue)
    }

    /// Looks for `]]>`, remembering trailing `]`s so a split terminator is found.
    #[inline(always)]
    fn cdata(&mut self, hay: &[u8], mut brackets: u8) -> Step {
        loop {
            match hay.get(self.cursor) {
                None => {
                    self.state = State::CData { brackets };
                    return Step::Exhausted;
                }
                Some(b'>') if brackets >= 2 => {
                    self.cursor += 1;
                    self.state = State::Text;
                    return Step::Continue;
                }
                Some(b']') => {
                    brackets = (brackets + 1).min(2);
                    self.cursor += 1;
                }
                Some(_) => {
                    brackets = 0;
                    match memchr::memchr(b']', tail(hay, self.cursor)) {
                        Some(i) => self.cursor += i,
                        None => {
                            self.state = State::CData { brackets };
                            return self.exhaust(hay);
                        }
                    }
                }
            }
        }
    }

    /// Finds `?>` ending a processing instruction (header mode only).
    #[inline(always)]
    fn pi(&mut self, hay: &[u8]) -> Step {
        // The `?` of `<?` itself must not count as the terminator's.
        let body_start = self.markup + 2;
        loop {
            match memchr::memchr(b'>', tail(hay, self.cursor)) {
                None => return self.exhaust(hay),
                Some(i) => {
                    let at = self.cursor + i;
                    self.cursor = at + 1;
                    if at > body_start && hay.get(at - 1) == Some(&b'?') {
                        self.state = State::Text;
                        return Step::Done(Found::Pi(self.markup..self.cursor));
                    }
                }
            }
        }
    }
}

fn tail(hay: &[u8], from: usize) -> &[u8] {
    hay.get(from..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::Cond as C;

    const B: Bounds = Bounds {
        max_bytes: 1000,
        max_depth: 4,
    };

    fn stream_scan(input: &[u8]) -> Vec<Result<Found, C>> {
        let mut s = Scanner::new(Mode::Stream, 0);
        let mut out = Vec::new();
        loop {
            match s.scan(input, B) {
                Ok(Found::More) => return out,
                Ok(f) => out.push(Ok(f)),
                Err(e) => {
                    out.push(Err(e.condition));
                    return out;
                }
            }
        }
    }

    #[test]
    fn frames_top_level_elements() {
        let input = b" <a x='>'><b/><![CDATA[</a>]]]></a>\n<c/></stream:stream>";
        assert_eq!(
            stream_scan(input),
            vec![
                Ok(Found::Element(1..35)),
                Ok(Found::Element(36..40)),
                Ok(Found::EndTag(40..56)),
            ]
        );
    }

    #[test]
    fn rfc6120_11_1_restrictions_in_the_stream() {
        assert_eq!(
            stream_scan(b"<a><!-- x --></a>"),
            vec![Err(C::RestrictedXml)]
        );
        assert_eq!(stream_scan(b"<a><?pi?></a>"), vec![Err(C::RestrictedXml)]);
        assert_eq!(stream_scan(b"<!DOCTYPE a>"), vec![Err(C::RestrictedXml)]);
        assert_eq!(stream_scan(b"<a><!-x></a>"), vec![Err(C::NotWellFormed)]);
        assert_eq!(stream_scan(b"x"), vec![Err(C::BadFormat)]);
        assert_eq!(stream_scan(b"<![CDATA[ ]]>"), vec![Err(C::BadFormat)]);
        assert_eq!(stream_scan(b"<>"), vec![Err(C::NotWellFormed)]);
    }

    #[test]
    fn mismatched_end_tags_fail_early() {
        assert_eq!(stream_scan(b"<a><b></a>"), vec![Err(C::NotWellFormed)]);
        assert_eq!(stream_scan(b"<a><b></bb>"), vec![Err(C::NotWellFormed)]);
        assert_eq!(
            stream_scan(b"<a x='1'><b\n/><c></c ></a\t>"),
            vec![Ok(Found::Element(0..27))]
        );
    }

    #[test]
    fn depth_limit_counts_the_stanza_as_one() {
        assert_eq!(stream_scan(b"<a><b><c><d/></c></b></a>").len(), 1);
        assert_eq!(
            stream_scan(b"<a><b><c><d><e/></d></c></b></a>"),
            vec![Err(C::PolicyViolation)]
        );
    }

    #[test]
    fn size_limit_is_exact() {
        let bounds = Bounds {
            max_bytes: 8,
            max_depth: 4,
        };
        let mut s = Scanner::new(Mode::Stream, 0);
        assert_eq!(s.scan(b"<a>12</a", bounds), Ok(Found::More));
        let mut s = Scanner::new(Mode::Stream, 0);
        assert_eq!(s.scan(b"<a>1</a>", bounds), Ok(Found::Element(0..8)));
        let mut s = Scanner::new(Mode::Stream, 0);
        assert_eq!(
            s.scan(b"<a>12</a>", bounds).map_err(|e| e.condition),
            Err(C::PolicyViolation)
        );
    }

    #[test]
    fn header_mode() {
        let mut s = Scanner::new(Mode::Header, 0);
        let input = b" <?xml version='1.0'?> <s:s a='>'>";
        assert_eq!(s.scan(input, B), Ok(Found::Pi(1..22)));
        assert_eq!(
            s.scan(input, B),
            Ok(Found::HeaderTag {
                range: 23..34,
                empty: false
            })
        );
        let mut s = Scanner::new(Mode::Header, 0);
        assert_eq!(s.scan(b"<?>?>", B), Ok(Found::Pi(0..5)));
    }
}
