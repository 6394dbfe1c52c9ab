//! The records the stores keep. Plain data: the protocol layers convert to and from
//! their own types, so storage never depends on protocol logic.

use jid::BareJid;

/// A roster item's subscription (RFC 6121 §2.1.2.5), as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn to_u8(self) -> u8 {
        match self {
            Subscription::None => 0,
            Subscription::To => 1,
            Subscription::From => 2,
            Subscription::Both => 3,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Subscription::None,
            1 => Subscription::To,
            2 => Subscription::From,
            3 => Subscription::Both,
            _ => return None,
        })
    }
}

/// One visible roster item (RFC 6121 §2.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterRecord {
    pub contact: BareJid,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub subscription: Subscription,
    /// Pending out: `ask='subscribe'` (RFC 6121 §2.1.2.2).
    pub ask: bool,
    /// Subscription pre-approved (RFC 6121 §3.4, `approved='true'`).
    pub approved: bool,
    /// The roster version at which this item last changed (RFC 6121 §2.6).
    pub version: u64,
}

/// A removed item, remembered so a client's cached roster can be brought up to date
/// with pushes instead of a full roster (RFC 6121 §2.6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub contact: BareJid,
    pub version: u64,
}

/// An inbound subscription request the user has not answered yet ("Pending In",
/// RFC 6121 §3.1.3), with the request as received so it can be delivered again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingIn {
    pub contact: BareJid,
    /// The serialised `<presence type='subscribe'/>` (it may carry a status or a
    /// nickname worth showing).
    pub stanza: Vec<u8>,
}

/// Roster-wide bookkeeping for versioning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RosterMeta {
    /// Random per roster incarnation: a version from a deleted and re-created account
    /// never matches the new roster's.
    pub epoch: u64,
    /// The current roster version (0 for an empty roster never changed).
    pub version: u64,
    /// Tombstones older than this were discarded; a client version below it gets the
    /// full roster.
    pub tombstone_floor: u64,
}

/// Everything stored about one user's roster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRoster {
    pub meta: RosterMeta,
    pub items: Vec<RosterRecord>,
    pub tombstones: Vec<Tombstone>,
    pub pending_in: Vec<PendingIn>,
}

/// One roster write, applied atomically with the new meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterChange {
    /// Adds or replaces the item, forgetting any tombstone of the contact.
    Upsert(RosterRecord),
    /// Removes the item and records its tombstone.
    Remove(Tombstone),
    SetPendingIn(PendingIn),
    ClearPendingIn(BareJid),
    /// Discards tombstones with a version below the meta's new floor.
    PruneTombstones,
}

/// A stored offline message (XEP-0160).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineRecord {
    /// Increasing per user: the order of delivery.
    pub id: u64,
    /// The serialised stanza, already stamped with its delay (XEP-0203).
    pub stanza: Vec<u8>,
}
