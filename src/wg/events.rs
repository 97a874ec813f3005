//! What the data plane tells the node core, pushed as it happens (never polled): a peer's
//! traffic needs a path, a peer roamed, a handshake completed.
//!
//! Events travel on a bounded channel. A data-plane thread never blocks on it (`try_send`);
//! what does not fit is counted and dropped. `NeedsPath` is coalesced per peer with a flag:
//! at most one is queued per peer until the node core has taken it, so a flood of packets to a
//! peer without a path queues one event, not one per packet.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::core::Core;
use crate::identity::PublicKey;
use crate::wg::Path;

/// Something the data plane noticed that the node core decides about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlaneEvent {
    /// An outbound packet for this peer found no path (it waits inside WireGuard).
    NeedsPath(PublicKey),
    /// An authenticated datagram moved this peer's path by itself (a roaming peer, or the
    /// first packets of a peer without a path).
    Roamed {
        /// The peer.
        key: PublicKey,
        /// Its path now.
        path: Path,
    },
    /// A WireGuard handshake with this peer completed.
    HandshakeDone(PublicKey),
    /// Datagrams for this registry now travel over another transport (UDP or the TLS
    /// transport of issue 14): the node registers there again at once, so the registry
    /// learns the new address before the next heartbeat.
    TransportChanged {
        /// The registry (its configured UDP address).
        registry: SocketAddr,
    },
}

/// The data plane's end of the event channel (cheap, lock-free, never blocks).
#[derive(Debug)]
pub struct EventSender {
    tx: mpsc::Sender<DataPlaneEvent>,
    dropped: AtomicU64,
}

impl EventSender {
    /// Queues `ev` if there is room; otherwise counts it as dropped. Returns whether it was
    /// queued.
    pub fn send(&self, ev: DataPlaneEvent) -> bool {
        let ok = self.tx.try_send(ev).is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Queues a `NeedsPath` for the peer unless one is already waiting (`flag` is the peer's
    /// own; the receiver clears it when it hands the event over).
    pub fn needs_path(&self, key: PublicKey, flag: &AtomicBool) {
        if flag.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.send(DataPlaneEvent::NeedsPath(key)) {
            flag.store(false, Ordering::Release);
        }
    }

    /// Events dropped because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The node core's end: hands events over and re-arms the per-peer `NeedsPath` flag.
pub struct EventReceiver {
    rx: mpsc::Receiver<DataPlaneEvent>,
    core: Arc<Core>,
}

impl EventReceiver {
    /// The next event; `None` once the data plane is gone.
    pub async fn recv(&mut self) -> Option<DataPlaneEvent> {
        let ev = self.rx.recv().await?;
        self.taken(&ev);
        Some(ev)
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<DataPlaneEvent> {
        let ev = self.rx.try_recv().ok()?;
        self.taken(&ev);
        Some(ev)
    }

    fn taken(&self, ev: &DataPlaneEvent) {
        if let DataPlaneEvent::NeedsPath(key) = ev {
            self.core.rearm_needs_path(key);
        }
    }
}

/// A bounded event channel of `depth` events for `core`'s data plane: the sender goes into the
/// core, the receiver to the node core.
pub fn channel(depth: usize) -> (EventSender, impl FnOnce(Arc<Core>) -> EventReceiver) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let sender = EventSender {
        tx,
        dropped: AtomicU64::new(0),
    };
    (sender, move |core| EventReceiver { rx, core })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_and_needs_path_is_coalesced() {
        let key = Identity::from_seed([1; 32]).public_key();
        let (tx, _rx) = channel(1);
        let flag = AtomicBool::new(false);
        tx.needs_path(key, &flag);
        assert!(flag.load(Ordering::Relaxed), "one NeedsPath is queued");
        // A flood of packets without a path: nothing more is queued or counted.
        for _ in 0..1000 {
            tx.needs_path(key, &flag);
        }
        assert_eq!(tx.dropped(), 0);
        // The queue is full: another event is dropped and counted, at once.
        assert!(!tx.send(DataPlaneEvent::HandshakeDone(key)));
        assert_eq!(tx.dropped(), 1);
        // A NeedsPath that did not fit leaves its flag clear, so a later packet tries again.
        let other = AtomicBool::new(false);
        tx.needs_path(key, &other);
        assert!(!other.load(Ordering::Relaxed));
        assert_eq!(tx.dropped(), 2);
    }
}
