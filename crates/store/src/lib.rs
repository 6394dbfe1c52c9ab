//! Storage for Aviary: the traits the rest of the server programs against, and their
//! backends — `embedded` (a local redb file, for the single-process default) and
//! `cql` (ScyllaDB or Apache Cassandra, for clusters). Both pass the same
//! [`conformance`] suite.
//!
//! Values that only the protocol layers understand (SCRAM credentials) are opaque
//! bytes here, so storage never has to change when an authentication format does.
#![forbid(unsafe_code)]

mod codec;
pub mod conformance;
pub mod cql;
pub mod embedded;
mod error;
pub mod metrics;
pub mod records;

pub use error::StoreError;
pub use records::{
    OfflineRecord, PendingIn, RosterChange, RosterMeta, RosterRecord, StoredRoster, Subscription,
    Tombstone,
};

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;

/// Accounts: one record per bare JID holding its (opaque, never plaintext)
/// credentials.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates the account; `Ok(false)` when it already exists (nothing changed).
    async fn create(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError>;

    /// Creates many accounts at once (bulk import); returns how many were created,
    /// skipping those that already exist.
    async fn create_many(&self, accounts: Vec<(BareJid, Vec<u8>)>) -> Result<usize, StoreError> {
        let mut created = 0;
        for (jid, creds) in accounts {
            if self.create(&jid, &creds).await? {
                created += 1;
            }
        }
        Ok(created)
    }

    /// Replaces the credentials; `Ok(false)` when there is no such account.
    async fn set_credentials(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError>;

    async fn credentials(&self, jid: &BareJid) -> Result<Option<Vec<u8>>, StoreError>;

    /// Deletes the account; `Ok(false)` when there was none.
    async fn delete(&self, jid: &BareJid) -> Result<bool, StoreError>;

    /// Accounts of `domain` in JID order (byte order of the bare JID strings),
    /// starting after `after` (which need not exist), at most `limit`.
    async fn list(
        &self,
        domain: &str,
        after: Option<&BareJid>,
        limit: usize,
    ) -> Result<Vec<BareJid>, StoreError>;
}

/// Rosters, their versioning data and pending inbound subscription requests
/// (RFC 6121 §2, §3). The user actor is the single writer of a user's roster.
#[async_trait]
pub trait RosterStore: Send + Sync + 'static {
    /// The whole stored roster of `user`, read as one consistent snapshot: a
    /// concurrent `apply_roster` is seen entirely or not at all. Items, tombstones
    /// and pending-in requests are each in contact order (byte order of the bare
    /// JID strings). A user with nothing stored gets `StoredRoster::default()`.
    async fn load_roster(&self, user: &BareJid) -> Result<StoredRoster, StoreError>;

    /// Applies `changes` in order and replaces the meta with `meta`, atomically.
    /// Applying the same call twice has the same effect as once (a retry after a
    /// timeout is safe).
    ///
    /// A contact has at most one of item and tombstone: `Upsert` replaces the item
    /// and drops the contact's tombstone, `Remove` deletes the item and sets the
    /// tombstone. Pending-in requests are independent of items (`Remove` leaves
    /// the contact's request alone). `PruneTombstones` uses `meta.tombstone_floor` and sees the tombstones
    /// written earlier in the same call. Removing or clearing what is absent is
    /// not an error.
    async fn apply_roster(
        &self,
        user: &BareJid,
        meta: RosterMeta,
        changes: Vec<RosterChange>,
    ) -> Result<(), StoreError>;

    /// Deletes everything stored about `user`'s roster, meta included (account
    /// deletion): a later `load_roster` returns `StoredRoster::default()`.
    async fn delete_roster(&self, user: &BareJid) -> Result<(), StoreError>;
}

/// Offline message queues (XEP-0160), bounded per user.
#[async_trait]
pub trait OfflineStore: Send + Sync + 'static {
    /// Appends a message unless the queue already holds `max` messages (checked
    /// atomically with the append); returns whether it was stored. `max == 0`
    /// stores nothing.
    ///
    /// Ids increase in push order and are never reused for a user — a message
    /// pushed after `remove_offline(user, n)` gets an id above `n` even if the
    /// queue was emptied — so a retried `remove_offline` never removes a message
    /// pushed after the first attempt. Only `delete_offline` may restart them.
    async fn push_offline(
        &self,
        user: &BareJid,
        stanza: &[u8],
        max: usize,
    ) -> Result<bool, StoreError>;

    /// The queued messages in delivery order (increasing id).
    async fn load_offline(&self, user: &BareJid) -> Result<Vec<OfflineRecord>, StoreError>;

    /// Removes every queued message with an id up to and including `last_id`
    /// (after they were delivered). Idempotent; ids that are absent are fine.
    async fn remove_offline(&self, user: &BareJid, last_id: u64) -> Result<(), StoreError>;

    /// Number of queued messages (what `load_offline` would return).
    async fn count_offline(&self, user: &BareJid) -> Result<usize, StoreError>;

    /// Deletes the queue and its id counter (account deletion).
    async fn delete_offline(&self, user: &BareJid) -> Result<(), StoreError>;
}

/// Block lists (XEP-0191). Items are JIDs of any form (domain, bare or full), kept
/// as the normalised strings the user blocked. A block list is a set: blocking an
/// item twice stores it once, unblocking an absent item is not an error.
#[async_trait]
pub trait BlockStore: Send + Sync + 'static {
    /// The blocked items, each once, in byte order (not the order blocked).
    async fn load_blocklist(&self, user: &BareJid) -> Result<Vec<String>, StoreError>;

    /// Adds `jids` (in one atomic write).
    async fn block(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError>;

    /// Removes `jids` (in one atomic write).
    async fn unblock(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError>;

    /// Empties the block list (XEP-0191 unblock-all, and account deletion).
    async fn unblock_all(&self, user: &BareJid) -> Result<(), StoreError>;
}

/// Every store a node uses, from one backend.
#[derive(Clone)]
pub struct Stores {
    pub accounts: Arc<dyn AccountStore>,
    pub rosters: Arc<dyn RosterStore>,
    pub offline: Arc<dyn OfflineStore>,
    pub blocks: Arc<dyn BlockStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// All four stores from one backend value.
    pub fn from_backend<B>(backend: B) -> Stores
    where
        B: AccountStore + RosterStore + OfflineStore + BlockStore + Clone,
    {
        // Every backend is metered the same way.
        let backend = metrics::Metered(backend);
        Stores {
            accounts: Arc::new(backend.clone()),
            rosters: Arc::new(backend.clone()),
            offline: Arc::new(backend.clone()),
            blocks: Arc::new(backend),
        }
    }

    /// Deletes an account and everything stored for it; returns whether the account
    /// existed. Not one transaction: if a step fails, calling this again finishes
    /// the job.
    pub async fn delete_account(&self, user: &BareJid) -> Result<bool, StoreError> {
        // Data first, account last: a registration of the same name that slips in
        // between cannot have its fresh data wiped, and a failure part-way leaves an
        // account that can simply be deleted again.
        self.rosters.delete_roster(user).await?;
        self.offline.delete_offline(user).await?;
        self.blocks.unblock_all(user).await?;
        self.accounts.delete(user).await
    }
}
