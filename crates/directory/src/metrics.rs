//! The directory's metrics, described once here.

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use std::time::Duration;

pub const REDIS_OP_DURATION: &str = "aviary_redis_op_duration_seconds";
pub const REDIS_ERRORS: &str = "aviary_redis_errors_total";

pub fn describe() {
    describe_histogram!(
        REDIS_OP_DURATION,
        Unit::Seconds,
        "Redis directory operations, by operation."
    );
    describe_counter!(
        REDIS_ERRORS,
        Unit::Count,
        "Failed Redis directory operations, by operation."
    );
}

pub(crate) fn redis_op(op: &'static str, took: Duration, ok: bool) {
    histogram!(REDIS_OP_DURATION, "op" => op).record(took.as_secs_f64());
    if !ok {
        counter!(REDIS_ERRORS, "op" => op).increment(1);
    }
}
