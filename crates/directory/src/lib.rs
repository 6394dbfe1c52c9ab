//! The cluster directory: who is alive (membership leases), who owns which
//! partition (claims with compare-and-set epochs, the fencing tokens), and where each
//! connected resource is (resource locations). Backends: in memory (tests, single
//! process) and Redis (the cluster; keys use hash tags so Redis Cluster works).
//!
//! Time for leases is the directory's own clock (Redis `TIME`), never the callers',
//! so nodes with skewed clocks agree on who is alive.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod memory;
pub mod metrics;
pub mod redis;

pub use memory::MemoryDirectory;
pub use redis::RedisDirectory;

use async_trait::async_trait;
use jid::BareJid;
use std::time::Duration;

/// What a node does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRole {
    Edge,
    Session,
}

impl NodeRole {
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Edge => "edge",
            NodeRole::Session => "session",
        }
    }
}

/// A cluster member as recorded in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique and stable for the process lifetime.
    pub id: String,
    pub role: NodeRole,
    /// The node's gRPC address (`host:port`) as other nodes reach it.
    pub addr: String,
    /// Changes on every process start.
    pub incarnation: u64,
}

/// The live members and a version that changes whenever the set changes. Epochs
/// only grow, but not necessarily by one: compare them, don't count them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberView {
    pub epoch: u64,
    pub nodes: Vec<NodeInfo>,
}

impl MemberView {
    pub fn sessions(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == NodeRole::Session)
    }

    pub fn edges(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == NodeRole::Edge)
    }

    pub fn get(&self, id: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.get(id).is_some()
    }
}

/// Ownership of one partition: the owning node and the claim's epoch. Epochs only
/// grow; the epoch is the fencing token stanzas carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Claim {
    pub node: String,
    pub epoch: u64,
}

/// Where a connected resource is, and the live state a new owner of the user needs
/// to rebuild the user actor (RFC 6121 presence bookkeeping).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub edge: String,
    pub conn: u64,
    pub available: bool,
    pub priority: i8,
    /// The last available presence broadcast (serialised stanza), if any.
    pub presence: Option<Vec<u8>>,
    pub roster_interested: bool,
    pub blocklist_interested: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The directory cannot be reached or failed; the caller should retry later.
    /// For a write the outcome is unknown (a timed-out write may still have been
    /// applied): re-read before repeating a compare-and-set.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// Data in the directory could not be decoded.
    #[error("corrupt directory entry: {0}")]
    Corrupt(String),
}

/// Node membership with leases.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Registers or renews `me` with a lease of `ttl` from now (directory time). Bumps
    /// the membership epoch when `me` was not live before, or when its recorded
    /// `NodeInfo` changes (a restart within the lease brings a new incarnation, which
    /// peers must notice). A plain renewal leaves the epoch alone.
    ///
    /// Returns whether `me` was not live before this call (its first join, or a
    /// rejoin after its lease expired or the directory lost its data): everything
    /// the directory held on its behalf may be gone.
    async fn heartbeat(&self, me: &NodeInfo, ttl: Duration) -> Result<bool, DirectoryError>;

    /// Removes `id` at once (graceful shutdown); bumps the epoch if it was recorded
    /// (live, or expired but not yet removed by [`members`](Self::members): the last
    /// view anyone read may still list it).
    async fn leave(&self, id: &str) -> Result<(), DirectoryError>;

    /// The live members (lease not expired). Expired members are removed as a side
    /// effect, bumping the epoch, so every reader sees the same change.
    async fn members(&self) -> Result<MemberView, DirectoryError>;
}

/// The partition table.
#[async_trait]
pub trait Partitions: Send + Sync + 'static {
    /// The claim of every partition `0..count` (`None` = unclaimed).
    async fn claims(&self, count: u32) -> Result<Vec<Option<Claim>>, DirectoryError>;

    /// Sets the claim of `partition` to `new` only if it currently equals `expected`
    /// (compare-and-set) and `new.epoch` is greater than the current epoch. Returns
    /// whether it was set.
    async fn cas_claim(
        &self,
        partition: u32,
        expected: Option<&Claim>,
        new: &Claim,
    ) -> Result<bool, DirectoryError>;
}

/// Resource locations, per bare JID.
#[async_trait]
pub trait Locations: Send + Sync + 'static {
    /// Every resource recorded for `user`.
    async fn resources(&self, user: &BareJid) -> Result<Vec<(String, Location)>, DirectoryError>;

    /// Records a newly bound resource, replacing any previous holder of it (the newer
    /// session wins), and indexes `user` under `loc.edge`.
    async fn bind(
        &self,
        user: &BareJid,
        resource: &str,
        loc: &Location,
    ) -> Result<(), DirectoryError>;

    /// Updates a resource's state only if it is still held by connection `loc.conn`
    /// (compare-and-set on the connection id) on edge `loc.edge` (a connection never
    /// moves between edges). Returns whether it was updated.
    async fn update(
        &self,
        user: &BareJid,
        resource: &str,
        loc: &Location,
    ) -> Result<bool, DirectoryError>;

    /// Removes a resource only if it is still held by connection `conn`. Returns
    /// whether it was removed.
    async fn unbind(
        &self,
        user: &BareJid,
        resource: &str,
        conn: u64,
    ) -> Result<bool, DirectoryError>;

    /// Users that had resources on `edge` (a superset is fine: used to sweep after the
    /// edge's lease expired).
    async fn users_on_edge(&self, edge: &str) -> Result<Vec<BareJid>, DirectoryError>;

    /// Drops the index of `edge` once swept.
    async fn forget_edge(&self, edge: &str) -> Result<(), DirectoryError>;
}
