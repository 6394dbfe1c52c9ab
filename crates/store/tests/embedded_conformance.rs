//! The embedded (redb) backend against the shared conformance suite, plus what only
//! a file-backed store has: data surviving a restart, and damaged files reported as
//! `StoreError::Corrupt` instead of crashing the server.
//!
//! The corruption tests write to the file with redb directly, using the table names
//! and key types of the on-disk layout (`aviary_store::embedded` docs); they also
//! catch an accidental change of that layout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aviary_store::embedded::EmbeddedStore;
use aviary_store::records::{
    PendingIn, RosterChange, RosterMeta, RosterRecord, StoredRoster, Subscription, Tombstone,
};
use aviary_store::{StoreError, Stores, conformance};
use jid::BareJid;
use redb::{Database, ReadableDatabase, TableDefinition};
use std::path::Path;

fn jid(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

fn open(dir: &Path) -> Stores {
    Stores::from_backend(EmbeddedStore::open(dir).unwrap())
}

#[tokio::test]
async fn conformance_on_a_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(&open(dir.path())).await;
}

/// The suite must hold on a database that already has data, with itself running
/// alongside — as it will on a shared Cassandra node. (One runtime thread is
/// enough for overlap: the store work runs on the blocking pool.)
#[tokio::test]
async fn conformance_on_a_shared_busy_store() {
    let dir = tempfile::tempdir().unwrap();
    let stores = open(dir.path());
    conformance::run_all(&stores).await;
    tokio::join!(conformance::run_all(&stores), conformance::run_all(&stores));
}

fn roster_changes() -> (RosterMeta, Vec<RosterChange>) {
    let meta = RosterMeta {
        epoch: 0xfeed,
        version: 3,
        tombstone_floor: 1,
    };
    let changes = vec![
        RosterChange::Upsert(RosterRecord {
            contact: jid("bob@x"),
            name: Some("Bob".into()),
            groups: vec!["G".into()],
            subscription: Subscription::Both,
            ask: true,
            approved: true,
            version: 1,
        }),
        RosterChange::Remove(Tombstone {
            contact: jid("carl@x"),
            version: 2,
        }),
        RosterChange::SetPendingIn(PendingIn {
            contact: jid("dora@x"),
            stanza: b"<presence type='subscribe'/>".to_vec(),
        }),
    ];
    (meta, changes)
}

#[tokio::test]
async fn every_table_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let alice = jid("alice@x");
    let (meta, changes) = roster_changes();
    let (roster, queue) = {
        let s = open(dir.path());
        assert!(s.accounts.create(&alice, b"creds").await.unwrap());
        s.rosters.apply_roster(&alice, meta, changes).await.unwrap();
        for m in ["m1", "m2", "m3"] {
            assert!(
                s.offline
                    .push_offline(&alice, m.as_bytes(), 10)
                    .await
                    .unwrap()
            );
        }
        let first = s.offline.load_offline(&alice).await.unwrap()[0].id;
        s.offline.remove_offline(&alice, first).await.unwrap();
        s.blocks
            .block(&alice, &["spam.x".into(), "eve@x/r".into()])
            .await
            .unwrap();
        (
            s.rosters.load_roster(&alice).await.unwrap(),
            s.offline.load_offline(&alice).await.unwrap(),
        )
    };
    assert_eq!(roster.items.len(), 1);
    assert_eq!(queue.len(), 2);

    let s = open(dir.path());
    assert_eq!(
        s.accounts.credentials(&alice).await.unwrap().as_deref(),
        Some(&b"creds"[..])
    );
    assert_eq!(s.rosters.load_roster(&alice).await.unwrap(), roster);
    assert_eq!(s.offline.load_offline(&alice).await.unwrap(), queue);
    assert_eq!(s.offline.count_offline(&alice).await.unwrap(), 2);
    assert_eq!(
        s.blocks.load_blocklist(&alice).await.unwrap(),
        ["eve@x/r", "spam.x"]
    );
    // The id counter is persistent too: no id is handed out twice across restarts.
    assert!(s.offline.push_offline(&alice, b"m4", 3).await.unwrap());
    assert!(!s.offline.push_offline(&alice, b"m5", 3).await.unwrap());
    let after = s.offline.load_offline(&alice).await.unwrap();
    assert_eq!(after[..2], queue[..]);
    assert!(after[2].id > queue[1].id);
}

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const ROSTER_ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster_items");
const ROSTER_TOMBSTONES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("roster_tombstones");
const ROSTER_PENDING_IN: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("roster_pending_in");
const ROSTER_META: TableDefinition<&str, &[u8]> = TableDefinition::new("roster_meta");
const OFFLINE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("offline");
const OFFLINE_QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("offline_queues");

/// Writes raw rows with redb while the store is closed.
fn tamper(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::create(dir.join("aviary.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Corrupt(msg)) => assert!(!msg.is_empty()),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Create the tables and a healthy neighbour whose JID the damaged ones extend.
        let s = open(dir.path());
        let (meta, changes) = roster_changes();
        s.rosters
            .apply_roster(&jid("al@x"), meta, changes)
            .await
            .unwrap();
        s.offline
            .push_offline(&jid("al@x"), b"fine", 10)
            .await
            .unwrap();
    }
    tamper(dir.path(), |txn| {
        let mut t = txn.open_table(ROSTER_ITEMS).unwrap();
        t.insert(("items@x", "bob@x"), &[1u8, 7][..]).unwrap();
        t.insert(("contact@x", ""), &[1u8, 0, 0, 0, 0][..]).unwrap();
        let mut t = txn.open_table(ROSTER_TOMBSTONES).unwrap();
        t.insert(("tomb@x", "bob@x"), &[1u8, 0x80][..]).unwrap();
        let mut t = txn.open_table(ROSTER_PENDING_IN).unwrap();
        t.insert(("pending@x", "bob@x"), &[][..]).unwrap();
        let mut t = txn.open_table(ROSTER_META).unwrap();
        t.insert("meta@x", &[0u8; 20][..]).unwrap();
        t.insert("newer@x", &[2u8, 0][..]).unwrap();
        let mut t = txn.open_table(OFFLINE).unwrap();
        t.insert(("alice@x", 1), &[9u8, b'x'][..]).unwrap();
        let mut t = txn.open_table(OFFLINE_QUEUES).unwrap();
        t.insert("queue@x", &[1u8, 1][..]).unwrap();
        let mut t = txn.open_table(ACCOUNTS).unwrap();
        t.insert("", &b"creds"[..]).unwrap();
    });
    let s = open(dir.path());
    for user in [
        "items@x",
        "contact@x",
        "tomb@x",
        "pending@x",
        "meta@x",
        "newer@x",
    ] {
        assert_corrupt(s.rosters.load_roster(&jid(user)).await, user);
    }
    assert_corrupt(s.offline.load_offline(&jid("alice@x")).await, "offline");
    let q = jid("queue@x");
    assert_corrupt(s.offline.count_offline(&q).await, "count_offline");
    assert_corrupt(s.offline.push_offline(&q, b"m", 10).await, "push_offline");
    assert_corrupt(s.accounts.list("x", None, 10).await, "list");

    // Damage stays with its owner: the prefix neighbour still loads.
    assert_eq!(
        s.rosters
            .load_roster(&jid("al@x"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(s.offline.load_offline(&jid("al@x")).await.unwrap().len(), 1);
    // And deleting the damaged data recovers the user.
    s.rosters.delete_roster(&jid("tomb@x")).await.unwrap();
    assert_eq!(
        s.rosters.load_roster(&jid("tomb@x")).await.unwrap(),
        StoredRoster::default()
    );
    s.offline.delete_offline(&q).await.unwrap();
    assert!(s.offline.push_offline(&q, b"m", 10).await.unwrap());
}

/// A failure part-way through `apply_roster` keeps none of it: here the prune step
/// meets a damaged tombstone after an upsert in the same call.
#[tokio::test]
async fn failed_apply_roster_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let user = jid("u@x");
    let (meta, changes) = roster_changes();
    {
        let s = open(dir.path());
        s.rosters.apply_roster(&user, meta, changes).await.unwrap();
    }
    tamper(dir.path(), |txn| {
        let mut t = txn.open_table(ROSTER_TOMBSTONES).unwrap();
        t.insert(("u@x", "zed@x"), &[1u8, 0xff][..]).unwrap();
    });
    let s = open(dir.path());
    let before = s.rosters.load_roster(&user).await;
    assert_corrupt(before, "load with a damaged tombstone");
    let next = RosterMeta {
        version: 9,
        tombstone_floor: 9,
        ..meta
    };
    let upsert = RosterChange::Upsert(RosterRecord {
        contact: jid("new@x"),
        name: None,
        groups: vec![],
        subscription: Subscription::None,
        ask: false,
        approved: false,
        version: 9,
    });
    assert_corrupt(
        s.rosters
            .apply_roster(&user, next, vec![upsert, RosterChange::PruneTombstones])
            .await,
        "apply_roster",
    );
    drop(s);
    // Read the rows back raw: neither the upsert nor the new meta may be there.
    let db = Database::create(dir.path().join("aviary.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let items = txn.open_table(ROSTER_ITEMS).unwrap();
    assert!(items.get(("u@x", "new@x")).unwrap().is_none());
    let metas = txn.open_table(ROSTER_META).unwrap();
    let m = metas.get("u@x").unwrap().unwrap();
    assert_eq!(m.value()[0], 1);
    assert_eq!(&m.value()[1..9], &0xfeed_u64.to_le_bytes(), "meta epoch");
    assert_eq!(m.value()[9], 3, "meta version must be the old one");
}
