//! Store metrics, described once here, and [`Metered`], the decorator that times
//! every operation of any backend.

use crate::records::{OfflineRecord, RosterChange, RosterMeta, StoredRoster};
use crate::{AccountStore, BlockStore, OfflineStore, RosterStore, StoreError};
use async_trait::async_trait;
use jid::BareJid;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use std::future::Future;
use std::time::Instant;

pub const STORE_OP_DURATION: &str = "aviary_store_op_duration_seconds";
pub const STORE_ERRORS: &str = "aviary_store_errors_total";

pub fn describe() {
    describe_histogram!(
        STORE_OP_DURATION,
        Unit::Seconds,
        "Store operations, by operation."
    );
    describe_counter!(
        STORE_ERRORS,
        Unit::Count,
        "Failed store operations, by operation."
    );
}

async fn timed<T>(
    op: &'static str,
    f: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let r = f.await;
    histogram!(STORE_OP_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
    if r.is_err() {
        counter!(STORE_ERRORS, "op" => op).increment(1);
    }
    r
}

/// Any backend, with every operation timed and every failure counted.
#[derive(Clone, Debug)]
pub struct Metered<B>(pub B);

#[async_trait]
impl<B: AccountStore> AccountStore for Metered<B> {
    async fn create(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        timed("account_create", self.0.create(jid, credentials)).await
    }
    async fn create_many(&self, accounts: Vec<(BareJid, Vec<u8>)>) -> Result<usize, StoreError> {
        timed("account_create_many", self.0.create_many(accounts)).await
    }
    async fn set_credentials(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        timed(
            "account_set_credentials",
            self.0.set_credentials(jid, credentials),
        )
        .await
    }
    async fn credentials(&self, jid: &BareJid) -> Result<Option<Vec<u8>>, StoreError> {
        timed("account_credentials", self.0.credentials(jid)).await
    }
    async fn delete(&self, jid: &BareJid) -> Result<bool, StoreError> {
        timed("account_delete", self.0.delete(jid)).await
    }
    async fn list(
        &self,
        domain: &str,
        after: Option<&BareJid>,
        limit: usize,
    ) -> Result<Vec<BareJid>, StoreError> {
        timed("account_list", self.0.list(domain, after, limit)).await
    }
}

#[async_trait]
impl<B: RosterStore> RosterStore for Metered<B> {
    async fn load_roster(&self, user: &BareJid) -> Result<StoredRoster, StoreError> {
        timed("roster_load", self.0.load_roster(user)).await
    }
    async fn apply_roster(
        &self,
        user: &BareJid,
        meta: RosterMeta,
        changes: Vec<RosterChange>,
    ) -> Result<(), StoreError> {
        timed("roster_apply", self.0.apply_roster(user, meta, changes)).await
    }
    async fn delete_roster(&self, user: &BareJid) -> Result<(), StoreError> {
        timed("roster_delete", self.0.delete_roster(user)).await
    }
}

#[async_trait]
impl<B: OfflineStore> OfflineStore for Metered<B> {
    async fn push_offline(
        &self,
        user: &BareJid,
        stanza: &[u8],
        max: usize,
    ) -> Result<bool, StoreError> {
        timed("offline_push", self.0.push_offline(user, stanza, max)).await
    }
    async fn load_offline(&self, user: &BareJid) -> Result<Vec<OfflineRecord>, StoreError> {
        timed("offline_load", self.0.load_offline(user)).await
    }
    async fn remove_offline(&self, user: &BareJid, last_id: u64) -> Result<(), StoreError> {
        timed("offline_remove", self.0.remove_offline(user, last_id)).await
    }
    async fn count_offline(&self, user: &BareJid) -> Result<usize, StoreError> {
        timed("offline_count", self.0.count_offline(user)).await
    }
    async fn delete_offline(&self, user: &BareJid) -> Result<(), StoreError> {
        timed("offline_delete", self.0.delete_offline(user)).await
    }
}

#[async_trait]
impl<B: BlockStore> BlockStore for Metered<B> {
    async fn load_blocklist(&self, user: &BareJid) -> Result<Vec<String>, StoreError> {
        timed("blocklist_load", self.0.load_blocklist(user)).await
    }
    async fn block(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError> {
        timed("blocklist_block", self.0.block(user, jids)).await
    }
    async fn unblock(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError> {
        timed("blocklist_unblock", self.0.unblock(user, jids)).await
    }
    async fn unblock_all(&self, user: &BareJid) -> Result<(), StoreError> {
        timed("blocklist_unblock_all", self.0.unblock_all(user)).await
    }
}
