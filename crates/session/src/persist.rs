//! Between the `im` model and the stores: loading a user's state and turning the
//! user logic's [`Persist`] actions into store writes.

use aviary_im::blocking::BlockList;
use aviary_im::roster::{Change, Item, Meta, Roster};
use aviary_im::subscription::Subscription as ImSub;
use aviary_im::user::Persist;
use aviary_store::{
    PendingIn, RosterChange, RosterMeta, RosterRecord, StoreError, Stores, Subscription, Tombstone,
};
use aviary_xmpp::{BareJid, stored};

/// What a user actor loads before it handles anything.
pub struct Loaded {
    pub exists: bool,
    pub roster: Roster,
    pub blocklist: BlockList,
}

pub async fn load(stores: &Stores, jid: &BareJid) -> Result<Loaded, StoreError> {
    let exists = stores.accounts.credentials(jid).await?.is_some();
    if !exists {
        return Ok(Loaded {
            exists,
            roster: Roster::new(new_epoch()),
            blocklist: BlockList::default(),
        });
    }
    let stored = stores.rosters.load_roster(jid).await?;
    let meta = if stored.meta.epoch == 0 {
        // Never written: start a new incarnation.
        Meta {
            epoch: new_epoch(),
            ..Meta::default()
        }
    } else {
        Meta {
            epoch: stored.meta.epoch,
            version: stored.meta.version,
            tombstone_floor: stored.meta.tombstone_floor,
        }
    };
    let items = stored.items.into_iter().map(item_from_record).collect();
    let tombstones = stored
        .tombstones
        .into_iter()
        .map(|t| (t.contact, t.version))
        .collect();
    let mut pending = Vec::new();
    for p in stored.pending_in {
        match stored::parse_stanza(&p.stanza) {
            Ok(st) => pending.push((p.contact, st)),
            // A request we cannot read is dropped rather than blocking the account.
            Err(e) => {
                tracing::warn!(user = %jid, error = %e, "unreadable stored subscription request")
            }
        }
    }
    let blocklist = BlockList::restore(stores.blocks.load_blocklist(jid).await?);
    Ok(Loaded {
        exists,
        roster: Roster::restore(meta, items, tombstones, pending),
        blocklist,
    })
}

fn new_epoch() -> u64 {
    // Non-zero: zero marks "never written" in the store.
    rand::random::<u64>() | 1
}

fn sub_to_store(s: ImSub) -> Subscription {
    match s {
        ImSub::None => Subscription::None,
        ImSub::To => Subscription::To,
        ImSub::From => Subscription::From,
        ImSub::Both => Subscription::Both,
    }
}

fn sub_from_store(s: Subscription) -> ImSub {
    match s {
        Subscription::None => ImSub::None,
        Subscription::To => ImSub::To,
        Subscription::From => ImSub::From,
        Subscription::Both => ImSub::Both,
    }
}

fn item_from_record(r: RosterRecord) -> Item {
    Item {
        jid: r.contact,
        name: r.name,
        groups: r.groups,
        subscription: sub_from_store(r.subscription),
        ask: r.ask,
        approved: r.approved,
        version: r.version,
    }
}

fn item_to_record(i: Item) -> RosterRecord {
    RosterRecord {
        contact: i.jid,
        name: i.name,
        groups: i.groups,
        subscription: sub_to_store(i.subscription),
        ask: i.ask,
        approved: i.approved,
        version: i.version,
    }
}

/// Carries out one persistence action for `user`.
pub async fn apply(stores: &Stores, user: &BareJid, p: Persist) -> Result<(), StoreError> {
    match p {
        Persist::Roster(meta, changes) => {
            let meta = RosterMeta {
                epoch: meta.epoch,
                version: meta.version,
                tombstone_floor: meta.tombstone_floor,
            };
            let changes = changes
                .into_iter()
                .map(|c| match c {
                    Change::Upsert(i) => RosterChange::Upsert(item_to_record(i)),
                    Change::Remove { jid, version } => RosterChange::Remove(Tombstone {
                        contact: jid,
                        version,
                    }),
                    Change::SetPendingIn(jid, st) => RosterChange::SetPendingIn(PendingIn {
                        contact: jid,
                        stanza: stored::to_bytes(&st),
                    }),
                    Change::ClearPendingIn(jid) => RosterChange::ClearPendingIn(jid),
                    Change::PruneTombstones => RosterChange::PruneTombstones,
                })
                .collect();
            stores.rosters.apply_roster(user, meta, changes).await
        }
        Persist::Block(jids) => {
            let items: Vec<String> = jids.iter().map(|j| j.to_string()).collect();
            stores.blocks.block(user, &items).await
        }
        Persist::Unblock(jids) => {
            let items: Vec<String> = jids.iter().map(|j| j.to_string()).collect();
            stores.blocks.unblock(user, &items).await
        }
        Persist::UnblockAll => stores.blocks.unblock_all(user).await,
    }
}
