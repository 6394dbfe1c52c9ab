//! The backend conformance suite: the behaviour every directory backend must show,
//! written against the traits only, so the memory and the Redis backend run the very
//! same checks. A backend's test calls each check on a directory built for it; a
//! check panics with a message naming the broken behaviour.
//!
//! Membership and partition checks need a directory of their own (no other member
//! heartbeats, no other claims): the member set and the partition table are global
//! to a cluster. The Redis tests give each check a fresh key prefix. Location checks
//! make up fresh JIDs and edge ids and can share a directory.
//!
//! Lease checks take a [`Time`]: on a [`ManualClock`] it advances the clock, on
//! [`RealTime`] it sleeps. Expiry is awaited by polling `members()` against a
//! deadline, never by sleeping a fixed time and hoping.
//!
//! Compiled always rather than behind a feature, like the store's suite: it adds no
//! dependencies and other crates' tests (cluster logic) can reuse it.

// Test support: a failed expectation must panic, that is how it fails a test. The
// allowance covers the submodules too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod locations;
mod membership;
mod partitions;

pub use locations::{
    locations_bind_and_replace, locations_edge_index, locations_isolate_users,
    locations_stale_connection_loses, locations_unbind_cas, locations_update_cas,
};
pub use membership::{
    membership_join_renew_leave, membership_lease_expiry, membership_renewal_extends_lease,
};
pub use partitions::{claims_compare_and_set, claims_race, claims_start_unclaimed};

use crate::DirectoryError;
use crate::memory::{Clock, ManualClock};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a check lets directory time pass.
#[async_trait]
pub trait Time: Send + Sync {
    /// Directory time since an arbitrary origin (to measure how long a lease lasted).
    fn now(&self) -> Duration;
    /// Lets (at least) `d` of directory time pass.
    async fn pass(&self, d: Duration);
}

/// The real clock, for backends whose time is real (Redis `TIME`).
#[derive(Debug)]
pub struct RealTime {
    origin: Instant,
}

impl Default for RealTime {
    fn default() -> Self {
        RealTime {
            origin: Instant::now(),
        }
    }
}

#[async_trait]
impl Time for RealTime {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

#[async_trait]
impl Time for ManualClock {
    fn now(&self) -> Duration {
        Clock::now(self)
    }

    async fn pass(&self, d: Duration) {
        self.advance(d);
    }
}

/// A name no other run or check uses.
fn fresh(check: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{check}-{nanos:x}-{:x}-{seq}", std::process::id())
}

#[track_caller]
fn ok<T>(r: Result<T, DirectoryError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: directory error: {e}"))
}
