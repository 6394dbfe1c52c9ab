//! The Redis backend's value formats, hand-written so they are compact, explicit
//! and stable across dependency upgrades.
//!
//! `NodeInfo` and `Location` values start with a format-version byte; a reader
//! accepts only versions it knows, so data written by a newer Aviary fails loudly
//! as [`DirectoryError::Corrupt`] instead of being misread. Decoding checks every
//! length against the bytes left, rejects unknown flag bits and trailing bytes, and
//! never panics.
//!
//! `Location` v1 puts the fields the Lua compare-and-set scripts look at first, at
//! offsets the client computes, so the scripts compare byte prefixes and never parse:
//!
//! ```text
//! [1] [conn: u64 big-endian] [edge: varint length, bytes]   ← identity prefix
//! [flags: u8] [priority: i8] [presence: varint length, bytes — if flag 0x08]
//! flags: 0x01 available, 0x02 roster_interested, 0x04 blocklist_interested,
//!        0x08 presence present
//! ```
//!
//! `NodeInfo` v1: `[1] [role: 0 edge, 1 session] [incarnation: varint]
//! [addr: varint length, bytes]`; the node id is the hash field, not repeated.
//!
//! A claim is text, `"<epoch> <node>"` with the epoch in decimal without leading
//! zeros, because the claim script reads the epoch (comparing decimal strings by
//! length, then bytes: exact for all of u64, unlike Lua's doubles).

use crate::{Claim, DirectoryError, Location, NodeInfo, NodeRole};

/// The only format version so far, for both binary record kinds.
const V1: u8 = 1;

const AVAILABLE: u8 = 0x01;
const ROSTER: u8 = 0x02;
const BLOCKLIST: u8 = 0x04;
const PRESENCE: u8 = 0x08;
const KNOWN_FLAGS: u8 = AVAILABLE | ROSTER | BLOCKLIST | PRESENCE;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn bytes(buf: &mut Vec<u8>, b: &[u8]) {
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// An encoded location and the length of its identity prefix (version, conn,
/// edge): the bytes `update` compares.
pub(super) fn encode_location(loc: &Location) -> (Vec<u8>, usize) {
    let presence_len = loc.presence.as_ref().map_or(0, Vec::len);
    let mut buf = Vec::with_capacity(24 + loc.edge.len() + presence_len);
    buf.push(V1);
    buf.extend_from_slice(&loc.conn.to_be_bytes());
    bytes(&mut buf, loc.edge.as_bytes());
    let identity = buf.len();
    let mut flags = 0;
    for (set, bit) in [
        (loc.available, AVAILABLE),
        (loc.roster_interested, ROSTER),
        (loc.blocklist_interested, BLOCKLIST),
        (loc.presence.is_some(), PRESENCE),
    ] {
        if set {
            flags |= bit;
        }
    }
    buf.push(flags);
    buf.push(loc.priority as u8);
    if let Some(p) = &loc.presence {
        bytes(&mut buf, p);
    }
    (buf, identity)
}

/// The identity prefix `unbind` compares: version and connection id.
pub(super) fn conn_prefix(conn: u64) -> [u8; 9] {
    let mut out = [V1; 9];
    out[1..].copy_from_slice(&conn.to_be_bytes());
    out
}

pub(super) fn decode_location(buf: &[u8]) -> Result<Location, &'static str> {
    let mut r = Reader::new(buf)?;
    let conn = u64::from_be_bytes(r.array()?);
    let edge = r.string()?;
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err("unknown flag bits");
    }
    let priority = r.u8()? as i8;
    let presence = if flags & PRESENCE != 0 {
        Some(r.bytes()?.to_vec())
    } else {
        None
    };
    r.end()?;
    Ok(Location {
        edge,
        conn,
        available: flags & AVAILABLE != 0,
        priority,
        presence,
        roster_interested: flags & ROSTER != 0,
        blocklist_interested: flags & BLOCKLIST != 0,
    })
}

pub(super) fn encode_node(node: &NodeInfo) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + node.addr.len());
    buf.push(V1);
    buf.push(match node.role {
        NodeRole::Edge => 0,
        NodeRole::Session => 1,
    });
    varint(&mut buf, node.incarnation);
    bytes(&mut buf, node.addr.as_bytes());
    buf
}

pub(super) fn decode_node(id: String, buf: &[u8]) -> Result<NodeInfo, &'static str> {
    let mut r = Reader::new(buf)?;
    let role = match r.u8()? {
        0 => NodeRole::Edge,
        1 => NodeRole::Session,
        _ => return Err("unknown node role"),
    };
    let incarnation = r.varint()?;
    let addr = r.string()?;
    r.end()?;
    Ok(NodeInfo {
        id,
        role,
        addr,
        incarnation,
    })
}

pub(super) fn encode_claim(claim: &Claim) -> String {
    format!("{} {}", claim.epoch, claim.node)
}

pub(super) fn decode_claim(value: &[u8]) -> Result<Claim, &'static str> {
    let text = std::str::from_utf8(value).map_err(|_| "claim is not UTF-8")?;
    let (epoch, node) = text.split_once(' ').ok_or("claim without a space")?;
    let canonical = !epoch.is_empty()
        && epoch.bytes().all(|b| b.is_ascii_digit())
        && (epoch == "0" || !epoch.starts_with('0'));
    if !canonical {
        return Err("claim epoch is not a canonical decimal");
    }
    let epoch = epoch.parse().map_err(|_| "claim epoch out of range")?;
    Ok(Claim {
        node: node.to_owned(),
        epoch,
    })
}

/// Maps a decode problem to the error callers see, naming the entry.
pub(super) fn corrupt(what: impl std::fmt::Display, problem: &str) -> DirectoryError {
    DirectoryError::Corrupt(format!("{what}: {problem}"))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Result<Self, &'static str> {
        let mut r = Reader(buf);
        match r.u8() {
            Ok(V1) => Ok(r),
            Ok(0) => Err("format version 0 (zeroed or foreign data)"),
            Ok(_) => Err("unknown format version (written by a newer Aviary?)"),
            Err(_) => Err("empty value"),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("varint overflows u64");
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| "length out of range")?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8")
    }

    fn end(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locations() -> Vec<Location> {
        vec![
            Location::default(),
            Location {
                edge: "edge-1".into(),
                conn: u64::MAX,
                available: true,
                priority: -128,
                presence: Some(b"<presence><show>away</show></presence>".to_vec()),
                roster_interested: true,
                blocklist_interested: true,
            },
            Location {
                edge: "é".repeat(100),
                conn: 0x0102_0304_0506_0708,
                available: false,
                priority: 127,
                presence: Some(Vec::new()),
                roster_interested: false,
                blocklist_interested: true,
            },
        ]
    }

    fn nodes() -> Vec<NodeInfo> {
        vec![
            NodeInfo {
                id: "s1".into(),
                role: NodeRole::Session,
                addr: "10.0.0.1:7001".into(),
                incarnation: u64::MAX,
            },
            NodeInfo {
                id: String::new(),
                role: NodeRole::Edge,
                addr: String::new(),
                incarnation: 0,
            },
        ]
    }

    #[test]
    fn location_round_trip_and_layout() {
        for loc in locations() {
            let (buf, identity) = encode_location(&loc);
            assert_eq!(decode_location(&buf), Ok(loc.clone()));
            assert_eq!(buf[0], V1);
            assert_eq!(
                &buf[..9],
                &conn_prefix(loc.conn),
                "conn right after version"
            );
            // The identity prefix is version, conn and the length-prefixed edge.
            assert!(buf[..identity].ends_with(loc.edge.as_bytes()));
            let other = Location {
                available: !loc.available,
                presence: None,
                ..loc.clone()
            };
            assert_eq!(encode_location(&other).0[..identity], buf[..identity]);
        }
        let (a, n) = encode_location(&Location {
            edge: "e".into(),
            ..Location::default()
        });
        let (b, _) = encode_location(&Location {
            edge: "e2".into(),
            ..Location::default()
        });
        assert_ne!(a[..n], b[..n], "a different edge is a different identity");
    }

    #[test]
    fn node_round_trip() {
        for node in nodes() {
            let buf = encode_node(&node);
            assert_eq!(decode_node(node.id.clone(), &buf), Ok(node));
        }
    }

    #[test]
    fn claim_round_trip() {
        for claim in [
            Claim {
                node: "n 1".into(),
                epoch: u64::MAX,
            },
            Claim {
                node: String::new(),
                epoch: 0,
            },
        ] {
            assert_eq!(decode_claim(encode_claim(&claim).as_bytes()), Ok(claim));
        }
        for bad in [
            "",
            "12",
            " n",
            "01 n",
            "-1 n",
            "+1 n",
            "1a n",
            "18446744073709551616 n",
        ] {
            assert!(decode_claim(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(decode_claim(b"1 \xff").is_err());
    }

    /// Every truncation and every extension of a valid value is an error, and
    /// arbitrary damage never panics.
    #[test]
    fn damaged_values_are_errors_not_panics() {
        let mut samples: Vec<(Vec<u8>, bool)> = Vec::new();
        for loc in locations() {
            samples.push((encode_location(&loc).0, true));
        }
        for node in nodes() {
            samples.push((encode_node(&node), false));
        }
        let decode = |buf: &[u8], is_loc: bool| {
            if is_loc {
                decode_location(buf).map(drop)
            } else {
                decode_node(String::new(), buf).map(drop)
            }
        };
        for (buf, is_loc) in &samples {
            for cut in 0..buf.len() {
                assert!(decode(&buf[..cut], *is_loc).is_err(), "truncated at {cut}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert!(decode(&longer, *is_loc).is_err(), "trailing byte accepted");
            for v in [0u8, 2, 0xff] {
                let mut other = buf.clone();
                other[0] = v;
                assert!(decode(&other, *is_loc).is_err(), "version {v} accepted");
            }
            // Flip every bit of every byte: the result may decode or not, but
            // decoding must return.
            for i in 0..buf.len() {
                for bit in 0..8 {
                    let mut damaged = buf.clone();
                    damaged[i] ^= 1 << bit;
                    let _ = decode(&damaged, *is_loc);
                }
            }
        }
        assert_eq!(
            decode_location(&[V1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]),
            Err("unknown flag bits")
        );
        assert_eq!(
            decode_node(String::new(), &[V1, 2, 0, 0]),
            Err("unknown node role")
        );
        // A length that claims more than the buffer holds, and an overlong varint.
        assert!(decode_node(String::new(), &[V1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(
            decode_node(
                String::new(),
                &[
                    V1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
                ]
            )
            .is_err()
        );
    }
}
