//! [`AccountStore`] for the embedded backend: the `accounts` table, bare JID →
//! opaque credentials.

use super::{ACCOUNTS, EmbeddedStore, corrupt_jid, unavailable};
use crate::{AccountStore, StoreError};
use async_trait::async_trait;
use jid::BareJid;
use redb::ReadableTable;
use std::ops::Bound;

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn create(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        let key = jid.as_str().to_owned();
        let value = credentials.to_vec();
        self.write(move |txn| {
            let mut t = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            if t.get(key.as_str()).map_err(unavailable)?.is_some() {
                return Ok(false);
            }
            t.insert(key.as_str(), value.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    /// One transaction (one fsync) for the whole import.
    async fn create_many(&self, accounts: Vec<(BareJid, Vec<u8>)>) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut t = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            let mut created = 0;
            for (jid, creds) in &accounts {
                if t.get(jid.as_str()).map_err(unavailable)?.is_none() {
                    t.insert(jid.as_str(), creds.as_slice())
                        .map_err(unavailable)?;
                    created += 1;
                }
            }
            Ok(created)
        })
        .await
    }

    async fn set_credentials(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        let key = jid.as_str().to_owned();
        let value = credentials.to_vec();
        self.write(move |txn| {
            let mut t = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            if t.get(key.as_str()).map_err(unavailable)?.is_none() {
                return Ok(false);
            }
            t.insert(key.as_str(), value.as_slice())
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn credentials(&self, jid: &BareJid) -> Result<Option<Vec<u8>>, StoreError> {
        let key = jid.as_str().to_owned();
        self.read(move |txn| {
            let t = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            let v = t.get(key.as_str()).map_err(unavailable)?;
            Ok(v.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn delete(&self, jid: &BareJid) -> Result<bool, StoreError> {
        let key = jid.as_str().to_owned();
        self.write(move |txn| {
            let mut t = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            Ok(t.remove(key.as_str()).map_err(unavailable)?.is_some())
        })
        .await
    }

    // The key starts with the local part, so one domain's accounts are not a range:
    // this walks every account after `after`. Fine for the admin CLI on a
    // single-node install; a (domain, jid) index would make it a range scan.
    async fn list(
        &self,
        domain: &str,
        after: Option<&BareJid>,
        limit: usize,
    ) -> Result<Vec<BareJid>, StoreError> {
        let domain = domain.to_owned();
        let after = after.map(|j| j.as_str().to_owned());
        self.read(move |txn| {
            let t = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            let iter = match &after {
                Some(a) => t.range::<&str>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
                None => t.range::<&str>(..),
            }
            .map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in iter {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = entry.map_err(unavailable)?;
                let jid =
                    BareJid::new(k.value()).map_err(|e| corrupt_jid("accounts", k.value(), e))?;
                if jid.domain().as_str() == domain {
                    out.push(jid);
                }
            }
            Ok(out)
        })
        .await
    }
}
