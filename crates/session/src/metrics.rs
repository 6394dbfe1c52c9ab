//! The session layer's metrics, described once here.

use metrics::{
    Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use std::sync::OnceLock;

pub const USER_ACTORS: &str = "aviary_user_actors";
pub const OVERFLOWS: &str = "aviary_mailbox_overflows_total";
pub const OFFLINE_WRITES: &str = "aviary_offline_writes_total";
pub const OFFLINE_DELIVERIES: &str = "aviary_offline_deliveries_total";
pub const ROUTING_LATENCY: &str = "aviary_routing_latency_seconds";

/// Histogram buckets for routing latency, in seconds (sub-millisecond to seconds).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub fn describe() {
    describe_gauge!(USER_ACTORS, Unit::Count, "Live user actors on this node.");
    describe_counter!(
        OVERFLOWS,
        Unit::Count,
        "Deliveries refused or clients dropped by an overflow policy."
    );
    describe_counter!(
        OFFLINE_WRITES,
        Unit::Count,
        "Offline message writes (XEP-0160), by result."
    );
    describe_counter!(
        OFFLINE_DELIVERIES,
        Unit::Count,
        "Offline messages delivered to clients."
    );
    describe_histogram!(
        ROUTING_LATENCY,
        Unit::Seconds,
        "From a stanza entering the session layer (or, on an edge, the cluster) to its delivery."
    );
    // Recorded per message: registered once, now that the recorder is installed.
    let _ = ROUTED.set(histogram!(ROUTING_LATENCY));
}

static ROUTED: OnceLock<Histogram> = OnceLock::new();

pub fn actor_started() {
    gauge!(USER_ACTORS).increment(1.0);
}

pub fn actor_stopped() {
    gauge!(USER_ACTORS).decrement(1.0);
}

pub fn overflow(policy: &'static str) {
    counter!(OVERFLOWS, "policy" => policy).increment(1);
}

pub fn offline_write(result: &'static str) {
    counter!(OFFLINE_WRITES, "result" => result).increment(1);
}

pub fn offline_delivered(n: u64) {
    counter!(OFFLINE_DELIVERIES).increment(n);
}

pub fn routed(since: std::time::Instant) {
    let secs = since.elapsed().as_secs_f64();
    match ROUTED.get() {
        Some(h) => h.record(secs),
        None => histogram!(ROUTING_LATENCY).record(secs),
    }
}
