//! The backend conformance suite: the behaviour every store backend must show,
//! written against the traits only, so the embedded and the CQL backend run the
//! very same checks. A backend's test calls [`run_all`] (or single checks) on a
//! [`Stores`] built from it; a check panics with a message naming the broken
//! behaviour.
//!
//! Every check works in its own freshly made-up domain, so the suite can run
//! against a shared, non-empty database (a long-lived Cassandra node) and in
//! parallel with itself. Several checks use a "prefix family" of users whose JIDs
//! are string prefixes of one another, because a backend that finds a user's rows
//! by string prefix would mix them up.
//!
//! Compiled always rather than behind a cargo feature: it has no dependencies of
//! its own, so it costs a little compile time and nothing at run time (unused
//! functions are dropped at link time), and a backend's tests — in this crate or
//! another — call it without feature juggling. It needs a tokio runtime (one
//! check spawns a task), like the stores themselves.

// Test support: a failed expectation must panic, that is how it fails a test. The
// allowance covers the submodules too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod blocks;
mod offline;
mod roster;

pub use accounts::{accounts_lifecycle, accounts_list_pages_by_domain};
pub use blocks::{blocklist_isolates_users, blocklist_set_semantics};
pub use offline::{
    offline_cap, offline_isolates_users, offline_order_and_ids, offline_remove_through,
};
pub use roster::{
    roster_apply_is_atomic, roster_apply_is_idempotent, roster_delete_isolates_users,
    roster_prune_tombstones, roster_round_trip, roster_upsert_remove_and_pending_in,
};

use crate::records::StoredRoster;
use crate::{StoreError, Stores};
use blocks::blocklist;
use jid::BareJid;
use offline::{load, push};
use roster::fill_roster;
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs every check below, one after another.
pub async fn run_all(stores: &Stores) {
    accounts_lifecycle(stores).await;
    accounts_list_pages_by_domain(stores).await;
    roster_round_trip(stores).await;
    roster_upsert_remove_and_pending_in(stores).await;
    roster_prune_tombstones(stores).await;
    roster_apply_is_idempotent(stores).await;
    roster_apply_is_atomic(stores).await;
    roster_delete_isolates_users(stores).await;
    offline_order_and_ids(stores).await;
    offline_cap(stores).await;
    offline_remove_through(stores).await;
    offline_isolates_users(stores).await;
    blocklist_set_semantics(stores).await;
    blocklist_isolates_users(stores).await;
    delete_account_removes_everything(stores).await;
}

/// A domain no other run or check uses.
fn fresh_domain(check: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{check}-{nanos:x}-{:x}-{seq}.conformance.test",
        std::process::id()
    )
}

fn jid(s: &str) -> BareJid {
    BareJid::new(s).unwrap_or_else(|e| panic!("test JID {s:?}: {e}"))
}

/// Users whose JIDs are string prefixes of one another (`al@d` of `al@dx` and of
/// `al@d.x`) or whose local parts are (`al` of `alice`): a backend that finds a
/// user's rows by string prefix mixes them up. The first is the prefix of all.
fn prefix_family(domain: &str) -> Vec<BareJid> {
    ["al@{d}", "alice@{d}", "al@{d}x", "al@{d}.x"]
        .iter()
        .map(|p| jid(&p.replace("{d}", domain)))
        .collect()
}

#[track_caller]
fn ok<T>(r: Result<T, StoreError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: store error: {e}"))
}

/// `Stores::delete_account` removes the account, roster, queue and block list of
/// that user and nothing of anyone else's.
pub async fn delete_account_removes_everything(stores: &Stores) {
    let family = prefix_family(&fresh_domain("delete"));
    let mut before = Vec::new();
    for u in &family {
        assert!(ok(
            stores.accounts.create(u, u.as_str().as_bytes()).await,
            "create"
        ));
        let roster = fill_roster(stores, u).await;
        push(stores, u, &format!("for {u}"), 10).await;
        ok(
            stores.blocks.block(u, &[format!("b.{}", u.domain())]).await,
            "block",
        );
        before.push((roster, load(stores, u).await, blocklist(stores, u).await));
    }
    let gone = &family[0];
    assert!(
        ok(stores.delete_account(gone).await, "delete_account"),
        "delete_account of an account returned false"
    );
    assert_eq!(
        ok(stores.accounts.credentials(gone).await, "credentials"),
        None,
        "account left behind"
    );
    assert_eq!(
        ok(stores.rosters.load_roster(gone).await, "load_roster"),
        StoredRoster::default(),
        "roster left behind"
    );
    assert!(
        load(stores, gone).await.is_empty(),
        "offline messages left behind"
    );
    assert_eq!(
        ok(stores.offline.count_offline(gone).await, "count_offline"),
        0,
        "offline count left behind"
    );
    assert!(
        blocklist(stores, gone).await.is_empty(),
        "block list left behind"
    );
    assert!(
        !ok(stores.delete_account(gone).await, "delete_account"),
        "second delete_account returned true"
    );
    for (u, (roster, queue, blocks)) in family.iter().zip(&before).skip(1) {
        let who = format!("deleting {gone} changed {u}'s");
        assert_eq!(
            ok(stores.accounts.credentials(u).await, "credentials").as_deref(),
            Some(u.as_str().as_bytes()),
            "{who} account"
        );
        assert_eq!(
            &ok(stores.rosters.load_roster(u).await, "load_roster"),
            roster,
            "{who} roster"
        );
        assert_eq!(&load(stores, u).await, queue, "{who} offline queue");
        assert_eq!(&blocklist(stores, u).await, blocks, "{who} block list");
    }
}
