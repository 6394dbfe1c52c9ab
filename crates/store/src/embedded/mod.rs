//! The embedded backend: one redb file in the data directory. redb is synchronous
//! and fsyncs on commit, so every operation runs on tokio's blocking pool.
//!
//! # Layout
//!
//! Per-user tables are keyed by redb tuples whose first part is the owner's bare
//! JID. Tuples compare part by part, so one user's rows are one contiguous range —
//! loading or deleting a user is a range scan, and no user's range can reach into
//! another's, even when one JID is a string prefix of the other (`al@x` and
//! `al@x.org`), which a scan by string prefix would get wrong.
//!
//! | table               | key                   | value (codec record)           |
//! |---------------------|-----------------------|--------------------------------|
//! | `accounts`          | bare JID              | opaque credentials, raw        |
//! | `roster_items`      | (owner, contact)      | roster item                    |
//! | `roster_tombstones` | (owner, contact)      | tombstone version              |
//! | `roster_pending_in` | (owner, contact)      | blob: the subscribe request    |
//! | `roster_meta`       | owner                 | epoch, version, tombstone floor|
//! | `offline`           | (owner, id: u64)      | blob: the stanza               |
//! | `offline_queues`    | owner                 | next id, queue length          |
//! | `blocklist`         | (owner, blocked item) | `()`: the key is the data      |
//!
//! Every value except credentials (whose format belongs to `aviary-sasl`) is
//! encoded by the crate's `codec` module and starts with a format-version byte.

mod accounts;
mod blocks;
mod offline;
mod roster;

use crate::StoreError;
use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition, WriteTransaction};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// bare JID → opaque credentials.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// (owner, contact) → roster item.
const ROSTER_ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster_items");
/// (owner, contact) → version at which the item was removed.
const ROSTER_TOMBSTONES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("roster_tombstones");
/// (owner, contact) → the unanswered `<presence type='subscribe'/>`.
const ROSTER_PENDING_IN: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("roster_pending_in");
/// owner → roster meta.
const ROSTER_META: TableDefinition<&str, &[u8]> = TableDefinition::new("roster_meta");
/// (owner, id) → offline stanza.
const OFFLINE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("offline");
/// owner → next offline id and queue length.
const OFFLINE_QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("offline_queues");
/// (owner, blocked JID) → nothing.
const BLOCKLIST: TableDefinition<(&str, &str), ()> = TableDefinition::new("blocklist");

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) `dir/aviary.redb`, creating `dir` too.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path: PathBuf = dir.join("aviary.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.display().to_string(),
            },
            e => StoreError::Unavailable(format!("cannot open {}: {e}", path.display())),
        })?;
        // Create every table up front so read transactions never see a missing one;
        // this also upgrades a file from before a table existed.
        write(&db, |txn| {
            txn.open_table(ACCOUNTS).map_err(unavailable)?;
            txn.open_table(ROSTER_ITEMS).map_err(unavailable)?;
            txn.open_table(ROSTER_TOMBSTONES).map_err(unavailable)?;
            txn.open_table(ROSTER_PENDING_IN).map_err(unavailable)?;
            txn.open_table(ROSTER_META).map_err(unavailable)?;
            txn.open_table(OFFLINE).map_err(unavailable)?;
            txn.open_table(OFFLINE_QUEUES).map_err(unavailable)?;
            txn.open_table(BLOCKLIST).map_err(unavailable)?;
            Ok(())
        })?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Runs `f` in one write transaction on the blocking pool, committing if it
    /// succeeds. On error nothing `f` did is kept.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.blocking(move |db| write(db, f)).await
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            f(&txn)
        })
        .await
    }
}

fn write<T>(
    db: &Database,
    f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    match f(&txn) {
        Ok(out) => {
            txn.commit().map_err(unavailable)?;
            Ok(out)
        }
        Err(e) => {
            // Abort explicitly: the error we return matters more than an abort failure.
            if let Err(abort) = txn.abort() {
                tracing::warn!(error = %abort, "aborting a failed store transaction failed");
            }
            Err(e)
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(e)
}

/// The keys of `owner` in an `(owner, text)` table, as owned bounds: from
/// `(owner, "")` up to, excluding, `(owner + "\0", "")` — the least key whose first
/// part sorts after `owner`. Use with [`OwnerRange::range`].
struct OwnerRange {
    owner: String,
    after: String,
}

impl OwnerRange {
    fn new(owner: &str) -> Self {
        let mut after = String::with_capacity(owner.len() + 1);
        after.push_str(owner);
        after.push('\0');
        OwnerRange {
            owner: owner.to_owned(),
            after,
        }
    }

    fn range(&self) -> Range<(&str, &str)> {
        (self.owner.as_str(), "")..(self.after.as_str(), "")
    }
}

/// Turns a value's decode failure into [`StoreError::Corrupt`] naming the row.
fn corrupt(table: &str, key: impl std::fmt::Debug, e: crate::codec::DecodeError) -> StoreError {
    StoreError::Corrupt(format!("{table} row {key:?}: {e}"))
}

/// A stored JID key that does not parse: written by something other than us.
fn corrupt_jid(table: &str, key: &str, e: jid::Error) -> StoreError {
    StoreError::Corrupt(format!("{table}: key {key:?} is not a bare JID: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountStore;
    use jid::BareJid;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[tokio::test]
    async fn second_open_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _s = EmbeddedStore::open(dir.path()).unwrap();
        assert!(matches!(
            EmbeddedStore::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }

    #[tokio::test]
    async fn failed_write_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let err = s
            .write(|txn| {
                let mut t = txn.open_table(ACCOUNTS).map_err(unavailable)?;
                t.insert("a@x", &b"c"[..]).map_err(unavailable)?;
                Err::<(), _>(StoreError::Corrupt("boom".into()))
            })
            .await;
        assert!(matches!(err, Err(StoreError::Corrupt(_))));
        assert_eq!(s.credentials(&jid("a@x")).await.unwrap(), None);
    }

    #[test]
    fn owner_range_is_exactly_the_owners_rows() {
        let r = OwnerRange::new("al@x");
        let range = r.range();
        let inside = |k: (&str, &str)| range.contains(&k);
        assert!(inside(("al@x", "")));
        assert!(inside(("al@x", "\u{10ffff}")));
        assert!(!inside(("al@x.org", "")));
        assert!(!inside(("al@x\0", "")));
        assert!(!inside(("al@w", "zzz")));
        assert!(!inside(("alice@x", "")));
    }
}
