//! Two machines behind simulated NATs, in memory with a virtual clock. The NATs filter
//! inbound datagrams by (address, port) as Linux conntrack does; their mapping is
//! open (no NAT), port-preserving, or symmetric (a new port per destination).

use super::*;
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    Open,
    PortPreserving,
    Symmetric,
}

struct Side {
    m: PeerPath,
    local: SocketAddr,
    public: IpAddr,
    nat: Nat,
    mappings: HashMap<SocketAddr, SocketAddr>,
    sent: HashSet<(SocketAddr, SocketAddr)>,
}

impl Side {
    fn new(nat: Nat, local: &str, public: &str, seed: u64) -> Side {
        Side {
            m: PeerPath::new(Timing::default(), seed),
            local: addr(local),
            public: public.parse().unwrap(),
            nat,
            mappings: HashMap::new(),
            sent: HashSet::new(),
        }
    }

    /// The source address a datagram to `dst` leaves the NAT with.
    fn out(&mut self, dst: SocketAddr) -> SocketAddr {
        let n = self.mappings.len() as u16;
        let ext = match self.nat {
            Nat::Open => self.local,
            Nat::PortPreserving => SocketAddr::new(self.public, self.local.port()),
            Nat::Symmetric => *self
                .mappings
                .entry(dst)
                .or_insert_with(|| SocketAddr::new(self.public, 30000 + n)),
        };
        self.sent.insert((ext, dst));
        ext
    }

    /// Whether a datagram from `src` to `dst` gets through to this side.
    fn admits(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        match self.nat {
            Nat::Open => dst == self.local,
            _ => dst.ip() == self.public && self.sent.contains(&(dst, src)),
        }
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        vec![self.out(addr(REG)), self.local]
    }
}

/// Runs both sides for `secs` of virtual time; returns their paths.
fn run(a_nat: Nat, b_nat: Nat, secs: u64) -> (Path, Path) {
    let mut sides = [
        Side::new(a_nat, "10.0.1.2:51820", "198.51.100.1", 1),
        Side::new(b_nat, "10.0.2.2:51820", "198.51.100.2", 1 << 40),
    ];
    if a_nat == Nat::Open {
        sides[0].local = addr("198.51.100.1:51820");
    }
    if b_nat == Nat::Open {
        sides[1].local = addr("198.51.100.2:51820");
    }
    let t0 = Instant::now();
    let exchange = |sides: &mut [Side; 2], now: Instant| {
        let (ca, cb) = (sides[0].candidates(), sides[1].candidates());
        sides[0].m.on_candidates(now, &cb, addr(REG));
        sides[1].m.on_candidates(now, &ca, addr(REG));
    };
    exchange(&mut sides, t0);
    let mut now = t0;
    let end = t0 + Duration::from_secs(secs);
    while now < end {
        for i in 0..2 {
            if sides[i].m.poll_timeout().is_some_and(|t| t <= now) {
                sides[i].m.handle_timeout(now);
            }
            while let Some(a) = sides[i].m.poll_action() {
                match a {
                    Action::RequestEndpoints => exchange(&mut sides, now),
                    Action::SetPath(_) => {}
                    Action::Probe {
                        via: Path::Relay(r),
                        txid,
                    } => sides[i].m.on_probe_reply(now, r, txid),
                    Action::Probe {
                        via: Path::Direct(dst),
                        txid,
                    } => {
                        let j = 1 - i;
                        let src = sides[i].out(dst);
                        if !sides[j].admits(src, dst) {
                            continue;
                        }
                        sides[j].m.on_probe_from(now, src);
                        // The reply goes back to where the probe came from.
                        let rsrc = sides[j].out(src);
                        if sides[i].admits(rsrc, src) {
                            sides[i].m.on_probe_reply(now, rsrc, txid);
                        }
                    }
                    Action::Probe { .. } => {}
                }
            }
        }
        now += Duration::from_millis(10);
    }
    (sides[0].m.path(), sides[1].m.path())
}

fn is_direct(p: Path) -> bool {
    matches!(p, Path::Direct(_))
}

#[test]
fn two_port_preserving_nats_get_a_direct_path_on_both_sides() {
    let (a, b) = run(Nat::PortPreserving, Nat::PortPreserving, 3);
    assert_eq!(a, Path::Direct(addr("198.51.100.2:51820")));
    assert_eq!(b, Path::Direct(addr("198.51.100.1:51820")));
}

#[test]
fn a_symmetric_nat_talking_to_an_open_node_is_direct_through_a_peer_reflexive_address() {
    let (a, b) = run(Nat::Open, Nat::Symmetric, 3);
    assert_eq!(b, Path::Direct(addr("198.51.100.1:51820")));
    assert!(is_direct(a), "{a:?}");
    assert_eq!(
        a.addr().unwrap().ip(),
        "198.51.100.2".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn two_symmetric_nats_end_up_on_the_relay() {
    let (a, b) = run(Nat::Symmetric, Nat::Symmetric, 10);
    assert_eq!((a, b), (Path::Relay(addr(REG)), Path::Relay(addr(REG))));
}

#[test]
fn a_port_preserving_and_a_symmetric_nat_with_port_dependent_filtering_relay() {
    let (a, b) = run(Nat::PortPreserving, Nat::Symmetric, 10);
    assert_eq!((a, b), (Path::Relay(addr(REG)), Path::Relay(addr(REG))));
}
