//! Conformance checks for [`Partitions`]: the claim table and its compare-and-set,
//! including under contention.

use super::{fresh, ok};
use crate::{Claim, Partitions};
use futures::future::join_all;

fn claim(node: &str, epoch: u64) -> Claim {
    Claim {
        node: node.to_owned(),
        epoch,
    }
}

async fn claims(p: &dyn Partitions, count: u32) -> Vec<Option<Claim>> {
    let c = ok(p.claims(count).await, "claims");
    assert_eq!(
        c.len(),
        count as usize,
        "claims({count}) must list {count} partitions"
    );
    c
}

/// A fresh table has every partition unclaimed.
pub async fn claims_start_unclaimed(p: &dyn Partitions) {
    assert!(claims(p, 0).await.is_empty());
    assert!(claims(p, 1024).await.iter().all(Option::is_none));
}

/// Compare-and-set: the expected value must match exactly (absent = unclaimed) and
/// the new epoch must be greater; nothing else changes.
pub async fn claims_compare_and_set(p: &dyn Partitions) {
    let (a, b) = (fresh("node a"), fresh("node-b"));
    let cas = |part: u32, expected: Option<Claim>, new: Claim| async move {
        ok(
            p.cas_claim(part, expected.as_ref(), &new).await,
            "cas_claim",
        )
    };
    assert!(
        cas(3, None, claim(&a, 1)).await,
        "claiming an unclaimed partition"
    );
    let mut want = vec![None; 8];
    want[3] = Some(claim(&a, 1));
    assert_eq!(claims(p, 8).await, want);

    assert!(
        !cas(3, None, claim(&b, 2)).await,
        "expected unclaimed, but claimed"
    );
    assert!(
        !cas(3, Some(claim(&b, 1)), claim(&b, 2)).await,
        "wrong expected node"
    );
    assert!(
        !cas(3, Some(claim(&a, 0)), claim(&b, 2)).await,
        "wrong expected epoch"
    );
    assert!(
        !cas(3, Some(claim(&a, 1)), claim(&b, 1)).await,
        "equal epoch"
    );
    assert!(
        !cas(3, Some(claim(&a, 1)), claim(&b, 0)).await,
        "lower epoch"
    );
    assert!(
        !cas(4, Some(claim(&a, 1)), claim(&b, 2)).await,
        "expected a claim on an unclaimed partition"
    );
    assert_eq!(claims(p, 8).await, want, "failed CAS changed the table");

    assert!(
        cas(3, Some(claim(&a, 1)), claim(&b, 2)).await,
        "a proper takeover"
    );
    assert!(
        !cas(3, Some(claim(&a, 1)), claim(&a, 5)).await,
        "a stale expected value"
    );
    assert!(
        cas(3, Some(claim(&b, 2)), claim(&b, 3)).await,
        "re-claim by the owner"
    );
    want[3] = Some(claim(&b, 3));
    assert_eq!(claims(p, 8).await, want);
    assert_eq!(
        claims(p, 3).await,
        vec![None; 3],
        "claims beyond count are left out"
    );

    // Epochs are exact over the whole u64 range (a double holds 53 bits), and the
    // last partition of the u32 range is a partition like any other.
    let big = 1u64 << 53;
    assert!(cas(7, None, claim(&a, big)).await);
    assert!(
        cas(7, Some(claim(&a, big)), claim(&a, big + 1)).await,
        "2^53 + 1 > 2^53"
    );
    assert!(!cas(7, Some(claim(&a, big + 1)), claim(&a, big)).await);
    assert!(cas(7, Some(claim(&a, big + 1)), claim(&b, u64::MAX)).await);
    assert!(!cas(7, Some(claim(&b, u64::MAX)), claim(&a, u64::MAX)).await);
    assert!(cas(u32::MAX, None, claim("", 0)).await);
    assert!(cas(u32::MAX, Some(claim("", 0)), claim(&a, 1)).await);
    want[7] = Some(claim(&b, u64::MAX));
    assert_eq!(claims(p, 8).await, want);
}

/// Many contenders racing for one partition: exactly one wins each round, and the
/// table shows the winner's claim.
pub async fn claims_race(p: &dyn Partitions) {
    const CONTENDERS: u64 = 12;
    const ROUNDS: u64 = 6;
    let part = 5;
    let mut current: Option<Claim> = None;
    for round in 0..ROUNDS {
        let base = current.as_ref().map_or(0, |c| c.epoch);
        let attempts = (0..CONTENDERS).map(|i| {
            // Varied epochs, all greater than the current one: only the CAS on the
            // expected value can pick the winner.
            let new = claim(&format!("n{i}"), base + 1 + i % 3);
            let expected = current.clone();
            async move {
                let won = ok(
                    p.cas_claim(part, expected.as_ref(), &new).await,
                    "cas_claim",
                );
                won.then_some(new)
            }
        });
        let winners: Vec<Claim> = join_all(attempts).await.into_iter().flatten().collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} of {CONTENDERS} contenders won: {winners:?}",
            winners.len()
        );
        let table = claims(p, part + 1).await;
        assert_eq!(
            table[part as usize].as_ref(),
            Some(&winners[0]),
            "round {round}"
        );
        current = Some(winners[0].clone());
    }
}
