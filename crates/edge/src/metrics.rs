//! The edge's metrics, described once here (names, units, help). Labels never carry
//! JIDs or resources (cardinality).

use aviary_xmpp::StanzaKind;
use metrics::{Counter, Unit, counter, describe_counter, describe_gauge, gauge};
use std::sync::OnceLock;

pub const CONNECTIONS: &str = "aviary_c2s_connections";
pub const CONNECTIONS_TOTAL: &str = "aviary_c2s_connections_total";
pub const TLS_HANDSHAKES: &str = "aviary_tls_handshakes_total";
pub const AUTH_ATTEMPTS: &str = "aviary_auth_attempts_total";
pub const STANZAS_IN: &str = "aviary_stanzas_in_total";
pub const STANZAS_OUT: &str = "aviary_stanzas_out_total";
pub const OVERFLOWS: &str = "aviary_mailbox_overflows_total";

pub fn describe() {
    describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Open client streams, by transport and state (negotiating, bound)."
    );
    describe_counter!(
        CONNECTIONS_TOTAL,
        Unit::Count,
        "Client connections accepted, by listener."
    );
    describe_counter!(
        TLS_HANDSHAKES,
        Unit::Count,
        "TLS handshakes with clients, by result."
    );
    describe_counter!(
        AUTH_ATTEMPTS,
        Unit::Count,
        "SASL authentications, by mechanism and result."
    );
    describe_counter!(
        STANZAS_IN,
        Unit::Count,
        "Stanzas received from clients, by kind."
    );
    describe_counter!(
        STANZAS_OUT,
        Unit::Count,
        "Stanzas written to clients, by kind."
    );
    describe_counter!(
        OVERFLOWS,
        Unit::Count,
        "Deliveries refused or clients dropped by an overflow policy."
    );
    register_stanza_counters();
}

pub fn accepted(listener: &'static str) {
    counter!(CONNECTIONS_TOTAL, "listener" => listener).increment(1);
}

/// Tracks one connection in a state for as long as the guard lives.
pub struct StateGuard {
    state: &'static str,
    transport: &'static str,
}

impl StateGuard {
    pub fn new(state: &'static str, transport: &'static str) -> Self {
        gauge!(CONNECTIONS, "transport" => transport, "state" => state).increment(1.0);
        StateGuard { state, transport }
    }
}

impl Drop for StateGuard {
    fn drop(&mut self) {
        gauge!(CONNECTIONS, "transport" => self.transport, "state" => self.state).decrement(1.0);
    }
}

pub fn tls_handshake(ok: bool) {
    counter!(TLS_HANDSHAKES, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn auth(mechanism: &'static str, success: bool) {
    counter!(AUTH_ATTEMPTS, "mechanism" => mechanism, "result" => if success { "success" } else { "failure" })
        .increment(1);
}

/// The per-stanza counters, registered once: looking a labelled counter up in the
/// recorder on every stanza costs a hash and a lock (it showed in profiles).
struct StanzaCounters {
    inbound: [Counter; 3],
    outbound: [Counter; 3],
}

static STANZA_COUNTERS: OnceLock<StanzaCounters> = OnceLock::new();

/// Registers the per-stanza counters with the installed recorder. Called from
/// [`describe`], which runs once the recorder is in place; before that (or in a
/// process without one) the counters are looked up per call.
fn register_stanza_counters() {
    let _ = STANZA_COUNTERS.set(StanzaCounters {
        inbound: StanzaKind::ALL.map(|k| counter!(STANZAS_IN, "kind" => k.name())),
        outbound: StanzaKind::ALL.map(|k| counter!(STANZAS_OUT, "kind" => k.name())),
    });
}

pub fn stanza_in(kind: StanzaKind) {
    match STANZA_COUNTERS.get() {
        Some(c) => c.inbound[kind as usize].increment(1),
        None => counter!(STANZAS_IN, "kind" => kind.name()).increment(1),
    }
}

pub fn stanza_out(kind: StanzaKind) {
    match STANZA_COUNTERS.get() {
        Some(c) => c.outbound[kind as usize].increment(1),
        None => counter!(STANZAS_OUT, "kind" => kind.name()).increment(1),
    }
}

pub fn overflow(policy: &'static str) {
    counter!(OVERFLOWS, "policy" => policy).increment(1);
}
