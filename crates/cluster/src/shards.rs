//! Membership and partition ownership, driven from each node.
//!
//! Every tick a session node renews its lease, reads the live members and the claim
//! table, and moves claims toward the rendezvous targets with compare-and-set:
//!
//! - a partition whose claimant is dead (lease expired) or absent is claimed by its
//!   target, with the next epoch;
//! - a partition this node holds but no longer targets is handed straight to its
//!   target (CAS to the target's name), after which this node's actors for it
//!   drain, forwarding what still reaches them; the receiver waits a short grace
//!   before serving it, so the previous owner can finish what it had queued.
//!
//! Fencing: a node serves only while its own lease is fresh by its own clock, with a
//! safety margin, so it stops before another node can see its lease expire and take
//! over. "Two live owners" would need both to believe they hold a fresh claim.

use crate::node::ClusterNode;
use crate::ring::PARTITIONS;
use crate::view::{Snapshot, View};
use aviary_directory::{Claim, Locations, Membership, NodeInfo, NodeRole, Partitions};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Lease timing.
#[derive(Clone, Copy, Debug)]
pub struct LeaseConfig {
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    /// How often leases are renewed and the view refreshed.
    pub tick: Duration,
    /// A node stops serving when its last renewal is older than `ttl - margin`.
    pub margin: Duration,
    /// How long a node waits before serving a partition handed over by a live node.
    pub handover_grace: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(5),
            tick: Duration::from_millis(500),
            margin: Duration::from_millis(1500),
            handover_grace: Duration::from_millis(500),
        }
    }
}

async fn read_view(
    members: &dyn Membership,
    parts: &dyn Partitions,
) -> Result<Snapshot, aviary_directory::DirectoryError> {
    let members = members.members().await?;
    let claims = parts.claims(PARTITIONS).await?;
    Ok(Snapshot { members, claims })
}

/// Runs a session node's lease, rebalancing and sweeping until `shutdown` is set;
/// then hands every partition over and leaves.
pub async fn run_session(
    node: Arc<ClusterNode>,
    me: NodeInfo,
    members: Arc<dyn Membership>,
    parts: Arc<dyn Partitions>,
    locations: Arc<dyn Locations>,
    lease: LeaseConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_renewed: Option<Instant> = None;
    let mut prev: Option<Arc<Snapshot>> = None;
    loop {
        match tokio::time::timeout(lease.tick, members.heartbeat(&me, lease.ttl)).await {
            Ok(Ok(_)) => last_renewed = Some(Instant::now()),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        let fresh = last_renewed.is_some_and(|t| t.elapsed() + lease.margin < lease.ttl);
        let was = node.serving.swap(fresh, Ordering::AcqRel);
        if was && !fresh {
            tracing::error!("lease not renewed in time: this node stops serving its partitions");
        } else if !was && fresh {
            tracing::info!("lease held: serving");
        }
        if let Ok(mut snap) = read_view(&*members, &*parts).await {
            if fresh {
                rebalance(&node, &*parts, &mut snap, prev.as_deref(), lease).await;
            }
            let snap = Arc::new(snap);
            if let Some(p) = &prev {
                after_change(&node, p, &snap, &*members, &*locations).await;
            }
            let owned = if fresh {
                (0..PARTITIONS)
                    .filter(|&p| snap.claim(p).is_some_and(|c| c.node == node.me))
                    .count()
            } else {
                0
            };
            crate::metrics::partitions_owned(owned);
            node.view.set_arc(snap.clone());
            node.retry_held();
            prev = Some(snap);
        }
        tokio::select! {
            _ = tokio::time::sleep(lease.tick) => {}
            _ = shutdown.changed() => break,
        }
    }
    hand_over_all(&node, &me, &*members, &*parts).await;
    // Lame duck: edges learn of the new owners within a tick or two; until then
    // keep passing on what still arrives here, and let the drained actors hand on
    // what they had queued. The caller bounds this by its grace period.
    let linger_until = Instant::now() + lease.tick * 4;
    loop {
        if let Ok(snap) = read_view(&*members, &*parts).await {
            node.view.set(snap);
        }
        node.retry_held();
        if node.idle() && Instant::now() >= linger_until {
            break;
        }
        tokio::time::sleep(lease.tick / 4).await;
    }
    crate::metrics::partitions_owned(0);
}

/// Moves claims toward targets (see the module doc). Updates `snap` in place.
async fn rebalance(
    node: &ClusterNode,
    parts: &dyn Partitions,
    snap: &mut Snapshot,
    prev: Option<&Snapshot>,
    lease: LeaseConfig,
) {
    let me = node.me.clone();
    for p in 0..PARTITIONS {
        let Some(target) = snap.target(p).map(str::to_owned) else {
            continue;
        };
        let current = snap.claim(p).cloned();
        // Never below the membership epoch (seeded from the clock): if Redis lost its
        // data, claims restart above every fencing token handed out before.
        let epoch = (current.as_ref().map_or(0, |c| c.epoch) + 1).max(snap.members.epoch);
        let change = match &current {
            None if target == me => Some(me.clone()),
            Some(c) if c.node != me && target == me && !snap.members.is_live(&c.node) => {
                Some(me.clone())
            }
            // Ours, but it belongs to another live node now: hand it over.
            Some(c) if c.node == me && target != me => Some(target.clone()),
            _ => None,
        };
        let Some(new_owner) = change else {
            continue;
        };
        let new = Claim {
            node: new_owner,
            epoch,
        };
        match parts.cas_claim(p, current.as_ref(), &new).await {
            Ok(true) => {
                if let Some(slot) = snap.claims.get_mut(p as usize) {
                    *slot = Some(new);
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "claim update failed");
                return;
            }
        }
    }
    // Partitions handed to us by a node that is still alive: give it a moment to
    // finish what it had queued before we serve them.
    if let Some(prev) = prev {
        let until = Instant::now() + lease.handover_grace;
        for p in 0..PARTITIONS {
            let now_mine = snap.claim(p).is_some_and(|c| c.node == me);
            let was_live_other = prev
                .claim(p)
                .is_some_and(|c| c.node != me && snap.members.is_live(&c.node));
            if now_mine && was_live_other {
                node.grace.insert(p, until);
            }
        }
    }
}

/// Reacts to a new view: drains actors of partitions that left this node and ends
/// the resources of edges that died.
async fn after_change(
    node: &ClusterNode,
    prev: &Snapshot,
    snap: &Snapshot,
    members: &dyn Membership,
    locations: &dyn Locations,
) {
    let me = &node.me;
    let moved: HashSet<u32> = (0..PARTITIONS)
        .filter(|p| {
            prev.claim(*p).is_some_and(|c| &c.node == me)
                && snap.claim(*p).is_none_or(|c| &c.node != me)
        })
        .collect();
    if let Some(users) = node.users() {
        if !moved.is_empty() {
            users.drain_where(|jid| moved.contains(&View::partition_of(jid.as_str())));
        }
        let gone: Vec<&NodeInfo> = prev
            .members
            .edges()
            .filter(|e| !snap.members.is_live(&e.id))
            .collect();
        // The snapshot was read before the rebalance, which can take a while: an
        // edge that rejoined since (after Redis came back, say) has new sessions
        // that must not be swept.
        let now = if gone.is_empty() {
            None
        } else {
            members.members().await.ok()
        };
        for dead in gone {
            // (Unreadable now: sweep as the snapshot says.)
            if now.as_ref().is_some_and(|m| m.is_live(&dead.id)) {
                tracing::info!(edge = %dead.id, "edge rejoined: not sweeping its sessions");
                continue;
            }
            match locations.users_on_edge(&dead.id).await {
                Ok(list) => {
                    tracing::info!(edge = %dead.id, users = list.len(), "edge gone: ending its sessions");
                    users.edge_gone(&dead.id, list);
                }
                Err(e) => tracing::warn!(edge = %dead.id, error = %e, "cannot sweep a dead edge"),
            }
        }
    }
    node.grace.retain(|_, until| Instant::now() < *until);
}

/// Graceful leave: hand every partition this node holds to its target among the
/// others, drain, and drop the lease.
async fn hand_over_all(
    node: &ClusterNode,
    me: &NodeInfo,
    members: &dyn Membership,
    parts: &dyn Partitions,
) {
    node.serving.store(false, Ordering::Release);
    if let Ok(snap) = read_view(members, parts).await {
        let others: Vec<&str> = snap
            .members
            .sessions()
            .filter(|n| n.id != me.id)
            .map(|n| n.id.as_str())
            .collect();
        for p in 0..PARTITIONS {
            let Some(c) = snap.claim(p) else { continue };
            if c.node != me.id {
                continue;
            }
            if let Some(t) = crate::ring::target(p, others.iter().copied()) {
                let new = Claim {
                    node: t.to_owned(),
                    epoch: c.epoch + 1,
                };
                let _ = parts.cas_claim(p, Some(c), &new).await;
            }
        }
    }
    if let Err(e) = members.leave(&me.id).await {
        tracing::warn!(error = %e, "could not leave the cluster cleanly");
    }
    // Route by the new claims from here on (the drained actors forward what they
    // had queued to the new owners).
    if let Ok(snap) = read_view(members, parts).await {
        node.view.set(snap);
    }
    if let Some(users) = node.users() {
        users.drain_where(|_| true);
    }
}

/// What an edge's lease loop reports to the rest of the edge.
pub struct EdgeHooks<R, J> {
    /// Runs after every successful view read.
    pub on_refresh: R,
    /// Runs when a renewal finds this edge was no longer a member (its lease
    /// expired while Redis was unreachable, or Redis lost its data): the session
    /// nodes have ended, or no longer know of, the sessions it holds, so they must
    /// be closed for the clients to log in again rather than linger unreachable.
    pub on_rejoin: J,
}

/// Runs an edge's lease and view refresh until `shutdown`.
pub async fn run_edge<R, J>(
    view: View,
    me: NodeInfo,
    members: Arc<dyn Membership>,
    parts: Arc<dyn Partitions>,
    lease: LeaseConfig,
    mut shutdown: watch::Receiver<bool>,
    hooks: EdgeHooks<R, J>,
) where
    R: Fn() + Send + 'static,
    J: Fn() + Send + 'static,
{
    let EdgeHooks {
        on_refresh,
        on_rejoin,
    } = hooks;
    debug_assert_eq!(me.role, NodeRole::Edge);
    let mut joined_once = false;
    loop {
        match members.heartbeat(&me, lease.ttl).await {
            Ok(joined) => {
                if joined && joined_once {
                    tracing::error!(
                        "this edge's lease was lost (Redis unreachable for longer than the lease, or its data lost): closing its client streams"
                    );
                    on_rejoin();
                }
                joined_once = true;
            }
            Err(e) => tracing::warn!(error = %e, "edge lease renewal failed"),
        }
        if let Ok(snap) = read_view(&*members, &*parts).await {
            view.set(snap);
            on_refresh();
        }
        tokio::select! {
            _ = tokio::time::sleep(lease.tick) => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = members.leave(&me.id).await;
}
