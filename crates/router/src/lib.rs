//! The contract between the edge, which holds client streams, and the session layer,
//! which owns users. The edge programs only against [`Router`]; the session layer
//! reaches connections only through [`ClientSink`]. Two implementations exist of
//! each: in-process (role `all`) and gRPC (roles `edge` and `session`).
//!
//! No actor runtime appears here, so both sides can implement it however they host
//! their actors.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use aviary_xmpp::{BareJid, FullJid, Stanza, StreamError};
use std::fmt;
use std::sync::Arc;

/// Identifies an edge process (stable for its lifetime, unique in a cluster).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(pub String);

impl fmt::Display for EdgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one client stream on its edge. Never reused by an edge process; a
/// later connection for the same resource always has a different id, which is what
/// makes compare-and-set on unbind safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Where a stanza entered a cluster: the accepting edge and its sequence number.
/// Travels with the stanza for end-to-end acknowledgement and duplicate detection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub edge: String,
    pub seq: u64,
}

/// What the session layer sends to a client connection.
#[derive(Debug)]
pub enum Delivery {
    /// A stanza to write to the client, addresses already final.
    Stanza(Stanza),
    /// A stanza that entered the cluster at `Origin`: the receiving edge drops a
    /// second copy of the same origin for the same connection (a retransmission).
    Traced(Stanza, Origin),
    /// End the stream with this error (e.g. `<conflict/>` when a newer session took
    /// the resource).
    Close(StreamError),
}

impl Delivery {
    /// True when dropping this delivery under overload is an acceptable policy
    /// (RFC 6121 allows presence to be lost; messages and iqs are bounced instead).
    pub fn is_droppable(&self) -> bool {
        self.stanza()
            .is_some_and(|s| s.kind == aviary_xmpp::StanzaKind::Presence)
    }

    pub fn stanza(&self) -> Option<&Stanza> {
        match self {
            Delivery::Stanza(s) | Delivery::Traced(s, _) => Some(s),
            Delivery::Close(_) => None,
        }
    }

    /// The stanza, if any, dropping the trace.
    pub fn into_stanza(self) -> Option<Stanza> {
        match self {
            Delivery::Stanza(s) | Delivery::Traced(s, _) => Some(s),
            Delivery::Close(_) => None,
        }
    }
}

/// Why a delivery could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The connection's queue is full (a slow client); the delivery is handed back
    /// so the caller can apply its overflow policy.
    #[error("client queue full")]
    Full(Delivery),
    /// The connection is gone.
    #[error("connection gone")]
    Gone(Delivery),
}

/// The session layer's handle to one client connection.
pub trait ClientSink: Send + Sync + 'static {
    /// Queues a delivery without waiting.
    // The error hands the delivery back unboxed: boxing it would cost an allocation
    // on every delivery to save a move on the rare refused one.
    #[allow(clippy::result_large_err)]
    fn deliver(&self, delivery: Delivery) -> Result<(), DeliverError>;
}

/// A bound client connection as the session layer sees it.
#[derive(Clone)]
pub struct ConnRef {
    pub edge: EdgeId,
    pub id: ConnId,
    pub sink: Arc<dyn ClientSink>,
}

impl fmt::Debug for ConnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnRef({}/{})", self.edge, self.id)
    }
}

/// A request to bind a resource for an authenticated stream (RFC 6120 §7).
#[derive(Debug)]
pub struct BindRequest {
    pub user: BareJid,
    /// The client's requested resource; `None` asks the server to generate one.
    pub resource: Option<String>,
    pub conn: ConnRef,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The requested resource is not a valid resourcepart (`bad-request`).
    #[error("invalid resource")]
    BadResource,
    /// Too many resources are bound for this account (`resource-constraint`).
    #[error("too many resources")]
    TooManyResources,
    /// The session layer cannot take the user right now (`wait`/`internal-server-error`).
    #[error("session layer unavailable: {0}")]
    Unavailable(String),
}

/// Why a stanza could not be handed to the session layer.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The sender's user actor is overloaded; the stanza is handed back so the edge
    /// can apply the overflow policy (bounce with `resource-constraint` or drop
    /// presence).
    #[error("session queue full")]
    Overloaded(Box<Stanza>),
    /// The session layer is unreachable; the stanza is handed back.
    #[error("session layer unavailable")]
    Unavailable(Box<Stanza>),
}

/// How the edge reaches the session layer.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Binds a resource; the newer session wins a resource conflict and the older
    /// connection receives `Delivery::Close(conflict)`.
    async fn bind(&self, req: BindRequest) -> Result<FullJid, BindError>;

    /// Reports that a bound stream ended. Only removes the binding if it still
    /// belongs to `conn` (a successor's binding is left alone).
    fn unbind(&self, jid: FullJid, conn: ConnId);

    /// Hands over a stanza sent by the client on connection `conn`, bound as
    /// `stanza.from` (already stamped by the edge). Never waits.
    fn route(&self, conn: ConnId, stanza: Stanza) -> Result<(), RouteError>;

    /// Hands back a stanza that reached connection `conn` (bound as `stanza.to`)
    /// after the stream began to close, so it is not lost: the recipient's owner
    /// runs the routing rules again without that resource (RFC 6121 §8.5.3.2; a
    /// message of type chat or normal goes to another resource or offline storage).
    /// Called after [`Router::unbind`] for the same connection.
    fn undeliverable(&self, conn: ConnId, stanza: Stanza);
}
