//! The relay's fast path: a `RelaySend` frame is checked and rewritten **in place** into the
//! `RelayDeliver` frame for its target (same length, only the header changes), so the runner
//! forwards batches of datagrams without allocating per datagram.
//!
//! Rules (see `docs/PROTOCOL.md`, "Relay (v1)"): the sender is known by the source address of
//! its registration; sender and target are online here; the pair completed an endpoint
//! exchange here (mutual trust); the sender is within its own packet and byte budgets, and
//! the registry within its global ones (`relay_total_*`). Refusals are silent and counted.

use std::net::SocketAddr;

use super::limits::Bucket;
use super::{Limits, Registry};
use crate::identity::PublicKey;
use crate::wire::relay;

/// Packet and byte budgets (one node's, or the registry's global one).
#[derive(Debug, Clone)]
pub(super) struct RelayBudget {
    pub(super) packets: Bucket,
    pub(super) bytes: Bucket,
}

impl RelayBudget {
    /// A full per-node budget.
    pub(super) fn per_node(l: &Limits, now_ms: u64) -> Self {
        RelayBudget {
            packets: Bucket::full(l.relay_packet_burst, now_ms),
            bytes: Bucket::full(l.relay_byte_burst, now_ms),
        }
    }

    /// A full global budget.
    pub(super) fn global(l: &Limits, now_ms: u64) -> Self {
        RelayBudget {
            packets: Bucket::full(l.relay_total_packet_burst, now_ms),
            bytes: Bucket::full(l.relay_total_byte_burst, now_ms),
        }
    }
}

impl Registry {
    /// Checks a `RelaySend` frame from `from` and rewrites it in place into the
    /// `RelayDeliver` frame for its target; returns where to send it, or `None` when it is
    /// refused or over a budget (counted). Allocates nothing for a known sender.
    pub fn relay_in_place(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        frame: &mut [u8],
    ) -> Option<SocketAddr> {
        let Some((to48, payload)) = relay::parse(frame, relay::RELAY_SEND) else {
            self.counters.relay_refused += 1;
            return None;
        };
        let len = payload.len();
        let sender = self.by_addr.get(&from).copied();
        let target = self.by_addr48.get(&to48).copied();
        let (Some(sender), Some(target)) = (sender, target) else {
            self.counters.relay_refused += 1;
            return None;
        };
        let to = match self.online_addr(&target, now_ms) {
            Some(to) if self.is_online(&sender, now_ms) => to,
            _ => {
                self.counters.relay_refused += 1;
                return None;
            }
        };
        if !self.relay_allowed(&sender, &target, now_ms) {
            self.counters.relay_refused += 1;
            return None;
        }
        if !self.take_relay_budget(sender, len, now_ms) {
            self.counters.relay_limited += 1;
            return None;
        }
        if !self.take_global_relay_budget(len, now_ms) {
            self.counters.relay_limited_global += 1;
            return None;
        }
        self.counters.relayed_packets += 1;
        self.counters.relayed_bytes += len as u64;
        relay::encode_header(frame, relay::RELAY_DELIVER, sender.addr48());
        Some(to)
    }

    /// Takes one packet of `len` bytes from `sender`'s relay budget.
    fn take_relay_budget(&mut self, sender: PublicKey, len: usize, now_ms: u64) -> bool {
        let l = &self.limits;
        let budget = self
            .relay_budgets
            .entry(sender)
            .or_insert_with(|| RelayBudget::per_node(l, now_ms));
        budget
            .packets
            .take(l.relay_packet_burst, l.relay_packets_per_sec, now_ms)
            && budget.bytes.take_n(
                len as u64,
                l.relay_byte_burst,
                l.relay_bytes_per_sec,
                now_ms,
            )
    }

    /// Takes one packet of `len` bytes from the registry's global relay budget.
    fn take_global_relay_budget(&mut self, len: usize, now_ms: u64) -> bool {
        let l = &self.limits;
        let g = &mut self.relay_global;
        g.packets.take(
            l.relay_total_packet_burst,
            l.relay_total_packets_per_sec,
            now_ms,
        ) && g.bytes.take_n(
            len as u64,
            l.relay_total_byte_burst,
            l.relay_total_bytes_per_sec,
            now_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{exchange, memory_registry, register, TestNode, T0};
    use super::*;

    #[test]
    fn a_frame_is_rewritten_in_place_into_the_delivery_for_its_target() {
        let mut r = memory_registry(Limits::default(), T0);
        let (mut a, mut b) = (TestNode::new(1, 1000), TestNode::new(2, 2000));
        register(&mut r, &mut a, T0, None);
        register(&mut r, &mut b, T0, None);
        let payload = [4u8, 0, 0, 0, 7, 7, 7];
        let mut frame = relay::frame(relay::RELAY_SEND, b.key().addr48(), &payload);
        assert_eq!(
            r.relay_in_place(T0, a.addr, &mut frame),
            None,
            "no exchange yet"
        );
        assert_eq!(r.counters().relay_refused, 1);
        exchange(&mut r, &mut a, &mut b, T0);
        assert_eq!(r.relay_in_place(T0, a.addr, &mut frame), Some(b.addr));
        assert_eq!(
            relay::parse(&frame, relay::RELAY_DELIVER),
            Some((a.key().addr48(), &payload[..]))
        );
        // A delivery sent back to us is not a RelaySend: refused.
        assert_eq!(r.relay_in_place(T0, a.addr, &mut frame), None);
        assert_eq!(r.counters().relayed_packets, 1);
    }

    #[test]
    fn the_global_budget_limits_all_senders_together() {
        let limits = Limits {
            relay_total_packet_burst: 6,
            relay_total_packets_per_sec: 1,
            relay_total_byte_burst: 1_000_000,
            relay_total_bytes_per_sec: 1_000_000,
            ..Limits::default()
        };
        let mut r = memory_registry(limits, T0);
        let (mut a, mut b) = (TestNode::new(1, 1000), TestNode::new(2, 2000));
        register(&mut r, &mut a, T0, None);
        register(&mut r, &mut b, T0, None);
        exchange(&mut r, &mut a, &mut b, T0);
        let mut passed = 0;
        for i in 0..10 {
            let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let mut f = relay::frame(relay::RELAY_SEND, to.key().addr48(), &[4u8; 32]);
            passed += usize::from(r.relay_in_place(T0, from.addr, &mut f).is_some());
        }
        assert_eq!(
            passed, 6,
            "each sender is within its own budget; the sum is not"
        );
        assert_eq!(r.counters().relay_limited_global, 4);
        assert_eq!(r.counters().relay_limited, 0);
        // A second later one token is back.
        let mut f = relay::frame(relay::RELAY_SEND, b.key().addr48(), &[4u8; 32]);
        assert!(r.relay_in_place(T0 + 1000, a.addr, &mut f).is_some());
    }
}
