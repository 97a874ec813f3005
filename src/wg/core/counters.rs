//! Counters of traffic that belongs to no known peer (a peer's own counters live in
//! [`crate::wg::peer`]).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Core;

/// Counters that belong to no known peer.
#[derive(Debug, Default)]
pub struct GlobalCounters {
    pub(super) unknown_key_handshakes: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) spoofed: AtomicU64,
    pub(super) no_peer: AtomicU64,
    pub(super) not_overlay: AtomicU64,
    pub(super) unknown_index: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) control_received: AtomicU64,
    pub(super) control_dropped: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) oversize: AtomicU64,
    pub(super) not_for_us: AtomicU64,
    pub(super) handshakes_limited: AtomicU64,
    pub(super) handshakes_completed: AtomicU64,
}

/// A snapshot of [`GlobalCounters`] for status output.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CountersSnapshot {
    /// Handshake initiations from keys that are not in the peer table (untrusted).
    pub unknown_key_handshakes: u64,
    /// Datagrams that are neither WireGuard nor control, or do not parse.
    pub malformed: u64,
    /// Decapsulated packets whose inner source was not the sending peer's address.
    pub spoofed: u64,
    /// Outbound packets to an overlay address with no peer.
    pub no_peer: u64,
    /// Outbound packets to an address outside the overlay /80.
    pub not_overlay: u64,
    /// WireGuard messages naming a receiver index we did not hand out (stale or forged).
    pub unknown_index: u64,
    /// Datagrams WireGuard refused (bad MAC, replay, no session, rate limit).
    pub rejected: u64,
    /// Control datagrams handed to the control plane.
    pub control_received: u64,
    /// Control datagrams dropped because the control plane's queue was full or closed.
    pub control_dropped: u64,
    /// UDP sends the kernel refused (buffer full for too long, unreachable); one GSO send of
    /// many datagrams counts once.
    #[serde(default)]
    pub send_errors: u64,
    /// Data-plane events (needs a path, roamed, handshake done) dropped because the node
    /// core's queue was full.
    #[serde(default)]
    pub events_dropped: u64,
    /// Outbound packets longer than the inner side's MTU (never sent nor queued).
    #[serde(default)]
    pub oversize: u64,
    /// Decapsulated packets from a trusted peer whose inner destination was not our own
    /// overlay address.
    #[serde(default)]
    pub not_for_us: u64,
    /// Handshake messages dropped because their source sent more than its share this second.
    #[serde(default)]
    pub handshakes_limited: u64,
    /// WireGuard handshakes completed with trusted peers (each reported to the node as
    /// "handshake done"; a live session rekeys about every 2 minutes).
    #[serde(default)]
    pub handshakes_completed: u64,
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl GlobalCounters {
    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            unknown_key_handshakes: l(&self.unknown_key_handshakes),
            malformed: l(&self.malformed),
            spoofed: l(&self.spoofed),
            no_peer: l(&self.no_peer),
            not_overlay: l(&self.not_overlay),
            unknown_index: l(&self.unknown_index),
            rejected: l(&self.rejected),
            control_received: l(&self.control_received),
            control_dropped: l(&self.control_dropped),
            send_errors: l(&self.send_errors),
            events_dropped: 0,
            oversize: l(&self.oversize),
            not_for_us: l(&self.not_for_us),
            handshakes_limited: l(&self.handshakes_limited),
            handshakes_completed: l(&self.handshakes_completed),
        }
    }
}

impl Core {
    /// Global counters.
    pub fn counters(&self) -> CountersSnapshot {
        CountersSnapshot {
            events_dropped: self.events_dropped(),
            ..self.counters.snapshot()
        }
    }

    /// Counts a UDP send the kernel refused.
    pub fn count_send_error(&self) {
        bump(&self.counters.send_errors);
    }
}
