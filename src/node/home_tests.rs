//! Home relays (v1.4) in the node core: two nodes and two registries in memory with a virtual
//! clock, direct datagrams between the nodes blocked (a NAT pair that cannot punch), so every
//! packet is relayed. Checked: each side relays through the other's home; when the home dies
//! both homes move and the relayed path follows, and a relayed ping still works.

use std::net::SocketAddr;
use std::time::Duration;

use super::sim::{r, Sim};
use super::*;
use crate::mapping::PeerRef;
use crate::node::traversal::Path;

impl Sim {
    fn path(&self, i: usize, j: usize) -> Path {
        self.hosts[i].node.path(&self.key(j))
    }

    fn home(&mut self, i: usize) -> Option<SocketAddr> {
        self.hosts[i].node.plane.client().home()
    }

    /// A relayed ping from node 0 to node 1: (path, endpoint, replies).
    fn ping(&mut self) -> (String, Option<SocketAddr>, usize) {
        let k1 = self.key(1);
        let mut rx = self.call(0, |reply| NodeCommand::Ping {
            peer: PeerRef::PublicKey(k1),
            count: 2,
            reply,
        });
        self.advance(Duration::from_secs(2));
        let report = rx.try_recv().unwrap().unwrap();
        (report.path, report.endpoint, report.received)
    }

    /// Node 0 asks node 1 for trust by key and node 1 approves.
    fn trust_by_key(&mut self) {
        let k1 = self.key(1);
        self.trust_each_other_as(PeerRef::PublicKey(k1));
    }
}

#[test]
fn each_side_relays_through_the_others_home() {
    let mut sim = Sim::with_registries(&[&[r(1), r(2)], &[r(2), r(1)]]);
    assert_eq!((sim.home(0), sim.home(1)), (Some(r(1)), Some(r(2))));
    sim.trust_by_key();
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
    let mut sim = Sim::with_registries(&[&[r(1), r(2)], &[r(2)]]);
    sim.trust_by_key();
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.path(0, 1), Path::Relay(r(2)));
    assert_eq!(sim.path(1, 0), Path::Relay(r(2)));
    assert_eq!(sim.ping().2, 2);
}

#[test]
fn when_the_home_dies_the_homes_move_and_the_relayed_path_follows() {
    let mut sim = Sim::with_registries(&[&[r(1), r(2)], &[r(1), r(2)]]);
    sim.trust_by_key();
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
