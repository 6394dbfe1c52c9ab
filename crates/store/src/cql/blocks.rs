//! [`BlockStore`] for the CQL backend: one `blocklist` row per blocked item, the
//! user's list one partition. The clustering key is the item, so the partition is
//! the set, in byte order, and blocking twice writes the same row.
//!
//! `block` and `unblock` are single-partition unlogged batches: atomic and
//! isolated, as the trait asks, and idempotent, so the driver may retry them.

use super::{CqlStore, Preparer, corrupt, failed, next_row_failed};
use crate::{BlockStore, StoreError};
use async_trait::async_trait;
use futures::TryStreamExt;
use jid::BareJid;
use scylla::statement::prepared::PreparedStatement;

pub(super) struct Statements {
    load: PreparedStatement,
    insert: PreparedStatement,
    delete: PreparedStatement,
    delete_all: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Preparer<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            load: p
                .prepare("SELECT item FROM blocklist WHERE owner = ?", true)
                .await?,
            insert: p
                .prepare("INSERT INTO blocklist (owner, item) VALUES (?, ?)", true)
                .await?,
            delete: p
                .prepare("DELETE FROM blocklist WHERE owner = ? AND item = ?", true)
                .await?,
            delete_all: p
                .prepare("DELETE FROM blocklist WHERE owner = ?", true)
                .await?,
        })
    }
}

impl CqlStore {
    /// One statement per item, all in `user`'s partition.
    async fn per_item(
        &self,
        op: &str,
        statement: &PreparedStatement,
        user: &BareJid,
        items: &[String],
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let owner = user.as_str();
        let mut batch = self.batch(true);
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            batch.append_statement(statement.clone());
            values.push((owner, item.as_str()));
        }
        self.session()
            .batch(&batch, values)
            .await
            .map_err(|e| failed(op, e))?;
        Ok(())
    }
}

#[async_trait]
impl BlockStore for CqlStore {
    async fn load_blocklist(&self, user: &BareJid) -> Result<Vec<String>, StoreError> {
        let mut rows = self
            .session()
            .execute_iter(self.inner.blocks.load.clone(), (user.as_str(),))
            .await
            .map_err(|e| failed("load_blocklist", e))?
            .rows_stream::<(String,)>()
            .map_err(|e| corrupt("blocklist", e))?;
        let mut out = Vec::new();
        while let Some((item,)) = rows
            .try_next()
            .await
            .map_err(next_row_failed("load_blocklist", "blocklist"))?
        {
            out.push(item);
        }
        Ok(out)
    }

    async fn block(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError> {
        self.per_item("block", &self.inner.blocks.insert, user, jids)
            .await
    }

    async fn unblock(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError> {
        self.per_item("unblock", &self.inner.blocks.delete, user, jids)
            .await
    }

    async fn unblock_all(&self, user: &BareJid) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.inner.blocks.delete_all, (user.as_str(),))
            .await
            .map_err(|e| failed("unblock_all", e))?;
        Ok(())
    }
}
