//! Heartbeats: how a thread or task proves it still makes progress. Each worker loop beats its
//! [`Heartbeat`] once per turn; a watchdog (the daemon's and the registry's systemd watchdog)
//! asks a [`Heartbeats`] set whether every member beat recently, and stops vouching for the
//! process when one did not. A dead thread stops beating as surely as a stuck one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The instant heartbeats are measured from (the first use in this process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

/// One loop's proof of progress: the time of its last beat. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat that beats now.
    pub fn new() -> Heartbeat {
        let hb = Heartbeat {
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        hb.beat();
        hb
    }

    /// Records progress now (one relaxed store: cheap enough for every loop turn).
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// Records progress at `now` (tests pass a virtual time).
    pub fn beat_at(&self, now: Instant) {
        self.last_ms
            .store(millis_since_epoch(now), Ordering::Relaxed);
    }

    /// How long ago the last beat was, seen at `now`.
    pub fn age_at(&self, now: Instant) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(millis_since_epoch(now).saturating_sub(last))
    }
}

/// A named set of heartbeats: the process is healthy while every one is fresh.
#[derive(Debug, Clone, Default)]
pub struct Heartbeats {
    members: Arc<parking_lot::Mutex<Vec<(String, Heartbeat)>>>,
}

impl Heartbeats {
    /// An empty set.
    pub fn new() -> Heartbeats {
        Heartbeats::default()
    }

    /// Adds a member named `name` and returns its heartbeat.
    pub fn register(&self, name: &str) -> Heartbeat {
        let hb = Heartbeat::new();
        self.add(name, hb.clone());
        hb
    }

    /// Adds an existing heartbeat under `name`.
    pub fn add(&self, name: &str, hb: Heartbeat) {
        self.members.lock().push((name.to_string(), hb));
    }

    /// The names of the members whose last beat is older than `max_age` at `now`, with their
    /// ages; empty when all are fresh.
    pub fn stale_at(&self, now: Instant, max_age: Duration) -> Vec<(String, Duration)> {
        self.members
            .lock()
            .iter()
            .map(|(n, hb)| (n.clone(), hb.age_at(now)))
            .filter(|(_, age)| *age > max_age)
            .collect()
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.lock().len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_stops_beating_goes_stale_and_the_others_stay_fresh() {
        let set = Heartbeats::new();
        let t0 = Instant::now();
        let a = set.register("pilot-udp-rx");
        let b = set.register("pilot-timers");
        a.beat_at(t0);
        b.beat_at(t0);
        let max = Duration::from_secs(2);
        assert!(set.stale_at(t0 + Duration::from_secs(1), max).is_empty());
        // b keeps beating, a is stuck.
        b.beat_at(t0 + Duration::from_secs(3));
        let stale = set.stale_at(t0 + Duration::from_secs(3), max);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "pilot-udp-rx");
        assert!(stale[0].1 >= Duration::from_secs(3));
        // It recovers with its next beat.
        a.beat_at(t0 + Duration::from_secs(3));
        assert!(set.stale_at(t0 + Duration::from_secs(3), max).is_empty());
    }

    #[test]
    fn clones_share_one_heartbeat() {
        let t0 = Instant::now();
        let a = Heartbeat::new();
        a.beat_at(t0);
        let b = a.clone();
        b.beat_at(t0 + Duration::from_secs(5));
        assert_eq!(a.age_at(t0 + Duration::from_secs(5)), Duration::ZERO);
    }
}
