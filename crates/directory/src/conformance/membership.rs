//! Conformance checks for [`Membership`]: leases, and an epoch that changes exactly
//! when the member set (or a member's info) changes. Epochs are compared, not
//! counted: a backend may grow them by more than one.

use super::{Time, fresh, ok};
use crate::{MemberView, Membership, NodeInfo, NodeRole};
use std::time::Duration;

/// Long enough never to expire during a check.
const LONG: Duration = Duration::from_secs(120);

fn node(id: &str, role: NodeRole) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        role,
        addr: format!("{id}.pod.cluster.local:7000"),
        incarnation: 1,
    }
}

async fn view(m: &dyn Membership) -> MemberView {
    let mut v = ok(m.members().await, "members");
    v.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[track_caller]
fn assert_bumped(before: &MemberView, after: &MemberView, what: &str) {
    assert!(
        after.epoch > before.epoch,
        "{what} must raise the epoch (was {}, now {})",
        before.epoch,
        after.epoch
    );
}

#[track_caller]
fn assert_same_epoch(before: &MemberView, after: &MemberView, what: &str) {
    assert_eq!(
        after.epoch, before.epoch,
        "{what} must not change the epoch"
    );
}

/// Join, renewal, info change, leave and rejoin, with long leases.
pub async fn membership_join_renew_leave(m: &dyn Membership) {
    let (a, b) = (
        node(&fresh("a"), NodeRole::Session),
        node(&fresh("b"), NodeRole::Edge),
    );
    let v0 = view(m).await;
    assert!(v0.nodes.is_empty(), "a fresh directory has no members");
    assert_eq!(
        ok(m.members().await, "members").epoch,
        v0.epoch,
        "reading changes nothing"
    );

    assert!(
        ok(m.heartbeat(&a, LONG).await, "heartbeat"),
        "a first heartbeat joins"
    );
    let v1 = view(m).await;
    assert_bumped(&v0, &v1, "a join");
    assert_eq!(v1.nodes, vec![a.clone()], "the joined node, as sent");

    for _ in 0..3 {
        assert!(
            !ok(m.heartbeat(&a, LONG).await, "renewal"),
            "a renewal is not a join"
        );
        let v = view(m).await;
        assert_same_epoch(&v1, &v, "a renewal");
        assert_eq!(v.nodes, vec![a.clone()]);
    }

    ok(m.heartbeat(&b, LONG).await, "heartbeat");
    let v2 = view(m).await;
    assert_bumped(&v1, &v2, "a second join");
    let mut both = vec![a.clone(), b.clone()];
    both.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(v2.nodes, both);
    assert_eq!(v2.sessions().collect::<Vec<_>>(), vec![&a]);
    assert_eq!(v2.edges().collect::<Vec<_>>(), vec![&b]);

    // A restart within the lease: same id, new incarnation and address.
    let restarted = NodeInfo {
        incarnation: 2,
        addr: "10.1.2.3:7000".into(),
        ..a.clone()
    };
    assert!(
        !ok(m.heartbeat(&restarted, LONG).await, "heartbeat"),
        "a new incarnation within the lease is not a join (the epoch still moves)"
    );
    let v3 = view(m).await;
    assert_bumped(&v2, &v3, "a changed NodeInfo");
    assert_eq!(
        v3.get(&a.id),
        Some(&restarted),
        "the new NodeInfo replaces the old"
    );
    assert_eq!(v3.nodes.len(), 2);

    ok(m.leave(&a.id).await, "leave");
    let v4 = view(m).await;
    assert_bumped(&v3, &v4, "a leave");
    assert_eq!(v4.nodes, vec![b.clone()], "leave removes just that node");
    ok(m.leave(&a.id).await, "second leave");
    ok(m.leave(&fresh("never")).await, "leave of a stranger");
    let v5 = view(m).await;
    assert_same_epoch(&v4, &v5, "leaving when absent");
    assert_eq!(v5.nodes, vec![b.clone()]);

    assert!(
        ok(m.heartbeat(&a, LONG).await, "rejoin"),
        "a rejoin after leaving"
    );
    let v6 = view(m).await;
    assert_bumped(&v5, &v6, "a rejoin");
    assert_eq!(v6.get(&a.id), Some(&a));
}

/// A lease that is not renewed expires after `short` (directory time), not before;
/// the reader that notices removes the member and raises the epoch once, for every
/// reader. Other members are untouched; the expired node can rejoin.
pub async fn membership_lease_expiry(m: &dyn Membership, time: &dyn Time, short: Duration) {
    let (a, b) = (
        node(&fresh("a"), NodeRole::Session),
        node(&fresh("b"), NodeRole::Session),
    );
    ok(m.heartbeat(&a, LONG).await, "heartbeat");
    ok(m.heartbeat(&b, LONG).await, "heartbeat");
    let before = view(m).await;
    assert_eq!(before.nodes.len(), 2);

    // Nothing is asserted between this heartbeat and the expiry: no check may
    // depend on this task being scheduled again within `short`.
    let t0 = time.now();
    ok(m.heartbeat(&a, short).await, "heartbeat with a short lease");
    let patience = short * 20 + Duration::from_secs(10);
    let gone = loop {
        let v = view(m).await;
        if !v.is_live(&a.id) {
            break v;
        }
        let waited = time.now() - t0;
        assert!(
            waited < patience,
            "a {short:?} lease still live after {waited:?}"
        );
        time.pass(short / 10).await;
    };
    let lasted = time.now() - t0;
    assert!(
        lasted >= short * 9 / 10,
        "a {short:?} lease expired after only {lasted:?}"
    );
    assert_bumped(&before, &gone, "an expiry");
    assert_eq!(gone.nodes, vec![b.clone()], "only the expired node goes");
    let again = view(m).await;
    assert_same_epoch(&gone, &again, "reading after the expiry was noticed");
    assert_eq!(again.nodes, gone.nodes);

    assert!(
        ok(m.heartbeat(&a, LONG).await, "rejoin"),
        "a heartbeat after the lease expired is a join: what the directory held for the node may be gone"
    );
    let back = view(m).await;
    assert_bumped(&again, &back, "a rejoin after expiry");
    assert!(back.is_live(&a.id));
}

/// A renewal moves the expiry: a node that heartbeats with a long lease outlives
/// the short lease it had before.
pub async fn membership_renewal_extends_lease(
    m: &dyn Membership,
    time: &dyn Time,
    short: Duration,
) {
    let a = node(&fresh("a"), NodeRole::Edge);
    ok(m.heartbeat(&a, short).await, "heartbeat with a short lease");
    ok(m.heartbeat(&a, LONG).await, "renewal with a long lease");
    let v1 = view(m).await;
    assert_eq!(v1.nodes, vec![a.clone()]);
    time.pass(short * 3).await;
    let v2 = view(m).await;
    assert_eq!(v2.nodes, vec![a.clone()], "the renewed lease expired early");
    assert_same_epoch(&v1, &v2, "time passing within a lease");
}
