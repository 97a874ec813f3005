//! NAT traversal, sans-IO: one [`PeerPath`] per trusted peer decides how its packets travel.
//!
//! Inputs: candidate addresses (from the registry's endpoint exchange), probes and probe replies
//! (signed messages, see [`crate::wire::probe`]), a changed reflexive address, traffic that found no
//! path, and time. Outputs ([`Action`]): ask the registry for the peer's candidates (which also
//! gives the peer ours, so both sides punch at once), send a probe to an address or through the
//! relay, and set the data plane's path. No sockets, no clock: the caller passes `now`, so tests
//! run it in memory with a virtual clock.
//!
//! The life of a path:
//! 1. **Punch**: every [`Timing::punch_interval`] a probe goes to every candidate, for
//!    [`Timing::punch_duration`]. The first candidate whose reply comes back *from the address
//!    probed* becomes the path (`Direct`). Probing goes on for [`Timing::settle`] after that, so
//!    a better candidate — a LAN address ([`CandidateKind::Local`]) beats a public one — can
//!    still win.
//! 2. **Relay**: if no direct path works [`Timing::relay_after`] into a punch, packets go
//!    through the registry ([`Path::Relay`]); punching is retried with backoff
//!    ([`Timing::retry_min`] doubling to [`Timing::retry_max`]) and the path upgrades to direct
//!    as soon as a probe succeeds. WireGuard sessions do not depend on the path, so a switch drops
//!    nothing.
//! 3. **Hold**: on a direct path a probe goes out every [`Timing::keepalive`] (keeping NAT
//!    mappings and measuring the RTT). No reply for [`Timing::dead_after`] means the path is gone:
//!    the relay takes over at once and a new punch starts. A changed reflexive address punches
//!    again at once.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use crate::wg::Path;

/// Where a candidate address came from; decides which path wins when several work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CandidateKind {
    /// A public (or reflexive) address.
    Public,
    /// An address we saw a valid probe come from (a NAT mapping made for us).
    PeerReflexive,
    /// A private LAN address (RFC 1918, ULA): best when it works — no hairpin needed.
    Local,
}

impl CandidateKind {
    /// The kind of an address offered by the peer.
    pub fn of(addr: &SocketAddr) -> CandidateKind {
        let local = match addr.ip() {
            IpAddr::V4(v4) => v4.is_private(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
        };
        if local {
            CandidateKind::Local
        } else {
            CandidateKind::Public
        }
    }
}

/// The timers of the machine. [`Timing::default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between two probe rounds while punching.
    pub punch_interval: Duration,
    /// How long one punch lasts.
    pub punch_duration: Duration,
    /// Probing continues this long after the first success, so a better candidate can win.
    pub settle: Duration,
    /// Without a direct path this long into a punch, use the relay.
    pub relay_after: Duration,
    /// Between two probes on an established path.
    pub keepalive: Duration,
    /// A direct path without any reply this long is dead.
    pub dead_after: Duration,
    /// First wait before punching again when a punch found nothing.
    pub retry_min: Duration,
    /// Longest wait between punches.
    pub retry_max: Duration,
    /// An unanswered probe is forgotten after this long.
    pub probe_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            punch_interval: Duration::from_millis(200),
            punch_duration: Duration::from_secs(5),
            settle: Duration::from_millis(600),
            relay_after: Duration::from_secs(3),
            keepalive: Duration::from_secs(1),
            dead_after: Duration::from_millis(3500),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(15),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask the registry for the peer's candidates (an endpoint request; the peer learns ours
    /// and punches too).
    RequestEndpoints,
    /// Send a signed probe with this transaction id.
    Probe {
        /// Where: `Direct(addr)` straight to the address, `Relay(registry)` in a relay frame.
        via: Path,
        /// Transaction id (the reply echoes it).
        txid: u64,
    },
    /// Tell the data plane the new path.
    SetPath(Path),
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    kind: CandidateKind,
}

#[derive(Debug, Clone, Copy)]
struct Punch {
    until: Instant,
    next_probe: Instant,
    relay_at: Instant,
}

/// The path state machine of one peer.
#[derive(Debug)]
pub struct PeerPath {
    timing: Timing,
    candidates: Vec<Candidate>,
    path: Path,
    relay: Option<SocketAddr>,
    punch: Option<Punch>,
    outstanding: HashMap<u64, (Path, Instant)>,
    next_txid: u64,
    last_reply: Option<Instant>,
    /// Latest sign of life of the relayed path: a relayed probe reply, or the switch to it.
    relay_heard: Option<Instant>,
    next_keepalive: Option<Instant>,
    next_retry: Option<Instant>,
    backoff: Duration,
    rtt: Option<Duration>,
    last_change: Option<Instant>,
    actions: VecDeque<Action>,
}

impl PeerPath {
    /// A machine with no candidates and no path; `txid_seed` makes transaction ids unguessable
    /// (pass a random number).
    pub fn new(timing: Timing, txid_seed: u64) -> Self {
        PeerPath {
            timing,
            candidates: Vec::new(),
            path: Path::None,
            relay: None,
            punch: None,
            outstanding: HashMap::new(),
            next_txid: txid_seed,
            last_reply: None,
            relay_heard: None,
            next_keepalive: None,
            next_retry: None,
            backoff: timing.retry_min,
            rtt: None,
            last_change: None,
            actions: VecDeque::new(),
        }
    }

    /// The current path.
    pub fn path(&self) -> Path {
        self.path
    }

    /// The latest round-trip time measured on the current path.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// When the path last changed.
    pub fn last_change(&self) -> Option<Instant> {
        self.last_change
    }

    /// Whether a punch is running.
    pub fn is_punching(&self) -> bool {
        self.punch.is_some()
    }

    /// The candidate addresses known, best first.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        self.candidates.iter().map(|c| c.addr).collect()
    }

    /// Next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`PeerPath::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let punch = self
            .punch
            .map(|p| p.next_probe.min(p.until).min(p.relay_at));
        [punch, self.next_keepalive, self.next_retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Connects: asks for candidates and punches (unless a working direct path exists or a
    /// punch is running).
    pub fn connect(&mut self, now: Instant) {
        if self.punch.is_some() || self.direct_alive(now) {
            return;
        }
        self.actions.push_back(Action::RequestEndpoints);
        self.start_punch(now);
    }

    /// An outbound packet found no path: connect now rather than at the next retry.
    pub fn on_traffic_without_path(&mut self, now: Instant) {
        if matches!(self.path, Path::None) && self.punch.is_none() {
            self.backoff = self.timing.retry_min;
            self.connect(now);
        }
    }

    /// Our reflexive address changed: our NAT mappings are new, so punch again at once (the
    /// current path stays until probes show it is dead).
    pub fn on_reflexive_changed(&mut self, now: Instant) {
        if self.punch.is_none() {
            self.actions.push_back(Action::RequestEndpoints);
            self.start_punch(now);
        }
    }

    /// The registry that relays to the peer (its home relay, or the one that introduced us).
    pub fn relay(&self) -> Option<SocketAddr> {
        self.relay
    }

    /// Relays through `relay` from now on; a relayed path moves to it at once (the old relay
    /// may be gone), and is probed there.
    pub fn set_relay(&mut self, now: Instant, relay: SocketAddr) {
        if self.relay == Some(relay) {
            return;
        }
        self.relay = Some(relay);
        if matches!(self.path, Path::Relay(_)) {
            self.set_path(now, Path::Relay(relay));
            self.next_keepalive = Some(now);
        }
    }

    /// Candidates from an endpoint exchange (the peer's reflexive address first, then its local
    /// ones), relayed through `relay` (the peer's home relay, or the registry that forwarded
    /// the exchange: see [`crate::node::relays`]). The peer punches now too, so this starts
    /// (or extends) a punch at once.
    pub fn on_candidates(&mut self, now: Instant, addrs: &[SocketAddr], relay: SocketAddr) {
        self.set_relay(now, relay);
        let prflx: Vec<Candidate> = self
            .candidates
            .iter()
            .filter(|c| c.kind == CandidateKind::PeerReflexive && !addrs.contains(&c.addr))
            .copied()
            .collect();
        self.candidates = addrs
            .iter()
            .map(|a| Candidate {
                addr: *a,
                kind: CandidateKind::of(a),
            })
            .chain(prflx)
            .take(16)
            .collect();
        self.candidates.sort_by_key(|c| std::cmp::Reverse(c.kind));
        match &mut self.punch {
            Some(p) => {
                p.until = p.until.max(now + self.timing.punch_duration);
                p.next_probe = now;
            }
            None => self.start_punch(now),
        }
    }

    /// A valid probe from the peer arrived from `src` (not through the relay): `src` is a
    /// candidate (a peer-reflexive one if new). If we have no direct path, punch towards it.
    pub fn on_probe_from(&mut self, now: Instant, src: SocketAddr) {
        if !self.candidates.iter().any(|c| c.addr == src) {
            self.candidates.push(Candidate {
                addr: src,
                kind: CandidateKind::PeerReflexive.max(CandidateKind::of(&src)),
            });
            self.candidates.sort_by_key(|c| std::cmp::Reverse(c.kind));
            self.candidates.truncate(16);
        }
        if !matches!(self.path, Path::Direct(_)) && self.punch.is_none() {
            self.start_punch(now);
        }
    }

    /// A valid probe reply arrived from `from` (the registry's address when relayed).
    pub fn on_probe_reply(&mut self, now: Instant, from: SocketAddr, txid: u64) {
        let Some((via, sent)) = self.outstanding.remove(&txid) else {
            return;
        };
        if via.addr() != Some(from) {
            return;
        }
        let rtt = now.saturating_duration_since(sent);
        match via {
            Path::Relay(_) => {
                if self.path == via {
                    self.rtt = Some(rtt);
                    self.relay_heard = Some(now);
                }
            }
            Path::Direct(addr) => {
                if self.path == via {
                    self.last_reply = Some(now);
                    self.rtt = Some(rtt);
                    self.settle_punch(now);
                    return;
                }
                let better = match self.path {
                    Path::Direct(cur) => self.kind_of(addr) > self.kind_of(cur),
                    _ => true,
                };
                if better {
                    self.set_path(now, via);
                    self.last_reply = Some(now);
                    self.rtt = Some(rtt);
                    self.next_keepalive = Some(now + self.timing.keepalive);
                    self.next_retry = None;
                    self.backoff = self.timing.retry_min;
                    self.settle_punch(now);
                }
            }
            Path::None => {}
        }
    }

    /// Fires timers: probe rounds, relay fallback, keepalives, dead-path detection, retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.timing.probe_timeout;
        self.outstanding
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < timeout);
        if let Some(mut p) = self.punch {
            if now >= p.relay_at {
                if !matches!(self.path, Path::Direct(_)) {
                    if let Some(r) = self.relay {
                        if self.path != Path::Relay(r) {
                            self.set_path(now, Path::Relay(r));
                            self.next_keepalive = Some(now);
                        }
                    }
                }
                p.relay_at = p.until;
            }
            if now >= p.next_probe {
                let targets: Vec<SocketAddr> = self.candidates.iter().map(|c| c.addr).collect();
                for addr in targets {
                    self.probe(now, Path::Direct(addr));
                }
                p.next_probe = now + self.timing.punch_interval;
            }
            if now >= p.until {
                self.punch = None;
                if !self.direct_alive(now) {
                    self.next_retry = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(self.timing.retry_max);
                }
            } else {
                self.punch = Some(p);
            }
        }
        if self.next_keepalive.is_some_and(|t| now >= t) {
            self.next_keepalive = None;
            match self.path {
                Path::Direct(_) if !self.direct_alive(now) => {
                    // Dead: the relay carries packets while we punch again (without a relay,
                    // the old address keeps being probed: it may come back).
                    match self.relay {
                        Some(r) => self.set_path(now, Path::Relay(r)),
                        None => {
                            self.rtt = None;
                            self.probe(now, self.path);
                        }
                    }
                    if self.punch.is_none() && self.next_retry.is_none() {
                        self.actions.push_back(Action::RequestEndpoints);
                        self.start_punch(now);
                    }
                    self.next_keepalive = Some(now + self.timing.keepalive);
                }
                Path::Relay(_)
                    if self.punch.is_none()
                        && self.relay_heard.is_some_and(|t| {
                            now.saturating_duration_since(t) >= self.timing.dead_after
                        }) =>
                {
                    // The relay stopped answering: the registry may have lost our mapping (a
                    // new NAT port). A signed endpoint request tells it where we are, renews
                    // the pair's relay permission, and punches once more.
                    self.relay_heard = Some(now);
                    self.actions.push_back(Action::RequestEndpoints);
                    self.start_punch(now);
                    self.probe(now, self.path);
                    self.next_keepalive = Some(now + self.timing.keepalive);
                }
                Path::Direct(_) | Path::Relay(_) => {
                    self.probe(now, self.path);
                    self.next_keepalive = Some(now + self.timing.keepalive);
                }
                Path::None => {}
            }
        }
        if self.next_retry.is_some_and(|t| now >= t) {
            self.next_retry = None;
            self.connect(now);
        }
    }

    /// The data plane moved the path by itself (an authenticated packet from a new address, or
    /// the first packets through the relay for a peer without a path): adopt it.
    pub fn on_data_plane_path(&mut self, now: Instant, path: Path) {
        if path == self.path {
            return;
        }
        match path {
            Path::Direct(_) => {
                self.path = path;
                self.last_change = Some(now);
                self.last_reply = Some(now);
                self.rtt = None;
                self.next_keepalive = Some(now);
            }
            Path::Relay(r) if self.path == Path::None => {
                self.relay_heard = Some(now);
                self.path = path;
                self.relay.get_or_insert(r);
                self.last_change = Some(now);
                self.next_keepalive = Some(now);
            }
            _ => {}
        }
    }

    /// A direct path answers: a running punch ends after `settle` (time for a better candidate,
    /// a LAN one, to answer too) instead of running its full course. A punch left running
    /// would hold back the endpoint request a dead path makes, so a NAT remap soon after the
    /// path came up would wait for the next registration to be noticed.
    fn settle_punch(&mut self, now: Instant) {
        if let Some(p) = &mut self.punch {
            p.until = p.until.min(now + self.timing.settle);
        }
    }

    /// Allocates a transaction id (unique for this machine).
    fn next_txid(&mut self) -> u64 {
        self.next_txid = self.next_txid.wrapping_add(1);
        self.next_txid
    }

    fn kind_of(&self, addr: SocketAddr) -> CandidateKind {
        self.candidates
            .iter()
            .find(|c| c.addr == addr)
            .map(|c| c.kind)
            .unwrap_or_else(|| CandidateKind::of(&addr))
    }

    fn direct_alive(&self, now: Instant) -> bool {
        matches!(self.path, Path::Direct(_))
            && self
                .last_reply
                .is_some_and(|t| now.saturating_duration_since(t) < self.timing.dead_after)
    }

    fn start_punch(&mut self, now: Instant) {
        self.next_retry = None;
        let relay_at = if matches!(self.path, Path::Direct(_)) && !self.direct_alive(now) {
            now
        } else {
            now + self.timing.relay_after
        };
        self.punch = Some(Punch {
            until: now + self.timing.punch_duration,
            next_probe: now,
            relay_at,
        });
    }

    fn probe(&mut self, now: Instant, via: Path) {
        if self.outstanding.len() >= 256 {
            return;
        }
        let txid = self.next_txid();
        self.outstanding.insert(txid, (via, now));
        self.actions.push_back(Action::Probe { via, txid });
    }

    fn set_path(&mut self, now: Instant, path: Path) {
        if self.path != path {
            if matches!(path, Path::Relay(_)) {
                self.relay_heard = Some(now);
            }
            self.path = path;
            self.last_change = Some(now);
            self.rtt = None;
            self.actions.push_back(Action::SetPath(path));
        }
    }
}

#[cfg(test)]
mod tests;
