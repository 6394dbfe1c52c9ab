//! The partition ring: which partition a bare JID belongs to, and which session
//! node should own each partition.
//!
//! `partition = xxh3_64(bare JID) mod PARTITIONS`. XXH3 is a published, versioned
//! algorithm, and the golden vectors below pin it: every node of every version must
//! agree forever, or users would have two owners. Ownership targets come from
//! rendezvous (highest-random-weight) hashing over the live session nodes, so a node
//! joining or leaving moves only the partitions it gains or loses.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Number of partitions. Fixed for the life of a cluster.
pub const PARTITIONS: u32 = 1024;

/// The partition of a (normalised) bare JID.
pub fn partition(bare_jid: &str) -> u32 {
    (xxh3_64(bare_jid.as_bytes()) % u64::from(PARTITIONS)) as u32
}

/// The rendezvous weight of `node` for `partition`.
fn weight(partition: u32, node: &str) -> u64 {
    xxh3_64_with_seed(node.as_bytes(), u64::from(partition))
}

/// The node that should own `partition` among `nodes` (ties, which need a hash
/// collision, go to the smaller id so the choice stays deterministic).
pub fn target<'a>(partition: u32, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by(|a, b| {
        weight(partition, a)
            .cmp(&weight(partition, b))
            .then_with(|| b.cmp(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Golden vectors: these values must never change (see the module doc).
    #[test]
    fn golden_partitions() {
        let cases = [
            ("alice@example.com", GOLDEN[0]),
            ("bob@example.com", GOLDEN[1]),
            ("juliet@capulet.lit", GOLDEN[2]),
            ("romeo@montague.lit", GOLDEN[3]),
            ("user12345@localhost", GOLDEN[4]),
        ];
        for (jid, want) in cases {
            assert_eq!(partition(jid), want, "{jid}");
        }
        assert_eq!(target(7, ["s1", "s2", "s3"]), Some(GOLDEN_TARGET_7));
    }

    const GOLDEN: [u32; 5] = [511, 874, 396, 571, 117];
    const GOLDEN_TARGET_7: &str = "s2";

    #[test]
    fn partitions_spread_evenly() {
        let mut counts = vec![0u32; PARTITIONS as usize];
        for i in 0..100_000 {
            counts[partition(&format!("user{i}@example.com")) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // ~98 per partition; a fair hash stays well within these bounds.
        assert!(*min > 50 && *max < 150, "min {min} max {max}");
    }

    #[test]
    fn rendezvous_moves_only_what_it_must() {
        let before = ["s1", "s2", "s3"];
        let after = ["s1", "s2", "s3", "s4"];
        let mut moved = 0;
        let mut per_node: HashMap<&str, u32> = HashMap::new();
        for p in 0..PARTITIONS {
            let a = target(p, before).unwrap();
            let b = target(p, after).unwrap();
            if a != b {
                assert_eq!(b, "s4", "a partition moved between surviving nodes");
                moved += 1;
            }
            *per_node.entry(b).or_default() += 1;
        }
        // Roughly a quarter moves to the new node, and the load is balanced.
        assert!((150..=370).contains(&moved), "{moved}");
        for (n, c) in per_node {
            assert!((180..=330).contains(&c), "{n}: {c}");
        }
        assert_eq!(target(1, std::iter::empty::<&str>()), None);
    }
}
