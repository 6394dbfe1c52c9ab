//! [`AccountStore`] for the CQL backend: `accounts` (bare JID → credentials) and
//! the `accounts_by_domain` index behind `list`.
//!
//! Account rows are written only with lightweight transactions: `create` must not
//! overwrite an account another node registered a millisecond earlier, and
//! `set_credentials` / `delete` must report whether the account existed — a plain
//! CQL UPDATE would silently create it. Registration and password changes are rare,
//! so the Paxos round trips cost nothing that matters.
//!
//! The index is not updated atomically with the account (they are different
//! partitions; a logged batch cannot hold a lightweight transaction across
//! partitions). The order makes the failure mode harmless: `create` writes the
//! index row first and `delete` removes it last, so a crash in between leaves at
//! worst a listed JID without an account — which `delete` (or the retry that
//! `Stores::delete_account` asks for) cleans up — and never an account that `list`
//! cannot see.

use super::{CqlStore, Preparer, applied, corrupt, failed, next_row_failed};
use crate::{AccountStore, StoreError};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use jid::BareJid;
use scylla::statement::prepared::PreparedStatement;

/// How many `create`s of a bulk import run at once: enough to hide Paxos
/// latency, few enough not to flood a coordinator.
const IMPORT_CONCURRENCY: usize = 16;

pub(super) struct Statements {
    insert_if_absent: PreparedStatement,
    update_if_present: PreparedStatement,
    delete_if_present: PreparedStatement,
    select: PreparedStatement,
    index_insert: PreparedStatement,
    index_delete: PreparedStatement,
    list_first: PreparedStatement,
    list_after: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Preparer<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            insert_if_absent: p
                .prepare(
                    "INSERT INTO accounts (jid, credentials) VALUES (?, ?) IF NOT EXISTS",
                    false,
                )
                .await?,
            update_if_present: p
                .prepare(
                    "UPDATE accounts SET credentials = ? WHERE jid = ? IF EXISTS",
                    false,
                )
                .await?,
            delete_if_present: p
                .prepare("DELETE FROM accounts WHERE jid = ? IF EXISTS", false)
                .await?,
            select: p
                .prepare("SELECT credentials FROM accounts WHERE jid = ?", true)
                .await?,
            index_insert: p
                .prepare(
                    "INSERT INTO accounts_by_domain (domain, jid) VALUES (?, ?)",
                    true,
                )
                .await?,
            index_delete: p
                .prepare(
                    "DELETE FROM accounts_by_domain WHERE domain = ? AND jid = ?",
                    true,
                )
                .await?,
            list_first: p
                .prepare(
                    "SELECT jid FROM accounts_by_domain WHERE domain = ? LIMIT ?",
                    true,
                )
                .await?,
            list_after: p
                .prepare(
                    "SELECT jid FROM accounts_by_domain WHERE domain = ? AND jid > ? LIMIT ?",
                    true,
                )
                .await?,
        })
    }
}

#[async_trait]
impl AccountStore for CqlStore {
    async fn create(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        let st = &self.inner.accounts;
        let (j, domain) = (jid.as_str(), jid.domain().as_str());
        // Index first (see the module docs); for an account that already exists
        // it rewrites the row it already has.
        self.session()
            .execute_unpaged(&st.index_insert, (domain, j))
            .await
            .map_err(|e| failed("create (index)", e))?;
        let r = self
            .session()
            .execute_unpaged(&st.insert_if_absent, (j, credentials))
            .await
            .map_err(|e| failed("create", e))?;
        applied("create", r)
    }

    /// Concurrent creates, each still create-if-absent.
    async fn create_many(&self, accounts: Vec<(BareJid, Vec<u8>)>) -> Result<usize, StoreError> {
        futures::stream::iter(accounts)
            .map(|(jid, creds)| async move { self.create(&jid, &creds).await })
            .buffer_unordered(IMPORT_CONCURRENCY)
            .try_fold(0, |n, created| async move { Ok(n + usize::from(created)) })
            .await
    }

    async fn set_credentials(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        let r = self
            .session()
            .execute_unpaged(
                &self.inner.accounts.update_if_present,
                (credentials, jid.as_str()),
            )
            .await
            .map_err(|e| failed("set_credentials", e))?;
        applied("set_credentials", r)
    }

    async fn credentials(&self, jid: &BareJid) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self
            .session()
            .execute_unpaged(&self.inner.accounts.select, (jid.as_str(),))
            .await
            .map_err(|e| failed("credentials", e))?
            .into_rows_result()
            .map_err(|e| failed("credentials", e))?;
        let row: Option<(Option<Vec<u8>>,)> =
            r.maybe_first_row().map_err(|e| corrupt("accounts", e))?;
        match row {
            None => Ok(None),
            Some((Some(c),)) => Ok(Some(c)),
            // Empty credentials are an empty blob, not null: null means a row we
            // did not write.
            Some((None,)) => Err(corrupt(
                "accounts",
                format!("{jid} has a row without credentials"),
            )),
        }
    }

    async fn delete(&self, jid: &BareJid) -> Result<bool, StoreError> {
        let st = &self.inner.accounts;
        let r = self
            .session()
            .execute_unpaged(&st.delete_if_present, (jid.as_str(),))
            .await
            .map_err(|e| failed("delete", e))?;
        let existed = applied("delete", r)?;
        // Always, even if the account was gone: this is what cleans up an index
        // row left by a create that died half-way.
        self.session()
            .execute_unpaged(&st.index_delete, (jid.domain().as_str(), jid.as_str()))
            .await
            .map_err(|e| failed("delete (index)", e))?;
        Ok(existed)
    }

    async fn list(
        &self,
        domain: &str,
        after: Option<&BareJid>,
        limit: usize,
    ) -> Result<Vec<BareJid>, StoreError> {
        if limit == 0 {
            // CQL rejects LIMIT 0.
            return Ok(Vec::new());
        }
        let st = &self.inner.accounts;
        let cql_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        // Paged: a large limit streams instead of arriving as one huge response.
        let pager = match after {
            None => {
                self.session()
                    .execute_iter(st.list_first.clone(), (domain, cql_limit))
                    .await
            }
            Some(a) => {
                self.session()
                    .execute_iter(st.list_after.clone(), (domain, a.as_str(), cql_limit))
                    .await
            }
        }
        .map_err(|e| failed("list", e))?;
        let mut rows = pager
            .rows_stream::<(String,)>()
            .map_err(|e| corrupt("accounts_by_domain", e))?;
        let mut out = Vec::new();
        while let Some((j,)) = rows
            .try_next()
            .await
            .map_err(next_row_failed("list", "accounts_by_domain"))?
        {
            let jid = BareJid::new(&j).map_err(|e| {
                corrupt(
                    "accounts_by_domain",
                    format!("{j:?} is not a bare JID: {e}"),
                )
            })?;
            out.push(jid);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
