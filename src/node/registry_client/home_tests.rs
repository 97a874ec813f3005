//! The home relay (v1.4) with two registry cores in memory and a virtual clock: the home is
//! the first registry that answers, moves when it stops answering (within the documented
//! time), comes back, and travels signed in the endpoint exchange.

use super::*;
use crate::node::sim::{host_addr, r, Endpoint, Net, T0};

/// A registry client at its address on the simulated network.
type Host = (Client, SocketAddr);

impl Endpoint for Host {
    fn addr(&self) -> SocketAddr {
        self.1
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.0.poll_transmit()
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.0.handle_datagram(now, from, bytes);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now);
    }
}

type Sim = Net<Host>;

impl Sim {
    /// Clients `1..` at registries `r(1)` and `r(2)`, each configured with the registries in
    /// the order given.
    fn with_clients(configs: &[&[SocketAddr]]) -> Self {
        let start = Instant::now();
        let clients = configs
            .iter()
            .enumerate()
            .map(|(i, regs)| {
                let id = crate::node::sim::id(i);
                let cfg = ClientConfig::new(regs.to_vec());
                (Client::new(id, cfg, start, T0), host_addr(i))
            })
            .collect();
        Net::new(&[r(1), r(2)], clients, start)
    }

    /// Moves the clock forward in steps of 100 ms, firing timers; stops early (returning
    /// the time) once `until` holds for the events seen.
    fn advance_until(
        &mut self,
        d: Duration,
        mut until: impl FnMut(&ClientEvent) -> bool,
    ) -> Option<Duration> {
        let end = self.now + d;
        while self.now < end {
            self.tick(Duration::from_millis(100), end);
            let mut hit = false;
            for (c, _) in &mut self.hosts {
                while let Some(ev) = c.poll_event() {
                    hit |= until(&ev);
                }
            }
            if hit {
                return Some(self.now - self.start);
            }
        }
        None
    }

    fn homes(&mut self, i: usize) -> Vec<Option<SocketAddr>> {
        std::iter::from_fn(|| self.hosts[i].0.poll_event())
            .filter_map(|e| match e {
                ClientEvent::HomeChanged { home, .. } => Some(home),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn the_home_is_the_first_configured_registry_that_answers() {
    let mut sim = Sim::with_clients(&[&[r(1), r(2)], &[r(2), r(1)]]);
    assert_eq!(sim.homes(0), vec![Some(r(1))]);
    assert_eq!(sim.homes(1), vec![Some(r(2))]);
    assert_eq!(sim.hosts[0].0.home(), Some(r(1)));
    let status = sim.hosts[0].0.registry_status();
    assert_eq!(
        status.iter().map(|s| s.home).collect::<Vec<_>>(),
        vec![true, false]
    );
    assert!(sim.hosts[0].0.is_answering(r(2)));
    assert!(!sim.hosts[0].0.is_answering(r(3)));
}

#[test]
fn a_registry_down_at_start_is_skipped_until_it_answers() {
    let id = crate::node::sim::id(0);
    let mut sim = Sim::with_clients(&[]);
    sim.set_up(r(1), false);
    let client = Client::new(id, ClientConfig::new(vec![r(1), r(2)]), sim.now, T0);
    sim.hosts.push((client, host_addr(0)));
    sim.run();
    assert_eq!(sim.homes(0), vec![Some(r(2))]);
    sim.set_up(r(1), true);
    // The registration to r(1) is retried with backoff (1, 2, 4 s ...): it answers, and the
    // first registry in the order is the home again.
    let back = sim.advance_until(
        Duration::from_secs(20),
        |e| matches!(e, ClientEvent::HomeChanged { home: Some(h), .. } if *h == r(1)),
    );
    assert!(back.is_some(), "r(1) never became the home again");
}

#[test]
fn a_home_that_stops_answering_is_left_within_heartbeat_plus_timeout_and_taken_back() {
    let mut sim = Sim::with_clients(&[&[r(1), r(2)]]);
    assert_eq!(sim.homes(0), vec![Some(r(1))]);
    // r(1) dies right after its answer: the next heartbeat (20 s) goes unanswered, and 3 s
    // (`home_timeout`) later the home moves: at most 23 s, the documented worst case.
    sim.set_up(r(1), false);
    let moved = sim
        .advance_until(Duration::from_secs(40), |e| {
            matches!(e, ClientEvent::HomeChanged { home: Some(h), previous: Some(p) }
                if *h == r(2) && *p == r(1))
        })
        .expect("the home moves to r(2)");
    assert!(
        moved >= Duration::from_secs(23) && moved <= Duration::from_millis(23_100),
        "moved after {moved:?}"
    );
    assert_eq!(sim.hosts[0].0.home(), Some(r(2)));
    assert!(!sim.hosts[0].0.is_answering(r(1)));
    let status = sim.hosts[0].0.registry_status();
    assert_eq!(
        status.iter().map(|s| s.home).collect::<Vec<_>>(),
        vec![false, true]
    );
    // r(1) comes back: the registration retries reach it, and it is the home again.
    sim.set_up(r(1), true);
    let back = sim.advance_until(
        Duration::from_secs(60),
        |e| matches!(e, ClientEvent::HomeChanged { home: Some(h), .. } if *h == r(1)),
    );
    assert!(back.is_some(), "r(1) never became the home again");
    assert!(sim.hosts[0].0.is_answering(r(1)));
}

#[test]
fn a_request_left_unanswered_moves_the_home_sooner_than_the_heartbeat() {
    let mut sim = Sim::with_clients(&[&[r(1), r(2)], &[r(1), r(2)]]);
    sim.homes(0);
    sim.set_up(r(1), false);
    let peer = sim.hosts[1].0.public_key();
    let now = sim.now;
    // An endpoint request (as a relayed path sends at every punch retry) goes to both.
    sim.hosts[0].0.request_endpoints(now, peer);
    let moved = sim
        .advance_until(
            Duration::from_secs(10),
            |e| matches!(e, ClientEvent::HomeChanged { home: Some(h), .. } if *h == r(2)),
        )
        .expect("the home moves to r(2)");
    assert!(
        moved <= Duration::from_millis(3100),
        "moved after {moved:?}"
    );
}

#[test]
fn the_endpoint_exchange_carries_each_sides_home() {
    let mut sim = Sim::with_clients(&[&[r(1), r(2)], &[r(2), r(1)]]);
    let (a, b) = (sim.hosts[0].0.public_key(), sim.hosts[1].0.public_key());
    sim.hosts[0].0.set_trusted(b, true);
    sim.hosts[1].0.set_trusted(a, true);
    sim.homes(0);
    sim.homes(1);
    let now = sim.now;
    sim.hosts[0].0.request_endpoints(now, b);
    sim.run();
    let info: Vec<ClientEvent> = std::iter::from_fn(|| sim.hosts[0].0.poll_event())
        .filter(|e| matches!(e, ClientEvent::EndpointInfo { .. }))
        .collect();
    assert!(
        matches!(&info[..], [ClientEvent::EndpointInfo { home: Some(h), peer, .. }] if *h == r(2) && *peer == b),
        "{info:?}"
    );
    let asked: Vec<ClientEvent> = std::iter::from_fn(|| sim.hosts[1].0.poll_event())
        .filter(|e| matches!(e, ClientEvent::EndpointRequested { .. }))
        .collect();
    // One push per registry, each carrying a's signed home.
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked
        .iter()
        .all(|e| matches!(e, ClientEvent::EndpointRequested { home: Some(h), .. } if *h == r(1))));
}
