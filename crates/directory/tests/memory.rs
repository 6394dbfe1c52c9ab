//! The memory backend against the shared conformance suite, on a manual clock, so
//! lease expiry is checked without sleeping. One directory per check: membership
//! and claims are global to a directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aviary_directory::MemoryDirectory;
use aviary_directory::conformance as c;
use aviary_directory::memory::ManualClock;
use std::sync::Arc;
use std::time::Duration;

fn fresh() -> (MemoryDirectory, ManualClock) {
    let clock = ManualClock::new();
    (MemoryDirectory::with_clock(Arc::new(clock.clone())), clock)
}

const SHORT: Duration = Duration::from_secs(3);

macro_rules! check {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (dir, _clock) = fresh();
            c::$name(&dir).await;
        }
    )*};
}

macro_rules! timed_check {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (dir, clock) = fresh();
            c::$name(&dir, &clock, SHORT).await;
        }
    )*};
}

check!(
    membership_join_renew_leave,
    claims_start_unclaimed,
    claims_compare_and_set,
    claims_race,
    locations_bind_and_replace,
    locations_update_cas,
    locations_unbind_cas,
    locations_stale_connection_loses,
    locations_isolate_users,
    locations_edge_index,
);
timed_check!(membership_lease_expiry, membership_renewal_extends_lease);

/// On the real monotonic clock nothing expires by itself within a long lease, and
/// the location checks hold on one directory shared by all of them at once.
#[tokio::test]
async fn shared_directory_on_the_real_clock() {
    let dir = MemoryDirectory::new();
    c::membership_join_renew_leave(&dir).await;
    tokio::join!(
        c::locations_bind_and_replace(&dir),
        c::locations_update_cas(&dir),
        c::locations_unbind_cas(&dir),
        c::locations_stale_connection_loses(&dir),
        c::locations_isolate_users(&dir),
        c::locations_edge_index(&dir),
    );
}
