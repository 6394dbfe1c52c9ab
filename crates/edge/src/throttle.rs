//! Sliding-window counters for abuse limits: failed authentications per account,
//! registrations per client address. Entries expire on their own; the map is swept
//! as it is used so it cannot grow without bound.

use dashmap::DashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Throttle<K: Eq + Hash> {
    limit: u32,
    window: Duration,
    entries: DashMap<K, (Instant, u32)>,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    /// At most `limit` events per `window` per key (`limit == 0` disables the limit).
    pub fn new(limit: u32, window: Duration) -> Self {
        Throttle {
            limit,
            window,
            entries: DashMap::new(),
        }
    }

    /// True when `key` has reached its limit in the current window.
    pub fn is_limited(&self, key: &K) -> bool {
        if self.limit == 0 {
            return false;
        }
        match self.entries.get(key) {
            Some(e) => e.0.elapsed() < self.window && e.1 >= self.limit,
            None => false,
        }
    }

    /// Records one event for `key`.
    pub fn record(&self, key: &K) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut e = self.entries.entry(key.clone()).or_insert((now, 0));
            if now.duration_since(e.0) >= self.window {
                *e = (now, 0);
            }
            e.1 = e.1.saturating_add(1);
        }
        // Amortised sweep: keep memory bounded by the number of recently active keys.
        if self.entries.len() > 4096 && rand::random::<u8>() == 0 {
            self.entries
                .retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
    }

    /// Forgets `key` (e.g. after a successful login).
    pub fn clear(&self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_within_window_and_resets() {
        let t = Throttle::new(2, Duration::from_secs(3600));
        assert!(!t.is_limited(&"a"));
        t.record(&"a");
        assert!(!t.is_limited(&"a"));
        t.record(&"a");
        assert!(t.is_limited(&"a"));
        assert!(!t.is_limited(&"b"));
        t.clear(&"a");
        assert!(!t.is_limited(&"a"));
    }

    #[test]
    fn expired_window_starts_over() {
        let t = Throttle::new(1, Duration::ZERO);
        t.record(&"a");
        assert!(!t.is_limited(&"a"));
    }

    #[test]
    fn zero_limit_disables() {
        let t = Throttle::new(0, Duration::from_secs(1));
        t.record(&"a");
        assert!(!t.is_limited(&"a"));
    }
}
