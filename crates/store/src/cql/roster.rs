//! [`RosterStore`] for the CQL backend: a user's whole roster is one partition of
//! the `roster` table — items, tombstones and pending-in requests as rows keyed by
//! `(kind, contact)`, the meta as static columns.
//!
//! # Why one partition, and what that buys
//!
//! Cassandra and ScyllaDB apply a batch atomically *and in isolation* only within
//! one partition: all its mutations merge into one, which every replica applies
//! whole. So `apply_roster` is one unlogged single-partition batch (a logged batch
//! would add a batch-log write and buy nothing for one partition), and
//! `load_roster` is one *unpaged* read of the partition — paging would split the
//! read into several, and a write landing between pages would tear it. A quorum
//! read merges replicas cell by cell by timestamp, and every cell of a batch has
//! the batch's timestamp, so it sees a batch whole or not at all.
//!
//! # Planning the batch
//!
//! All statements of a batch share one timestamp, and at equal timestamps a
//! deletion beats a write — so a batch cannot express "delete, then write the same
//! row". The changes are therefore folded into their net effect first, one
//! operation per row ([`plan`]), which also gives idempotence: replaying a call
//! writes the same final rows.
//!
//! `Upsert` must drop the contact's tombstone, which usually does not exist; a
//! blind delete would leave a CQL tombstone per upsert, and enough of those make
//! every roster read slow. So when a call upserts or prunes, the stored tombstones
//! (a short slice of the partition) are read first, and only those that exist are
//! deleted. That read-then-write is safe because the user actor is the roster's
//! single writer.

use super::{CqlStore, Preparer, bigint_to_u64, corrupt, failed, next_row_failed, u64_to_bigint};
use crate::codec;
use crate::records::{PendingIn, RosterChange, RosterMeta, StoredRoster, Tombstone};
use crate::{RosterStore, StoreError};
use async_trait::async_trait;
use futures::TryStreamExt;
use jid::BareJid;
use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::statement::prepared::PreparedStatement;
use std::collections::BTreeMap;

/// The `kind` clustering column: rows sort items, then tombstones, then requests.
const ITEM: i8 = 0;
const TOMBSTONE: i8 = 1;
const PENDING_IN: i8 = 2;

pub(super) struct Statements {
    load: PreparedStatement,
    tombstones: PreparedStatement,
    put: PreparedStatement,
    delete_row: PreparedStatement,
    set_meta: PreparedStatement,
    delete_all: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Preparer<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            load: p
                .prepare(
                    "SELECT kind, contact, data, epoch, version, tombstone_floor \
                     FROM roster WHERE owner = ?",
                    true,
                )
                .await?,
            tombstones: p
                .prepare(
                    "SELECT contact, data FROM roster WHERE owner = ? AND kind = 1",
                    true,
                )
                .await?,
            put: p
                .prepare(
                    "INSERT INTO roster (owner, kind, contact, data) VALUES (?, ?, ?, ?)",
                    true,
                )
                .await?,
            delete_row: p
                .prepare(
                    "DELETE FROM roster WHERE owner = ? AND kind = ? AND contact = ?",
                    true,
                )
                .await?,
            set_meta: p
                .prepare(
                    "UPDATE roster SET epoch = ?, version = ?, tombstone_floor = ? \
                     WHERE owner = ?",
                    true,
                )
                .await?,
            delete_all: p
                .prepare("DELETE FROM roster WHERE owner = ?", true)
                .await?,
        })
    }
}

/// The net effect of a call on one row.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    Put(Vec<u8>),
    Delete,
}

/// Folds `changes` into one operation per `(kind, contact)` row. `stored` holds
/// the tombstones in the database before the call (contact → version); it only
/// matters for `Upsert` and `PruneTombstones`.
fn plan(
    changes: &[RosterChange],
    floor: u64,
    stored: &BTreeMap<String, u64>,
) -> BTreeMap<(i8, String), Op> {
    let mut p = Planner {
        stored,
        tombs: stored.clone(),
        ops: BTreeMap::new(),
    };
    for change in changes {
        match change {
            RosterChange::Upsert(r) => {
                let c = r.contact.as_str();
                p.ops
                    .insert((ITEM, c.to_owned()), Op::Put(codec::encode_item(r)));
                p.drop_tombstone(c);
            }
            RosterChange::Remove(t) => {
                let c = t.contact.as_str();
                p.ops.insert((ITEM, c.to_owned()), Op::Delete);
                p.ops.insert(
                    (TOMBSTONE, c.to_owned()),
                    Op::Put(codec::encode_tombstone(t.version)),
                );
                p.tombs.insert(c.to_owned(), t.version);
            }
            RosterChange::SetPendingIn(r) => {
                p.ops.insert(
                    (PENDING_IN, r.contact.as_str().to_owned()),
                    Op::Put(codec::encode_blob(&r.stanza)),
                );
            }
            RosterChange::ClearPendingIn(c) => {
                p.ops
                    .insert((PENDING_IN, c.as_str().to_owned()), Op::Delete);
            }
            RosterChange::PruneTombstones => {
                let stale: Vec<String> = p
                    .tombs
                    .iter()
                    .filter(|&(_, &v)| v < floor)
                    .map(|(c, _)| c.clone())
                    .collect();
                for c in stale {
                    p.drop_tombstone(&c);
                }
            }
        }
    }
    p.ops
}

struct Planner<'a> {
    stored: &'a BTreeMap<String, u64>,
    /// The tombstones as they stand after the changes folded so far.
    tombs: BTreeMap<String, u64>,
    ops: BTreeMap<(i8, String), Op>,
}

impl Planner<'_> {
    fn drop_tombstone(&mut self, contact: &str) {
        if self.tombs.remove(contact).is_none() {
            return;
        }
        let key = (TOMBSTONE, contact.to_owned());
        if self.stored.contains_key(contact) {
            self.ops.insert(key, Op::Delete);
        } else {
            // Written earlier in this call only: simply don't write it.
            self.ops.remove(&key);
        }
    }
}

/// The bound values of one statement of an `apply_roster` batch: a batch mixes
/// statements of different shapes, and its values must be one type.
enum Bind<'a> {
    Meta(i64, i64, i64, &'a str),
    Put(&'a str, i8, &'a str, &'a [u8]),
    Delete(&'a str, i8, &'a str),
}

impl SerializeRow for Bind<'_> {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        match *self {
            Bind::Meta(e, v, f, o) => (e, v, f, o).serialize(ctx, writer),
            Bind::Put(o, k, c, d) => (o, k, c, d).serialize(ctx, writer),
            Bind::Delete(o, k, c) => (o, k, c).serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

type RosterRow = (
    Option<i8>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

#[async_trait]
impl RosterStore for CqlStore {
    async fn load_roster(&self, user: &BareJid) -> Result<StoredRoster, StoreError> {
        // Unpaged on purpose: one read is one isolated snapshot (module docs).
        let rows = self
            .session()
            .execute_unpaged(&self.inner.roster.load, (user.as_str(),))
            .await
            .map_err(|e| failed("load_roster", e))?
            .into_rows_result()
            .map_err(|e| failed("load_roster", e))?;
        let mut out = StoredRoster::default();
        let mut first = true;
        for row in rows.rows::<RosterRow>().map_err(|e| corrupt("roster", e))? {
            let (kind, contact, data, epoch, version, floor) =
                row.map_err(|e| corrupt("roster", e))?;
            if first {
                // Static columns: every row of the partition carries them.
                out.meta = meta(user, epoch, version, floor)?;
                first = false;
            }
            let (kind, contact, data) = match (kind, contact, data) {
                (Some(k), Some(c), Some(d)) => (k, c, d),
                // A partition holding only the meta (every contact removed and
                // pruned) reads as one row of statics and nulls.
                (None, None, None) => continue,
                _ => return Err(corrupt("roster", format!("{user}: incomplete row"))),
            };
            let bad = |e: &dyn std::fmt::Display| {
                corrupt(
                    "roster",
                    format!("{user}, kind {kind}, contact {contact:?}: {e}"),
                )
            };
            let jid = BareJid::new(&contact).map_err(|e| bad(&e))?;
            match kind {
                ITEM => out
                    .items
                    .push(codec::decode_item(jid, &data).map_err(|e| bad(&e))?),
                TOMBSTONE => out.tombstones.push(Tombstone {
                    contact: jid,
                    version: codec::decode_tombstone(&data).map_err(|e| bad(&e))?,
                }),
                PENDING_IN => out.pending_in.push(PendingIn {
                    contact: jid,
                    stanza: codec::decode_blob(&data, "pending-in request").map_err(|e| bad(&e))?,
                }),
                _ => return Err(bad(&"unknown kind")),
            }
        }
        Ok(out)
    }

    async fn apply_roster(
        &self,
        user: &BareJid,
        meta: RosterMeta,
        changes: Vec<RosterChange>,
    ) -> Result<(), StoreError> {
        let owner = user.as_str();
        let needs_tombstones = changes
            .iter()
            .any(|c| matches!(c, RosterChange::Upsert(_) | RosterChange::PruneTombstones));
        let stored = if needs_tombstones {
            self.tombstones(user).await?
        } else {
            BTreeMap::new()
        };
        let ops = plan(&changes, meta.tombstone_floor, &stored);

        let st = &self.inner.roster;
        // Replaying the same call writes the same rows: safe for the driver to retry.
        let mut batch = self.batch(true);
        let mut values = Vec::with_capacity(1 + ops.len());
        batch.append_statement(st.set_meta.clone());
        values.push(Bind::Meta(
            u64_to_bigint(meta.epoch),
            u64_to_bigint(meta.version),
            u64_to_bigint(meta.tombstone_floor),
            owner,
        ));
        for ((kind, contact), op) in &ops {
            match op {
                Op::Put(data) => {
                    batch.append_statement(st.put.clone());
                    values.push(Bind::Put(owner, *kind, contact, data));
                }
                Op::Delete => {
                    batch.append_statement(st.delete_row.clone());
                    values.push(Bind::Delete(owner, *kind, contact));
                }
            }
        }
        self.session()
            .batch(&batch, values)
            .await
            .map_err(|e| failed("apply_roster", e))?;
        Ok(())
    }

    async fn delete_roster(&self, user: &BareJid) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.inner.roster.delete_all, (user.as_str(),))
            .await
            .map_err(|e| failed("delete_roster", e))?;
        Ok(())
    }
}

impl CqlStore {
    /// `user`'s stored tombstones, contact → version.
    async fn tombstones(&self, user: &BareJid) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut rows = self
            .session()
            .execute_iter(self.inner.roster.tombstones.clone(), (user.as_str(),))
            .await
            .map_err(|e| failed("apply_roster (tombstones)", e))?
            .rows_stream::<(String, Vec<u8>)>()
            .map_err(|e| corrupt("roster", e))?;
        let mut out = BTreeMap::new();
        while let Some((contact, data)) = rows
            .try_next()
            .await
            .map_err(next_row_failed("apply_roster (tombstones)", "roster"))?
        {
            let version = codec::decode_tombstone(&data)
                .map_err(|e| corrupt("roster", format!("{user}, tombstone {contact:?}: {e}")))?;
            out.insert(contact, version);
        }
        Ok(out)
    }
}

/// The meta from the static columns: all three or none (a roster never written).
fn meta(
    user: &BareJid,
    epoch: Option<i64>,
    version: Option<i64>,
    floor: Option<i64>,
) -> Result<RosterMeta, StoreError> {
    match (epoch, version, floor) {
        (Some(e), Some(v), Some(f)) => Ok(RosterMeta {
            epoch: bigint_to_u64(e),
            version: bigint_to_u64(v),
            tombstone_floor: bigint_to_u64(f),
        }),
        (None, None, None) => Ok(RosterMeta::default()),
        _ => Err(corrupt("roster", format!("{user}: incomplete meta"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{RosterRecord, Subscription};

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    fn item(c: &str) -> RosterChange {
        RosterChange::Upsert(RosterRecord {
            contact: jid(c),
            name: None,
            groups: vec![],
            subscription: Subscription::Both,
            ask: false,
            approved: false,
            version: 1,
        })
    }

    fn remove(c: &str, version: u64) -> RosterChange {
        RosterChange::Remove(Tombstone {
            contact: jid(c),
            version,
        })
    }

    /// The plan as (kind, contact, is_put), for readable expectations.
    fn shape(ops: &BTreeMap<(i8, String), Op>) -> Vec<(i8, &str, bool)> {
        ops.iter()
            .map(|((k, c), op)| (*k, c.as_str(), matches!(op, Op::Put(_))))
            .collect()
    }

    #[test]
    fn upsert_deletes_only_stored_tombstones() {
        let stored = BTreeMap::from([("old@x".to_owned(), 3)]);
        let ops = plan(&[item("old@x"), item("new@x")], 0, &stored);
        assert_eq!(
            shape(&ops),
            [
                (ITEM, "new@x", true),
                (ITEM, "old@x", true),
                (TOMBSTONE, "old@x", false)
            ]
        );
    }

    #[test]
    fn later_changes_win_within_a_call() {
        let none = BTreeMap::new();
        // Remove then Upsert: the tombstone written in the call is simply not written.
        let ops = plan(&[remove("a@x", 1), item("a@x")], 0, &none);
        assert_eq!(shape(&ops), [(ITEM, "a@x", true)]);
        // Upsert then Remove: the item goes, the tombstone stays.
        let ops = plan(&[item("a@x"), remove("a@x", 2)], 0, &none);
        assert_eq!(
            shape(&ops),
            [(ITEM, "a@x", false), (TOMBSTONE, "a@x", true)]
        );
        assert_eq!(
            ops[&(TOMBSTONE, "a@x".to_owned())],
            Op::Put(codec::encode_tombstone(2))
        );
        let set = RosterChange::SetPendingIn(PendingIn {
            contact: jid("p@x"),
            stanza: b"s".to_vec(),
        });
        let clear = RosterChange::ClearPendingIn(jid("p@x"));
        let ops = plan(&[set.clone(), clear.clone()], 0, &none);
        assert_eq!(shape(&ops), [(PENDING_IN, "p@x", false)]);
        let ops = plan(&[clear, set], 0, &none);
        assert_eq!(shape(&ops), [(PENDING_IN, "p@x", true)]);
    }

    #[test]
    fn prune_sees_stored_and_earlier_tombstones_only() {
        let stored = BTreeMap::from([("s1@x".to_owned(), 1), ("s5@x".to_owned(), 5)]);
        let ops = plan(
            &[
                remove("n2@x", 2),
                remove("s5@x", 2),
                RosterChange::PruneTombstones,
                remove("late@x", 1),
            ],
            3,
            &stored,
        );
        assert_eq!(
            shape(&ops),
            [
                (ITEM, "late@x", false),
                (ITEM, "n2@x", false),
                (ITEM, "s5@x", false),
                (TOMBSTONE, "late@x", true),
                (TOMBSTONE, "s1@x", false),
                (TOMBSTONE, "s5@x", false),
            ]
        );
    }

    #[test]
    fn meta_is_all_or_nothing() {
        let u = jid("u@x");
        assert_eq!(meta(&u, None, None, None).unwrap(), RosterMeta::default());
        assert_eq!(
            meta(&u, Some(-1), Some(2), Some(1)).unwrap(),
            RosterMeta {
                epoch: u64::MAX,
                version: 2,
                tombstone_floor: 1
            }
        );
        assert!(matches!(
            meta(&u, Some(1), None, Some(1)),
            Err(StoreError::Corrupt(_))
        ));
    }
}
