//! Client-side measurements shared by every connection task: counters, latency
//! histograms (HDR, microseconds), error tallies, and the delivery tracker that tells
//! delivered from lost and duplicated messages.
//!
//! Every message body is `SENDER-SEQ-UNIXNANOS` (optionally followed by a space and
//! padding). The tracker keeps one bit per message a sender sent, so a delivery is
//! recognised as new or duplicate in O(1) and memory grows only with the number of
//! messages, never with the number of connections.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch: the clock in message bodies. Wall time rather
/// than a process-local `Instant`, so that a message stored offline by an earlier run
/// is recognisably stale.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A latency histogram in microseconds, from 1 µs to one hour, 3 significant digits.
pub struct Hist(Mutex<Histogram<u64>>);

impl Hist {
    pub fn new() -> anyhow::Result<Hist> {
        let h = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
        Ok(Hist(Mutex::new(h)))
    }

    pub fn record_us(&self, us: u64) {
        if let Ok(mut h) = self.0.lock() {
            h.saturating_record(us.max(1));
        }
    }

    pub fn record_ns(&self, ns: u64) {
        self.record_us(ns / 1000);
    }

    pub fn reset(&self) {
        if let Ok(mut h) = self.0.lock() {
            h.reset();
        }
    }

    /// Quantiles in milliseconds, `None` when nothing was recorded.
    pub fn summary(&self) -> Option<Quantiles> {
        let h = self.0.lock().ok()?;
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Quantiles {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Counters and histograms of a run.
pub struct Stats {
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logouts_ok: AtomicU64,
    /// Connections that ended while they should have stayed (server close, error).
    pub dropped: AtomicU64,
    /// `<auth/>` sent to `<success/>` received.
    pub auth: Hist,
    /// TCP connect to the bound resource (and roster, when asked).
    pub login: Hist,
    /// The TLS handshake.
    pub tls: Hist,
    pub msgs_sent: AtomicU64,
    /// Sends skipped because the connection's output backlog was full.
    pub msgs_skipped: AtomicU64,
    /// Sends skipped because no recipient was online.
    pub msgs_no_target: AtomicU64,
    /// `type='error'` messages received (bounces).
    pub msgs_bounced: AtomicU64,
    pub delivery: Hist,
    pub presence_rx: AtomicU64,
    pub presence_updates_sent: AtomicU64,
    /// Deliveries of those updates the graph predicts (online contacts per update).
    pub presence_expected: AtomicU64,
    /// Updates received from contacts (not our own reflected presence).
    pub presence_fanout_rx: AtomicU64,
    pub presence_self_rx: AtomicU64,
    pub presence_latency: Hist,
    pub subscribes_sent: AtomicU64,
    /// Offline-drain: per receiver, presence sent to last stored message received.
    pub drain: Hist,
    errors: Mutex<BTreeMap<String, u64>>,
    samples: Mutex<Vec<String>>,
}

/// How many error messages are printed to stderr as examples.
const ERROR_SAMPLES: usize = 5;

impl Stats {
    pub fn new() -> anyhow::Result<Stats> {
        Ok(Stats {
            logins_ok: AtomicU64::new(0),
            logins_failed: AtomicU64::new(0),
            logouts_ok: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            auth: Hist::new()?,
            login: Hist::new()?,
            tls: Hist::new()?,
            msgs_sent: AtomicU64::new(0),
            msgs_skipped: AtomicU64::new(0),
            msgs_no_target: AtomicU64::new(0),
            msgs_bounced: AtomicU64::new(0),
            delivery: Hist::new()?,
            presence_rx: AtomicU64::new(0),
            presence_updates_sent: AtomicU64::new(0),
            presence_expected: AtomicU64::new(0),
            presence_fanout_rx: AtomicU64::new(0),
            presence_self_rx: AtomicU64::new(0),
            presence_latency: Hist::new()?,
            subscribes_sent: AtomicU64::new(0),
            drain: Hist::new()?,
            errors: Mutex::new(BTreeMap::new()),
            samples: Mutex::new(Vec::new()),
        })
    }

    /// Counts an error under `kind` (a short, bounded category such as
    /// `timeout:bind` or `sasl:not-authorized`); the first few details go to stderr.
    pub fn error(&self, kind: &str, detail: &str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind.to_owned()).or_default() += 1;
        }
        if let Ok(mut s) = self.samples.lock()
            && s.len() < ERROR_SAMPLES
        {
            eprintln!("loadgen: {kind}: {detail}");
            s.push(kind.to_owned());
        }
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// What a received body turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    New {
        sender: u32,
        latency_ns: u64,
    },
    Duplicate,
    /// Sent before this run started (e.g. stored offline by an earlier run).
    Stale,
    /// Not a body this tool wrote, or from a sender outside this run.
    Foreign,
}

/// Delivered/duplicated/lost accounting for messages.
pub struct Tracker {
    run_start_ns: u64,
    /// Per sender: one bit per sequence number received.
    seen: Vec<Mutex<Vec<u64>>>,
    pub delivered: AtomicU64,
    pub duplicated: AtomicU64,
    pub stale: AtomicU64,
    pub foreign: AtomicU64,
    /// Per recipient: messages addressed to it, and received by it (offline-drain).
    pub expected_by: Vec<AtomicU32>,
    pub received_by: Vec<AtomicU32>,
    /// Unix nanoseconds of the latest new delivery.
    pub last_delivery_ns: AtomicU64,
}

impl Tracker {
    pub fn new(users: u32, run_start_ns: u64) -> Tracker {
        let n = users as usize;
        Tracker {
            run_start_ns,
            seen: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            delivered: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            expected_by: (0..n).map(|_| AtomicU32::new(0)).collect(),
            received_by: (0..n).map(|_| AtomicU32::new(0)).collect(),
            last_delivery_ns: AtomicU64::new(0),
        }
    }

    /// Accounts for a message body received now by `receiver`.
    pub fn on_message(&self, body: &str, receiver: u32, now_ns: u64) -> Delivery {
        let d = self.classify(body, now_ns);
        match d {
            Delivery::New { .. } => {
                self.delivered.fetch_add(1, Relaxed);
                self.last_delivery_ns.fetch_max(now_ns, Relaxed);
                if let Some(r) = self.received_by.get(receiver as usize) {
                    r.fetch_add(1, Relaxed);
                }
            }
            Delivery::Duplicate => {
                self.duplicated.fetch_add(1, Relaxed);
            }
            Delivery::Stale => {
                self.stale.fetch_add(1, Relaxed);
            }
            Delivery::Foreign => {
                self.foreign.fetch_add(1, Relaxed);
            }
        }
        d
    }

    fn classify(&self, body: &str, now_ns: u64) -> Delivery {
        let Some((sender, seq, ts)) = parse_tag(body) else {
            return Delivery::Foreign;
        };
        if ts < self.run_start_ns {
            return Delivery::Stale;
        }
        let Some(slot) = self.seen.get(sender as usize) else {
            return Delivery::Foreign;
        };
        let Ok(mut bits) = slot.lock() else {
            return Delivery::Foreign;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        // A forged or corrupted sequence number must not make us allocate gigabytes.
        if word > 1 << 24 {
            return Delivery::Foreign;
        }
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if bits[word] & mask != 0 {
            return Delivery::Duplicate;
        }
        bits[word] |= mask;
        Delivery::New {
            sender,
            latency_ns: now_ns.saturating_sub(ts),
        }
    }
}

/// Writes the tag `SENDER-SEQ-UNIXNANOS`.
pub fn write_tag(out: &mut Vec<u8>, sender: u32, seq: u64, ts_ns: u64) {
    use std::io::Write;
    let _ = write!(out, "{sender}-{seq}-{ts_ns}");
}

/// Parses a tag written by [`write_tag`], ignoring anything after a space.
pub fn parse_tag(text: &str) -> Option<(u32, u64, u64)> {
    let tag = text.split(' ').next()?;
    let mut parts = tag.splitn(3, '-');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let ts = parts.next()?.parse().ok()?;
    Some((sender, seq, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let mut v = Vec::new();
        write_tag(&mut v, 12, 345, 6789);
        assert_eq!(v, b"12-345-6789");
        assert_eq!(parse_tag("12-345-6789 xxxx"), Some((12, 345, 6789)));
        assert_eq!(parse_tag("hello"), None);
        assert_eq!(parse_tag("1-2"), None);
    }

    #[test]
    fn tracker_tells_new_duplicate_stale_foreign() {
        let t = Tracker::new(4, 1_000);
        assert_eq!(
            t.on_message("2-70-1500", 1, 2_000),
            Delivery::New {
                sender: 2,
                latency_ns: 500
            }
        );
        assert_eq!(t.on_message("2-70-1500", 1, 2_100), Delivery::Duplicate);
        assert!(matches!(
            t.on_message("2-71-1500", 1, 2_100),
            Delivery::New { .. }
        ));
        assert_eq!(t.on_message("2-1-999", 1, 2_000), Delivery::Stale);
        assert_eq!(t.on_message("9-1-1500", 1, 2_000), Delivery::Foreign);
        assert_eq!(t.on_message("hi there", 1, 2_000), Delivery::Foreign);
        assert_eq!(
            t.on_message("1-99999999999999-1500", 1, 2_000),
            Delivery::Foreign
        );
        assert_eq!(t.delivered.load(Relaxed), 2);
        assert_eq!(t.duplicated.load(Relaxed), 1);
        assert_eq!(t.received_by[1].load(Relaxed), 2);
    }

    #[test]
    fn histogram_summary() -> anyhow::Result<()> {
        let h = Hist::new()?;
        assert!(h.summary().is_none());
        for us in 1..=1000 {
            h.record_us(us);
        }
        let q = h.summary().ok_or_else(|| anyhow::anyhow!("empty"))?;
        assert_eq!(q.count, 1000);
        assert!((q.p50_ms - 0.5).abs() < 0.01);
        assert!((q.max_ms - 1.0).abs() < 0.01);
        Ok(())
    }
}
