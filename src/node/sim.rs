//! The in-memory network of the node unit tests (test-only): registry cores at
//! `192.0.2.N:7000` and endpoints (node cores, or bare registry clients) at
//! `203.0.113.N:40000`, with a virtual clock. Datagrams are delivered at once. A registry can
//! be taken down (it drops what it is sent) or restarted (it forgets everything); `blocked`
//! drops direct datagrams between endpoints (a NAT pair that lets nothing through), and
//! `drop_from` drops everything one endpoint sends to another.
//!
//! [`Net`] is the network, generic over what sits at its edges ([`Endpoint`]); [`Sim`] is the
//! network of [`Node`]s that src/node/tests.rs and src/node/home_tests.rs drive, and
//! src/node/registry_client/home_tests.rs drives one of bare registry clients.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::views::NodeEvent;
use super::{Effect, Node, NodeCommand, NodeConfig, Reply};
use crate::error::PilotError;
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Hostname, PeerRef, DEFAULT_NETWORK};
use crate::node::control::ControlPlane;
use crate::node::registry_client::ClientConfig;
use crate::node::traversal::Path;
use crate::node::trust::{AllowList, TrustStore};
use crate::registry::server::{Limits, Registry};
use crate::wire::classify::classify;

/// The Unix time (ms) at the start of every simulation.
pub(crate) const T0: u64 = 1_750_000_000_000;

/// Registry `i`'s address, `192.0.2.i:7000`.
pub(crate) fn r(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 7000))
}

/// Endpoint `i`'s address (`i` from 0), `203.0.113.(i+1):40000`.
pub(crate) fn host_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, i as u8 + 1], 40000))
}

/// Identity `i` (seed `i + 1`).
pub(crate) fn id(i: usize) -> Arc<Identity> {
    Arc::new(Identity::from_seed([i as u8 + 1; 32]))
}

/// What sits at an edge of the network: it sends datagrams, receives them, and has timers.
pub(crate) trait Endpoint {
    fn addr(&self) -> SocketAddr;
    /// The next datagram it sends (and a chance to record what else it queued).
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
    fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]);
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
}

/// A registry core on the network; `up: false` drops what it is sent.
pub(crate) struct SimRegistry {
    pub(crate) addr: SocketAddr,
    pub(crate) core: Registry,
    pub(crate) up: bool,
}

/// Registries and endpoints in memory (see the module documentation).
pub(crate) struct Net<E> {
    pub(crate) registries: Vec<SimRegistry>,
    pub(crate) hosts: Vec<E>,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) blocked: bool,
    pub(crate) drop_from: Option<usize>,
}

/// One datagram in flight: from, to, bytes.
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

impl<E: Endpoint> Net<E> {
    /// Fresh registries at `registries` and `hosts`, started at `start`; runs the network
    /// until it is quiet.
    pub(crate) fn new(registries: &[SocketAddr], hosts: Vec<E>, start: Instant) -> Self {
        let registries = registries
            .iter()
            .map(|&addr| SimRegistry {
                addr,
                core: crate::registry::server::tests::memory_registry(Limits::default(), T0),
                up: true,
            })
            .collect();
        let mut net = Net {
            registries,
            hosts,
            start,
            now: start,
            blocked: false,
            drop_from: None,
        };
        net.run();
        net
    }

    /// The Unix time (ms) of the virtual clock.
    pub(crate) fn now_ms(&self) -> u64 {
        T0 + (self.now - self.start).as_millis() as u64
    }

    /// The first registry's address.
    pub(crate) fn registry_addr(&self) -> SocketAddr {
        self.registries[0].addr
    }

    /// Takes `registry` down (`up: false`) or brings it back with what it knew.
    pub(crate) fn set_up(&mut self, registry: SocketAddr, up: bool) {
        for reg in self.registries.iter_mut().filter(|r| r.addr == registry) {
            reg.up = up;
        }
    }

    /// `registry` comes back as a fresh process: it has forgotten presence and relay pairs.
    pub(crate) fn restart(&mut self, registry: SocketAddr) {
        let ms = self.now_ms();
        for reg in self.registries.iter_mut().filter(|r| r.addr == registry) {
            reg.core = crate::registry::server::tests::memory_registry(Limits::default(), ms);
            reg.up = true;
        }
    }

    /// Collects what every endpoint queued; returns the datagrams in flight.
    pub(crate) fn collect(&mut self) -> VecDeque<Datagram> {
        let mut wire = VecDeque::new();
        for h in &mut self.hosts {
            let addr = h.addr();
            while let Some((to, bytes)) = h.poll_transmit() {
                wire.push_back((addr, to, bytes));
            }
        }
        wire
    }

    /// Delivers datagrams until the network is quiet (bounded).
    pub(crate) fn run(&mut self) {
        for _ in 0..1000 {
            let wire = self.collect();
            if wire.is_empty() {
                return;
            }
            for (from, to, bytes) in wire {
                self.deliver(from, to, &bytes);
            }
        }
        panic!("the network did not settle");
    }

    /// One datagram: to a registry that is up (its answers go on at once), or to an endpoint
    /// unless `blocked` or `drop_from` drops it.
    pub(crate) fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let now_ms = self.now_ms();
        if let Some(reg) = self.registries.iter_mut().find(|r| r.addr == to) {
            if !reg.up {
                return;
            }
            let out = reg.core.handle(now_ms, from, bytes);
            for (dst, answer) in out {
                self.hand_to_host(to, dst, &answer);
            }
            return;
        }
        let sender = self.hosts.iter().position(|h| h.addr() == from);
        if self.blocked || (sender.is_some() && sender == self.drop_from) {
            return;
        }
        self.hand_to_host(from, to, bytes);
    }

    fn hand_to_host(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        if let Some(h) = self.hosts.iter_mut().find(|h| h.addr() == to) {
            h.receive(now, from, bytes);
        }
    }

    /// Moves the clock by `step` (at most to `end`), fires the registries' and endpoints'
    /// timers, and runs the network.
    pub(crate) fn tick(&mut self, step: Duration, end: Instant) {
        self.now = (self.now + step).min(end);
        let (now, ms) = (self.now, self.now_ms());
        for reg in &mut self.registries {
            reg.core.handle_timeout(ms);
        }
        for h in &mut self.hosts {
            if h.poll_timeout().is_some_and(|t| t <= now) {
                h.handle_timeout(now);
            }
        }
        self.run();
    }

    /// Moves the clock in steps of 50 ms, running timers and the network at each.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.tick(Duration::from_millis(50), end);
        }
    }
}

/// One node in the simulation: the core, its address, and what it asked of its data plane and
/// told the API.
pub(crate) struct Host {
    pub(crate) node: Node,
    pub(crate) addr: SocketAddr,
    pub(crate) id: Arc<Identity>,
    pub(crate) name: Hostname,
    pub(crate) effects: Vec<Effect>,
    pub(crate) events: Vec<NodeEvent>,
}

impl Host {
    /// Node `i` named `name`, registering at `registries` (in that order), with `allow` as its
    /// allow list if given.
    fn new(
        i: usize,
        name: &str,
        registries: &[SocketAddr],
        allow: Option<&AllowList>,
        start: Instant,
    ) -> Self {
        let id = id(i);
        let name = Hostname::new(name).unwrap();
        let mut cfg = ClientConfig::new(registries.to_vec());
        cfg.hostname = Some(name.clone());
        let mut trust = TrustStore::in_memory(id.public_key());
        if let Some(a) = allow {
            trust.set_allow_list(a.clone());
        }
        let plane = ControlPlane::new(id.clone(), cfg, trust, start, T0);
        let config = NodeConfig {
            network: DEFAULT_NETWORK,
            static_peers: Vec::new(),
            has_registry: true,
        };
        Host {
            node: Node::new(plane, config, [i as u8; 32], start),
            addr: host_addr(i),
            id,
            name,
            effects: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl Endpoint for Host {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.effects
            .extend(std::iter::from_fn(|| self.node.poll_effect()));
        self.events
            .extend(std::iter::from_fn(|| self.node.poll_event()));
        self.node.poll_transmit()
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Some((kind, msg)) = classify(bytes).control() {
            self.node.handle_datagram(now, from, kind, msg);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
    }
}

/// Nodes and registries in memory.
pub(crate) type Sim = Net<Host>;

impl Sim {
    /// Nodes named `names` at one registry, `r(1)`; node `i` has `allow[i]` as its allow list
    /// if given.
    pub(crate) fn with_names(names: &[&str], allow: &[AllowList]) -> Self {
        let start = Instant::now();
        let hosts = names
            .iter()
            .enumerate()
            .map(|(i, name)| Host::new(i, name, &[r(1)], allow.get(i), start))
            .collect();
        Net::new(&[r(1)], hosts, start)
    }

    /// Nodes `node-{i}` at registries `r(1)` and `r(2)`, node `i` configured with
    /// `configs[i]` (in that order); direct datagrams between nodes are blocked.
    pub(crate) fn with_registries(configs: &[&[SocketAddr]]) -> Self {
        let start = Instant::now();
        let hosts = configs
            .iter()
            .enumerate()
            .map(|(i, regs)| Host::new(i, &format!("node-{i}"), regs, None, start))
            .collect();
        let mut sim = Net::new(&[r(1), r(2)], hosts, start);
        sim.blocked = true;
        sim
    }

    pub(crate) fn key(&self, i: usize) -> PublicKey {
        self.hosts[i].id.public_key()
    }

    /// Sends `make`'s command to node `i` and runs the network.
    pub(crate) fn call<T>(
        &mut self,
        i: usize,
        make: impl FnOnce(Reply<T>) -> NodeCommand,
    ) -> oneshot::Receiver<Result<T, PilotError>> {
        let (tx, rx) = oneshot::channel();
        let now = self.now;
        self.hosts[i].node.handle_command(now, make(tx));
        self.run();
        rx
    }

    /// Node 0 asks node 1, named by `peer`, for trust and node 1 approves.
    pub(crate) fn trust_each_other_as(&mut self, peer: PeerRef) {
        let mut r = self.call(0, |reply| NodeCommand::Handshake {
            peer,
            justification: "jobs".into(),
            reply,
        });
        r.try_recv().unwrap().unwrap();
        let k0 = self.key(0);
        let mut r = self.call(1, |reply| NodeCommand::Approve {
            peer: PeerRef::PublicKey(k0),
            reply,
        });
        r.try_recv().unwrap().unwrap();
    }

    /// Node 0 asks node 1 for trust by name and node 1 approves.
    pub(crate) fn trust_each_other(&mut self) {
        let name = self.hosts[1].name.clone();
        self.trust_each_other_as(PeerRef::Hostname(name));
    }

    /// Node `i`'s path to `peer`.
    pub(crate) fn path_of(&mut self, i: usize, peer: PublicKey) -> Path {
        self.hosts[i].node.path(&peer)
    }
}
