//! [`BlockStore`] for the embedded backend: one `(owner, item)` key per blocked
//! item and no value, so the key set is the block list and blocking twice is a
//! no-op by construction.

use super::{BLOCKLIST, EmbeddedStore, OwnerRange, unavailable};
use crate::{BlockStore, StoreError};
use async_trait::async_trait;
use jid::BareJid;

#[async_trait]
impl BlockStore for EmbeddedStore {
    async fn load_blocklist(&self, user: &BareJid) -> Result<Vec<String>, StoreError> {
        let owner = OwnerRange::new(user.as_str());
        self.read(move |txn| {
            let t = txn.open_table(BLOCKLIST).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in t.range(owner.range()).map_err(unavailable)? {
                let (k, _) = entry.map_err(unavailable)?;
                out.push(k.value().1.to_owned());
            }
            Ok(out)
        })
        .await
    }

    async fn block(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        let jids = jids.to_vec();
        self.write(move |txn| {
            let mut t = txn.open_table(BLOCKLIST).map_err(unavailable)?;
            for item in &jids {
                t.insert((owner.as_str(), item.as_str()), ())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn unblock(&self, user: &BareJid, jids: &[String]) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        let jids = jids.to_vec();
        self.write(move |txn| {
            let mut t = txn.open_table(BLOCKLIST).map_err(unavailable)?;
            for item in &jids {
                t.remove((owner.as_str(), item.as_str()))
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn unblock_all(&self, user: &BareJid) -> Result<(), StoreError> {
        let owner = OwnerRange::new(user.as_str());
        self.write(move |txn| {
            let mut t = txn.open_table(BLOCKLIST).map_err(unavailable)?;
            t.retain_in(owner.range(), |_, _| false)
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
