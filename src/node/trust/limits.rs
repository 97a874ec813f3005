//! Limits that keep strangers from growing our memory or our disk writes, and the counters of
//! what they dropped.
//!
//! - At most [`TrustLimits::max_pending`] requests wait for a decision; a new one evicts the
//!   oldest (counted). Watermarks of peers we keep no record of are bounded the same way.
//! - After `reject`, the same key may not ask again for [`TrustLimits::reject_cooldown_ms`].
//! - Each peer key may deliver [`TrustLimits::messages_per_key_per_minute`] trust messages (a
//!   burst of as many, refilled evenly over a minute). The key is checked after the signature:
//!   before it, the key is only claimed, and a spoofer could spend a victim's budget.
//! - Trust messages sent directly (not through a registry) are taken only from trusted peers
//!   and at most [`DIRECT_PER_SOURCE_PER_SECOND`] per source address (IPv6 by /64), before
//!   any signature is checked.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Default of [`TrustLimits::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 100;
/// Default of [`TrustLimits::reject_cooldown_ms`]: one day.
pub const DEFAULT_REJECT_COOLDOWN_MS: u64 = 24 * 3600 * 1000;
/// Default of [`TrustLimits::messages_per_key_per_minute`].
pub const DEFAULT_MESSAGES_PER_KEY_PER_MINUTE: u32 = 10;
/// Direct (not registry-relayed) control datagrams taken per source address per second (the
/// burst is twice as many). The daemon sends none itself; only a trusted peer's are taken.
pub const DIRECT_PER_SOURCE_PER_SECOND: u32 = 5;
/// How many keys (or source addresses) a rate limiter remembers; the oldest is forgotten.
pub const RATE_LIMITER_KEYS: usize = 4096;

/// The configurable limits of the trust store and its control plane (`[trust]` in config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustLimits {
    /// Requests waiting for a decision; the oldest is evicted past this.
    pub max_pending: usize,
    /// After we reject a key, its new requests are dropped for this long (ms).
    pub reject_cooldown_ms: u64,
    /// Trust messages taken per peer key per minute (also the burst).
    pub messages_per_key_per_minute: u32,
}

impl Default for TrustLimits {
    fn default() -> Self {
        TrustLimits {
            max_pending: DEFAULT_MAX_PENDING,
            reject_cooldown_ms: DEFAULT_REJECT_COOLDOWN_MS,
            messages_per_key_per_minute: DEFAULT_MESSAGES_PER_KEY_PER_MINUTE,
        }
    }
}

impl From<&crate::config::TrustConfig> for TrustLimits {
    fn from(c: &crate::config::TrustConfig) -> Self {
        TrustLimits {
            max_pending: c.max_pending.max(1),
            reject_cooldown_ms: c.reject_cooldown_secs.saturating_mul(1000),
            messages_per_key_per_minute: c.messages_per_key_per_minute.max(1),
        }
    }
}

/// What the trust store and its control plane dropped, evicted or wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustCounters {
    /// Pending requests evicted to make room for newer ones.
    pub pending_evicted: u64,
    /// Watermarks of peers without a record, evicted (oldest first).
    pub watermarks_evicted: u64,
    /// Requests from a key we rejected, dropped during the cooldown.
    pub rejected_cooldown: u64,
    /// Verified trust messages dropped by the per-key rate limit.
    pub key_rate_limited: u64,
    /// Direct control datagrams dropped by the per-source rate limit.
    pub source_rate_limited: u64,
    /// Direct trust messages from keys we do not trust, dropped before the signature.
    pub direct_untrusted: u64,
    /// Direct control datagrams that are no trust message for us (kind, addressee, age).
    pub direct_invalid: u64,
    /// Snapshots of the trust file handed out to be written.
    pub saves: u64,
}

/// Token buckets per key, with a bounded number of keys (the oldest key is forgotten).
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    capacity: usize,
    buckets: HashMap<K, (f64, Instant)>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_sec` tokens per second, at most `burst` saved up, for at most `capacity` keys.
    pub fn new(per_sec: f64, burst: f64, capacity: usize) -> Self {
        RateLimiter {
            per_sec,
            burst: burst.max(1.0),
            capacity: capacity.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes a token for `key` at `now`; false if it has none left.
    pub fn allow(&mut self, now: Instant, key: &K) -> bool {
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.buckets.remove(&old);
                }
            }
            self.order.push_back(key.clone());
            self.buckets.insert(key.clone(), (self.burst, now));
        }
        let (tokens, last) = self.buckets.get_mut(key).expect("inserted above");
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_sec).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many keys it remembers.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether it remembers no key.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The rate-limit key of a source address: the IPv4 address, or the /64 of an IPv6 address
/// (one host commonly holds a whole /64).
pub fn source_bucket(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = a.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_with_time() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1.0, 3.0, 16);
        assert!((0..3).all(|_| l.allow(t0, &"a")));
        assert!(!l.allow(t0, &"a"));
        assert!(l.allow(t0, &"b"), "keys have their own buckets");
        assert!(l.allow(t0 + Duration::from_secs(1), &"a"));
        assert!(!l.allow(t0 + Duration::from_secs(1), &"a"));
    }

    #[test]
    fn a_limiter_remembers_a_bounded_number_of_keys() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1.0, 1.0, 8);
        for k in 0..10_000u32 {
            l.allow(t0, &k);
        }
        assert_eq!(l.len(), 8);
    }

    #[test]
    fn config_defaults_are_the_documented_limits() {
        let c = crate::config::TrustConfig::default();
        assert_eq!(TrustLimits::from(&c), TrustLimits::default());
        let c = crate::config::TrustConfig {
            max_pending: 0,
            reject_cooldown_secs: u64::MAX,
            messages_per_key_per_minute: 0,
            ..Default::default()
        };
        let l = TrustLimits::from(&c);
        assert_eq!(
            (
                l.max_pending,
                l.reject_cooldown_ms,
                l.messages_per_key_per_minute
            ),
            (1, u64::MAX, 1)
        );
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:2".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:2".parse().unwrap();
        assert_eq!(source_bucket(a), source_bucket(b));
        assert_ne!(source_bucket(a), source_bucket(c));
        let v4: SocketAddr = "198.51.100.7:9".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.51.100.7]:9".parse().unwrap();
        assert_eq!(source_bucket(v4), source_bucket(mapped));
    }
}
