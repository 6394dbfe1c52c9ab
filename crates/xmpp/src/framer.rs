//! The incremental stream framer: bytes in, stream events out (RFC 6120 §4, §11).
//!
//! STUB: the API is fixed; the implementation is being written.

use crate::element::Element;
use crate::error::{StreamError, StreamErrorCondition};

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

/// Incremental framer for one direction of one stream.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Framer { limits }
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
    pub fn feed(&mut self, _bytes: &[u8]) {}

    /// The next complete event, `Ok(None)` when more bytes are needed, or the stream
    /// error that must end this stream.
    pub fn next_event(&mut self) -> Result<Option<Event>, StreamError> {
        Err(StreamError::new(StreamErrorCondition::InternalServerError))
    }

    /// Stream restart after SASL success (RFC 6120 §6.4.6): expect a new header,
    /// keeping bytes already received but not yet parsed.
    pub fn restart(&mut self) {}

    /// Stream restart after STARTTLS `<proceed/>` (RFC 6120 §5.4.3.3): plaintext
    /// bytes received after `<starttls/>` are discarded.
    pub fn restart_discarding(&mut self) {}

    /// Bytes held but not yet turned into events.
    pub fn buffered_len(&self) -> usize {
        0
    }
}
