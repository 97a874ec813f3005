//! The registry's bounds ([`Limits`]), what it counts ([`Counters`]), and the token bucket
//! that enforces its rates.

use serde::{Deserialize, Serialize};

/// Tunable bounds of a registry. Every table it keeps in memory is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// How far a request's timestamp may be from our clock, either way (ms).
    pub max_clock_skew_ms: u64,
    /// A node is online if it registered or heartbeat within this time (ms).
    pub online_timeout_ms: u64,
    /// Most presence records (online nodes).
    pub max_nodes: usize,
    /// Most nonces remembered; beyond it the one expiring first is evicted and requests that
    /// expire no later than it are refused as possible replays (fresh requests still pass).
    pub max_nonces: usize,
    /// Most messages held for one target.
    pub held_per_target: usize,
    /// Most messages held in total.
    pub held_total: usize,
    /// How long a held message waits for its target (ms).
    pub held_expiry_ms: u64,
    /// Lookups and endpoint requests per key: bucket size.
    pub query_burst: u32,
    /// Lookups and endpoint requests per key: tokens per second.
    pub query_per_sec: u32,
    /// Signed requests per sender key (after signature and replay checks): bucket size.
    pub key_burst: u32,
    /// Signed requests per sender key: tokens per second.
    pub key_per_sec: u32,
    /// Most sender keys tracked for that rate limit (idle ones are forgotten each second);
    /// requests from further new keys are dropped.
    pub max_tracked_keys: usize,
    /// Datagrams from all sources together that get signature work: bucket size.
    pub global_burst: u32,
    /// Datagrams from all sources together: tokens per second (bounds the CPU spent on
    /// signatures whatever the number of sources).
    pub global_per_sec: u32,
    /// Datagrams per source (IPv4 address or IPv6 /64): bucket size.
    pub ip_burst: u32,
    /// Datagrams per source (IPv4 address or IPv6 /64): tokens per second.
    pub ip_per_sec: u32,
    /// Most sources (IPv4 addresses, IPv6 /64s) tracked for rate limiting (idle ones are forgotten each second);
    /// datagrams from further new IPs are dropped.
    pub max_tracked_ips: usize,
    /// How long a forwarded endpoint request may wait for its answer (ms).
    pub endpoint_answer_timeout_ms: u64,
    /// How long a successful endpoint exchange allows the pair to relay through us (ms);
    /// every new exchange renews it.
    pub relay_pair_ttl_ms: u64,
    /// Most pairs allowed to relay at once.
    pub max_relay_pairs: usize,
    /// Relayed datagrams per sending node: bucket size.
    pub relay_packet_burst: u32,
    /// Relayed datagrams per sending node: per second.
    pub relay_packets_per_sec: u32,
    /// Relayed payload bytes per sending node: bucket size.
    pub relay_byte_burst: u32,
    /// Relayed payload bytes per sending node: per second.
    pub relay_bytes_per_sec: u32,
    /// Relayed datagrams from all senders together: bucket size.
    pub relay_total_packet_burst: u32,
    /// Relayed datagrams from all senders together: per second.
    pub relay_total_packets_per_sec: u32,
    /// Relayed payload bytes from all senders together: bucket size.
    pub relay_total_byte_burst: u32,
    /// Relayed payload bytes from all senders together: per second (bounds the link and CPU
    /// the relay may take from the registry's other work).
    pub relay_total_bytes_per_sec: u32,
    /// A registered key silent (no Register or Heartbeat) for this long is forgotten and its
    /// hostname released (ms).
    pub registration_expiry_ms: u64,
    /// Most registered keys remembered; beyond it new keys cannot register (`rate_limited`).
    pub max_registered: usize,
    /// How long a return-routability cookie is valid (ms): one epoch, and the one before.
    pub cookie_lifetime_ms: u64,
    /// Challenges (unsigned, no signature work) to `Register`s from unproven addresses:
    /// bucket size. Beyond it they are dropped and counted (`challenge_limited`).
    pub challenge_burst: u32,
    /// Challenges: tokens per second.
    pub challenge_per_sec: u32,
    /// Requests other than `Register` from addresses not proven for their key (unregistered
    /// senders, moved NAT mappings) that get signature work: bucket size. Kept apart from
    /// proven traffic so a spoofed flood of them never starves registered nodes.
    pub unproven_burst: u32,
    /// Those requests: tokens per second.
    pub unproven_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clock_skew_ms: 60_000,
            online_timeout_ms: 75_000,
            max_nodes: 100_000,
            max_nonces: 1_000_000,
            held_per_target: 64,
            held_total: 100_000,
            held_expiry_ms: 7 * 24 * 3600 * 1000,
            query_burst: 10,
            query_per_sec: 1,
            key_burst: 100,
            key_per_sec: 20,
            max_tracked_keys: 1_000_000,
            global_burst: 40_000,
            global_per_sec: 20_000,
            ip_burst: 200,
            ip_per_sec: 50,
            max_tracked_ips: 1_000_000,
            endpoint_answer_timeout_ms: 30_000,
            relay_pair_ttl_ms: 10 * 60 * 1000,
            max_relay_pairs: 1_000_000,
            relay_packet_burst: 4096,
            relay_packets_per_sec: 20_000,
            relay_byte_burst: 4 << 20,
            relay_bytes_per_sec: 25_000_000,
            relay_total_packet_burst: 65_536,
            relay_total_packets_per_sec: 400_000,
            relay_total_byte_burst: 64 << 20,
            relay_total_bytes_per_sec: 500_000_000,
            cookie_lifetime_ms: 60_000,
            challenge_burst: 40_000,
            challenge_per_sec: 20_000,
            unproven_burst: 2_000,
            unproven_per_sec: 1_000,
            registration_expiry_ms: 30 * 24 * 3600 * 1000,
            max_registered: 1_000_000,
        }
    }
}

/// What the registry did with the datagrams it got. Exposed for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Requests processed (whatever the answer).
    pub accepted: u64,
    /// Datagrams that do not decode.
    pub garbage: u64,
    /// Requests whose signature does not verify.
    pub bad_signature: u64,
    /// Signatures accepted in a batch that verified as a whole.
    pub batch_verified: u64,
    /// Batches with a bad signature (their members were then checked one by one).
    pub batch_failed: u64,
    /// Signatures checked one by one (alone in their wake-up, in a failed batch, or while
    /// batches fail often).
    pub verified_singly: u64,
    /// Requests whose nonce was seen before.
    pub replayed: u64,
    /// Requests whose timestamp is outside the window.
    pub stale: u64,
    /// Datagrams or queries over their rate limit.
    pub rate_limited: u64,
    /// Valid requests answered with an error (name taken, queue full, unknown node ...).
    pub refused: u64,
    /// Trust messages pushed (including re-pushes).
    pub pushed: u64,
    /// Held messages that expired undelivered.
    pub expired: u64,
    /// Datagrams relayed between nodes.
    pub relayed_packets: u64,
    /// Payload bytes relayed between nodes.
    pub relayed_bytes: u64,
    /// Relay frames refused: unknown sender address, unknown or offline target, no endpoint
    /// exchange between the pair, or malformed.
    pub relay_refused: u64,
    /// Relay frames dropped over the sender's packet or byte budget.
    pub relay_limited: u64,
    /// Relay frames dropped over the registry's global relay budget (`relay_total_*`).
    pub relay_limited_global: u64,
    /// Challenges sent (a Register or Heartbeat from an address not yet proven).
    pub challenged: u64,
    /// `Register`s from unproven addresses dropped unanswered over the challenge budget.
    pub challenge_limited: u64,
    /// Nonces evicted from a full replay store (requests as old as them are then refused).
    pub nonces_evicted: u64,
    /// Hostnames released because their key was silent past the registration expiry.
    pub names_expired: u64,
    /// Trust messages refused because their target never registered here (or expired).
    pub unknown_target: u64,
    /// Answers dropped because they would send an unproven address more bytes than it sent.
    pub amplification_dropped: u64,
    /// Changes made by other instances of a shared store, applied here.
    pub cluster_applied: u64,
    /// Datagrams handed to the other instances for nodes attached there.
    pub cluster_forwarded: u64,
    /// Datagrams other instances handed us that we sent to a node attached here.
    pub cluster_delivered: u64,
}

/// A token bucket in milli-tokens, refilled from the time passed in.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    milli: u64,
    last_ms: u64,
}

impl Bucket {
    pub(super) fn full(burst: u32, now_ms: u64) -> Self {
        Bucket {
            milli: burst as u64 * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub(super) fn take(&mut self, burst: u32, per_sec: u32, now_ms: u64) -> bool {
        self.take_n(1, burst, per_sec, now_ms)
    }

    /// Takes `n` tokens if there are that many.
    pub(super) fn take_n(&mut self, n: u64, burst: u32, per_sec: u32, now_ms: u64) -> bool {
        let cap = burst as u64 * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli = (self.milli + elapsed.saturating_mul(per_sec as u64)).min(cap);
        self.last_ms = now_ms.max(self.last_ms);
        if self.milli >= n * 1000 {
            self.milli -= n * 1000;
            true
        } else {
            false
        }
    }

    pub(super) fn is_full_at(&self, burst: u32, per_sec: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli + elapsed.saturating_mul(per_sec as u64) >= burst as u64 * 1000
    }
}
