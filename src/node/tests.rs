//! Two [`Node`]s and a registry in memory with a virtual clock: every rule of the node core
//! (trust answered with typed replies, probes, pings, paths) exercised without a socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::*;
use crate::error::ErrorCode;
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Hostname, PeerRef, DEFAULT_NETWORK};
use crate::node::control::ControlPlane;
use crate::node::registry_client::ClientConfig;
use crate::node::traversal::Path;
use crate::node::trust::TrustStore;
use crate::node::views::{NodeEvent, TrustStanding};
use crate::wg::DataPlaneEvent;
use crate::wire::probe::{self, Probe};
use crate::wire::relay;

use super::sim::{id, Sim, T0};

#[test]
fn handshake_approve_and_untrust_are_answered_with_typed_replies() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    let (ka, kb) = (sim.key(0), sim.key(1));
    let mut r = sim.call(0, |reply| NodeCommand::Handshake {
        peer: PeerRef::Hostname(Hostname::new("node-b").unwrap()),
        justification: "jobs".into(),
        reply,
    });
    let view = r.try_recv().unwrap().unwrap().unwrap();
    assert_eq!(
        (view.public_key, view.state),
        (kb, TrustStanding::Requested)
    );
    assert!(sim.hosts[1].events.contains(&NodeEvent::TrustRequest {
        from: ka,
        hostname: Some(Hostname::new("node-a").unwrap()),
        justification: "jobs".into(),
    }));
    let mut r = sim.call(1, |reply| NodeCommand::Pending { reply });
    let pending = r.try_recv().unwrap().unwrap().pending;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].peer.public_key,
            pending[0].justification.as_str()
        ),
        (ka, "jobs")
    );

    let mut r = sim.call(1, |reply| NodeCommand::Approve {
        peer: PeerRef::PublicKey(ka),
        reply,
    });
    let view = r.try_recv().unwrap().unwrap().unwrap();
    assert_eq!(view.state, TrustStanding::Trusted);
    for (i, other) in [(0, kb), (1, ka)] {
        let h = &sim.hosts[i];
        assert!(
            h.effects
                .iter()
                .any(|e| matches!(e, Effect::AddPeer { key, .. } if *key == other)),
            "{:?}",
            h.effects
        );
        assert!(h.events.contains(&NodeEvent::PeerTrusted { peer: other }));
    }

    sim.advance(Duration::from_secs(1));
    let mut r = sim.call(0, |reply| NodeCommand::Untrust {
        peer: PeerRef::PublicKey(kb),
        reply,
    });
    let view = r.try_recv().unwrap().unwrap().unwrap();
    assert_eq!(view.state, TrustStanding::None);
    assert!(sim.hosts[0].effects.contains(&Effect::RemovePeer(kb)));
    assert!(sim.hosts[1].effects.contains(&Effect::RemovePeer(ka)));
    assert!(sim.hosts[1]
        .events
        .contains(&NodeEvent::PeerUntrusted { peer: ka }));
}

#[test]
fn unknown_peers_and_failed_lookups_get_typed_errors() {
    let mut sim = Sim::with_names(&["node-a"], &[]);
    let stranger = id(9).public_key();
    let mut r = sim.call(0, |reply| NodeCommand::Approve {
        peer: PeerRef::Addr48(stranger.addr48()),
        reply,
    });
    assert_eq!(r.try_recv().unwrap().unwrap_err().code, ErrorCode::NotFound);
    let mut r = sim.call(0, |reply| NodeCommand::Ping {
        peer: PeerRef::PublicKey(stranger),
        count: 1,
        reply,
    });
    assert_eq!(r.try_recv().unwrap().unwrap_err().code, ErrorCode::NotFound);
    let mut r = sim.call(0, |reply| NodeCommand::Find {
        hostname: Hostname::new("nobody").unwrap(),
        reply,
    });
    assert_eq!(r.try_recv().unwrap().unwrap_err().code, ErrorCode::NotFound);
    let mut r = sim.call(0, |reply| NodeCommand::Find {
        hostname: Hostname::new("node-a").unwrap(),
        reply,
    });
    let found = r.try_recv().unwrap().unwrap().unwrap();
    assert_eq!(found.public_key, sim.key(0));
}

#[test]
fn trusted_peers_punch_a_direct_path_and_tell_the_data_plane() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.trust_each_other();
    sim.advance(Duration::from_secs(1));
    let (ka, kb) = (sim.key(0), sim.key(1));
    let (a_addr, b_addr) = (sim.hosts[0].addr, sim.hosts[1].addr);
    assert_eq!(sim.path_of(0, kb), Path::Direct(b_addr));
    assert_eq!(sim.path_of(1, ka), Path::Direct(a_addr));
    assert!(sim.hosts[0].effects.contains(&Effect::SetPath {
        key: kb,
        path: Path::Direct(b_addr)
    }));
    assert!(sim.hosts[0].events.contains(&NodeEvent::PathChanged {
        peer: kb,
        path: "direct".into(),
        endpoint: Some(b_addr)
    }));
}

#[test]
fn without_a_direct_path_the_relay_takes_over() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.blocked = true;
    sim.trust_each_other();
    sim.advance(Duration::from_secs(4));
    let kb = sim.key(1);
    assert_eq!(sim.path_of(0, kb), Path::Relay(sim.registry_addr()));
}

/// A probe from `from` to `to` as bytes, stamped `ts`.
fn probe_bytes(from: &Identity, to: PublicKey, txid: u64, ts: u64) -> Vec<u8> {
    Probe {
        reply: false,
        sender: from.public_key(),
        target: to,
        txid,
        timestamp_ms: ts,
    }
    .encode(from)
}

/// Probe replies node `i` sends to `dst` (other transmits are kept out of the way).
fn replies_to(sim: &mut Sim, i: usize, dst: SocketAddr) -> Vec<Probe> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = sim.hosts[i].node.poll_transmit() {
        let payload = match relay::parse(&bytes, relay::RELAY_SEND) {
            Some((_, p)) => p.to_vec(),
            None => bytes,
        };
        if to == dst {
            if let Some(p) = Probe::decode_unverified(&payload).filter(|p| p.reply) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn probes_are_answered_once_and_only_for_trusted_fresh_senders() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.trust_each_other();
    sim.run();
    let a = sim.hosts[0].id.clone();
    let kb = sim.key(1);
    let src: SocketAddr = "198.51.100.77:5000".parse().unwrap();
    let now = sim.now;
    let ts = sim.now_ms();
    let kind = crate::wire::classify::ControlKind::Probe;
    let b = &mut sim.hosts[1].node;

    let p = probe_bytes(&a, kb, 41, ts);
    b.handle_datagram(now, src, kind, &p);
    let got = replies_to(&mut sim, 1, src);
    assert_eq!(got.len(), 1, "a trusted sender's probe is answered");
    assert_eq!((got[0].txid, got[0].target), (41, a.public_key()));

    // The same probe again: a replay, dropped.
    sim.hosts[1].node.handle_datagram(now, src, kind, &p);
    assert!(replies_to(&mut sim, 1, src).is_empty());

    // An untrusted sender gets nothing.
    let stranger = id(7);
    let p = probe_bytes(&stranger, kb, 42, ts);
    sim.hosts[1].node.handle_datagram(now, src, kind, &p);
    assert!(replies_to(&mut sim, 1, src).is_empty());

    // A stale timestamp gets nothing.
    let p = probe_bytes(&a, kb, 43, ts - probe::MAX_SKEW_MS - 1);
    sim.hosts[1].node.handle_datagram(now, src, kind, &p);
    assert!(replies_to(&mut sim, 1, src).is_empty());
}

#[test]
fn relayed_probes_must_name_their_signer_and_come_from_a_registry() {
    let mut sim = Sim::with_names(&["node-a", "node-b", "node-c"], &[]);
    sim.trust_each_other();
    sim.run();
    let a = sim.hosts[0].id.clone();
    let (kb, kc) = (sim.key(1), sim.key(2));
    let reg = sim.registry_addr();
    let now = sim.now;
    let ts = sim.now_ms();
    let relayed = |from| crate::wire::classify::ControlKind::RelayedProbe(from);

    // The relay header names node-c, the probe is signed by node-a: refused.
    let p = probe_bytes(&a, kb, 51, ts);
    sim.hosts[1]
        .node
        .handle_datagram(now, reg, relayed(kc.addr48()), &p);
    assert!(replies_to(&mut sim, 1, reg).is_empty());

    // From an address that is not a registry: refused.
    let elsewhere: SocketAddr = "198.51.100.9:7000".parse().unwrap();
    sim.hosts[1]
        .node
        .handle_datagram(now, elsewhere, relayed(a.addr48()), &p);
    assert!(replies_to(&mut sim, 1, elsewhere).is_empty());

    // Named right, through the registry: answered through the registry.
    sim.hosts[1]
        .node
        .handle_datagram(now, reg, relayed(a.addr48()), &p);
    let got = replies_to(&mut sim, 1, reg);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].txid, 51);
}

#[test]
fn a_ping_session_reports_round_trips() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.trust_each_other();
    sim.advance(Duration::from_secs(1));
    let kb = sim.key(1);
    let b_addr = sim.hosts[1].addr;
    let (tx, mut rx) = oneshot::channel();
    let now = sim.now;
    sim.hosts[0].node.handle_command(
        now,
        NodeCommand::Ping {
            peer: PeerRef::PublicKey(kb),
            count: 3,
            reply: tx,
        },
    );
    // Each probe takes 10 ms there and 10 ms back; they go out every 250 ms.
    for k in 0..3u32 {
        if k > 0 {
            sim.now = now + pings::PING_INTERVAL * k;
            let t = sim.now;
            sim.hosts[0].node.handle_timeout(t);
        }
        for _ in 0..2 {
            let wire = sim.collect();
            sim.now += Duration::from_millis(10);
            for (from, to, bytes) in wire {
                sim.deliver(from, to, &bytes);
            }
        }
        if k < 2 {
            assert!(rx.try_recv().is_err(), "answered before the last reply");
        }
    }
    // Every reply is in: the answer comes at once.
    let report = rx.try_recv().unwrap().unwrap();
    assert_eq!(report.peer, kb);
    assert_eq!(
        (report.path.as_str(), report.endpoint),
        ("direct", Some(b_addr))
    );
    assert_eq!((report.sent, report.received), (3, 3));
    assert_eq!(report.rtt_ms, vec![Some(20.0); 3]);
    assert_eq!(report.avg_ms, Some(20.0));
}

#[test]
fn a_ping_session_times_out_missing_replies() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.trust_each_other();
    sim.advance(Duration::from_secs(1));
    let kb = sim.key(1);
    sim.drop_from = Some(1);
    let mut r = sim.call(0, |reply| NodeCommand::Ping {
        peer: PeerRef::PublicKey(kb),
        count: 2,
        reply,
    });
    sim.advance(Duration::from_millis(1200));
    assert!(r.try_recv().is_err(), "still waiting for the last reply");
    sim.advance(Duration::from_millis(100));
    let report = r.try_recv().unwrap().unwrap();
    assert_eq!((report.sent, report.received), (2, 0));
    assert_eq!(report.rtt_ms, vec![None, None]);
    assert_eq!(report.avg_ms, None);
}

#[test]
fn a_ping_without_a_path_starts_one_and_answers_once_the_relay_takes_over() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.blocked = true;
    sim.trust_each_other();
    let kb = sim.key(1);
    let mut r = sim.call(0, |reply| NodeCommand::Ping {
        peer: PeerRef::PublicKey(kb),
        count: 1,
        reply,
    });
    // No path yet (direct datagrams are blocked): the ping waits instead of failing.
    assert!(r.try_recv().is_err());
    sim.advance(Duration::from_secs(5));
    let report = r.try_recv().unwrap().unwrap();
    assert_eq!(report.path, "relay");
}

#[test]
fn a_ping_that_never_gets_a_path_answers_connection_failed_after_the_path_wait() {
    let t0 = Instant::now();
    let kb = id(1).public_key();
    let mut node = lonely_node(kb, t0);
    let (tx, mut rx) = oneshot::channel();
    node.handle_command(
        t0,
        NodeCommand::Ping {
            peer: PeerRef::PublicKey(kb),
            count: 1,
            reply: tx,
        },
    );
    let mut now = t0;
    while now < t0 + crate::node::pings::PATH_WAIT - Duration::from_millis(100) {
        now += Duration::from_millis(100);
        node.handle_timeout(now);
        assert!(
            rx.try_recv().is_err(),
            "answered before the path wait ended"
        );
    }
    now += Duration::from_millis(200);
    node.handle_timeout(now);
    let err = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::ConnectionFailed);
}

/// A node that trusts `peer` from its store and has a registry that never answers.
fn lonely_node(peer: PublicKey, now: Instant) -> Node {
    let me = id(0);
    let trust = TrustStore::trusting(me.public_key(), peer, T0);
    let reg: SocketAddr = "192.0.2.1:7000".parse().unwrap();
    let plane = ControlPlane::new(me, ClientConfig::new(vec![reg]), trust, now, T0);
    let config = NodeConfig {
        network: DEFAULT_NETWORK,
        static_peers: Vec::new(),
        has_registry: true,
    };
    Node::new(plane, config, [3; 32], now)
}

#[test]
fn a_peer_loaded_at_start_waits_for_traffic_and_a_needs_path_starts_a_punch() {
    let t0 = Instant::now();
    let kb = id(1).public_key();
    let mut node = lonely_node(kb, t0);
    assert_eq!(
        node.poll_effect(),
        Some(Effect::SetRelays(vec!["192.0.2.1:7000".parse().unwrap()]))
    );
    assert!(matches!(node.poll_effect(), Some(Effect::AddPeer { key, .. }) if key == kb));
    // Loaded from the store: in the data plane, but no path machine (no timer, no probe, no
    // registry request) until there is something to carry.
    assert!(!node.paths.has_machine(&kb));
    node.handle_data_plane_event(t0, DataPlaneEvent::NeedsPath(kb));
    assert!(node.paths.machine(&kb).unwrap().is_punching());
    // The first punch finds nothing and ends; the next is seconds away.
    let mut now = t0;
    while node.paths.machine(&kb).unwrap().is_punching() {
        now += Duration::from_millis(100);
        node.handle_timeout(now);
        assert!(now < t0 + Duration::from_secs(10), "the punch never ended");
    }
    let next = node.poll_timeout().unwrap();
    assert!(next > now + Duration::from_millis(500));
    assert_eq!(node.path(&kb), Path::None);
    // Traffic without a path: punch now.
    node.handle_data_plane_event(now, DataPlaneEvent::NeedsPath(kb));
    assert!(node.paths.machine(&kb).unwrap().is_punching());
    // An event for a peer without a machine changes nothing.
    let stranger = id(8).public_key();
    node.handle_data_plane_event(now, DataPlaneEvent::NeedsPath(stranger));
    assert!(!node.paths.has_machine(&stranger));
}

#[test]
fn a_roaming_event_moves_the_path_machine_and_is_reported_once() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.trust_each_other();
    sim.advance(Duration::from_secs(1));
    let kb = sim.key(1);
    let moved = Path::Direct("198.51.100.200:41000".parse().unwrap());
    let now = sim.now;
    let a = &mut sim.hosts[0];
    a.events.clear();
    a.node.handle_data_plane_event(
        now,
        DataPlaneEvent::Roamed {
            key: kb,
            path: moved,
        },
    );
    assert_eq!(a.node.paths.machine_path(&kb), Some(moved));
    assert_eq!(a.node.path(&kb), moved);
    a.node.handle_data_plane_event(
        now,
        DataPlaneEvent::Roamed {
            key: kb,
            path: moved,
        },
    );
    let events: Vec<_> = std::iter::from_fn(|| a.node.poll_event()).collect();
    assert_eq!(
        events,
        vec![NodeEvent::PathChanged {
            peer: kb,
            path: "direct".into(),
            endpoint: moved.addr()
        }]
    );
}

#[test]
fn static_peers_are_trusted_with_their_configured_path_and_never_removed() {
    let t0 = Instant::now();
    let me = id(0);
    let peer = id(1).public_key();
    let plane = ControlPlane::new(
        me.clone(),
        ClientConfig::new(vec![]),
        TrustStore::in_memory(me.public_key()),
        t0,
        T0,
    );
    let config = NodeConfig {
        network: DEFAULT_NETWORK,
        static_peers: vec![peer],
        has_registry: false,
    };
    let mut node = Node::new(plane, config, [1; 32], t0);
    let ep = Path::Direct("127.0.0.1:4000".parse().unwrap());
    node.set_known_path(t0, peer, ep);
    assert!(node.is_allowed(&peer));
    let (tx, mut rx) = oneshot::channel();
    node.handle_command(
        t0,
        NodeCommand::Handshake {
            peer: PeerRef::PublicKey(peer),
            justification: String::new(),
            reply: tx,
        },
    );
    let view = rx.try_recv().unwrap().unwrap().unwrap();
    assert_eq!(view.state, TrustStanding::Static);
    // A ping goes out at once along the configured endpoint.
    let (tx, _rx) = oneshot::channel();
    node.handle_command(
        t0,
        NodeCommand::Ping {
            peer: PeerRef::PublicKey(peer),
            count: 1,
            reply: tx,
        },
    );
    let (to, bytes) = node.poll_transmit().unwrap();
    assert_eq!(Path::Direct(to), ep);
    assert!(probe::is_probe(&bytes));
}

#[test]
fn a_peer_is_up_once_per_session_and_down_when_trust_goes() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    sim.trust_each_other();
    sim.advance(Duration::from_secs(1));
    let (kb, stranger) = (sim.key(1), id(9).public_key());
    let now = sim.now;
    let a = &mut sim.hosts[0];
    a.events.clear();
    // The first handshake brings the peer up; rekeys (more handshakes) say nothing new, and a
    // stranger's handshake (impossible in the data plane, checked anyway) is not reported.
    for _ in 0..3 {
        a.node
            .handle_data_plane_event(now, DataPlaneEvent::HandshakeDone(kb));
    }
    a.node
        .handle_data_plane_event(now, DataPlaneEvent::HandshakeDone(stranger));
    let events: Vec<_> = std::iter::from_fn(|| a.node.poll_event()).collect();
    assert_eq!(events, vec![NodeEvent::PeerUp { peer: kb }]);

    let mut r = sim.call(0, |reply| NodeCommand::Untrust {
        peer: PeerRef::PublicKey(kb),
        reply,
    });
    r.try_recv().unwrap().unwrap();
    let a = &mut sim.hosts[0];
    let down = |e: &NodeEvent| *e == NodeEvent::PeerDown { peer: kb };
    assert_eq!(
        a.events.iter().filter(|e| down(e)).count(),
        1,
        "{:?}",
        a.events
    );
    // Up again after a new session.
    a.events.clear();
    a.node
        .handle_data_plane_event(now, DataPlaneEvent::HandshakeDone(kb));
    let events: Vec<_> = std::iter::from_fn(|| a.node.poll_event()).collect();
    assert!(
        !events.contains(&NodeEvent::PeerUp { peer: kb }),
        "an untrusted peer is not reported up: {events:?}"
    );
}

/// Node 1 asks node 0 for trust by name: node 0 holds a pending request from `node-b`.
fn stranger_asks(sim: &mut Sim) {
    let mut r = sim.call(1, |reply| NodeCommand::Handshake {
        peer: PeerRef::Hostname(Hostname::new("node-a").unwrap()),
        justification: "let me in".into(),
        reply,
    });
    r.try_recv().unwrap().unwrap();
    let pending = sim.hosts[0].node.view(&sim.key(1));
    assert_eq!(pending.state, TrustStanding::Pending);
    assert_eq!(pending.hostname, Some(Hostname::new("node-b").unwrap()));
}

#[test]
fn a_pending_strangers_address_or_name_never_resolves_for_handshake_or_ping() {
    let mut sim = Sim::with_names(&["node-a", "node-b"], &[]);
    let kb = sim.key(1);
    stranger_asks(&mut sim);
    // Its address, and (with no registry to ask) its name, name no peer of ours: naming them
    // must not complete trust.
    let by_addr = PeerRef::Addr48(kb.addr48());
    let by_name = PeerRef::Hostname(Hostname::new("node-b").unwrap());
    sim.hosts[0].node.config.has_registry = false;
    for peer in [by_addr.clone(), by_name.clone()] {
        let p = peer.clone();
        let mut r = sim.call(0, |reply| NodeCommand::Handshake {
            peer: p,
            justification: String::new(),
            reply,
        });
        assert_eq!(r.try_recv().unwrap().unwrap_err().code, ErrorCode::NotFound);
        let mut r = sim.call(0, |reply| NodeCommand::Ping {
            peer,
            count: 1,
            reply,
        });
        assert_eq!(r.try_recv().unwrap().unwrap_err().code, ErrorCode::NotFound);
    }
    assert_eq!(sim.hosts[0].node.view(&kb).state, TrustStanding::Pending);
    assert!(!sim.hosts[0]
        .effects
        .iter()
        .any(|e| matches!(e, Effect::AddPeer { .. })));
    // The request is answered as listed: `approve` by the name `pending` shows.
    let mut r = sim.call(0, |reply| NodeCommand::Approve {
        peer: by_name,
        reply,
    });
    let view = r.try_recv().unwrap().unwrap().unwrap();
    assert_eq!((view.public_key, view.state), (kb, TrustStanding::Trusted));
    // Once trusted, its address resolves.
    sim.hosts[0].node.config.has_registry = true;
    let mut r = sim.call(0, |reply| NodeCommand::Handshake {
        peer: by_addr,
        justification: String::new(),
        reply,
    });
    assert_eq!(r.try_recv().unwrap().unwrap().unwrap().public_key, kb);
}

#[test]
fn a_name_shared_by_a_peer_we_asked_and_a_stranger_resolves_to_ours_or_is_refused() {
    let me = id(0);
    let ours = id(1).public_key();
    let stranger = id(2).public_key();
    let name = Hostname::new("node-b").unwrap();
    let mut trust = TrustStore::in_memory(me.public_key());
    trust.request(ours, Some(name.clone()), "", T0).unwrap();
    trust
        .on_request(stranger, Some(name.clone()), "", [1; 16], T0, T0)
        .unwrap();
    let plane = ControlPlane::new(me, ClientConfig::new(vec![]), trust, Instant::now(), T0);
    let config = NodeConfig {
        network: DEFAULT_NETWORK,
        static_peers: Vec::new(),
        has_registry: false,
    };
    let node = Node::new(plane, config, [3; 32], Instant::now());
    let by_name = PeerRef::Hostname(name);
    assert_eq!(
        node.resolve_known(&by_name, core::Naming::Established)
            .unwrap(),
        Some(ours)
    );
    let e = node
        .resolve_known(&by_name, core::Naming::Unique)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(
        node.resolve_known(&PeerRef::PublicKey(stranger), core::Naming::Unique)
            .unwrap(),
        Some(stranger)
    );
}

/// `n` generated peer keys (distinct seeds, never `id(0)`).
fn many_keys(n: u32) -> Vec<PublicKey> {
    (0..n)
        .map(|i| {
            let mut seed = [0x77u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            Identity::from_seed(seed).public_key()
        })
        .collect()
}

/// A node whose store trusts `peers`, with a registry that never answers; and what it sent
/// and how often it woke in `secs` virtual seconds, each timer fired when due.
fn idle_run(peers: &[PublicKey], secs: u64) -> (Node, usize, usize) {
    let t0 = Instant::now();
    let me = id(0);
    let mut trust = TrustStore::in_memory(me.public_key());
    for k in peers {
        trust.request(*k, None, "", T0).unwrap();
        trust
            .on_response(
                *k,
                crate::wire::registry::TrustDecision::Approve,
                T0 + 1,
                T0,
            )
            .unwrap();
    }
    let reg: SocketAddr = "192.0.2.1:7000".parse().unwrap();
    let plane = ControlPlane::new(me, ClientConfig::new(vec![reg]), trust, t0, T0);
    let config = NodeConfig {
        network: DEFAULT_NETWORK,
        static_peers: Vec::new(),
        has_registry: true,
    };
    let mut node = Node::new(plane, config, [3; 32], t0);
    let (mut sent, mut wakes) = (0, 0);
    while let Some(t) = node.poll_timeout() {
        if t > t0 + Duration::from_secs(secs) {
            break;
        }
        node.handle_timeout(t);
        wakes += 1;
        while node.poll_transmit().is_some() {
            sent += 1;
        }
    }
    while node.poll_effect().is_some() {}
    (node, sent, wakes)
}

#[test]
fn ten_thousand_idle_peers_cost_no_timer_probe_or_request_of_their_own() {
    let (one, sent_one, wakes_one) = idle_run(&many_keys(1), 120);
    let (many, sent_many, wakes_many) = idle_run(&many_keys(10_000), 120);
    assert_eq!(many.plane().trust().trusted().count(), 10_000);
    // Not one path machine, so no timer is examined for them.
    assert_eq!(many.paths.len(), 0);
    assert_eq!(many.paths.examined(), 0);
    // Two minutes of timers: the same datagrams (registrations) and wake-ups as with 1 peer.
    assert_eq!(sent_many, sent_one);
    assert_eq!(wakes_many, wakes_one);
    assert_eq!(one.paths.len(), 0);
}
