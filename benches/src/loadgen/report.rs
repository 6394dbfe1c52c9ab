//! The result of a run: one JSON record with the parameters and every figure (the
//! machine-readable output), and a one-line human summary.

use crate::loadgen::args::{Args, Scenario};
use crate::loadgen::procfs::{ProcSample, Sample};
use crate::loadgen::stats::Quantiles;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub scenario: Scenario,
    pub started_unix_s: f64,
    pub elapsed_s: f64,
    /// Ctrl-C ended the run early; the figures cover what had happened by then.
    pub interrupted: bool,
    pub params: Args,
    pub source_ips: usize,
    pub threads: usize,
    pub logins: LoginReport,
    pub messages: Option<MessageReport>,
    pub presence: Option<PresenceReport>,
    pub drain: Option<DrainReport>,
    pub server: ServerReport,
    /// The load generator itself (to tell when it, not the server, is the limit).
    pub client: Option<ProcSample>,
    pub client_cpu_s: Option<f64>,
    /// Connections that ended while they should have stayed connected.
    pub connections_dropped: u64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct LoginReport {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    pub logouts_ok: u64,
    /// Successful logins per second over `window_s` (first start to last finish).
    pub per_sec: f64,
    pub window_s: f64,
    /// `<auth/>` sent to `<success/>` received.
    pub auth_ms: Option<Quantiles>,
    /// TCP connect to login complete (bind; roster when asked).
    pub login_ms: Option<Quantiles>,
    pub tls_handshake_ms: Option<Quantiles>,
}

#[derive(Debug, Default, Serialize)]
pub struct MessageReport {
    pub sent: u64,
    pub delivered: u64,
    /// Sent, not bounced, and never received within the grace period.
    pub lost: u64,
    /// Received more than once (counted once in `delivered`).
    pub duplicated: u64,
    /// Error replies (`type='error'`) received instead.
    pub bounced: u64,
    /// Received, but sent before this run started (e.g. stored by an earlier run).
    pub stale: u64,
    pub foreign: u64,
    pub skipped_backlog: u64,
    pub skipped_no_target: u64,
    pub send_window_s: f64,
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub delivery_ms: Option<Quantiles>,
}

#[derive(Debug, Default, Serialize)]
pub struct PresenceReport {
    pub users_online: u64,
    pub contacts_per_user: u32,
    pub setup_s: Option<f64>,
    pub setup_complete: Option<bool>,
    pub subscribes_sent: u64,
    /// Presence stanzas received in the login phase (initial broadcasts and probes).
    pub received_at_login: u64,
    pub updates_sent: u64,
    /// Deliveries predicted by the graph: online contacts of each sender.
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub missing: u64,
    pub self_reflections: u64,
    pub received_total: u64,
    pub latency_ms: Option<Quantiles>,
}

#[derive(Debug, Default, Serialize)]
pub struct DrainReport {
    pub senders: u64,
    pub receivers: u64,
    pub stored: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// First receiver login started to last stored message received.
    pub drain_s: Option<f64>,
    pub messages_per_s: Option<f64>,
    /// Per receiver: initial presence to its last stored message.
    pub per_receiver_ms: Option<Quantiles>,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerReport {
    pub pids: Vec<u32>,
    /// Named checkpoints, in order.
    pub samples: Vec<(String, Sample)>,
    /// RSS growth from before to after login, per online user.
    pub kib_per_idle_session: Option<f64>,
    pub cpu_s_login: Option<f64>,
    pub cpu_ms_per_login: Option<f64>,
    /// CPU of the send phase (sending to the end of the grace period).
    pub cpu_s_send_phase: Option<f64>,
    /// CPU seconds per 1,000 delivered messages (or presence deliveries).
    pub cpu_s_per_1000_delivered: Option<f64>,
}

impl ServerReport {
    pub fn sample(&self, name: &str) -> Option<&Sample> {
        self.samples.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// CPU seconds between two checkpoints, if both were read.
    pub fn cpu_between(&self, from: &str, to: &str) -> Option<f64> {
        let (a, b) = (self.sample(from)?, self.sample(to)?);
        (a.missing == 0 && b.missing == 0 && !self.pids.is_empty()).then_some(b.cpu_s - a.cpu_s)
    }

    /// RSS growth in KiB between two checkpoints.
    pub fn rss_between(&self, from: &str, to: &str) -> Option<f64> {
        let (a, b) = (self.sample(from)?, self.sample(to)?);
        (a.missing == 0 && b.missing == 0 && !self.pids.is_empty())
            .then_some(b.rss_kib as f64 - a.rss_kib as f64)
    }
}

impl Report {
    /// One line for a person: the headline figures of this scenario.
    pub fn summary(&self) -> String {
        let mut s = clap::ValueEnum::to_possible_value(&self.scenario).map_or_else(
            || format!("{:?}", self.scenario),
            |v| v.get_name().to_owned(),
        );
        let l = &self.logins;
        let _ = write!(s, ": logins {}/{} ({:.0}/s", l.ok, l.attempted, l.per_sec);
        if let Some(q) = &l.auth_ms {
            let _ = write!(s, ", auth p50 {} p99 {}", ms(q.p50_ms), ms(q.p99_ms));
        }
        s.push(')');
        if let Some(m) = &self.messages {
            let _ = write!(
                s,
                "; msgs sent {} ({:.0}/s) delivered {} lost {} dup {} bounced {}",
                m.sent, m.rate_achieved, m.delivered, m.lost, m.duplicated, m.bounced
            );
            if let Some(q) = &m.delivery_ms {
                let _ = write!(
                    s,
                    ", delivery p50 {} p99 {} p99.9 {}",
                    ms(q.p50_ms),
                    ms(q.p99_ms),
                    ms(q.p999_ms)
                );
            }
        }
        if let Some(p) = &self.presence {
            let _ = write!(
                s,
                "; presence updates {} delivered {}/{}",
                p.updates_sent, p.delivered, p.expected_deliveries
            );
            if let Some(q) = &p.latency_ms {
                let _ = write!(s, ", p50 {} p99 {}", ms(q.p50_ms), ms(q.p99_ms));
            }
        }
        if let Some(d) = &self.drain {
            let _ = write!(s, "; drained {}/{} stored", d.delivered, d.stored);
            if let Some(t) = d.drain_s {
                let _ = write!(s, " in {t:.2}s");
            }
        }
        let srv = &self.server;
        if let Some(k) = srv.kib_per_idle_session {
            let _ = write!(s, "; server {k:.1} KiB/session");
        }
        if let Some(c) = srv.cpu_ms_per_login {
            let _ = write!(s, "; server {c:.2} CPU-ms/login");
        }
        if let Some(c) = srv.cpu_s_per_1000_delivered {
            let _ = write!(s, "; server {c:.3} CPU-s/1000 delivered");
        }
        if self.connections_dropped > 0 {
            let _ = write!(s, "; {} connections dropped", self.connections_dropped);
        }
        let errors: u64 = self.errors.values().sum();
        if errors > 0 {
            let _ = write!(s, "; {errors} errors");
        }
        if self.interrupted {
            s.push_str(" (interrupted)");
        }
        s
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}ms")
    } else {
        format!("{v:.0}ms")
    }
}
