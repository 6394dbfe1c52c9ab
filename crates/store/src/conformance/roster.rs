//! Conformance checks for [`RosterStore`](crate::RosterStore): round trips, the
//! meaning of each [`RosterChange`], and `apply_roster`'s atomicity and
//! idempotence.

use super::{fresh_domain, jid, ok, prefix_family};
use crate::Stores;
use crate::records::{
    PendingIn, RosterChange, RosterMeta, RosterRecord, StoredRoster, Subscription, Tombstone,
};
use jid::BareJid;

fn item(contact: &BareJid, version: u64) -> RosterRecord {
    RosterRecord {
        contact: contact.clone(),
        name: Some(format!("Name of {contact} ✓")),
        groups: vec!["Friends".into(), "Work".into()],
        subscription: Subscription::Both,
        ask: false,
        approved: false,
        version,
    }
}

fn meta(version: u64) -> RosterMeta {
    RosterMeta {
        epoch: 0x5eed_0000_0000_0001,
        version,
        tombstone_floor: 0,
    }
}

/// Gives `user` a roster with an item, a tombstone and a pending-in request.
pub(super) async fn fill_roster(stores: &Stores, user: &BareJid) -> StoredRoster {
    let d = user.domain().as_str();
    let changes = vec![
        RosterChange::Upsert(item(&jid(&format!("friend@{d}")), 1)),
        RosterChange::Remove(Tombstone {
            contact: jid(&format!("gone@{d}")),
            version: 2,
        }),
        RosterChange::SetPendingIn(PendingIn {
            contact: jid(&format!("asker@{d}")),
            stanza: format!("<presence type='subscribe' to='{user}'/>").into_bytes(),
        }),
    ];
    ok(
        stores.rosters.apply_roster(user, meta(2), changes).await,
        "apply_roster",
    );
    ok(stores.rosters.load_roster(user).await, "load_roster")
}

/// Everything `apply_roster` stores comes back from `load_roster`, each list in
/// contact order whatever the order written.
pub async fn roster_round_trip(stores: &Stores) {
    let d = fresh_domain("roster-rt");
    let user = jid(&format!("owner@{d}"));
    assert_eq!(
        ok(stores.rosters.load_roster(&user).await, "load_roster"),
        StoredRoster::default(),
        "a new user's roster must be empty"
    );
    let c = |l: &str| jid(&format!("{l}@{d}"));
    let full = RosterRecord {
        contact: c("zoe"),
        name: Some("Zoë «quoted» & <tagged>".into()),
        groups: vec!["A".into(), String::new(), "Ünïcödé".into()],
        subscription: Subscription::To,
        ask: true,
        approved: true,
        version: u64::MAX,
    };
    let bare = RosterRecord {
        contact: c("adam"),
        name: None,
        groups: vec![],
        subscription: Subscription::None,
        ask: false,
        approved: false,
        version: 0,
    };
    let from = RosterRecord {
        contact: c("mia"),
        subscription: Subscription::From,
        ..bare.clone()
    };
    let tomb = |l: &str, version| Tombstone {
        contact: c(l),
        version,
    };
    let pend = |l: &str, stanza: &[u8]| PendingIn {
        contact: c(l),
        stanza: stanza.to_vec(),
    };
    let m = RosterMeta {
        epoch: u64::MAX,
        version: 41,
        tombstone_floor: 7,
    };
    let changes = vec![
        RosterChange::Upsert(full.clone()),
        RosterChange::Upsert(bare.clone()),
        RosterChange::Upsert(from.clone()),
        RosterChange::Remove(tomb("yan", 40)),
        RosterChange::Remove(tomb("bea", 8)),
        RosterChange::SetPendingIn(pend(
            "xia",
            b"<presence type='subscribe'><status>hi</status></presence>",
        )),
        RosterChange::SetPendingIn(pend("cal", b"")),
    ];
    ok(
        stores.rosters.apply_roster(&user, m, changes).await,
        "apply_roster",
    );
    let want = StoredRoster {
        meta: m,
        items: vec![bare, from, full],
        tombstones: vec![tomb("bea", 8), tomb("yan", 40)],
        pending_in: vec![
            pend("cal", b""),
            pend(
                "xia",
                b"<presence type='subscribe'><status>hi</status></presence>",
            ),
        ],
    };
    assert_eq!(
        ok(stores.rosters.load_roster(&user).await, "load_roster"),
        want,
        "roster round trip"
    );
}

/// Upsert replaces; Remove swaps the item for a tombstone and Upsert swaps back;
/// pending-in requests are set, replaced and cleared on their own.
pub async fn roster_upsert_remove_and_pending_in(stores: &Stores) {
    let d = fresh_domain("roster-ops");
    let user = jid(&format!("owner@{d}"));
    let bob = jid(&format!("bob@{d}"));
    let r = &stores.rosters;
    let apply = |v: u64, changes: Vec<RosterChange>| {
        let (r, user) = (r.clone(), user.clone());
        async move {
            ok(
                r.apply_roster(&user, meta(v), changes).await,
                "apply_roster",
            )
        }
    };
    let load = || async { ok(r.load_roster(&user).await, "load_roster") };

    apply(1, vec![RosterChange::Upsert(item(&bob, 1))]).await;
    let mut renamed = item(&bob, 2);
    renamed.name = None;
    renamed.groups = vec!["New".into()];
    apply(2, vec![RosterChange::Upsert(renamed.clone())]).await;
    let got = load().await;
    assert_eq!(
        got.items,
        vec![renamed],
        "Upsert must replace the whole item"
    );
    assert_eq!(got.meta, meta(2), "meta must be replaced by the last apply");

    let req = PendingIn {
        contact: bob.clone(),
        stanza: b"<presence type='subscribe'/>".to_vec(),
    };
    apply(3, vec![RosterChange::SetPendingIn(req.clone())]).await;
    let tomb = Tombstone {
        contact: bob.clone(),
        version: 4,
    };
    apply(4, vec![RosterChange::Remove(tomb.clone())]).await;
    let got = load().await;
    assert!(
        got.items.is_empty(),
        "Remove must delete the item: {:?}",
        got.items
    );
    assert_eq!(
        got.tombstones,
        vec![tomb],
        "Remove must record the tombstone"
    );
    assert_eq!(
        got.pending_in,
        vec![req.clone()],
        "Remove must keep a pending-in request"
    );

    apply(5, vec![RosterChange::Upsert(item(&bob, 5))]).await;
    let got = load().await;
    assert_eq!(
        got.items,
        vec![item(&bob, 5)],
        "Upsert after Remove must restore the item"
    );
    assert!(
        got.tombstones.is_empty(),
        "Upsert must drop the contact's tombstone: {:?}",
        got.tombstones
    );

    let newer = PendingIn {
        contact: bob.clone(),
        stanza: b"<presence type='subscribe'><status>again</status></presence>".to_vec(),
    };
    apply(6, vec![RosterChange::SetPendingIn(newer.clone())]).await;
    assert_eq!(
        load().await.pending_in,
        vec![newer],
        "SetPendingIn must replace"
    );
    let nobody = jid(&format!("nobody@{d}"));
    apply(
        7,
        vec![
            RosterChange::ClearPendingIn(bob.clone()),
            RosterChange::ClearPendingIn(nobody),
        ],
    )
    .await;
    let got = load().await;
    assert!(
        got.pending_in.is_empty(),
        "ClearPendingIn must clear: {:?}",
        got.pending_in
    );
    assert_eq!(
        got.items,
        vec![item(&bob, 5)],
        "ClearPendingIn must not touch items"
    );
    assert_eq!(
        got.meta,
        meta(7),
        "meta after an apply with only no-op changes"
    );
    apply(8, vec![]).await;
    assert_eq!(
        load().await.meta,
        meta(8),
        "an apply without changes still sets the meta"
    );
}

/// PruneTombstones drops tombstones below the new floor, including ones written
/// earlier in the same call, and nothing else.
pub async fn roster_prune_tombstones(stores: &Stores) {
    let d = fresh_domain("roster-prune");
    let user = jid(&format!("owner@{d}"));
    let t = |l: &str, version| Tombstone {
        contact: jid(&format!("{l}@{d}")),
        version,
    };
    let changes = vec![
        RosterChange::Remove(t("a", 1)),
        RosterChange::Remove(t("b", 3)),
        RosterChange::Remove(t("c", 5)),
    ];
    ok(
        stores.rosters.apply_roster(&user, meta(5), changes).await,
        "apply_roster",
    );
    let floored = RosterMeta {
        tombstone_floor: 3,
        ..meta(6)
    };
    let changes = vec![
        RosterChange::Upsert(item(&jid(&format!("keep@{d}")), 6)),
        RosterChange::Remove(t("d", 2)),
        RosterChange::PruneTombstones,
    ];
    ok(
        stores.rosters.apply_roster(&user, floored, changes).await,
        "apply_roster",
    );
    let got = ok(stores.rosters.load_roster(&user).await, "load_roster");
    assert_eq!(
        got.tombstones,
        vec![t("b", 3), t("c", 5)],
        "prune must drop exactly the tombstones below the floor"
    );
    assert_eq!(got.items.len(), 1, "prune must not touch items");
    assert_eq!(got.meta, floored);
}

/// Applying the same call twice (a retry) leaves the state of applying it once,
/// even when one call touches a contact more than once.
pub async fn roster_apply_is_idempotent(stores: &Stores) {
    let d = fresh_domain("roster-idem");
    let (once, twice) = (jid(&format!("once@{d}")), jid(&format!("twice@{d}")));
    let c = |l: &str| jid(&format!("{l}@{d}"));
    let m = RosterMeta {
        tombstone_floor: 2,
        ..meta(3)
    };
    let call = vec![
        RosterChange::Remove(Tombstone {
            contact: c("x"),
            version: 1,
        }),
        RosterChange::Upsert(item(&c("x"), 3)),
        RosterChange::Upsert(item(&c("y"), 3)),
        RosterChange::Remove(Tombstone {
            contact: c("y"),
            version: 3,
        }),
        RosterChange::Remove(Tombstone {
            contact: c("z"),
            version: 1,
        }),
        RosterChange::SetPendingIn(PendingIn {
            contact: c("p"),
            stanza: b"s".to_vec(),
        }),
        RosterChange::ClearPendingIn(c("p")),
        RosterChange::SetPendingIn(PendingIn {
            contact: c("q"),
            stanza: b"q".to_vec(),
        }),
        RosterChange::PruneTombstones,
    ];
    // Both start from the same roster (fill_roster's request names its user).
    let start = vec![
        RosterChange::Upsert(item(&c("friend"), 1)),
        RosterChange::Remove(Tombstone {
            contact: c("gone"),
            version: 2,
        }),
        RosterChange::SetPendingIn(PendingIn {
            contact: c("asker"),
            stanza: b"hi".to_vec(),
        }),
    ];
    for user in [&once, &twice] {
        ok(
            stores
                .rosters
                .apply_roster(user, meta(2), start.clone())
                .await,
            "apply_roster",
        );
    }
    ok(
        stores.rosters.apply_roster(&once, m, call.clone()).await,
        "apply_roster",
    );
    ok(
        stores.rosters.apply_roster(&twice, m, call.clone()).await,
        "apply_roster",
    );
    ok(
        stores.rosters.apply_roster(&twice, m, call).await,
        "apply_roster (retry)",
    );
    let a = ok(stores.rosters.load_roster(&once).await, "load_roster");
    let b = ok(stores.rosters.load_roster(&twice).await, "load_roster");
    assert_eq!(a, b, "applying a call twice must equal applying it once");
    assert_eq!(
        a.items
            .iter()
            .map(|i| i.contact.clone())
            .collect::<Vec<_>>(),
        vec![jid(&format!("friend@{d}")), c("x")]
    );
    let gone = Tombstone {
        contact: jid(&format!("gone@{d}")),
        version: 2,
    };
    let y = Tombstone {
        contact: c("y"),
        version: 3,
    };
    assert_eq!(a.tombstones, vec![gone, y], "tombstones after the call");
}

/// A reader never sees half of an `apply_roster`: while a writer applies calls that
/// each rewrite every item, the tombstone and the request to one version, every
/// snapshot is uniform and matches its meta.
pub async fn roster_apply_is_atomic(stores: &Stores) {
    const ITEMS: usize = 8;
    const ROUNDS: u64 = 25;
    let d = fresh_domain("roster-atomic");
    let user = jid(&format!("owner@{d}"));
    let contacts: Vec<BareJid> = (0..ITEMS).map(|i| jid(&format!("c{i}@{d}"))).collect();
    let writer = {
        let (rosters, user, d) = (stores.rosters.clone(), user.clone(), d.clone());
        tokio::spawn(async move {
            for v in 1..=ROUNDS {
                let mut changes: Vec<RosterChange> = contacts
                    .iter()
                    .map(|c| RosterChange::Upsert(item(c, v)))
                    .collect();
                changes.push(RosterChange::Remove(Tombstone {
                    contact: jid(&format!("t@{d}")),
                    version: v,
                }));
                changes.push(RosterChange::SetPendingIn(PendingIn {
                    contact: jid(&format!("p@{d}")),
                    stanza: v.to_string().into_bytes(),
                }));
                ok(
                    rosters.apply_roster(&user, meta(v), changes).await,
                    "apply_roster",
                );
            }
        })
    };
    loop {
        let done = writer.is_finished();
        let got = ok(stores.rosters.load_roster(&user).await, "load_roster");
        let v = got.meta.version;
        if v == 0 {
            assert_eq!(
                got,
                StoredRoster::default(),
                "rows visible before their meta"
            );
        } else {
            assert_eq!(
                got.items.len(),
                ITEMS,
                "torn read at version {v}: {} items",
                got.items.len()
            );
            assert!(
                got.items.iter().all(|i| i.version == v),
                "torn read: items {:?} under meta version {v}",
                got.items.iter().map(|i| i.version).collect::<Vec<_>>()
            );
            assert_eq!(
                got.tombstones.iter().map(|t| t.version).collect::<Vec<_>>(),
                vec![v],
                "torn read: tombstone under meta version {v}"
            );
            assert_eq!(
                got.pending_in
                    .iter()
                    .map(|p| p.stanza.clone())
                    .collect::<Vec<_>>(),
                vec![v.to_string().into_bytes()],
                "torn read: request under meta version {v}"
            );
        }
        if done {
            // Surface a failed writer's own panic before judging its last snapshot.
            writer
                .await
                .unwrap_or_else(|e| panic!("roster writer failed: {e}"));
            assert_eq!(v, ROUNDS, "the last snapshot must show the last apply");
            break;
        }
    }
}

/// Deleting one user's roster empties it and leaves users with prefix-related JIDs
/// untouched, in both directions.
pub async fn roster_delete_isolates_users(stores: &Stores) {
    let family = prefix_family(&fresh_domain("roster-del"));
    let mut before = Vec::new();
    for u in &family {
        before.push(fill_roster(stores, u).await);
    }
    ok(
        stores.rosters.delete_roster(&family[0]).await,
        "delete_roster",
    );
    assert_eq!(
        ok(stores.rosters.load_roster(&family[0]).await, "load_roster"),
        StoredRoster::default(),
        "delete_roster must delete everything, meta included"
    );
    for (u, b) in family.iter().zip(&before).skip(1) {
        assert_eq!(
            &ok(stores.rosters.load_roster(u).await, "load_roster"),
            b,
            "deleting {}'s roster changed {u}'s",
            family[0]
        );
    }
    let first = fill_roster(stores, &family[0]).await;
    for u in &family[1..] {
        ok(stores.rosters.delete_roster(u).await, "delete_roster");
    }
    assert_eq!(
        ok(stores.rosters.load_roster(&family[0]).await, "load_roster"),
        first,
        "deleting longer JIDs' rosters changed {}'s",
        family[0]
    );
}
