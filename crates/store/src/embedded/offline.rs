//! [`OfflineStore`] for the embedded backend: messages under `(owner, id)` keys, so
//! key order is delivery order, and one `offline_queues` row per owner holding the
//! next id and the queue length.
//!
//! Keeping the length in a row makes the cap check and `count_offline` O(1) instead
//! of a scan of the queue on every push. The row is updated in the same transaction
//! as the messages, so it cannot drift from them.

use super::{EmbeddedStore, OFFLINE, OFFLINE_QUEUES, corrupt, unavailable};
use crate::codec::{self, QueueState};
use crate::records::OfflineRecord;
use crate::{OfflineStore, StoreError};
use async_trait::async_trait;
use jid::BareJid;
use redb::ReadableTable;

#[async_trait]
impl OfflineStore for EmbeddedStore {
    async fn push_offline(
        &self,
        user: &BareJid,
        stanza: &[u8],
        max: usize,
    ) -> Result<bool, StoreError> {
        let owner = user.as_str().to_owned();
        let value = codec::encode_blob(stanza);
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        self.blocking(move |db| {
            // Not `EmbeddedStore::write`: a full queue aborts instead of committing
            // an empty transaction, which would still cost an fsync.
            let txn = db.begin_write().map_err(unavailable)?;
            let stored = {
                let mut queues = txn.open_table(OFFLINE_QUEUES).map_err(unavailable)?;
                let q = queue_state(&queues, &owner)?;
                if q.count >= max {
                    None
                } else {
                    let next_id = q.next_id.checked_add(1).ok_or_else(|| {
                        StoreError::Corrupt(format!("offline ids of {owner} exhausted"))
                    })?;
                    let mut messages = txn.open_table(OFFLINE).map_err(unavailable)?;
                    messages
                        .insert((owner.as_str(), q.next_id), value.as_slice())
                        .map_err(unavailable)?;
                    let q = QueueState {
                        next_id,
                        count: q.count + 1,
                    };
                    queues
                        .insert(owner.as_str(), codec::encode_queue(q).as_slice())
                        .map_err(unavailable)?;
                    Some(())
                }
            };
            match stored {
                Some(()) => txn.commit().map_err(unavailable)?,
                None => txn.abort().map_err(unavailable)?,
            }
            Ok(stored.is_some())
        })
        .await
    }

    async fn load_offline(&self, user: &BareJid) -> Result<Vec<OfflineRecord>, StoreError> {
        let owner = user.as_str().to_owned();
        self.read(move |txn| {
            let t = txn.open_table(OFFLINE).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in t.range(all_ids(&owner)).map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                let stanza = codec::decode_blob(v.value(), "offline message")
                    .map_err(|e| corrupt("offline", k.value(), e))?;
                out.push(OfflineRecord {
                    id: k.value().1,
                    stanza,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn remove_offline(&self, user: &BareJid, last_id: u64) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        self.write(move |txn| {
            let mut messages = txn.open_table(OFFLINE).map_err(unavailable)?;
            let mut removed: u64 = 0;
            let range = (owner.as_str(), 0)..=(owner.as_str(), last_id);
            for entry in messages
                .extract_from_if(range, |_, _| true)
                .map_err(unavailable)?
            {
                entry.map_err(unavailable)?;
                removed += 1;
            }
            if removed > 0 {
                let mut queues = txn.open_table(OFFLINE_QUEUES).map_err(unavailable)?;
                let q = queue_state(&queues, &owner)?;
                if removed > q.count {
                    // Only possible if the file was edited behind our back; the
                    // queue is still usable, so repair rather than fail delivery.
                    tracing::warn!(
                        removed,
                        counted = q.count,
                        "offline queue length was wrong; resetting it"
                    );
                }
                let q = QueueState {
                    count: q.count.saturating_sub(removed),
                    ..q
                };
                // The row stays even when the queue is empty: `next_id` must keep
                // growing (see `QueueState`).
                queues
                    .insert(owner.as_str(), codec::encode_queue(q).as_slice())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn count_offline(&self, user: &BareJid) -> Result<usize, StoreError> {
        let owner = user.as_str().to_owned();
        self.read(move |txn| {
            let queues = txn.open_table(OFFLINE_QUEUES).map_err(unavailable)?;
            let count = queue_state(&queues, &owner)?.count;
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn delete_offline(&self, user: &BareJid) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        self.write(move |txn| {
            let mut messages = txn.open_table(OFFLINE).map_err(unavailable)?;
            messages
                .retain_in(all_ids(&owner), |_, _| false)
                .map_err(unavailable)?;
            let mut queues = txn.open_table(OFFLINE_QUEUES).map_err(unavailable)?;
            queues.remove(owner.as_str()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

fn all_ids(owner: &str) -> std::ops::RangeInclusive<(&str, u64)> {
    (owner, 0)..=(owner, u64::MAX)
}

/// `owner`'s queue row, or the state of a queue never written to.
fn queue_state(
    queues: &impl ReadableTable<&'static str, &'static [u8]>,
    owner: &str,
) -> Result<QueueState, StoreError> {
    match queues.get(owner).map_err(unavailable)? {
        Some(v) => codec::decode_queue(v.value()).map_err(|e| corrupt("offline_queues", owner, e)),
        None => Ok(QueueState::default()),
    }
}
