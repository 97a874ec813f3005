//! Home relays (v1.4) in the node core: two nodes and two registries in memory with a virtual
//! clock, direct datagrams between the nodes blocked (a NAT pair that cannot punch), so every
//! packet is relayed. Checked: each side relays through the other's home; when the home dies
//! both homes move and the relayed path follows, and a relayed ping still works.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::*;
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Hostname, PeerRef, DEFAULT_NETWORK};
use crate::node::control::ControlPlane;
use crate::node::registry_client::ClientConfig;
use crate::node::traversal::Path;
use crate::node::trust::TrustStore;
use crate::registry::server::{Limits, Registry};
use crate::wire::classify::classify;

const T0: u64 = 1_750_000_000_000;

struct Host {
    node: Node,
    addr: SocketAddr,
    key: PublicKey,
}

struct Sim {
    registries: Vec<(SocketAddr, Registry, bool)>,
    hosts: Vec<Host>,
    start: Instant,
    now: Instant,
}

fn r(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 7000))
}

impl Sim {
    /// Node `i` is configured with `configs[i]` (registries in that order) and claims the
    /// name `node-{i}`.
    fn new(configs: &[&[SocketAddr]]) -> Self {
        let start = Instant::now();
        let hosts = configs
            .iter()
            .enumerate()
            .map(|(i, regs)| {
                let id = Arc::new(Identity::from_seed([i as u8 + 1; 32]));
                let mut cfg = ClientConfig::new(regs.to_vec());
                cfg.hostname = Some(Hostname::new(&format!("node-{i}")).unwrap());
                let trust = TrustStore::in_memory(id.public_key());
                let plane = ControlPlane::new(id.clone(), cfg, trust, start, T0);
                let config = NodeConfig {
                    network: DEFAULT_NETWORK,
                    static_peers: Vec::new(),
                    has_registry: true,
                };
                Host {
                    node: Node::new(plane, config, [i as u8; 32], start),
                    addr: SocketAddr::from(([203, 0, 113, i as u8 + 1], 40000)),
                    key: id.public_key(),
                }
            })
            .collect();
        let registries = [r(1), r(2)]
            .into_iter()
            .map(|a| {
                let reg = crate::registry::server::tests::memory_registry(Limits::default(), T0);
                (a, reg, true)
            })
            .collect();
        let mut sim = Sim {
            registries,
            hosts,
            start,
            now: start,
        };
        sim.run();
        sim
    }

    fn now_ms(&self) -> u64 {
        T0 + (self.now - self.start).as_millis() as u64
    }

    /// `registry` comes back as a fresh process: it has forgotten presence and relay pairs.
    fn restart(&mut self, registry: SocketAddr) {
        let ms = self.now_ms();
        for (a, reg, up) in &mut self.registries {
            if *a == registry {
                *reg = crate::registry::server::tests::memory_registry(Limits::default(), ms);
                *up = true;
            }
        }
    }

    fn set_up(&mut self, registry: SocketAddr, up: bool) {
        for (a, _, u) in &mut self.registries {
            if *a == registry {
                *u = up;
            }
        }
    }

    /// Delivers datagrams until the network is quiet; node-to-node datagrams are dropped.
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut wire = Vec::new();
            for h in &mut self.hosts {
                while h.node.poll_effect().is_some() {}
                while h.node.poll_event().is_some() {}
                while let Some((to, bytes)) = h.node.poll_transmit() {
                    wire.push((h.addr, to, bytes));
                }
            }
            if wire.is_empty() {
                return;
            }
            let (now, now_ms) = (self.now, self.now_ms());
            for (from, to, bytes) in wire {
                let Some((raddr, reg, up)) = self.registries.iter_mut().find(|r| r.0 == to) else {
                    continue;
                };
                if !*up {
                    continue;
                }
                let raddr = *raddr;
                for (dst, out) in reg.handle(now_ms, from, &bytes) {
                    let Some(h) = self.hosts.iter_mut().find(|h| h.addr == dst) else {
                        continue;
                    };
                    if let Some((kind, msg)) = classify(&out).control() {
                        h.node.handle_datagram(now, raddr, kind, msg);
                    }
                }
            }
        }
        panic!("the network did not settle");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(50)).min(end);
            let (now, ms) = (self.now, self.now_ms());
            for (_, reg, _) in &mut self.registries {
                reg.handle_timeout(ms);
            }
            for h in &mut self.hosts {
                if h.node.poll_timeout().is_some_and(|t| t <= now) {
                    h.node.handle_timeout(now);
                }
            }
            self.run();
        }
    }

    fn call<T>(
        &mut self,
        i: usize,
        make: impl FnOnce(Reply<T>) -> NodeCommand,
    ) -> oneshot::Receiver<Result<T, crate::error::PilotError>> {
        let (tx, rx) = oneshot::channel();
        let now = self.now;
        self.hosts[i].node.handle_command(now, make(tx));
        self.run();
        rx
    }

    /// Node 0 asks node 1 for trust by key and node 1 approves.
    fn trust_each_other(&mut self) {
        let (k0, k1) = (self.hosts[0].key, self.hosts[1].key);
        let mut rx = self.call(0, |reply| NodeCommand::Handshake {
            peer: PeerRef::PublicKey(k1),
            justification: "jobs".into(),
            reply,
        });
        rx.try_recv().unwrap().unwrap();
        let mut rx = self.call(1, |reply| NodeCommand::Approve {
            peer: PeerRef::PublicKey(k0),
            reply,
        });
        rx.try_recv().unwrap().unwrap();
    }

    fn path(&self, i: usize, j: usize) -> Path {
        self.hosts[i].node.path(&self.hosts[j].key)
    }

    fn home(&mut self, i: usize) -> Option<SocketAddr> {
        self.hosts[i].node.plane.client().home()
    }

    /// A relayed ping from node 0 to node 1: (path, endpoint, replies).
    fn ping(&mut self) -> (String, Option<SocketAddr>, usize) {
        let k1 = self.hosts[1].key;
        let mut rx = self.call(0, |reply| NodeCommand::Ping {
            peer: PeerRef::PublicKey(k1),
            count: 2,
            reply,
        });
        self.advance(Duration::from_secs(2));
        let report = rx.try_recv().unwrap().unwrap();
        (report.path, report.endpoint, report.received)
    }
}

#[test]
fn each_side_relays_through_the_others_home() {
    let mut sim = Sim::new(&[&[r(1), r(2)], &[r(2), r(1)]]);
    assert_eq!((sim.home(0), sim.home(1)), (Some(r(1)), Some(r(2))));
    sim.trust_each_other();
    sim.advance(Duration::from_secs(4));
    assert_eq!(
        sim.path(0, 1),
        Path::Relay(r(2)),
        "0 sends through 1's home"
    );
    assert_eq!(
        sim.path(1, 0),
        Path::Relay(r(1)),
        "1 sends through 0's home"
    );
    assert_eq!(sim.ping(), ("relay".into(), Some(r(2)), 2));
}

#[test]
fn a_peer_homed_where_we_are_not_registered_is_relayed_through_the_introducer() {
    // Node 1 uses r(2) only; node 0 both. 0 reaches 1 through 1's home, r(2); 1 cannot send
    // through 0's home r(1) (it is not registered there): it uses r(2), which introduced them.
    let mut sim = Sim::new(&[&[r(1), r(2)], &[r(2)]]);
    sim.trust_each_other();
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.path(0, 1), Path::Relay(r(2)));
    assert_eq!(sim.path(1, 0), Path::Relay(r(2)));
    assert_eq!(sim.ping().2, 2);
}

#[test]
fn when_the_home_dies_the_homes_move_and_the_relayed_path_follows() {
    let mut sim = Sim::new(&[&[r(1), r(2)], &[r(1), r(2)]]);
    sim.trust_each_other();
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.path(0, 1), Path::Relay(r(1)));
    assert_eq!(sim.path(1, 0), Path::Relay(r(1)));
    sim.set_up(r(1), false);
    // The relayed path goes silent (3.5 s), each side asks for endpoints at both registries,
    // r(1) leaves that request unanswered for 3 s: it is no longer usable nor home, and the
    // path moves to r(2). Well within the 23 s worst case of an idle node.
    let t = sim.now;
    let mut moved = None;
    for _ in 0..300 {
        sim.advance(Duration::from_millis(100));
        if sim.path(0, 1) == Path::Relay(r(2)) && sim.path(1, 0) == Path::Relay(r(2)) {
            moved = Some(sim.now - t);
            break;
        }
    }
    let moved = moved.expect("the relayed path moves to r(2)");
    assert!(moved <= Duration::from_secs(10), "after {moved:?}");
    assert_eq!((sim.home(0), sim.home(1)), (Some(r(2)), Some(r(2))));
    let (path, endpoint, received) = sim.ping();
    assert_eq!(
        (path.as_str(), endpoint, received),
        ("relay", Some(r(2)), 2)
    );

    // r(1) comes back, restarted (no presence, no relay pairs): the nodes register again (the
    // heartbeat misses made them lose it), r(1) is the first registry again, so the homes and
    // the relayed path move back. The pair's permission there is renewed by an exchange at
    // r(1) once both are registered there (at the latest the one a silent relayed path makes
    // after 3.5 s): then the relayed ping works through r(1).
    sim.restart(r(1));
    let mut back = false;
    for _ in 0..600 {
        sim.advance(Duration::from_millis(100));
        if sim.path(0, 1) == Path::Relay(r(1)) && sim.path(1, 0) == Path::Relay(r(1)) {
            back = true;
            break;
        }
    }
    assert!(back, "the relayed path never moved back to r(1)");
    assert_eq!((sim.home(0), sim.home(1)), (Some(r(1)), Some(r(1))));
    sim.advance(Duration::from_secs(8));
    let (path, endpoint, received) = sim.ping();
    assert_eq!(
        (path.as_str(), endpoint, received),
        ("relay", Some(r(1)), 2)
    );
}
