//! [`OfflineStore`] for the CQL backend: a user's queue is one partition of the
//! `offline` table, messages clustered by id (delivery order), the id counter
//! `next_id` a static column of the same partition.
//!
//! # The cap and the ids: lightweight transactions
//!
//! A push reads `next_id` and the queue length, then writes one conditional
//! single-partition batch: "set `next_id` to n+1 *if it is still n*, and insert
//! message n". Because id and message are one partition, the batch is atomic, and
//! because every push changes `next_id`, two racing writers (possible only while a
//! user's ownership moves between nodes) cannot both succeed from the same read:
//! the loser re-reads and re-checks the cap. So the cap is exact, ids strictly
//! increase and are never handed out twice — a reused id would silently overwrite
//! a message. The price is a Paxos round per offline message (about four round
//! trips instead of one), paid only for users who are offline; the cheaper
//! alternative, plain writes with a small overshoot under races, cannot keep two
//! writers from picking the same id without ids that no longer count up.
//!
//! Every write to this table is a lightweight transaction, including the
//! removals: Paxos orders a partition's transactions by ballot timestamps, and a
//! plain write with a client timestamp mixed in could, under clock skew, be
//! ordered before a message it was meant to delete (or a deleted queue's tombstone
//! after the next message pushed into it).
//!
//! # Bounded partitions
//!
//! Messages carry a TTL ([`CqlConfig::offline_ttl`](super::CqlConfig)), so a queue
//! nobody drains empties itself; with the cap, no partition grows without bound.
//! The length is counted from the live rows (`COUNT(id)`, at most the cap), not
//! kept in a counter, because expiring rows would make any stored count wrong.
//! `next_id` has no TTL: it must outlive the messages it numbered. A removal is
//! one range deletion, not one tombstone per message.

use super::{CqlStore, Preparer, applied, corrupt, failed, next_row_failed};
use crate::records::OfflineRecord;
use crate::{OfflineStore, StoreError};
use async_trait::async_trait;
use futures::TryStreamExt;
use jid::BareJid;
use scylla::statement::prepared::PreparedStatement;
use std::time::Duration;

/// How often a push re-reads after losing a race before giving up. Every lost
/// attempt means another writer stored a message, so a push can lose at most
/// about `max` times before it sees a full queue; races need two writers for one
/// user (an ownership hand-over), so even one retry is rare. The bound is a safety
/// net, sized for stress tests with many writers.
const PUSH_ATTEMPTS: u32 = 32;

/// Messages per page when loading a queue: stanzas can be large.
const LOAD_PAGE: i32 = 100;

pub(super) struct Statements {
    state: PreparedStatement,
    claim_id: PreparedStatement,
    insert: PreparedStatement,
    load: PreparedStatement,
    count: PreparedStatement,
    mark_removed: PreparedStatement,
    remove_through: PreparedStatement,
    forget: PreparedStatement,
    delete_all: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Preparer<'_>) -> Result<Self, StoreError> {
        let mut load = p
            .prepare("SELECT id, stanza FROM offline WHERE owner = ?", true)
            .await?;
        load.set_page_size(LOAD_PAGE);
        Ok(Statements {
            state: p
                .prepare(
                    "SELECT next_id, COUNT(id) FROM offline WHERE owner = ?",
                    true,
                )
                .await?,
            // The two halves of a push; the batch they form is not idempotent.
            claim_id: p
                .prepare(
                    "UPDATE offline SET next_id = ? WHERE owner = ? IF next_id = ?",
                    false,
                )
                .await?,
            insert: p
                .prepare(
                    "INSERT INTO offline (owner, id, stanza) VALUES (?, ?, ?) USING TTL ?",
                    false,
                )
                .await?,
            load,
            count: p
                .prepare("SELECT COUNT(id) FROM offline WHERE owner = ?", true)
                .await?,
            // A conditional batch needs a condition; "the queue exists" is the
            // natural one, and the cell it writes helps when debugging delivery.
            mark_removed: p
                .prepare(
                    "UPDATE offline SET removed_through = ? WHERE owner = ? \
                     IF next_id != null",
                    true,
                )
                .await?,
            remove_through: p
                .prepare("DELETE FROM offline WHERE owner = ? AND id <= ?", true)
                .await?,
            forget: p
                .prepare(
                    "UPDATE offline SET next_id = null WHERE owner = ? IF next_id != null",
                    true,
                )
                .await?,
            delete_all: p
                .prepare("DELETE FROM offline WHERE owner = ?", true)
                .await?,
        })
    }
}

#[async_trait]
impl OfflineStore for CqlStore {
    async fn push_offline(
        &self,
        user: &BareJid,
        stanza: &[u8],
        max: usize,
    ) -> Result<bool, StoreError> {
        if max == 0 {
            return Ok(false);
        }
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        let owner = user.as_str();
        let st = &self.inner.offline;
        for attempt in 0..PUSH_ATTEMPTS {
            if attempt > 0 {
                // Losers retrying in lockstep would collide again in Paxos.
                tokio::time::sleep(backoff(attempt)).await;
            }
            let (next_id, count) = self.queue_state(user).await?;
            if count >= max {
                return Ok(false);
            }
            // A queue never written to (or deleted) starts at 1, so that
            // `remove_offline(user, 0)` removes nothing.
            let id = next_id.unwrap_or(1);
            let after = match id.checked_add(1) {
                Some(a) if id >= 1 => a,
                _ => {
                    return Err(corrupt(
                        "offline",
                        format!("{user}: next_id {id} is out of range"),
                    ));
                }
            };
            let mut batch = self.batch(false);
            batch.append_statement(st.claim_id.clone());
            batch.append_statement(st.insert.clone());
            let values = (
                (after, owner, next_id),
                (owner, id, stanza, self.inner.offline_ttl_secs),
            );
            let r = self
                .session()
                .batch(&batch, values)
                .await
                .map_err(|e| failed("push_offline", e))?;
            if applied("push_offline", r)? {
                return Ok(true);
            }
            // Another writer pushed since we read: read again, the cap may be hit.
            tracing::debug!(%user, "offline push lost a race; retrying");
        }
        Err(StoreError::Unavailable(format!(
            "cql push_offline: {user}'s queue changed under {PUSH_ATTEMPTS} attempts in a row"
        )))
    }

    async fn load_offline(&self, user: &BareJid) -> Result<Vec<OfflineRecord>, StoreError> {
        let mut rows = self
            .session()
            .execute_iter(self.inner.offline.load.clone(), (user.as_str(),))
            .await
            .map_err(|e| failed("load_offline", e))?
            .rows_stream::<(Option<i64>, Option<Vec<u8>>)>()
            .map_err(|e| corrupt("offline", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(next_row_failed("load_offline", "offline"))?
        {
            match row {
                (Some(id), Some(stanza)) => {
                    let id = u64::try_from(id)
                        .ok()
                        .filter(|&id| id >= 1)
                        .ok_or_else(|| corrupt("offline", format!("{user}: message id {id}")))?;
                    out.push(OfflineRecord { id, stanza });
                }
                // An empty queue whose counter remains reads as one row of
                // statics and nulls.
                (None, None) => {}
                (Some(id), None) => {
                    return Err(corrupt(
                        "offline",
                        format!("{user}: message {id} has no stanza"),
                    ));
                }
                (None, Some(_)) => {
                    return Err(corrupt("offline", format!("{user}: stanza without id")));
                }
            }
        }
        Ok(out)
    }

    async fn remove_offline(&self, user: &BareJid, last_id: u64) -> Result<(), StoreError> {
        if last_id == 0 {
            // Ids start at 1.
            return Ok(());
        }
        // Ids are positive bigints; anything above covers them all.
        let last = i64::try_from(last_id).unwrap_or(i64::MAX);
        let owner = user.as_str();
        let st = &self.inner.offline;
        // Removing twice is removing once: the driver may retry it.
        let mut batch = self.batch(true);
        batch.append_statement(st.mark_removed.clone());
        batch.append_statement(st.remove_through.clone());
        let r = self
            .session()
            .batch(&batch, ((last, owner), (owner, last)))
            .await
            .map_err(|e| failed("remove_offline", e))?;
        // Not applied means there is no queue, so nothing to remove.
        applied("remove_offline", r)?;
        Ok(())
    }

    async fn count_offline(&self, user: &BareJid) -> Result<usize, StoreError> {
        let rows = self
            .session()
            .execute_unpaged(&self.inner.offline.count, (user.as_str(),))
            .await
            .map_err(|e| failed("count_offline", e))?
            .into_rows_result()
            .map_err(|e| failed("count_offline", e))?;
        let (count,): (i64,) = rows.single_row().map_err(|e| corrupt("offline", e))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    async fn delete_offline(&self, user: &BareJid) -> Result<(), StoreError> {
        let owner = user.as_str();
        let st = &self.inner.offline;
        // The partition deletion takes the counter with it, so ids restart —
        // which the trait allows only here.
        let mut batch = self.batch(true);
        batch.append_statement(st.forget.clone());
        batch.append_statement(st.delete_all.clone());
        let r = self
            .session()
            .batch(&batch, ((owner,), (owner,)))
            .await
            .map_err(|e| failed("delete_offline", e))?;
        applied("delete_offline", r)?;
        Ok(())
    }
}

/// A random pause of up to `attempt` ms (at most 10): enough to spread writers
/// that lost the same round.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new().hash_one(attempt);
    let ceiling = u64::from(attempt.min(10)) * 1000;
    Duration::from_micros(random % (ceiling + 1))
}

impl CqlStore {
    /// `user`'s `next_id` (None for a queue never written to) and live message
    /// count.
    async fn queue_state(&self, user: &BareJid) -> Result<(Option<i64>, u64), StoreError> {
        let rows = self
            .session()
            .execute_unpaged(&self.inner.offline.state, (user.as_str(),))
            .await
            .map_err(|e| failed("push_offline (state)", e))?
            .into_rows_result()
            .map_err(|e| failed("push_offline (state)", e))?;
        // An aggregate always answers with exactly one row.
        let (next_id, count): (Option<i64>, i64) =
            rows.single_row().map_err(|e| corrupt("offline", e))?;
        Ok((next_id, u64::try_from(count).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_varies() {
        for attempt in 1..40 {
            let cap = Duration::from_millis(u64::from(attempt.min(10)));
            assert!(backoff(attempt) <= cap);
        }
        let seen: std::collections::BTreeSet<Duration> = (0..20).map(|_| backoff(10)).collect();
        assert!(seen.len() > 1, "no jitter: {seen:?}");
    }
}
