//! The embedded backend: one redb file in the data directory. redb is synchronous
//! and fsyncs on commit, so every operation runs on tokio's blocking pool.

use crate::{AccountStore, StoreError};
use async_trait::async_trait;
use jid::BareJid;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// bare JID → opaque credentials.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

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
        // Create every table up front so read transactions never see a missing one.
        let txn = db.begin_write().map_err(StoreError::unavailable)?;
        txn.open_table(ACCOUNTS).map_err(StoreError::unavailable)?;
        txn.commit().map_err(StoreError::unavailable)?;
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
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn create(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        let key = jid.as_str().to_owned();
        let value = credentials.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            let created = {
                let mut t = txn.open_table(ACCOUNTS).map_err(StoreError::unavailable)?;
                if t.get(key.as_str())
                    .map_err(StoreError::unavailable)?
                    .is_some()
                {
                    false
                } else {
                    t.insert(key.as_str(), value.as_slice())
                        .map_err(StoreError::unavailable)?;
                    true
                }
            };
            txn.commit().map_err(StoreError::unavailable)?;
            Ok(created)
        })
        .await
    }

    async fn create_many(&self, accounts: Vec<(BareJid, Vec<u8>)>) -> Result<usize, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            let mut created = 0;
            {
                let mut t = txn.open_table(ACCOUNTS).map_err(StoreError::unavailable)?;
                for (jid, creds) in &accounts {
                    if t.get(jid.as_str())
                        .map_err(StoreError::unavailable)?
                        .is_none()
                    {
                        t.insert(jid.as_str(), creds.as_slice())
                            .map_err(StoreError::unavailable)?;
                        created += 1;
                    }
                }
            }
            txn.commit().map_err(StoreError::unavailable)?;
            Ok(created)
        })
        .await
    }

    async fn set_credentials(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        let key = jid.as_str().to_owned();
        let value = credentials.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            let existed = {
                let mut t = txn.open_table(ACCOUNTS).map_err(StoreError::unavailable)?;
                if t.get(key.as_str())
                    .map_err(StoreError::unavailable)?
                    .is_some()
                {
                    t.insert(key.as_str(), value.as_slice())
                        .map_err(StoreError::unavailable)?;
                    true
                } else {
                    false
                }
            };
            txn.commit().map_err(StoreError::unavailable)?;
            Ok(existed)
        })
        .await
    }

    async fn credentials(&self, jid: &BareJid) -> Result<Option<Vec<u8>>, StoreError> {
        let key = jid.as_str().to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::unavailable)?;
            let t = txn.open_table(ACCOUNTS).map_err(StoreError::unavailable)?;
            let v = t.get(key.as_str()).map_err(StoreError::unavailable)?;
            Ok(v.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn delete(&self, jid: &BareJid) -> Result<bool, StoreError> {
        let key = jid.as_str().to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            let existed = {
                let mut t = txn.open_table(ACCOUNTS).map_err(StoreError::unavailable)?;
                t.remove(key.as_str())
                    .map_err(StoreError::unavailable)?
                    .is_some()
            };
            txn.commit().map_err(StoreError::unavailable)?;
            Ok(existed)
        })
        .await
    }

    async fn list(
        &self,
        domain: &str,
        after: Option<&BareJid>,
        limit: usize,
    ) -> Result<Vec<BareJid>, StoreError> {
        let domain = domain.to_owned();
        let after = after.map(|j| j.as_str().to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::unavailable)?;
            let t = txn.open_table(ACCOUNTS).map_err(StoreError::unavailable)?;
            let iter = match &after {
                Some(a) => t.range::<&str>((
                    std::ops::Bound::Excluded(a.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                None => t.range::<&str>(..),
            }
            .map_err(StoreError::unavailable)?;
            let mut out = Vec::new();
            for entry in iter {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = entry.map_err(StoreError::unavailable)?;
                let jid = BareJid::new(k.value()).map_err(|e| {
                    StoreError::Corrupt(format!("bad JID key {:?}: {e}", k.value()))
                })?;
                if jid.domain().as_str() == domain {
                    out.push(jid);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[tokio::test]
    async fn account_lifecycle_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            assert!(s.create(&jid("a@x"), b"c1").await.unwrap());
            assert!(!s.create(&jid("a@x"), b"c2").await.unwrap());
            assert_eq!(s.credentials(&jid("a@x")).await.unwrap().unwrap(), b"c1");
            assert!(s.set_credentials(&jid("a@x"), b"c3").await.unwrap());
            assert!(!s.set_credentials(&jid("zz@x"), b"c3").await.unwrap());
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(s.credentials(&jid("a@x")).await.unwrap().unwrap(), b"c3");
        assert!(s.delete(&jid("a@x")).await.unwrap());
        assert!(!s.delete(&jid("a@x")).await.unwrap());
        assert!(s.credentials(&jid("a@x")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn list_pages_by_domain() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let n = s
            .create_many(vec![
                (jid("b@x"), vec![1]),
                (jid("a@x"), vec![1]),
                (jid("c@y"), vec![1]),
                (jid("d@x"), vec![1]),
            ])
            .await
            .unwrap();
        assert_eq!(n, 4);
        let page = s.list("x", None, 2).await.unwrap();
        assert_eq!(page, vec![jid("a@x"), jid("b@x")]);
        let page = s.list("x", Some(&jid("b@x")), 10).await.unwrap();
        assert_eq!(page, vec![jid("d@x")]);
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
}
