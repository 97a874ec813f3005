//! One classifier for every datagram on the shared UDP socket: it looks at the first bytes once,
//! and the data plane and the node core act on the answer (no second round of parsing).
//!
//! ```text
//! 01..=04                         WireGuard message
//! 50 01 30|31 …                   peer probe / probe reply
//! 50 01 c0 from(6) 01..=04 …      relay delivery of a WireGuard message
//! 50 01 c0 from(6) 50 01 30|31 …  relay delivery of a probe
//! 50 …  (anything else)           control message: registry response or push, or a trust
//!                                 message from a peer (the registry client decodes it)
//! other                           unknown
//! ```
//!
//! Control datagrams then travel to the node core on two bounded queues
//! ([`control_queues`]): one for datagrams from a registry's address (answers, pushes, relayed
//! probes), one for everything else (peers' probes, strangers). A flood of strangers'
//! datagrams fills only its own queue and is dropped there (counted per queue), so registry
//! answers still arrive; the node core takes registry datagrams first. (A spoofer who forges
//! a registry's source address can still fill the registry queue: the node checks every
//! registry answer against its request and the registry's key.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::mapping::Addr48;
use crate::wire::{probe, relay, CONTROL_MAGIC};

/// What a datagram on the shared socket is, with the bytes each consumer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A WireGuard message (first byte 1–4).
    WireGuard(&'a [u8]),
    /// A control message for the registry client (registry responses and pushes, trust
    /// messages sent directly by a peer); it decodes and checks the rest.
    Control(&'a [u8]),
    /// A signed peer probe or probe reply, sent directly.
    Probe(&'a [u8]),
    /// A WireGuard message relayed by a registry from the peer at `from`.
    RelayedWireGuard {
        /// The sender, as the relay header names it.
        from: Addr48,
        /// The WireGuard message.
        payload: &'a [u8],
    },
    /// A probe relayed by a registry from the peer at `from`.
    RelayedProbe {
        /// The sender, as the relay header names it.
        from: Addr48,
        /// The probe.
        payload: &'a [u8],
    },
    /// Anything else: an empty datagram, a foreign protocol, a relay frame with a payload we
    /// do not take, or a relay frame meant for a registry.
    Unknown,
}

/// Sorts one datagram by its first bytes. Never panics; allocates nothing.
pub fn classify(bytes: &[u8]) -> Datagram<'_> {
    match bytes.first() {
        Some(1..=4) => Datagram::WireGuard(bytes),
        Some(&CONTROL_MAGIC) if probe::is_probe(bytes) => Datagram::Probe(bytes),
        Some(&CONTROL_MAGIC) if relay::is_relay(bytes) => relayed(bytes),
        Some(&CONTROL_MAGIC) => Datagram::Control(bytes),
        _ => Datagram::Unknown,
    }
}

fn relayed(bytes: &[u8]) -> Datagram<'_> {
    let Some((from, payload)) = relay::parse(bytes, relay::RELAY_DELIVER) else {
        return Datagram::Unknown;
    };
    match payload.first() {
        Some(1..=4) => Datagram::RelayedWireGuard { from, payload },
        _ if probe::is_probe(payload) => Datagram::RelayedProbe { from, payload },
        _ => Datagram::Unknown,
    }
}

/// The kinds of datagram the data plane hands to the node core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// A control message for the registry client.
    Control,
    /// A probe sent directly.
    Probe,
    /// A probe relayed by the registry it came from, naming its sender.
    RelayedProbe(Addr48),
}

/// A datagram the data plane passed up to the node core, already classified: `bytes` is the
/// control message or the probe (without any relay header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlDatagram {
    /// Where it came from (for a relayed probe: the registry).
    pub from: std::net::SocketAddr,
    /// What it is.
    pub kind: ControlKind,
    /// The message.
    pub bytes: Vec<u8>,
}

impl<'a> Datagram<'a> {
    /// The control kind and message bytes, if the node core takes this datagram.
    pub fn control(&self) -> Option<(ControlKind, &'a [u8])> {
        match *self {
            Datagram::Control(b) => Some((ControlKind::Control, b)),
            Datagram::Probe(b) => Some((ControlKind::Probe, b)),
            Datagram::RelayedProbe { from, payload } => {
                Some((ControlKind::RelayedProbe(from), payload))
            }
            _ => None,
        }
    }
}

/// Datagrams dropped because their queue was full, per queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlQueueDrops {
    /// From a registry's address.
    pub registry: u64,
    /// From anywhere else.
    pub others: u64,
}

#[derive(Debug, Default)]
struct DropCounters {
    registry: AtomicU64,
    others: AtomicU64,
}

impl DropCounters {
    fn snapshot(&self) -> ControlQueueDrops {
        ControlQueueDrops {
            registry: self.registry.load(Ordering::Relaxed),
            others: self.others.load(Ordering::Relaxed),
        }
    }
}

/// The data plane's end of the two control queues. Never blocks.
#[derive(Debug, Clone)]
pub struct ControlSender {
    registry: mpsc::Sender<ControlDatagram>,
    others: mpsc::Sender<ControlDatagram>,
    drops: Arc<DropCounters>,
}

/// The node core's end of the two control queues.
#[derive(Debug)]
pub struct ControlReceiver {
    registry: mpsc::Receiver<ControlDatagram>,
    others: mpsc::Receiver<ControlDatagram>,
    drops: Arc<DropCounters>,
}

/// Two bounded queues of `depth` datagrams each: one for datagrams from registries, one for
/// all others (see the module docs).
pub fn control_queues(depth: usize) -> (ControlSender, ControlReceiver) {
    let (rtx, rrx) = mpsc::channel(depth.max(1));
    let (otx, orx) = mpsc::channel(depth.max(1));
    let drops = Arc::new(DropCounters::default());
    (
        ControlSender {
            registry: rtx,
            others: otx,
            drops: Arc::clone(&drops),
        },
        ControlReceiver {
            registry: rrx,
            others: orx,
            drops,
        },
    )
}

impl ControlSender {
    /// Queues `d` on the registry queue if it came from a registry's address, else on the
    /// others' queue. False (and counted for that queue) when the queue is full or closed.
    pub fn send(&self, d: ControlDatagram, from_registry: bool) -> bool {
        let (tx, dropped) = if from_registry {
            (&self.registry, &self.drops.registry)
        } else {
            (&self.others, &self.drops.others)
        };
        let ok = tx.try_send(d).is_ok();
        if !ok {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Drops so far, per queue.
    pub fn drops(&self) -> ControlQueueDrops {
        self.drops.snapshot()
    }
}

impl ControlReceiver {
    /// The next datagram, registry datagrams first; `None` once both queues are closed and
    /// empty.
    pub async fn recv(&mut self) -> Option<ControlDatagram> {
        tokio::select! {
            biased;
            Some(d) = self.registry.recv() => Some(d),
            Some(d) = self.others.recv() => Some(d),
            else => None,
        }
    }

    /// The next datagram if one is queued, registry datagrams first.
    pub fn try_recv(&mut self) -> Result<ControlDatagram, mpsc::error::TryRecvError> {
        match self.registry.try_recv() {
            Ok(d) => Ok(d),
            Err(_) => self.others.try_recv(),
        }
    }

    /// Drops so far, per queue.
    pub fn drops(&self) -> ControlQueueDrops {
        self.drops.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::wire::probe::Probe;
    use proptest::prelude::*;

    fn a48() -> Addr48 {
        Addr48::from_bytes([1, 2, 3, 4, 5, 6])
    }

    fn a_probe() -> Vec<u8> {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        Probe {
            reply: false,
            sender: a.public_key(),
            target: b.public_key(),
            txid: 1,
            timestamp_ms: 5,
        }
        .encode(&a)
    }

    #[test]
    fn wireguard_messages_are_sorted_by_their_first_byte() {
        for t in 1..=4u8 {
            let d = [t, 0, 0, 0, 9];
            assert_eq!(classify(&d), Datagram::WireGuard(&d));
        }
        assert_eq!(classify(&[0, 1, 2]), Datagram::Unknown);
        assert_eq!(classify(&[5]), Datagram::Unknown);
        assert_eq!(classify(&[]), Datagram::Unknown);
    }

    #[test]
    fn probes_direct_and_relayed_are_told_apart() {
        let p = a_probe();
        assert_eq!(classify(&p), Datagram::Probe(&p));
        let f = relay::frame(relay::RELAY_DELIVER, a48(), &p);
        assert_eq!(
            classify(&f),
            Datagram::RelayedProbe {
                from: a48(),
                payload: &p
            }
        );
        assert_eq!(
            classify(&f).control(),
            Some((ControlKind::RelayedProbe(a48()), &p[..]))
        );
    }

    #[test]
    fn relayed_wireguard_names_its_sender() {
        let wg = [4u8, 0, 0, 0, 1, 2, 3];
        let f = relay::frame(relay::RELAY_DELIVER, a48(), &wg);
        assert_eq!(
            classify(&f),
            Datagram::RelayedWireGuard {
                from: a48(),
                payload: &wg
            }
        );
        assert_eq!(classify(&f).control(), None);
    }

    #[test]
    fn relay_frames_we_do_not_take_are_unknown() {
        // A RelaySend (meant for a registry), an empty delivery, a delivery of garbage.
        let send = relay::frame(relay::RELAY_SEND, a48(), &[4, 0, 0, 0]);
        assert_eq!(classify(&send), Datagram::Unknown);
        let empty = relay::frame(relay::RELAY_DELIVER, a48(), &[]);
        assert_eq!(classify(&empty), Datagram::Unknown);
        let junk = relay::frame(relay::RELAY_DELIVER, a48(), &[0x99, 1]);
        assert_eq!(classify(&junk), Datagram::Unknown);
    }

    #[test]
    fn other_control_messages_go_to_the_registry_client() {
        let resp = [CONTROL_MAGIC, 1, 0x81, 0, 0];
        assert_eq!(classify(&resp), Datagram::Control(&resp));
        assert_eq!(
            classify(&resp).control(),
            Some((ControlKind::Control, &resp[..]))
        );
        assert_eq!(classify(b"Pping"), Datagram::Control(b"Pping"));
    }

    fn dgram(from: &str, n: u8) -> ControlDatagram {
        ControlDatagram {
            from: from.parse().unwrap(),
            kind: ControlKind::Control,
            bytes: vec![CONTROL_MAGIC, n],
        }
    }

    #[tokio::test]
    async fn a_registry_answer_is_delivered_while_strangers_flood_their_queue() {
        let (tx, mut rx) = control_queues(8);
        // Strangers fill their queue; the rest of the flood is dropped and counted there.
        let sent = (0..100u8)
            .filter(|n| tx.send(dgram("198.51.100.9:1", *n), false))
            .count();
        assert_eq!(sent, 8);
        assert_eq!(
            tx.drops(),
            ControlQueueDrops {
                registry: 0,
                others: 92
            }
        );
        // The registry's answer still gets in, and comes out first.
        let answer = dgram("192.0.2.1:7000", 200);
        assert!(tx.send(answer.clone(), true));
        assert_eq!(rx.recv().await, Some(answer));
        assert_eq!(rx.recv().await, Some(dgram("198.51.100.9:1", 0)));
        assert_eq!(rx.drops().registry, 0);
    }

    #[test]
    fn a_full_registry_queue_counts_its_own_drops() {
        let (tx, mut rx) = control_queues(1);
        assert!(tx.send(dgram("192.0.2.1:7000", 1), true));
        assert!(!tx.send(dgram("192.0.2.1:7000", 2), true));
        assert!(tx.send(dgram("198.51.100.9:1", 3), false));
        assert_eq!(
            rx.drops(),
            ControlQueueDrops {
                registry: 1,
                others: 0
            }
        );
        assert_eq!(rx.try_recv().unwrap().bytes[1], 1);
        assert_eq!(rx.try_recv().unwrap().bytes[1], 3);
        assert!(rx.try_recv().is_err());
    }

    proptest! {
        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1700)) {
            let d = classify(&bytes);
            let _ = d.control();
        }

        #[test]
        fn no_relay_shaped_input_panics(
            kind in prop_oneof![Just(relay::RELAY_SEND), Just(relay::RELAY_DELIVER), any::<u8>()],
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut b = vec![CONTROL_MAGIC, relay::VERSION, kind];
            b.extend(rest);
            let d = classify(&b);
            if let Datagram::RelayedWireGuard { payload, .. } | Datagram::RelayedProbe { payload, .. } = d {
                prop_assert_eq!(payload, &b[relay::HEADER_LEN..]);
            }
        }
    }
}
