//! The CQL backend against a real Apache Cassandra 5.0 node (the CQL stand-in for
//! ScyllaDB): the shared conformance suite, plus what only this backend has —
//! schema migrations, TTLs, lightweight transactions under real concurrency, and
//! damaged rows reported as `StoreError::Corrupt`.
//!
//! The node: `AVIARY_TEST_CQL=host:port` if set (CI starts one for all tests),
//! else a private one started with `deploy/dev/cassandra.sh start <tempdir>` and
//! stopped when the test ends, pass or fail. Without Java/Cassandra the test fails
//! and says how to fix it; it never skips. Each run works in fresh keyspaces.
//!
//! One `#[test]` runs every check in order: a driver session lives on the tokio
//! runtime that made it, and a node shared by several `#[test]`s would need a
//! process-wide owner to stop it, which Rust never drops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cql_support;

use aviary_store::cql::{self, CqlConfig, CqlStore};
use aviary_store::records::{RosterChange, RosterRecord, StoredRoster, Subscription};
use aviary_store::{StoreError, Stores, conformance};
use cql_support::{Ctx, Node};
use futures::FutureExt;
use jid::BareJid;
use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

#[test]
fn cql_backend() {
    let node = Node::get();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        let ctx = Ctx::new(&node.addr).await;
        let outcome = AssertUnwindSafe(all_checks(&ctx)).catch_unwind().await;
        // Our own node goes away with its keyspaces; a shared one keeps them.
        if node.started.is_none() {
            ctx.drop_keyspaces().await;
        }
        outcome
    });
    drop(rt);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn all_checks(ctx: &Ctx) {
    let t = Instant::now();
    check("conformance, fresh keyspace", conformance_fresh(ctx)).await;
    check("conformance, two nodes at once", conformance_two_nodes(ctx)).await;
    check("schema applied twice", schema_twice(ctx)).await;
    check("migrate() on a new keyspace", migrate_new_keyspace(ctx)).await;
    check("offline TTL", offline_ttl(ctx)).await;
    check("create-if-absent race", create_if_absent_race(ctx)).await;
    check("offline push race", offline_push_race(ctx)).await;
    check("corrupt rows", corrupt_rows(ctx)).await;
    check("unreachable node", unreachable(ctx)).await;
    eprintln!("cql tests: all checks in {:.1?}", t.elapsed());
}

async fn check(name: &str, f: impl std::future::Future<Output = ()>) {
    let t = Instant::now();
    f.await;
    eprintln!("cql tests: {name}: ok in {:.1?}", t.elapsed());
}

fn jid(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

async fn conformance_fresh(ctx: &Ctx) {
    conformance::run_all(&Stores::from_backend(ctx.store().await)).await;
}

/// The suite twice at once through two sessions — two nodes of a cluster — on a
/// keyspace that already holds data.
async fn conformance_two_nodes(ctx: &Ctx) {
    let a = Stores::from_backend(ctx.store().await);
    let b = Stores::from_backend(ctx.store().await);
    tokio::join!(conformance::run_all(&a), conformance::run_all(&b));
}

fn latest() -> u32 {
    cql::migrations().unwrap().last().unwrap().id
}

async fn recorded_migrations(ctx: &Ctx, ks: &str) -> Vec<i32> {
    let rows = ctx
        .raw
        .query_unpaged(format!("SELECT id FROM {ks}.schema_version"), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut ids: Vec<i32> = rows
        .rows::<(i32,)>()
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    ids.sort();
    ids
}

/// Connecting to a keyspace that has the schema changes nothing; so does an
/// explicit migrate.
async fn schema_twice(ctx: &Ctx) {
    let store = ctx.store().await;
    let status = cql::migrate(&ctx.config(&ctx.keyspace)).await.unwrap();
    assert_eq!(status.applied_now, Vec::<u32>::new(), "migrated twice");
    assert_eq!(status.version, latest());
    let want: Vec<i32> = (1..=latest() as i32).collect();
    assert_eq!(recorded_migrations(ctx, &ctx.keyspace).await, want);
    let u = jid("again@schema.test");
    let stores = Stores::from_backend(store);
    assert!(stores.accounts.create(&u, b"c").await.unwrap());
}

/// `migrate` builds a keyspace from nothing, records every migration once, and a
/// store can use the result.
async fn migrate_new_keyspace(ctx: &Ctx) {
    let ks = ctx.fresh_keyspace();
    let config = ctx.config(&ks);
    let status = cql::migrate(&config).await.unwrap();
    let all: Vec<u32> = cql::migrations().unwrap().iter().map(|m| m.id).collect();
    assert_eq!(status.applied_now, all);
    assert_eq!(status.version, latest());
    let again = cql::migrate(&config).await.unwrap();
    assert!(again.applied_now.is_empty(), "second migrate: {again:?}");
    assert_eq!(
        recorded_migrations(ctx, &ks).await.len(),
        all.len(),
        "each migration recorded once"
    );
    let rows = ctx
        .raw
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (&ks,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let tables: BTreeSet<String> = rows
        .rows::<(String,)>()
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    let want: BTreeSet<String> = [
        "accounts",
        "accounts_by_domain",
        "blocklist",
        "offline",
        "roster",
        "schema_version",
    ]
    .map(String::from)
    .into();
    assert_eq!(tables, want);
    let stores = Stores::from_backend(ctx.store_with(config).await);
    let u = jid("u@migrated.test");
    assert!(stores.offline.push_offline(&u, b"m", 1).await.unwrap());
}

/// Messages are written with the configured TTL and, once expired, neither load
/// nor count nor take room under the cap — while ids keep increasing.
async fn offline_ttl(ctx: &Ctx) {
    let hour = Stores::from_backend(
        ctx.store_with(CqlConfig {
            offline_ttl: Duration::from_secs(3600),
            ..ctx.config(&ctx.keyspace)
        })
        .await,
    );
    let u = jid("ttl@offline.test");
    assert!(hour.offline.push_offline(&u, b"m", 10).await.unwrap());
    let ttl = ttl_of(ctx, &u).await;
    assert!(
        matches!(ttl, Some(t) if (3500..=3600).contains(&t)),
        "TTL {ttl:?}, want about 3600 s"
    );

    let forever = Stores::from_backend(
        ctx.store_with(CqlConfig {
            offline_ttl: Duration::ZERO,
            ..ctx.config(&ctx.keyspace)
        })
        .await,
    );
    let f = jid("forever@offline.test");
    assert!(forever.offline.push_offline(&f, b"m", 10).await.unwrap());
    assert_eq!(ttl_of(ctx, &f).await, None, "offline_ttl 0 must set no TTL");

    // Cassandra expires a cell when its node's clock reaches the *second*
    // `write second + TTL`, so a TTL of n s gives between n-1 and n s of life.
    const TTL: u64 = 3;
    let short = Stores::from_backend(
        ctx.store_with(CqlConfig {
            offline_ttl: Duration::from_secs(TTL),
            ..ctx.config(&ctx.keyspace)
        })
        .await,
    );
    let s = jid("short@offline.test");
    let start = Instant::now();
    let push = |m: &'static str, max| {
        let short = short.clone();
        let s = s.clone();
        async move {
            short
                .offline
                .push_offline(&s, m.as_bytes(), max)
                .await
                .unwrap()
        }
    };
    assert!(push("a", 2).await && push("b", 2).await);
    let refused = !push("c", 2).await;
    let written = Instant::now();
    let before = short.offline.load_offline(&s).await.unwrap();
    if start.elapsed() < Duration::from_secs(TTL - 1) {
        // Nothing can have expired yet.
        assert!(refused, "push over the cap accepted");
        assert_eq!(before.len(), 2);
    } else {
        eprintln!(
            "cql tests: pushes took {:?}; skipped the before-expiry checks",
            start.elapsed()
        );
    }
    // Every message was written before `written`, so it is dead TTL s after it.
    tokio::time::sleep_until((written + Duration::from_millis(TTL * 1000 + 200)).into()).await;
    assert_eq!(short.offline.count_offline(&s).await.unwrap(), 0);
    assert!(short.offline.load_offline(&s).await.unwrap().is_empty());
    assert!(
        push("d", 1).await,
        "expired messages still take room under the cap"
    );
    let after = short.offline.load_offline(&s).await.unwrap();
    assert_eq!(after.len(), 1);
    let last_before = before.iter().map(|r| r.id).max().unwrap_or(0);
    assert!(
        after[0].id > last_before,
        "id reused after expiry: {} <= {last_before}",
        after[0].id
    );
}

async fn ttl_of(ctx: &Ctx, user: &BareJid) -> Option<i32> {
    let rows = ctx
        .raw
        .query_unpaged(
            format!(
                "SELECT TTL(stanza) FROM {}.offline WHERE owner = ?",
                ctx.keyspace
            ),
            (user.as_str(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    rows.single_row::<(Option<i32>,)>().unwrap().0
}

/// Many registrations of one name at once, through two sessions: exactly one
/// wins, its credentials stay, and the name is listed once.
async fn create_if_absent_race(ctx: &Ctx) {
    let nodes = [
        Stores::from_backend(ctx.store().await),
        Stores::from_backend(ctx.store().await),
    ];
    let u = jid("popular@race.test");
    let tries = (0..24).map(|i| {
        let stores = nodes[i % 2].clone();
        let u = u.clone();
        async move {
            let creds = format!("creds {i}").into_bytes();
            (stores.accounts.create(&u, &creds).await.unwrap(), creds)
        }
    });
    let results = futures::future::join_all(tries).await;
    let winners: Vec<&Vec<u8>> = results.iter().filter(|r| r.0).map(|r| &r.1).collect();
    assert_eq!(winners.len(), 1, "{} creates succeeded", winners.len());
    assert_eq!(
        nodes[0].accounts.credentials(&u).await.unwrap().as_ref(),
        Some(winners[0]),
        "a losing create overwrote the winner's credentials"
    );
    assert_eq!(
        nodes[1].accounts.list("race.test", None, 10).await.unwrap(),
        vec![u]
    );
}

/// Two nodes pushing into one queue at once (an ownership hand-over): the cap
/// holds exactly, every accepted message is stored, ids are unique and increase.
async fn offline_push_race(ctx: &Ctx) {
    let nodes = [
        Stores::from_backend(ctx.store().await),
        Stores::from_backend(ctx.store().await),
    ];
    let u = jid("busy@race.test");
    const MAX: usize = 12;
    let pushes = (0..20).map(|i| {
        let stores = nodes[i % 2].clone();
        let u = u.clone();
        async move {
            let m = format!("m{i}");
            (
                stores
                    .offline
                    .push_offline(&u, m.as_bytes(), MAX)
                    .await
                    .unwrap(),
                m,
            )
        }
    });
    let results = futures::future::join_all(pushes).await;
    let accepted: BTreeSet<String> = results.into_iter().filter(|r| r.0).map(|r| r.1).collect();
    assert_eq!(accepted.len(), MAX, "the cap did not hold exactly");
    let stored = nodes[0].offline.load_offline(&u).await.unwrap();
    assert!(
        stored.windows(2).all(|w| w[0].id < w[1].id),
        "ids not increasing: {:?}",
        stored.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    let got: BTreeSet<String> = stored
        .iter()
        .map(|r| String::from_utf8(r.stanza.clone()).unwrap())
        .collect();
    assert_eq!(got, accepted, "accepted messages lost or overwritten");
    assert_eq!(nodes[1].offline.count_offline(&u).await.unwrap(), MAX);
}

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Corrupt(msg)) => assert!(!msg.is_empty()),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// A valid v1 roster item record (see `codec.rs`): no name, no groups.
const ITEM: &str = "0x0100000000";

/// Rows the store never writes come back as `Corrupt`, never a panic; the damage
/// stays with its owner, and deleting it recovers the user.
async fn corrupt_rows(ctx: &Ctx) {
    let stores = Stores::from_backend(ctx.store().await);
    let healthy = jid("al@bad.test");
    assert!(
        stores
            .offline
            .push_offline(&healthy, b"fine", 5)
            .await
            .unwrap()
    );
    stores
        .rosters
        .apply_roster(&healthy, Default::default(), vec![upsert("bob@bad.test")])
        .await
        .unwrap();
    for cql in [
        "INSERT INTO {ks}.roster (owner, kind, contact, data) VALUES ('item@bad.test', 0, 'bob@x', 0x0107)",
        "INSERT INTO {ks}.roster (owner, kind, contact, data) VALUES ('contact@bad.test', 0, '@x', ITEM)",
        "INSERT INTO {ks}.roster (owner, kind, contact, data) VALUES ('kind@bad.test', 7, 'bob@x', ITEM)",
        "INSERT INTO {ks}.roster (owner, kind, contact) VALUES ('null@bad.test', 0, 'bob@x')",
        "UPDATE {ks}.roster SET epoch = 1 WHERE owner = 'meta@bad.test'",
        "INSERT INTO {ks}.roster (owner, kind, contact, data) VALUES ('tomb@bad.test', 1, 'old@x', 0x01ff)",
        "INSERT INTO {ks}.offline (owner, id, stanza, next_id) VALUES ('id@bad.test', -5, 0x00, 1)",
        "UPDATE {ks}.offline SET next_id = -3 WHERE owner = 'next@bad.test'",
        "INSERT INTO {ks}.accounts_by_domain (domain, jid) VALUES ('bad.test', 'x@@y')",
        "INSERT INTO {ks}.accounts (jid) VALUES ('nocreds@bad.test')",
    ] {
        ctx.cql(&cql.replace("ITEM", ITEM)).await;
    }
    for user in [
        "item@bad.test",
        "contact@bad.test",
        "kind@bad.test",
        "null@bad.test",
        "meta@bad.test",
        "tomb@bad.test",
    ] {
        assert_corrupt(stores.rosters.load_roster(&jid(user)).await, user);
    }
    // A damaged tombstone fails the apply that needs it before anything is written.
    let tomb = jid("tomb@bad.test");
    assert_corrupt(
        stores
            .rosters
            .apply_roster(&tomb, Default::default(), vec![upsert("new@x")])
            .await,
        "apply_roster over a damaged tombstone",
    );
    let rows = ctx
        .cql("SELECT contact FROM {ks}.roster WHERE owner = 'tomb@bad.test' AND kind = 0")
        .await;
    assert_eq!(
        rows.into_rows_result().unwrap().rows_num(),
        0,
        "partial apply"
    );

    assert_corrupt(
        stores.offline.load_offline(&jid("id@bad.test")).await,
        "offline id",
    );
    let next = jid("next@bad.test");
    assert_corrupt(
        stores.offline.push_offline(&next, b"m", 5).await,
        "offline next_id",
    );
    assert_corrupt(stores.accounts.list("bad.test", None, 10).await, "list");
    assert_corrupt(
        stores.accounts.credentials(&jid("nocreds@bad.test")).await,
        "credentials",
    );

    // The neighbour whose JID prefixes the damaged ones is untouched.
    assert_eq!(
        stores
            .rosters
            .load_roster(&healthy)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        stores.offline.load_offline(&healthy).await.unwrap().len(),
        1
    );
    // Deleting recovers.
    stores.rosters.delete_roster(&tomb).await.unwrap();
    assert_eq!(
        stores.rosters.load_roster(&tomb).await.unwrap(),
        StoredRoster::default()
    );
    stores.offline.delete_offline(&next).await.unwrap();
    assert!(stores.offline.push_offline(&next, b"m", 5).await.unwrap());
}

fn upsert(contact: &str) -> RosterChange {
    RosterChange::Upsert(RosterRecord {
        contact: jid(contact),
        name: None,
        groups: vec![],
        subscription: Subscription::None,
        ask: false,
        approved: false,
        version: 1,
    })
}

/// A node nobody listens on: a clear `Unavailable` within the connect timeout.
async fn unreachable(ctx: &Ctx) {
    let config = CqlConfig {
        contact_points: vec!["127.0.0.1:1".into()],
        connect_timeout: Duration::from_secs(3),
        ..ctx.config(&ctx.keyspace)
    };
    let t = Instant::now();
    match CqlStore::connect(config).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("127.0.0.1:1"), "message names no node: {msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}
