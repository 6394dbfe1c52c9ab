//! The incremental stream framer: bytes in, stream events out (RFC 6120 §4, §11).
//!
//! Frame first, parse second: a resumable scanner ([`scan`]) finds where the stream
//! header and each top-level element end, enforcing [`Limits`] while the element is
//! still arriving; only a complete element is parsed ([`parse`], with quick-xml)
//! into an [`Element`]. Bytes may be split anywhere, and the events and errors do
//! not depend on where: every decision is a function of the bytes alone.

mod header;
mod parse;
mod scan;
mod xml;

use crate::element::Element;
use crate::error::{StreamError, StreamErrorCondition};
use parse::Parser;
use scan::{Bounds, Found, Mode, Scanner};

/// Size and shape limits enforced while framing, before anything is buffered whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (stanza or negotiation element), in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
}

impl Limits {
    /// Limits for an authenticated stream: 256 KiB stanzas.
    pub const AUTHENTICATED: Limits = Limits {
        max_stanza_bytes: 256 * 1024,
        max_depth: 64,
    };
    /// Limits before authentication: 8 KiB.
    pub const PRE_AUTH: Limits = Limits {
        max_stanza_bytes: 8 * 1024,
        max_depth: 16,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::AUTHENTICATED
    }
}

/// The attributes of a received stream header (RFC 6120 §4.7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
}

/// What the framer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A stream header was received (also after each stream restart).
    StreamOpen(StreamHeader),
    /// A complete top-level element: a stanza or a negotiation element.
    Element(Element),
    /// `</stream:stream>` was received.
    StreamClose,
}

/// Largest stream header accepted (XML declaration, white space and the
/// `<stream:stream>` tag, from the first `<`): a header is a few hundred bytes,
/// and it arrives before authentication, so anything bigger is abuse.
pub const MAX_HEADER_BYTES: usize = 4096;

/// Buffer capacity kept when everything fed has been consumed; more is released
/// so an idle connection holds little memory.
const IDLE_CAPACITY: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Header,
    Stream,
    Closed,
}

/// Incremental framer for one direction of one stream.
pub struct Framer {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes of `buf` before this index are consumed.
    pos: usize,
    scanner: Scanner,
    phase: Phase,
    parser: Parser,
    /// The stream element's name as the peer wrote it (`stream:stream`), so its end
    /// tag is recognised whatever prefix it chose.
    stream_qname: String,
    decl_seen: bool,
    /// `<stream:stream/>` opened and closed the stream in one tag.
    close_pending: bool,
    error: Option<StreamError>,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Framer {
            limits,
            buf: Vec::new(),
            pos: 0,
            scanner: Scanner::new(Mode::Header, 0),
            phase: Phase::Header,
            parser: Parser::default(),
            stream_qname: String::new(),
            decl_seen: false,
            close_pending: false,
            error: None,
        }
    }

    /// Changes the limits (e.g. after authentication).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends received bytes. Call [`Framer::next_event`] until it returns
    /// `Ok(None)` before feeding more, so at most one read chunk beyond the limit is
    /// ever held.
    pub fn feed(&mut self, bytes: &[u8]) {
        // A failed or closed stream processes nothing more; holding the bytes would
        // only let a peer grow our memory.
        if self.error.is_some() || self.phase == Phase::Closed {
            return;
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, `Ok(None)` when more bytes are needed, or the stream
    /// error that must end this stream.
    pub fn next_event(&mut self) -> Result<Option<Event>, StreamError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.step() {
            Ok(event) => Ok(event),
            Err(fail) => {
                let e = StreamError::from(fail);
                self.error = Some(e.clone());
                self.buf = Vec::new();
                self.pos = 0;
                Err(e)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Event>, Fail> {
        if self.close_pending {
            self.close_pending = false;
            self.close();
            return Ok(Some(Event::StreamClose));
        }
        loop {
            let bounds = match self.phase {
                Phase::Closed => return Ok(None),
                Phase::Header => Bounds {
                    max_bytes: MAX_HEADER_BYTES,
                    max_depth: 0,
                },
                Phase::Stream => Bounds {
                    max_bytes: self.limits.max_stanza_bytes,
                    max_depth: self.limits.max_depth,
                },
            };
            match self.scanner.scan(&self.buf, bounds)? {
                Found::More => {
                    if let Some(p) = self.scanner.rest_point() {
                        self.pos = p;
                    }
                    self.release_if_idle();
                    return Ok(None);
                }
                Found::Pi(range) => {
                    // XML §2.8: the declaration comes first, and only once.
                    if self.decl_seen {
                        return Err(restricted("processing instructions are not allowed"));
                    }
                    self.decl_seen = true;
                    header::parse_decl(slice(&self.buf, &range))?;
                }
                Found::HeaderTag { range, empty } => {
                    let parsed = header::parse_header(slice(&self.buf, &range), empty)?;
                    self.pos = range.end;
                    self.phase = Phase::Stream;
                    self.scanner.enter_stream();
                    self.parser.set_root(parsed.bindings);
                    self.stream_qname = parsed.qname;
                    self.close_pending = empty;
                    return Ok(Some(Event::StreamOpen(parsed.header)));
                }
                Found::Element(range) => {
                    let el = self.parser.parse(slice(&self.buf, &range))?;
                    self.pos = range.end;
                    return Ok(Some(Event::Element(el)));
                }
                Found::EndTag(range) => {
                    if !header::is_end_of(slice(&self.buf, &range), &self.stream_qname) {
                        return Err(nwf("end tag does not match the stream element"));
                    }
                    self.close();
                    return Ok(Some(Event::StreamClose));
                }
            }
        }
    }

    /// Stream restart after SASL success (RFC 6120 §6.4.6): expect a new header,
    /// keeping bytes already received but not yet parsed. Call it right after the
    /// event that causes it, before asking for the next event.
    pub fn restart(&mut self) {
        if self.error.is_some() {
            return;
        }
        self.phase = Phase::Header;
        self.scanner = Scanner::new(Mode::Header, self.pos);
        self.parser.set_root(Vec::new());
        self.stream_qname = String::new();
        self.decl_seen = false;
        self.close_pending = false;
    }

    /// Stream restart after STARTTLS `<proceed/>` (RFC 6120 §5.4.3.3): plaintext
    /// bytes received after `<starttls/>` are discarded.
    pub fn restart_discarding(&mut self) {
        if self.error.is_some() {
            return;
        }
        self.buf = Vec::new();
        self.pos = 0;
        self.restart();
    }

    /// Bytes held but not yet turned into events.
    pub fn buffered_len(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Heap memory this framer holds, in bytes (for tests and per-connection
    /// memory accounting); the framer struct itself is not included.
    pub fn allocated_bytes(&self) -> usize {
        self.buf.capacity()
            + self.parser.allocated()
            + self.scanner.allocated()
            + self.stream_qname.capacity()
    }

    /// Drops the consumed prefix so the buffer holds only unconsumed bytes.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        if self.pos >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..self.pos);
        }
        self.scanner.shift(self.pos);
        self.pos = 0;
    }

    fn release_if_idle(&mut self) {
        if self.pos >= self.buf.len() {
            self.compact();
            if self.buf.capacity() > IDLE_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.buf = Vec::new();
        self.pos = 0;
    }
}

/// Never prints buffered bytes: they are a peer's stanzas, and `Debug` output ends
/// up in logs.
impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framer")
            .field("phase", &self.phase)
            .field("limits", &self.limits)
            .field("buffered_len", &self.buffered_len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

fn slice<'a>(buf: &'a [u8], range: &std::ops::Range<usize>) -> &'a [u8] {
    buf.get(range.clone()).unwrap_or_default()
}

/// The framer's internal error: small and `Copy`, so results passed through the
/// hot paths stay in registers; it becomes a [`StreamError`] at the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fail {
    condition: Cond,
    text: &'static str,
}

/// The stream error conditions the framer itself raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cond {
    BadFormat,
    BadNamespacePrefix,
    InvalidNamespace,
    NotWellFormed,
    PolicyViolation,
    RestrictedXml,
    UnsupportedEncoding,
}

impl Fail {
    fn new(condition: Cond, text: &'static str) -> Self {
        Fail { condition, text }
    }
}

impl From<Fail> for StreamError {
    fn from(f: Fail) -> Self {
        let condition = match f.condition {
            Cond::BadFormat => StreamErrorCondition::BadFormat,
            Cond::BadNamespacePrefix => StreamErrorCondition::BadNamespacePrefix,
            Cond::InvalidNamespace => StreamErrorCondition::InvalidNamespace,
            Cond::NotWellFormed => StreamErrorCondition::NotWellFormed,
            Cond::PolicyViolation => StreamErrorCondition::PolicyViolation,
            Cond::RestrictedXml => StreamErrorCondition::RestrictedXml,
            Cond::UnsupportedEncoding => StreamErrorCondition::UnsupportedEncoding,
        };
        StreamError::with_text(condition, f.text)
    }
}

fn nwf(text: &'static str) -> Fail {
    Fail::new(Cond::NotWellFormed, text)
}

fn restricted(text: &'static str) -> Fail {
    Fail::new(Cond::RestrictedXml, text)
}

fn bad_format(text: &'static str) -> Fail {
    Fail::new(Cond::BadFormat, text)
}

fn policy(text: &'static str) -> Fail {
    Fail::new(Cond::PolicyViolation, text)
}

fn bad_prefix() -> Fail {
    Fail::new(Cond::BadNamespacePrefix, "undeclared namespace prefix")
}
