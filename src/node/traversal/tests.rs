//! The path machine in memory, with a virtual clock; `nat_sim` runs two of them behind
//! simulated NATs.

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const REG: &str = "203.0.113.10:7946";

/// Drains actions: (probes sent, paths set, endpoint requests).
fn drain(m: &mut PeerPath) -> (Vec<(Path, u64)>, Vec<Path>, usize) {
    let (mut probes, mut paths, mut reqs) = (vec![], vec![], 0);
    while let Some(a) = m.poll_action() {
        match a {
            Action::Probe { via, txid } => probes.push((via, txid)),
            Action::SetPath(p) => paths.push(p),
            Action::RequestEndpoints => reqs += 1,
        }
    }
    (probes, paths, reqs)
}

fn run_until(m: &mut PeerPath, now: &mut Instant, until: Instant) -> Vec<Action> {
    let mut all = vec![];
    let mut same = 0;
    while let Some(t) = m.poll_timeout() {
        if t > until {
            break;
        }
        same = if t <= *now { same + 1 } else { 0 };
        assert!(same < 100, "a timer does not advance: {m:?}");
        *now = t.max(*now);
        m.handle_timeout(*now);
        all.extend(std::iter::from_fn(|| m.poll_action()));
    }
    *now = until;
    all
}

#[test]
fn candidates_are_probed_lan_first_and_the_first_reply_wins() {
    let t0 = Instant::now();
    let mut m = PeerPath::new(Timing::default(), 1);
    m.connect(t0);
    let (_, _, reqs) = drain(&mut m);
    assert_eq!(reqs, 1, "connect asks the registry");
    let public = addr("198.51.100.7:51820");
    let lan = addr("10.1.0.7:51820");
    m.on_candidates(t0, &[public, lan], addr(REG));
    assert_eq!(m.candidates(), vec![lan, public], "LAN candidates first");
    m.handle_timeout(t0);
    let (probes, _, _) = drain(&mut m);
    let vias: Vec<Path> = probes.iter().map(|p| p.0).collect();
    assert_eq!(vias, vec![Path::Direct(lan), Path::Direct(public)]);
    // The public one answers first: it wins at once.
    let t1 = t0 + Duration::from_millis(30);
    m.on_probe_reply(t1, public, probes[1].1);
    assert_eq!(drain(&mut m).1, vec![Path::Direct(public)]);
    assert_eq!(m.rtt(), Some(Duration::from_millis(30)));
    // A reply with an unknown txid, or from another address, changes nothing.
    m.on_probe_reply(t1, lan, 999_999);
    m.on_probe_reply(t1, addr("192.0.2.1:1"), probes[0].1);
    assert_eq!(m.path(), Path::Direct(public));
}

#[test]
fn a_lan_candidate_that_answers_later_still_wins() {
    let t0 = Instant::now();
    let mut m = PeerPath::new(Timing::default(), 1);
    let public = addr("198.51.100.7:51820");
    let lan = addr("10.1.0.7:51820");
    m.on_candidates(t0, &[public, lan], addr(REG));
    m.handle_timeout(t0);
    let (probes, _, _) = drain(&mut m);
    m.on_probe_reply(t0 + Duration::from_millis(5), public, probes[1].1);
    m.on_probe_reply(t0 + Duration::from_millis(9), lan, probes[0].1);
    assert_eq!(
        drain(&mut m).1,
        vec![Path::Direct(public), Path::Direct(lan)]
    );
    // And a public reply afterwards does not downgrade it.
    let mut now = t0 + Duration::from_millis(10);
    let acts = run_until(&mut m, &mut now, t0 + Duration::from_millis(250));
    let p = acts.iter().find_map(|a| match a {
        Action::Probe {
            via: Path::Direct(a),
            txid,
        } if *a == public => Some(*txid),
        _ => None,
    });
    m.on_probe_reply(now, public, p.unwrap());
    assert_eq!(m.path(), Path::Direct(lan));
}

#[test]
fn without_any_reply_the_relay_takes_over_after_relay_after() {
    let timing = Timing::default();
    let t0 = Instant::now();
    let mut m = PeerPath::new(timing, 1);
    m.connect(t0);
    m.on_candidates(t0, &[addr("198.51.100.7:51820")], addr(REG));
    let mut now = t0;
    let acts = run_until(
        &mut m,
        &mut now,
        t0 + timing.relay_after - Duration::from_millis(1),
    );
    assert!(!acts.iter().any(|a| matches!(a, Action::SetPath(_))));
    assert_eq!(m.path(), Path::None);
    let acts = run_until(&mut m, &mut now, t0 + timing.relay_after);
    assert!(acts.contains(&Action::SetPath(Path::Relay(addr(REG)))));
    // Punching stops after punch_duration and is retried after retry_min, asking the
    // registry again.
    run_until(&mut m, &mut now, t0 + timing.punch_duration);
    assert!(!m.is_punching());
    let acts = run_until(
        &mut m,
        &mut now,
        t0 + timing.punch_duration + timing.retry_min,
    );
    assert!(acts.contains(&Action::RequestEndpoints), "{acts:?}");
    assert!(m.is_punching());
}

#[test]
fn a_relayed_peer_upgrades_to_direct_when_a_probe_succeeds() {
    let timing = Timing::default();
    let t0 = Instant::now();
    let mut m = PeerPath::new(timing, 1);
    let public = addr("198.51.100.7:51820");
    m.on_candidates(t0, &[public], addr(REG));
    let mut now = t0;
    run_until(&mut m, &mut now, t0 + Duration::from_secs(20));
    assert_eq!(m.path(), Path::Relay(addr(REG)));
    // A later punch round: the NAT now lets it through.
    m.on_candidates(now, &[public], addr(REG));
    m.handle_timeout(now);
    let (probes, _, _) = drain(&mut m);
    let txid = probes
        .iter()
        .find(|p| p.0 == Path::Direct(public))
        .unwrap()
        .1;
    m.on_probe_reply(now, public, txid);
    assert_eq!(m.path(), Path::Direct(public));
}

#[test]
fn a_direct_path_adopted_from_the_data_plane_settles_the_punch_so_its_death_asks_at_once() {
    let timing = Timing::default();
    let t0 = Instant::now();
    let mut m = PeerPath::new(timing, 1);
    let public = addr("198.51.100.7:51820");
    m.on_candidates(t0, &[public], addr(REG));
    m.handle_timeout(t0);
    let (probes, _, _) = drain(&mut m);
    // The peer's first packets arrive before any probe reply: the data plane roams there.
    m.on_data_plane_path(t0, Path::Direct(public));
    m.on_probe_reply(t0, public, probes[0].1);
    // No reply after that: the path dies (a remapped NAT) while the punch would still
    // be running its full course; the machine asks the registry for fresh endpoints at
    // once rather than at a later retry.
    let mut now = t0;
    let until = t0 + timing.dead_after + timing.keepalive;
    assert!(
        until < t0 + timing.punch_duration,
        "checked within the first punch"
    );
    let acts = run_until(&mut m, &mut now, until);
    assert!(
        acts.contains(&Action::SetPath(Path::Relay(addr(REG)))),
        "{acts:?}"
    );
    assert!(acts.contains(&Action::RequestEndpoints), "{acts:?}");
}

#[test]
fn a_silent_direct_path_falls_back_to_the_relay_and_punches_again() {
    let timing = Timing::default();
    let t0 = Instant::now();
    let mut m = PeerPath::new(timing, 1);
    let public = addr("198.51.100.7:51820");
    m.on_candidates(t0, &[public], addr(REG));
    m.handle_timeout(t0);
    let (probes, _, _) = drain(&mut m);
    m.on_probe_reply(t0, public, probes[0].1);
    assert_eq!(m.path(), Path::Direct(public));
    // Keepalives are answered for a while...
    let mut now = t0;
    for _ in 0..5 {
        let t = m.poll_timeout().unwrap();
        now = t;
        m.handle_timeout(now);
        let acts: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
        for a in acts {
            if let Action::Probe { via, txid } = a {
                if via == Path::Direct(public) {
                    m.on_probe_reply(now, public, txid);
                }
            }
        }
    }
    assert_eq!(m.path(), Path::Direct(public));
    let silent_from = now;
    // ...then nothing: dead within dead_after + one keepalive.
    let acts = run_until(
        &mut m,
        &mut now,
        silent_from + timing.dead_after + timing.keepalive,
    );
    assert!(
        acts.contains(&Action::SetPath(Path::Relay(addr(REG)))),
        "{acts:?}"
    );
    assert!(acts.contains(&Action::RequestEndpoints));
    assert!(m.is_punching());
}

#[test]
fn a_silent_relay_asks_the_registry_again_but_not_every_second() {
    let timing = Timing::default();
    let t0 = Instant::now();
    let mut m = PeerPath::new(timing, 1);
    m.on_candidates(t0, &[addr("198.51.100.7:51820")], addr(REG));
    let mut now = t0;
    run_until(&mut m, &mut now, t0 + timing.punch_duration);
    assert_eq!(m.path(), Path::Relay(addr(REG)));
    assert!(!m.is_punching());
    // Nothing answers on the relay either: one endpoint request per dead_after at most
    // (plus the backoff retries), never one per keepalive.
    let until = now + Duration::from_secs(10);
    let acts = run_until(&mut m, &mut now, until);
    let reqs = acts
        .iter()
        .filter(|a| **a == Action::RequestEndpoints)
        .count();
    assert!((1..=3).contains(&reqs), "{reqs} requests in 10 s: {acts:?}");
}

#[test]
fn a_dead_direct_path_without_a_relay_is_retried_with_backoff() {
    let timing = Timing::default();
    let t0 = Instant::now();
    let mut m = PeerPath::new(timing, 1);
    let public = addr("198.51.100.7:51820");
    m.on_probe_from(t0, public);
    m.handle_timeout(t0);
    let (probes, _, _) = drain(&mut m);
    m.on_probe_reply(t0, public, probes[0].1);
    assert_eq!(m.path(), Path::Direct(public));
    let mut now = t0;
    let acts = run_until(&mut m, &mut now, t0 + Duration::from_secs(30));
    let reqs = acts
        .iter()
        .filter(|a| **a == Action::RequestEndpoints)
        .count();
    assert!((2..=4).contains(&reqs), "{reqs} requests in 30 s");
    assert_eq!(
        m.path(),
        Path::Direct(public),
        "kept: nothing better is known"
    );
    assert_eq!(m.rtt(), None);
}

#[test]
fn a_changed_reflexive_address_punches_again_without_dropping_the_path() {
    let t0 = Instant::now();
    let mut m = PeerPath::new(Timing::default(), 1);
    let public = addr("198.51.100.7:51820");
    m.on_candidates(t0, &[public], addr(REG));
    m.handle_timeout(t0);
    let (probes, _, _) = drain(&mut m);
    m.on_probe_reply(t0, public, probes[0].1);
    let mut now = t0;
    run_until(&mut m, &mut now, t0 + Duration::from_secs(1));
    drain(&mut m);
    m.on_reflexive_changed(now);
    let (_, paths, reqs) = drain(&mut m);
    assert_eq!((paths.len(), reqs), (0, 1));
    assert!(m.is_punching());
}

#[test]
fn a_probe_from_a_new_address_makes_it_a_candidate() {
    let t0 = Instant::now();
    let mut m = PeerPath::new(Timing::default(), 1);
    let prflx = addr("198.51.100.9:31000");
    m.on_probe_from(t0, prflx);
    m.handle_timeout(t0);
    let (probes, _, _) = drain(&mut m);
    assert_eq!(probes[0].0, Path::Direct(prflx));
    m.on_probe_reply(t0, prflx, probes[0].1);
    assert_eq!(m.path(), Path::Direct(prflx));
}

#[test]
fn traffic_without_a_path_connects_at_once() {
    let t0 = Instant::now();
    let mut m = PeerPath::new(Timing::default(), 1);
    m.on_traffic_without_path(t0);
    assert_eq!(drain(&mut m).2, 1);
    assert!(m.is_punching());
    // While punching it does not ask again.
    m.on_traffic_without_path(t0);
    assert_eq!(drain(&mut m).2, 0);
}

mod nat_sim;
