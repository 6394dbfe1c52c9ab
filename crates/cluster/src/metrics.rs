//! The cluster layer's metrics, described once here.

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

pub const GRPC_STREAMS: &str = "aviary_grpc_streams";
pub const GRPC_STREAM_ERRORS: &str = "aviary_grpc_stream_errors_total";
pub const GRPC_RECONNECTS: &str = "aviary_grpc_reconnects_total";
pub const PARTITIONS_OWNED: &str = "aviary_partitions_owned";
pub const UNACKED: &str = "aviary_unacked_stanzas";
pub const ACK_LATENCY: &str = "aviary_cluster_ack_latency_seconds";

pub fn describe() {
    describe_gauge!(
        GRPC_STREAMS,
        Unit::Count,
        "Open cluster links, by kind (edge, peer)."
    );
    describe_counter!(
        GRPC_STREAM_ERRORS,
        Unit::Count,
        "Cluster links that ended in an error, by kind."
    );
    describe_counter!(
        GRPC_RECONNECTS,
        Unit::Count,
        "Cluster link (re)connection attempts, by kind."
    );
    describe_gauge!(
        PARTITIONS_OWNED,
        Unit::Count,
        "Partitions this session node serves."
    );
    describe_gauge!(
        UNACKED,
        Unit::Count,
        "Stanzas awaiting end-to-end acknowledgement on this edge."
    );
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "From an edge sending a stanza into the cluster to the owning session node acknowledging it."
    );
}

/// Counts an open link for as long as the guard lives.
pub struct StreamGuard(&'static str);

impl StreamGuard {
    pub fn new(link: &'static str) -> Self {
        gauge!(GRPC_STREAMS, "link" => link).increment(1.0);
        StreamGuard(link)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        gauge!(GRPC_STREAMS, "link" => self.0).decrement(1.0);
    }
}

pub fn stream_error(link: &'static str) {
    counter!(GRPC_STREAM_ERRORS, "link" => link).increment(1);
}

pub fn reconnect(link: &'static str) {
    counter!(GRPC_RECONNECTS, "link" => link).increment(1);
}

pub fn partitions_owned(n: usize) {
    gauge!(PARTITIONS_OWNED).set(n as f64);
}

pub fn unacked(n: usize) {
    gauge!(UNACKED).set(n as f64);
}

pub fn acked(first_sent: std::time::Instant) {
    histogram!(ACK_LATENCY).record(first_sent.elapsed().as_secs_f64());
}
