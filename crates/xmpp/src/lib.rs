//! Sans-IO XMPP protocol layer: the stream framer, the element tree, the stanza model,
//! stream and stanza errors, and serialisation (RFC 6120).
//!
//! This crate performs no I/O and must never depend on tokio or actix: bytes go in,
//! events come out, and every behaviour is testable byte by byte. The edge owns the
//! sockets; the session layer owns the semantics.
#![forbid(unsafe_code)]

pub mod element;
pub mod error;
pub mod framer;
pub mod ns;
pub mod stanza;
pub mod stored;
pub mod writer;

pub use element::{Element, Node};
pub use error::{
    StanzaError, StanzaErrorCondition, StanzaErrorType, StreamError, StreamErrorCondition,
};
pub use framer::{Event, Framer, Limits, StreamHeader};
pub use jid::{self, BareJid, FullJid, Jid};
pub use stanza::{IqType, MessageType, PresenceType, Stanza, StanzaKind};
