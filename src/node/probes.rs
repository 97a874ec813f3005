//! The rules for peer probes: which probes a node answers, and the replay window that refuses
//! a probe seen before. Pure functions of the probe, the sender's standing and the time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::identity::{Identity, PublicKey};
use crate::mapping::Addr48;
use crate::node::traversal::Path;
use crate::wire::probe::{self, Probe};
use crate::wire::relay;

/// Most probe transaction ids remembered against replays.
pub const REPLAY_WINDOW_MAX: usize = 65_536;

/// Why a probe was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeRefusal {
    /// Not a well-formed probe.
    Malformed,
    /// Meant for another node.
    NotForUs,
    /// The sender is not a trusted peer.
    Untrusted,
    /// Relayed, but the relay header names someone other than the signer.
    RelayMismatch,
    /// Relayed by an address that is not one of our registries.
    NotARegistry,
    /// Its timestamp is too far from our clock.
    Stale,
    /// The signature does not verify.
    BadSignature,
    /// A probe (sender, txid) seen before.
    Replayed,
}

/// A probe as it arrived: the bytes, where from, and (when relayed) the sender the relay named.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The probe message.
    pub bytes: &'a [u8],
    /// The source address (for a relayed probe: the registry).
    pub src: SocketAddr,
    /// The sender the relay header names, for a relayed probe.
    pub relayed_from: Option<Addr48>,
}

impl Incoming<'_> {
    /// The path the probe came by: replies go back the same way.
    pub fn came_by(&self) -> Path {
        match self.relayed_from {
            Some(_) => Path::Relay(self.src),
            None => Path::Direct(self.src),
        }
    }
}

/// Checks a probe: for us, from a trusted sender (`is_allowed`), relayed only by a registry and
/// under the signer's own address, fresh against `now_ms`, and signed. Cheap checks come
/// first, so untrusted senders cost no signature work. Replays are the window's business.
pub fn check(
    p: &Incoming<'_>,
    me: &PublicKey,
    is_allowed: impl Fn(&PublicKey) -> bool,
    is_registry: impl Fn(&SocketAddr) -> bool,
    now_ms: u64,
) -> Result<Probe, ProbeRefusal> {
    let probe = Probe::decode_unverified(p.bytes).ok_or(ProbeRefusal::Malformed)?;
    if probe.target != *me {
        return Err(ProbeRefusal::NotForUs);
    }
    if !is_allowed(&probe.sender) {
        return Err(ProbeRefusal::Untrusted);
    }
    if let Some(a) = p.relayed_from {
        if !is_registry(&p.src) {
            return Err(ProbeRefusal::NotARegistry);
        }
        if a != probe.sender.addr48() {
            return Err(ProbeRefusal::RelayMismatch);
        }
    }
    if probe.timestamp_ms.abs_diff(now_ms) > probe::MAX_SKEW_MS {
        return Err(ProbeRefusal::Stale);
    }
    if !probe.verify(p.bytes) {
        return Err(ProbeRefusal::BadSignature);
    }
    Ok(probe)
}

/// A signed probe (or reply) to `target` along `via`, ready to send: where to and the bytes
/// (wrapped in a relay frame when relayed). `None` when there is no path.
pub fn datagram(
    identity: &Identity,
    target: PublicKey,
    via: Path,
    txid: u64,
    reply: bool,
    timestamp_ms: u64,
) -> Option<(SocketAddr, Vec<u8>)> {
    let bytes = Probe {
        reply,
        sender: identity.public_key(),
        target,
        txid,
        timestamp_ms,
    }
    .encode(identity);
    match via {
        Path::Direct(a) => Some((a, bytes)),
        Path::Relay(r) => Some((r, relay::frame(relay::RELAY_SEND, target.addr48(), &bytes))),
        Path::None => None,
    }
}

/// Probes seen, (sender, txid) → expiry (unix ms): a probe is answered once.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    seen: HashMap<(PublicKey, u64), u64>,
    order: VecDeque<(PublicKey, u64)>,
}

impl ReplayWindow {
    /// Remembers a probe's (sender, txid); false if it was seen before. Entries expire after
    /// twice the allowed clock skew (a replay older than that is stale anyway), and at most
    /// [`REPLAY_WINDOW_MAX`] are kept.
    pub fn first_sight(&mut self, sender: PublicKey, txid: u64, now_ms: u64) -> bool {
        while let Some(k) = self.order.front().copied() {
            let expired = self.seen.get(&k).is_none_or(|e| *e < now_ms);
            if expired || self.order.len() >= REPLAY_WINDOW_MAX {
                self.order.pop_front();
                self.seen.remove(&k);
            } else {
                break;
            }
        }
        if self.seen.contains_key(&(sender, txid)) {
            return false;
        }
        self.seen
            .insert((sender, txid), now_ms + 2 * probe::MAX_SKEW_MS);
        self.order.push_back((sender, txid));
        true
    }

    /// How many probes are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_750_000_000_000;

    fn ids() -> (Identity, Identity) {
        (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]))
    }

    fn probe_bytes(from: &Identity, to: PublicKey, ts: u64) -> Vec<u8> {
        datagram(from, to, Path::Direct(addr()), 9, false, ts)
            .unwrap()
            .1
    }

    fn addr() -> SocketAddr {
        "198.51.100.2:4000".parse().unwrap()
    }

    fn direct(bytes: &[u8]) -> Incoming<'_> {
        Incoming {
            bytes,
            src: addr(),
            relayed_from: None,
        }
    }

    #[test]
    fn a_trusted_fresh_signed_probe_passes() {
        let (a, b) = ids();
        let bytes = probe_bytes(&a, b.public_key(), T0);
        let p = check(&direct(&bytes), &b.public_key(), |_| true, |_| false, T0).unwrap();
        assert_eq!((p.sender, p.txid, p.reply), (a.public_key(), 9, false));
    }

    #[test]
    fn untrusted_wrong_target_stale_and_forged_probes_are_refused() {
        let (a, b) = ids();
        let me = b.public_key();
        let bytes = probe_bytes(&a, me, T0);
        let chk = |bytes: &[u8], allowed: bool, now| {
            check(&direct(bytes), &me, |_| allowed, |_| false, now)
        };
        assert_eq!(chk(&bytes, false, T0), Err(ProbeRefusal::Untrusted));
        let other = probe_bytes(&a, a.public_key(), T0);
        assert_eq!(chk(&other, true, T0), Err(ProbeRefusal::NotForUs));
        let late = T0 + probe::MAX_SKEW_MS + 1;
        assert_eq!(chk(&bytes, true, late), Err(ProbeRefusal::Stale));
        assert!(chk(&bytes, true, T0 + probe::MAX_SKEW_MS).is_ok());
        let mut forged = bytes.clone();
        forged[70] ^= 1;
        assert_eq!(chk(&forged, true, T0), Err(ProbeRefusal::BadSignature));
        assert_eq!(chk(&bytes[..10], true, T0), Err(ProbeRefusal::Malformed));
    }

    #[test]
    fn a_relayed_probe_must_come_from_a_registry_under_its_signers_address() {
        let (a, b) = ids();
        let me = b.public_key();
        let bytes = probe_bytes(&a, me, T0);
        let reg: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        let relayed = |from: Addr48| Incoming {
            bytes: &bytes,
            src: reg,
            relayed_from: Some(from),
        };
        let is_reg = |s: &SocketAddr| *s == reg;
        let ok = relayed(a.addr48());
        assert!(check(&ok, &me, |_| true, is_reg, T0).is_ok());
        assert_eq!(ok.came_by(), Path::Relay(reg));
        assert_eq!(
            check(&relayed(b.addr48()), &me, |_| true, is_reg, T0),
            Err(ProbeRefusal::RelayMismatch)
        );
        assert_eq!(
            check(&ok, &me, |_| true, |_| false, T0),
            Err(ProbeRefusal::NotARegistry)
        );
    }

    #[test]
    fn the_replay_window_refuses_a_probe_seen_before_until_it_expires() {
        let k = Identity::from_seed([1; 32]).public_key();
        let mut w = ReplayWindow::default();
        assert!(w.first_sight(k, 1, T0));
        assert!(!w.first_sight(k, 1, T0 + 1));
        assert!(w.first_sight(k, 2, T0 + 1));
        // Long after: forgotten (and a replay that old is stale anyway).
        assert!(w.first_sight(k, 1, T0 + 2 * probe::MAX_SKEW_MS + 1));
        assert_eq!(w.len(), 2, "the expired entries were dropped");
    }
}
