//! The in-memory directory: one process's view of membership, partition claims and
//! resource locations, for the embedded `all` role and for unit tests of cluster
//! logic. It keeps exactly the semantics of the Redis backend (the conformance
//! suite runs against both), minus durability and sharing between processes.
//!
//! Time comes from a [`Clock`] the directory owns — by default the process's
//! monotonic clock. Tests hand it a [`ManualClock`] and move time with
//! [`ManualClock::advance`], so lease expiry is tested without sleeping.
//!
//! Every operation takes one mutex for its whole duration, which makes each one
//! atomic, as the Redis scripts are.

use crate::{Claim, DirectoryError, Locations, MemberView, Membership, NodeInfo, Partitions};
use async_trait::async_trait;
use jid::BareJid;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The directory's source of time. Only differences matter: `now` is measured from
/// an arbitrary origin and must never go backwards.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Duration;
}

/// The process's monotonic clock (immune to wall-clock steps).
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that stands still until told to move; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<Mutex<Duration>>);

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.saturating_add(d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    /// Node id → (info, lease expiry in clock time).
    members: BTreeMap<String, (NodeInfo, Duration)>,
    epoch: u64,
    claims: HashMap<u32, Claim>,
    /// Per user: resource → location. Keyed by the JID itself, so users whose JIDs
    /// are string prefixes of one another cannot mix.
    locations: HashMap<BareJid, BTreeMap<String, crate::Location>>,
    /// Edge id → users that had a resource bound on it (a superset, as in Redis).
    edges: HashMap<String, BTreeSet<BareJid>>,
}

/// All three directory traits, in one process's memory.
pub struct MemoryDirectory {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl Default for MemoryDirectory {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDirectory").finish_non_exhaustive()
    }
}

impl MemoryDirectory {
    /// A directory on the process's monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock::default()))
    }

    /// A directory on `clock` (a [`ManualClock`] in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryDirectory {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement that could panic (none do),
        // so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Membership for MemoryDirectory {
    async fn heartbeat(&self, me: &NodeInfo, ttl: Duration) -> Result<bool, DirectoryError> {
        let now = self.clock.now();
        let mut st = self.state();
        let expiry = now.saturating_add(ttl);
        let (joined, changed) = match st.members.get(&me.id) {
            Some((info, old_expiry)) => (*old_expiry <= now, *old_expiry <= now || info != me),
            None => (true, true),
        };
        st.members.insert(me.id.clone(), (me.clone(), expiry));
        if changed {
            st.epoch += 1;
        }
        Ok(joined)
    }

    async fn leave(&self, id: &str) -> Result<(), DirectoryError> {
        let mut st = self.state();
        if st.members.remove(id).is_some() {
            st.epoch += 1;
        }
        Ok(())
    }

    async fn members(&self) -> Result<MemberView, DirectoryError> {
        let now = self.clock.now();
        let mut st = self.state();
        let before = st.members.len();
        st.members.retain(|_, (_, expiry)| *expiry > now);
        if st.members.len() != before {
            st.epoch += 1;
        }
        Ok(MemberView {
            epoch: st.epoch,
            nodes: st.members.values().map(|(info, _)| info.clone()).collect(),
        })
    }
}

#[async_trait]
impl Partitions for MemoryDirectory {
    async fn claims(&self, count: u32) -> Result<Vec<Option<Claim>>, DirectoryError> {
        let st = self.state();
        Ok((0..count).map(|p| st.claims.get(&p).cloned()).collect())
    }

    async fn cas_claim(
        &self,
        partition: u32,
        expected: Option<&Claim>,
        new: &Claim,
    ) -> Result<bool, DirectoryError> {
        let mut st = self.state();
        let current = st.claims.get(&partition);
        if current != expected || current.is_some_and(|c| new.epoch <= c.epoch) {
            return Ok(false);
        }
        st.claims.insert(partition, new.clone());
        Ok(true)
    }
}

#[async_trait]
impl Locations for MemoryDirectory {
    async fn resources(
        &self,
        user: &BareJid,
    ) -> Result<Vec<(String, crate::Location)>, DirectoryError> {
        let st = self.state();
        Ok(st
            .locations
            .get(user)
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn bind(
        &self,
        user: &BareJid,
        resource: &str,
        loc: &crate::Location,
    ) -> Result<(), DirectoryError> {
        let mut st = self.state();
        st.edges
            .entry(loc.edge.clone())
            .or_default()
            .insert(user.clone());
        st.locations
            .entry(user.clone())
            .or_default()
            .insert(resource.to_owned(), loc.clone());
        Ok(())
    }

    async fn update(
        &self,
        user: &BareJid,
        resource: &str,
        loc: &crate::Location,
    ) -> Result<bool, DirectoryError> {
        let mut st = self.state();
        let Some(current) = st.locations.get_mut(user).and_then(|r| r.get_mut(resource)) else {
            return Ok(false);
        };
        if current.conn != loc.conn || current.edge != loc.edge {
            return Ok(false);
        }
        *current = loc.clone();
        Ok(true)
    }

    async fn unbind(
        &self,
        user: &BareJid,
        resource: &str,
        conn: u64,
    ) -> Result<bool, DirectoryError> {
        let mut st = self.state();
        let Some(resources) = st.locations.get_mut(user) else {
            return Ok(false);
        };
        if resources.get(resource).is_none_or(|l| l.conn != conn) {
            return Ok(false);
        }
        resources.remove(resource);
        if resources.is_empty() {
            st.locations.remove(user);
        }
        // The edge index keeps the user, as in Redis: it is a superset, pruned by
        // `forget_edge` once the edge is swept.
        Ok(true)
    }

    async fn users_on_edge(&self, edge: &str) -> Result<Vec<BareJid>, DirectoryError> {
        let st = self.state();
        Ok(st
            .edges
            .get(edge)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn forget_edge(&self, edge: &str) -> Result<(), DirectoryError> {
        self.state().edges.remove(edge);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeRole;

    fn node(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role: NodeRole::Session,
            addr: format!("{id}:7000"),
            incarnation: 1,
        }
    }

    /// The lease boundary is exact: live until `ttl` has passed, gone at `ttl`.
    #[tokio::test]
    async fn lease_ends_exactly_at_ttl() {
        let clock = ManualClock::new();
        let dir = MemoryDirectory::with_clock(Arc::new(clock.clone()));
        let ttl = Duration::from_secs(10);
        dir.heartbeat(&node("a"), ttl).await.unwrap();
        assert_eq!(dir.members().await.unwrap().epoch, 1);
        clock.advance(ttl - Duration::from_millis(1));
        let view = dir.members().await.unwrap();
        assert!(view.is_live("a"), "expired before its ttl");
        assert_eq!(view.epoch, 1);
        clock.advance(Duration::from_millis(1));
        let view = dir.members().await.unwrap();
        assert!(!view.is_live("a"), "still live at its ttl");
        assert_eq!(view.epoch, 2, "expiry bumps the epoch by one");
        assert_eq!(dir.members().await.unwrap().epoch, 2, "and only once");
    }

    /// Several members expiring together are one change of the set.
    #[tokio::test]
    async fn simultaneous_expiries_bump_once() {
        let clock = ManualClock::new();
        let dir = MemoryDirectory::with_clock(Arc::new(clock.clone()));
        for id in ["a", "b", "c"] {
            dir.heartbeat(&node(id), Duration::from_secs(1))
                .await
                .unwrap();
        }
        dir.heartbeat(&node("d"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(dir.members().await.unwrap().epoch, 4);
        clock.advance(Duration::from_secs(2));
        let view = dir.members().await.unwrap();
        assert_eq!(view.epoch, 5);
        assert_eq!(view.nodes, vec![node("d")]);
    }

    /// A member that expired unobserved and heartbeats again is one change: no
    /// reader saw it gone.
    #[tokio::test]
    async fn rejoin_after_unobserved_expiry_bumps() {
        let clock = ManualClock::new();
        let dir = MemoryDirectory::with_clock(Arc::new(clock.clone()));
        dir.heartbeat(&node("a"), Duration::from_secs(1))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1));
        dir.heartbeat(&node("a"), Duration::from_secs(1))
            .await
            .unwrap();
        let view = dir.members().await.unwrap();
        assert_eq!(view.epoch, 2);
        assert!(view.is_live("a"));
    }

    /// The monotonic clock moves by itself.
    #[test]
    fn monotonic_clock_moves() {
        let c = MonotonicClock::default();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now() > a);
    }
}
