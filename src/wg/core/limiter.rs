//! Handshake rate limits, per source: a stranger who knows our public key (enough to make
//! initiations with a valid MAC1) may cost us only a few Diffie-Hellman operations per second,
//! and never the handshakes of other peers.
//!
//! Counts are per second (the core's tick resets them) and per source: an IPv4 address, an
//! IPv6 /64, or, for relayed messages, the overlay address the relay names. Only messages with
//! a valid MAC1 are counted, so garbage cannot spend anyone's budget.
//! * A direct message is answered at once while its source sent at most `per_source` this
//!   second and fewer than `global` were answered that way in all; otherwise it must carry a
//!   valid cookie (WireGuard's MAC2, proving the sender owns its address; a cookie reply is sent
//!   otherwise). A spoofer can thus only push a victim into that one extra round trip, never
//!   spend the victim's proven budget.
//! * Messages with a valid cookie are answered up to `per_source` per second per source, and
//!   dropped (counted) beyond it.
//! * A relayed message cannot carry a cookie: answered up to `per_source` per second per named
//!   sender, dropped beyond it, whatever the global count.
//!
//! At most `MAX_SOURCES` sources are tracked per second (twice that for proven ones): a new
//! unproven source beyond that needs a cookie, so spoofed sources cannot fill the table and
//! lock real peers out.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use crate::mapping::Addr48;

/// Default handshake messages per second from one source (see the module doc).
pub const DEFAULT_HANDSHAKES_PER_SOURCE: u32 = 20;
/// Default handshake messages per second from all sources before a cookie is required.
pub const DEFAULT_HANDSHAKES_GLOBAL: u32 = 1000;
/// Sources tracked per second.
const MAX_SOURCES: usize = 4096;

/// Where a handshake message came from, as the limiter counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// An IPv4 address.
    V4([u8; 4]),
    /// An IPv6 /64 (one subscriber usually holds a whole /64).
    V6([u8; 8]),
    /// Relayed from this overlay address.
    Relayed(Addr48),
}

impl Source {
    /// The source of a direct datagram from `ip`.
    pub(super) fn direct(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let mut net = [0u8; 8];
                    net.copy_from_slice(&v6.octets()[..8]);
                    Source::V6(net)
                }
            },
        }
    }
}

/// What to do with one handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Answer it.
    Answer,
    /// Answer it only with a valid cookie (MAC2); otherwise send a cookie reply.
    NeedsCookie,
    /// Drop it (count it as limited).
    Limited,
}

/// One source's messages this second: without a cookie, and with a valid one.
#[derive(Default, Clone, Copy)]
struct Seen {
    unproven: u32,
    proven: u32,
}

#[derive(Default)]
struct Counts {
    answered: u32,
    sources: HashMap<Source, Seen>,
}

/// Per-source (and global) handshake counts for the current second.
pub(super) struct HandshakeLimiter {
    per_source: u32,
    global: u32,
    counts: Mutex<Counts>,
}

impl HandshakeLimiter {
    /// A limiter answering `per_source` messages per second per source, and asking for
    /// cookies once `global` direct messages were answered without one this second.
    pub(super) fn new(per_source: u32, global: u32) -> Self {
        HandshakeLimiter {
            per_source,
            global,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Counts one message (with a valid MAC1) from `src`, before any cookie check: `Answer`,
    /// `NeedsCookie` (direct sources) or `Limited` (relayed ones).
    pub(super) fn check(&self, src: Source) -> Verdict {
        let relayed = matches!(src, Source::Relayed(_));
        let mut c = self.counts.lock();
        let full = c.sources.len() >= MAX_SOURCES;
        let seen = match c.sources.get_mut(&src) {
            Some(s) => s,
            None if full && relayed => return Verdict::Limited,
            None if full => return Verdict::NeedsCookie,
            None => c.sources.entry(src).or_default(),
        };
        seen.unproven = seen.unproven.saturating_add(1);
        let within = seen.unproven <= self.per_source;
        if relayed {
            return if within {
                Verdict::Answer
            } else {
                Verdict::Limited
            };
        }
        if within && c.answered < self.global {
            c.answered += 1;
            Verdict::Answer
        } else {
            Verdict::NeedsCookie
        }
    }

    /// Counts one message from `src` whose cookie was valid: `Answer` or `Limited`.
    pub(super) fn check_proven(&self, src: Source) -> Verdict {
        let mut c = self.counts.lock();
        let full = c.sources.len() >= 2 * MAX_SOURCES;
        let seen = match c.sources.get_mut(&src) {
            Some(s) => s,
            None if full => return Verdict::Limited,
            None => c.sources.entry(src).or_default(),
        };
        seen.proven = seen.proven.saturating_add(1);
        if seen.proven <= self.per_source {
            Verdict::Answer
        } else {
            Verdict::Limited
        }
    }

    /// Starts a new second.
    pub(super) fn reset(&self) {
        let mut c = self.counts.lock();
        c.answered = 0;
        c.sources.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Source {
        Source::direct(s.parse().unwrap())
    }

    #[test]
    fn one_source_over_its_limit_does_not_limit_another() {
        let l = HandshakeLimiter::new(3, 100);
        let stranger = v4("203.0.113.9");
        let verdicts: Vec<_> = (0..50).map(|_| l.check(stranger)).collect();
        assert_eq!(&verdicts[..3], &[Verdict::Answer; 3]);
        assert!(verdicts[3..].iter().all(|v| *v == Verdict::NeedsCookie));
        // With valid cookies it gets its budget once more, then nothing.
        let proven: Vec<_> = (0..10).map(|_| l.check_proven(stranger)).collect();
        assert_eq!(&proven[..3], &[Verdict::Answer; 3]);
        assert!(proven[3..].iter().all(|v| *v == Verdict::Limited));
        // Other sources are untouched, direct or relayed.
        assert_eq!(l.check(v4("198.51.100.2")), Verdict::Answer);
        let relayed = Source::Relayed(Addr48::from_bytes([1; 6]));
        assert_eq!(l.check(relayed), Verdict::Answer);
        l.reset();
        assert_eq!(l.check(stranger), Verdict::Answer);
    }

    #[test]
    fn a_relayed_sender_over_its_limit_is_dropped_whatever_the_global_count() {
        let l = HandshakeLimiter::new(2, 1);
        assert_eq!(l.check(v4("203.0.113.9")), Verdict::Answer);
        assert_eq!(l.check(v4("203.0.113.10")), Verdict::NeedsCookie);
        let relayed = Source::Relayed(Addr48::from_bytes([1; 6]));
        assert_eq!(l.check(relayed), Verdict::Answer);
        assert_eq!(l.check(relayed), Verdict::Answer);
        assert_eq!(l.check(relayed), Verdict::Limited);
    }

    #[test]
    fn beyond_the_global_budget_a_cookie_is_needed_and_an_ipv6_64_is_one_source() {
        let l = HandshakeLimiter::new(2, 4);
        for i in 0..4u8 {
            let ip: IpAddr = format!("2001:db8:0:{i}::1").parse().unwrap();
            assert_eq!(l.check(Source::direct(ip)), Verdict::Answer);
        }
        let late: IpAddr = "2001:db8:0:9::1".parse().unwrap();
        assert_eq!(l.check(Source::direct(late)), Verdict::NeedsCookie);
        // Two addresses of one /64 share its budget.
        let a: IpAddr = "2001:db8:0:9::2".parse().unwrap();
        assert_eq!(Source::direct(a), Source::direct(late));
        // An IPv4-mapped address is its IPv4 address.
        let mapped: IpAddr = "::ffff:198.51.100.2".parse().unwrap();
        assert_eq!(Source::direct(mapped), v4("198.51.100.2"));
    }

    #[test]
    fn a_full_source_table_asks_new_sources_for_a_cookie() {
        let l = HandshakeLimiter::new(1, u32::MAX);
        for i in 0..MAX_SOURCES as u32 {
            assert_eq!(l.check(Source::V4(i.to_be_bytes())), Verdict::Answer);
        }
        let new = v4("198.51.100.200");
        assert_eq!(l.check(new), Verdict::NeedsCookie);
        assert_eq!(l.check_proven(new), Verdict::Answer);
    }
}
