//! What the session layer needs from a cluster, as a trait the cluster crate
//! implements (so this crate knows nothing of gRPC): who owns a user now, how to
//! reach a user owned elsewhere and a connection on another edge, and end-to-end
//! acknowledgement of stanzas that entered the cluster at an edge.

use aviary_directory::Locations;
use aviary_router::ClientSink;
use aviary_xmpp::{BareJid, Stanza};
use std::sync::Arc;

pub use aviary_router::Origin;

/// Who owns a user's partition, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This node: handle it here.
    Local,
    /// Another node (by id).
    Remote(String),
    /// Nobody yet (ownership is moving): the cluster layer holds the stanza briefly.
    Unknown,
}

/// The two kinds of processing a forwarded stanza gets at its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The sender's outbound rules, at the owner of `from`.
    Outbound,
    /// The recipient's inbound rules, at the owner of `to`.
    Inbound,
}

pub trait Cluster: Send + Sync + 'static {
    /// The owner of `user`'s partition.
    fn owner(&self, user: &BareJid) -> Owner;

    /// Sends a stanza to the node owning the user it is for (by `direction`). Never
    /// waits; if it cannot be sent in time, the cluster layer bounces it.
    fn forward(&self, stanza: Stanza, direction: Direction, origin: Option<Origin>);

    /// A sink that delivers to connection `conn` on edge `edge`.
    fn edge_sink(&self, edge: &str, conn: u64) -> Arc<dyn ClientSink>;

    /// Whether `edge` holds a live lease.
    fn edge_live(&self, edge: &str) -> bool;

    /// `origin` was processed to the end: tell its edge to stop retransmitting.
    fn ack(&self, origin: Origin);

    /// The resource-location directory.
    fn locations(&self) -> Arc<dyn Locations>;
}
