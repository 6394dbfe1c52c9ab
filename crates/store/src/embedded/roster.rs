//! [`RosterStore`] for the embedded backend: items, tombstones and pending-in
//! requests in three `(owner, contact)` tables, plus one meta row per owner.
//!
//! An `apply_roster` call is one write transaction, so the changes and the new meta
//! become visible together or not at all. Every change overwrites or deletes rows
//! keyed by contact, so replaying a call leaves the same state (see
//! [`RosterStore::apply_roster`]).

use super::{
    EmbeddedStore, OwnerRange, ROSTER_ITEMS, ROSTER_META, ROSTER_PENDING_IN, ROSTER_TOMBSTONES,
    corrupt, corrupt_jid, unavailable,
};
use crate::codec::{self, DecodeError};
use crate::records::{PendingIn, RosterChange, RosterMeta, StoredRoster, Tombstone};
use crate::{RosterStore, StoreError};
use async_trait::async_trait;
use jid::BareJid;
use redb::{ReadableTable, Table, TableDefinition};

type ContactTable<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;

#[async_trait]
impl RosterStore for EmbeddedStore {
    async fn load_roster(&self, user: &BareJid) -> Result<StoredRoster, StoreError> {
        let owner = OwnerRange::new(user.as_str());
        self.read(move |txn| {
            let meta = {
                let t = txn.open_table(ROSTER_META).map_err(unavailable)?;
                let row = t.get(owner.owner.as_str()).map_err(unavailable)?;
                match row {
                    Some(v) => codec::decode_meta(v.value())
                        .map_err(|e| corrupt("roster_meta", &owner.owner, e))?,
                    None => RosterMeta::default(),
                }
            };
            let items = scan(
                txn,
                ROSTER_ITEMS,
                "roster_items",
                &owner,
                codec::decode_item,
            )?;
            let tombstones = scan(
                txn,
                ROSTER_TOMBSTONES,
                "roster_tombstones",
                &owner,
                |contact, v| {
                    Ok(Tombstone {
                        contact,
                        version: codec::decode_tombstone(v)?,
                    })
                },
            )?;
            let pending_in = scan(
                txn,
                ROSTER_PENDING_IN,
                "roster_pending_in",
                &owner,
                |contact, v| {
                    Ok(PendingIn {
                        contact,
                        stanza: codec::decode_blob(v, "pending-in request")?,
                    })
                },
            )?;
            Ok(StoredRoster {
                meta,
                items,
                tombstones,
                pending_in,
            })
        })
        .await
    }

    async fn apply_roster(
        &self,
        user: &BareJid,
        meta: RosterMeta,
        changes: Vec<RosterChange>,
    ) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        self.write(move |txn| {
            let mut items = txn.open_table(ROSTER_ITEMS).map_err(unavailable)?;
            let mut tombstones = txn.open_table(ROSTER_TOMBSTONES).map_err(unavailable)?;
            let mut pending = txn.open_table(ROSTER_PENDING_IN).map_err(unavailable)?;
            let o = owner.as_str();
            for change in &changes {
                match change {
                    // An item and a tombstone for one contact never coexist: the
                    // newer of the two is the truth a client must be brought to.
                    RosterChange::Upsert(r) => {
                        let key = (o, r.contact.as_str());
                        items
                            .insert(key, codec::encode_item(r).as_slice())
                            .map_err(unavailable)?;
                        tombstones.remove(key).map_err(unavailable)?;
                    }
                    RosterChange::Remove(t) => {
                        let key = (o, t.contact.as_str());
                        items.remove(key).map_err(unavailable)?;
                        tombstones
                            .insert(key, codec::encode_tombstone(t.version).as_slice())
                            .map_err(unavailable)?;
                    }
                    RosterChange::SetPendingIn(p) => {
                        pending
                            .insert(
                                (o, p.contact.as_str()),
                                codec::encode_blob(&p.stanza).as_slice(),
                            )
                            .map_err(unavailable)?;
                    }
                    RosterChange::ClearPendingIn(contact) => {
                        pending.remove((o, contact.as_str())).map_err(unavailable)?;
                    }
                    RosterChange::PruneTombstones => {
                        prune(&mut tombstones, o, meta.tombstone_floor)?;
                    }
                }
            }
            let mut metas = txn.open_table(ROSTER_META).map_err(unavailable)?;
            metas
                .insert(o, codec::encode_meta(&meta).as_slice())
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn delete_roster(&self, user: &BareJid) -> Result<(), StoreError> {
        let owner = OwnerRange::new(user.as_str());
        self.write(move |txn| {
            for def in [ROSTER_ITEMS, ROSTER_TOMBSTONES, ROSTER_PENDING_IN] {
                let mut t = txn.open_table(def).map_err(unavailable)?;
                t.retain_in(owner.range(), |_, _| false)
                    .map_err(unavailable)?;
            }
            let mut metas = txn.open_table(ROSTER_META).map_err(unavailable)?;
            metas.remove(owner.owner.as_str()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

/// Decodes `owner`'s rows of an `(owner, contact)` table, in contact order.
fn scan<T>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<(&str, &str), &[u8]>,
    table: &str,
    owner: &OwnerRange,
    decode: impl Fn(BareJid, &[u8]) -> Result<T, DecodeError>,
) -> Result<Vec<T>, StoreError> {
    let t = txn.open_table(def).map_err(unavailable)?;
    let mut out = Vec::new();
    for entry in t.range(owner.range()).map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        let (_, contact) = k.value();
        let jid = BareJid::new(contact).map_err(|e| corrupt_jid(table, contact, e))?;
        out.push(decode(jid, v.value()).map_err(|e| corrupt(table, k.value(), e))?);
    }
    Ok(out)
}

/// Drops `owner`'s tombstones older than `floor`.
fn prune(tombstones: &mut ContactTable<'_>, owner: &str, floor: u64) -> Result<(), StoreError> {
    let range = OwnerRange::new(owner);
    // Collect first: the decision needs a decoded value, and a decode error must
    // fail the transaction, which `retain_in`'s predicate cannot report.
    let mut stale = Vec::new();
    for entry in tombstones.range(range.range()).map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        let version = codec::decode_tombstone(v.value())
            .map_err(|e| corrupt("roster_tombstones", k.value(), e))?;
        if version < floor {
            stale.push(k.value().1.to_owned());
        }
    }
    for contact in &stale {
        tombstones
            .remove((owner, contact.as_str()))
            .map_err(unavailable)?;
    }
    Ok(())
}
