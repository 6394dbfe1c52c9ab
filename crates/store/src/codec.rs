//! The stored value format of both backends (redb values, and the `data` blobs of
//! the CQL roster table): a small hand-written codec, so the format is explicit,
//! stable across dependency upgrades and cheap to decode.
//!
//! Every value starts with a format-version byte; a reader accepts only the versions
//! it knows, so a file written by a newer Aviary fails loudly instead of being
//! misread. Integers are LEB128 varints (most are small), except the random roster
//! epoch, which is 8 bytes little-endian. Strings and byte strings are
//! length-prefixed. Decoding checks every length against the bytes left and never
//! panics: bad input is a [`DecodeError`], which the backends turn into
//! [`StoreError::Corrupt`](crate::StoreError::Corrupt) naming the row.
//!
//! Keys (redb keys, CQL primary keys) carry the owner and the contact / id, so values
//! never repeat them.

use crate::records::{RosterMeta, RosterRecord, Subscription};
use jid::BareJid;

/// The only format version so far, for every record kind.
const V1: u8 = 1;

/// A value that could not be decoded: which kind of record and what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub record: &'static str,
    pub problem: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.record, self.problem)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(1 + capacity);
        buf.push(V1);
        Writer(buf)
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    record: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`, checking its version byte.
    fn new(buf: &'a [u8], record: &'static str) -> Result<Self, DecodeError> {
        let mut r = Reader { buf, record };
        match r.u8()? {
            V1 => Ok(r),
            0 => Err(r.err("format version 0 (zeroed or foreign data)")),
            _ => Err(r.err("unknown format version (written by a newer Aviary?)")),
        }
    }

    fn err(&self, problem: &'static str) -> DecodeError {
        DecodeError {
            record: self.record,
            problem,
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(self.err("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(self.err("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only hold the top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(self.err("varint overflows u64"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// A length prefix, checked against what is left so a corrupt length can
    /// never cause a large allocation.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() => Ok(n),
            _ => Err(self.err("length exceeds the record")),
        }
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| self.err("invalid UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

const FLAG_ASK: u8 = 1;
const FLAG_APPROVED: u8 = 1 << 1;
const FLAG_NAME: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_ASK | FLAG_APPROVED | FLAG_NAME;

/// Roster item, v1: `[1][subscription][flags][version varint]`, then the name if
/// `flags` says there is one, then `[group count varint]` and the groups. The
/// contact is the key's second part.
pub(crate) fn encode_item(r: &RosterRecord) -> Vec<u8> {
    let text =
        r.name.as_ref().map_or(0, String::len) + r.groups.iter().map(String::len).sum::<usize>();
    let mut w = Writer::new(16 + text + 2 * r.groups.len());
    w.u8(r.subscription.to_u8());
    let mut flags = 0;
    if r.ask {
        flags |= FLAG_ASK;
    }
    if r.approved {
        flags |= FLAG_APPROVED;
    }
    if r.name.is_some() {
        flags |= FLAG_NAME;
    }
    w.u8(flags);
    w.varint(r.version);
    if let Some(name) = &r.name {
        w.str(name);
    }
    w.varint(r.groups.len() as u64);
    for g in &r.groups {
        w.str(g);
    }
    w.finish()
}

pub(crate) fn decode_item(contact: BareJid, bytes: &[u8]) -> Result<RosterRecord, DecodeError> {
    let mut r = Reader::new(bytes, "roster item")?;
    let subscription = Subscription::from_u8(r.u8()?).ok_or(r.err("unknown subscription value"))?;
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(r.err("unknown flag bits"));
    }
    let version = r.varint()?;
    let name = if flags & FLAG_NAME != 0 {
        Some(r.str()?)
    } else {
        None
    };
    let count = r.varint()?;
    // Every group takes at least its length byte, so the bytes left bound the count.
    let mut groups = Vec::with_capacity(
        usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(r.buf.len()),
    );
    for _ in 0..count {
        groups.push(r.str()?);
    }
    r.end()?;
    Ok(RosterRecord {
        contact,
        name,
        groups,
        subscription,
        ask: flags & FLAG_ASK != 0,
        approved: flags & FLAG_APPROVED != 0,
        version,
    })
}

/// Tombstone, v1: `[1][version varint]`.
pub(crate) fn encode_tombstone(version: u64) -> Vec<u8> {
    let mut w = Writer::new(10);
    w.varint(version);
    w.finish()
}

pub(crate) fn decode_tombstone(bytes: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(bytes, "roster tombstone")?;
    let version = r.varint()?;
    r.end()?;
    Ok(version)
}

/// Roster meta, v1: `[1][epoch u64 LE][version varint][tombstone floor varint]`.
pub(crate) fn encode_meta(m: &RosterMeta) -> Vec<u8> {
    let mut w = Writer::new(28);
    w.0.extend_from_slice(&m.epoch.to_le_bytes());
    w.varint(m.version);
    w.varint(m.tombstone_floor);
    w.finish()
}

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<RosterMeta, DecodeError> {
    let mut r = Reader::new(bytes, "roster meta")?;
    let meta = RosterMeta {
        epoch: r.u64_le()?,
        version: r.varint()?,
        tombstone_floor: r.varint()?,
    };
    r.end()?;
    Ok(meta)
}

/// An opaque blob (pending-in request or offline stanza), v1: `[1][bytes…]`. The
/// version byte leaves room to add fields (e.g. an expiry) later.
pub(crate) fn encode_blob(blob: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(blob.len());
    w.0.extend_from_slice(blob);
    w.finish()
}

pub(crate) fn decode_blob(bytes: &[u8], record: &'static str) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader::new(bytes, record)?;
    Ok(r.rest().to_vec())
}

/// Per-user offline queue bookkeeping. `next_id` only grows while the row exists,
/// so an id is never reused and a retried `remove_offline` cannot remove a message
/// pushed after the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueState {
    pub next_id: u64,
    pub count: u64,
}

impl Default for QueueState {
    fn default() -> Self {
        // Ids start at 1, so `remove_offline(user, 0)` removes nothing.
        QueueState {
            next_id: 1,
            count: 0,
        }
    }
}

/// Queue state, v1: `[1][next id varint][count varint]`.
pub(crate) fn encode_queue(q: QueueState) -> Vec<u8> {
    let mut w = Writer::new(20);
    w.varint(q.next_id);
    w.varint(q.count);
    w.finish()
}

pub(crate) fn decode_queue(bytes: &[u8]) -> Result<QueueState, DecodeError> {
    let mut r = Reader::new(bytes, "offline queue state")?;
    let q = QueueState {
        next_id: r.varint()?,
        count: r.varint()?,
    };
    r.end()?;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> BareJid {
        BareJid::new("bob@example.org").unwrap()
    }

    fn item() -> RosterRecord {
        RosterRecord {
            contact: contact(),
            name: Some("Bob ❤".into()),
            groups: vec!["Friends".into(), String::new(), "Work".into()],
            subscription: Subscription::Both,
            ask: true,
            approved: false,
            version: 300,
        }
    }

    /// Every decoder, as one signature, for the exhaustive corruption checks.
    type Decode = fn(&[u8]) -> Result<(), DecodeError>;

    fn decoders() -> Vec<(&'static str, Vec<u8>, Decode)> {
        vec![
            ("item", encode_item(&item()), |b| {
                decode_item(contact(), b).map(drop)
            }),
            ("tombstone", encode_tombstone(u64::MAX), |b| {
                decode_tombstone(b).map(drop)
            }),
            (
                "meta",
                encode_meta(&RosterMeta {
                    epoch: 0xdead_beef_0123_4567,
                    version: 1 << 40,
                    tombstone_floor: 5,
                }),
                |b| decode_meta(b).map(drop),
            ),
            (
                "queue",
                encode_queue(QueueState {
                    next_id: 1 << 33,
                    count: 7,
                }),
                |b| decode_queue(b).map(drop),
            ),
        ]
    }

    #[test]
    fn round_trips() {
        let it = item();
        assert_eq!(decode_item(contact(), &encode_item(&it)).unwrap(), it);
        let bare = RosterRecord {
            name: None,
            groups: vec![],
            subscription: Subscription::None,
            ask: false,
            approved: true,
            version: 0,
            ..it
        };
        assert_eq!(decode_item(contact(), &encode_item(&bare)).unwrap(), bare);
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            assert_eq!(decode_tombstone(&encode_tombstone(v)).unwrap(), v);
        }
        let meta = RosterMeta {
            epoch: u64::MAX,
            version: 9,
            tombstone_floor: 3,
        };
        assert_eq!(decode_meta(&encode_meta(&meta)).unwrap(), meta);
        let q = QueueState {
            next_id: u64::MAX,
            count: 0,
        };
        assert_eq!(decode_queue(&encode_queue(q)).unwrap(), q);
        for blob in [&b""[..], b"<message/>", &[0, 1, 255]] {
            assert_eq!(decode_blob(&encode_blob(blob), "blob").unwrap(), blob);
        }
    }

    /// The v1 layout is a promise to data already stored (redb files, CQL rows): changing it means a new
    /// version byte and a decoder for the old one.
    #[test]
    fn v1_layout_is_pinned() {
        let r = RosterRecord {
            contact: contact(),
            name: Some("B".into()),
            groups: vec!["G".into()],
            subscription: Subscription::To,
            ask: false,
            approved: true,
            version: 200,
        };
        assert_eq!(
            encode_item(&r),
            [
                1,
                1,
                FLAG_APPROVED | FLAG_NAME,
                0xc8,
                0x01,
                1,
                b'B',
                1,
                1,
                b'G'
            ]
        );
        let meta = RosterMeta {
            epoch: 0x0102_0304_0506_0708,
            version: 1,
            tombstone_floor: 0,
        };
        assert_eq!(encode_meta(&meta), [1, 8, 7, 6, 5, 4, 3, 2, 1, 1, 0]);
        assert_eq!(encode_tombstone(300), [1, 0xac, 0x02]);
        assert_eq!(
            encode_queue(QueueState {
                next_id: 2,
                count: 1
            }),
            [1, 2, 1]
        );
        assert_eq!(encode_blob(b"x"), [1, b'x']);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (name, bytes, decode) in decoders() {
            assert!(decode(&bytes).is_ok(), "{name}");
            for n in 0..bytes.len() {
                assert!(decode(&bytes[..n]).is_err(), "{name} cut at {n} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                decode(&longer).unwrap_err().problem,
                "trailing bytes",
                "{name}"
            );
        }
        assert!(decode_blob(&[], "blob").is_err());
    }

    #[test]
    fn arbitrary_corruption_never_panics() {
        for (_, bytes, decode) in decoders() {
            for i in 0..bytes.len() {
                for v in 0..=u8::MAX {
                    let mut b = bytes.clone();
                    b[i] = v;
                    let _ = decode(&b);
                }
            }
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let problem = |b: &[u8]| decode_item(contact(), b).unwrap_err().problem;
        assert_eq!(
            problem(&[2, 0, 0, 0, 0]),
            "unknown format version (written by a newer Aviary?)"
        );
        assert_eq!(problem(&[0]), "format version 0 (zeroed or foreign data)");
        assert_eq!(problem(&[1, 4, 0, 0, 0]), "unknown subscription value");
        assert_eq!(problem(&[1, 0, 0x80, 0, 0]), "unknown flag bits");
        assert_eq!(problem(&[1, 0, FLAG_NAME, 0, 1, 0xff]), "invalid UTF-8");
        // A group count far beyond the record must fail without allocating for it.
        assert_eq!(
            problem(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            "truncated"
        );
        assert_eq!(
            problem(&[1, 0, FLAG_NAME, 0, 0x7f]),
            "length exceeds the record"
        );
        let mut long = vec![1];
        long.extend([0xff; 9]);
        long.push(0x02);
        assert_eq!(
            decode_tombstone(&long).unwrap_err().problem,
            "varint overflows u64"
        );
        let mut longer = vec![1];
        longer.extend([0x80; 11]);
        assert_eq!(
            decode_tombstone(&longer).unwrap_err().problem,
            "varint longer than 10 bytes"
        );
    }
}
