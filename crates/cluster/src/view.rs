//! This node's view of the cluster: live members and the partition claims, refreshed
//! from the directory and shared, lock-light, with every routing decision.

use crate::ring::{self, PARTITIONS};
use aviary_directory::{Claim, MemberView, NodeInfo};
use std::sync::{Arc, RwLock};

/// One consistent snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub members: MemberView,
    pub claims: Vec<Option<Claim>>,
}

impl Snapshot {
    pub fn claim(&self, partition: u32) -> Option<&Claim> {
        self.claims.get(partition as usize).and_then(Option::as_ref)
    }

    /// The live owner of `partition`, if its claimant is alive.
    pub fn owner(&self, partition: u32) -> Option<&Claim> {
        self.claim(partition)
            .filter(|c| self.members.is_live(&c.node))
    }

    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.members.get(id)
    }

    /// The session node each partition should belong to now.
    pub fn target(&self, partition: u32) -> Option<&str> {
        ring::target(partition, self.members.sessions().map(|n| n.id.as_str()))
    }
}

/// The shared, swappable view.
#[derive(Clone, Debug, Default)]
pub struct View {
    inner: Arc<RwLock<Arc<Snapshot>>>,
}

impl View {
    pub fn get(&self) -> Arc<Snapshot> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, snapshot: Snapshot) {
        self.set_arc(Arc::new(snapshot));
    }

    pub fn set_arc(&self, snapshot: Arc<Snapshot>) {
        match self.inner.write() {
            Ok(mut g) => *g = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    pub fn partition_of(bare_jid: &str) -> u32 {
        ring::partition(bare_jid)
    }

    pub const PARTITIONS: u32 = PARTITIONS;
}
