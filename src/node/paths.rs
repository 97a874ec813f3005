//! The node's paths: one [`PeerPath`] machine per peer (with a registry configured), and the
//! path the data plane has for each peer as the node last set it or heard it move. The node is
//! the one owner of both: the data plane reports its own moves (roaming) as events.
//!
//! Timers: each machine's next deadline is kept in an ordered set, so finding what is due and
//! the earliest deadline costs a lookup, not a pass over every peer. A machine handed out
//! mutably ([`Paths::machine`]) may have moved its timer: it is marked touched and put back in
//! order at the next [`Paths::due`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use crate::identity::PublicKey;
use crate::node::traversal::{Path, PeerPath, Timing};

/// The path machines and the data plane's paths.
#[derive(Debug, Default)]
pub struct Paths {
    machines: HashMap<PublicKey, PeerPath>,
    data_plane: HashMap<PublicKey, Path>,
    timing: Timing,
    /// Each machine's deadline as last put in order, and the same ordered by time.
    scheduled: HashMap<PublicKey, Instant>,
    deadlines: BTreeSet<(Instant, PublicKey)>,
    /// Machines handed out mutably since they were last put in order.
    touched: HashSet<PublicKey>,
    /// Machines whose timer was read to order them (a measure of the work timers cost).
    examined: u64,
}

impl Paths {
    /// No machines, no known paths; machines run with `timing`.
    pub fn new(timing: Timing) -> Self {
        Paths {
            timing,
            ..Paths::default()
        }
    }

    /// `key`'s machine, if it has one.
    pub fn machine(&mut self, key: &PublicKey) -> Option<&mut PeerPath> {
        let m = self.machines.get_mut(key)?;
        self.touched.insert(*key);
        Some(m)
    }

    /// `key`'s machine, made (seeded with `seed`) if it has none.
    pub fn machine_or_new(&mut self, key: PublicKey, seed: impl FnOnce() -> u64) -> &mut PeerPath {
        let timing = self.timing;
        self.touched.insert(key);
        self.machines
            .entry(key)
            .or_insert_with(|| PeerPath::new(timing, seed()))
    }

    /// Number of machines (peers the node has dealt with since it started).
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// Whether there is no machine.
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// How many times a machine's timer was read to put it in order, in all.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Puts the touched machines' deadlines back in order.
    fn reschedule(&mut self) {
        for key in std::mem::take(&mut self.touched) {
            if let Some(old) = self.scheduled.remove(&key) {
                self.deadlines.remove(&(old, key));
            }
            self.examined += 1;
            if let Some(t) = self.machines.get(&key).and_then(|m| m.poll_timeout()) {
                self.scheduled.insert(key, t);
                self.deadlines.insert((t, key));
            }
        }
    }

    /// `key`'s machine adopts the path the data plane has, if it differs (a configured
    /// endpoint the machine never set, or a roamed one).
    pub fn adopt_data_plane_path(&mut self, now: Instant, key: &PublicKey) {
        let known = self.data_plane.get(key).copied();
        if let (Some(m), Some(p)) = (self.machines.get_mut(key), known) {
            self.touched.insert(*key);
            if p != Path::None {
                m.on_data_plane_path(now, p);
            }
        }
    }

    /// The path `key`'s machine chose, if it has a machine.
    pub fn machine_path(&self, key: &PublicKey) -> Option<Path> {
        self.machines.get(key).map(|m| m.path())
    }

    /// Whether `key` has a machine.
    pub fn has_machine(&self, key: &PublicKey) -> bool {
        self.machines.contains_key(key)
    }

    /// Every peer with a machine.
    pub fn keys(&self) -> Vec<PublicKey> {
        self.machines.keys().copied().collect()
    }

    /// Peers whose machine is due at `now`, earliest first (they are touched: the caller
    /// fires their timers).
    pub fn due(&mut self, now: Instant) -> Vec<PublicKey> {
        self.reschedule();
        let mut due = Vec::new();
        while let Some(&(t, key)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            self.scheduled.remove(&key);
            self.touched.insert(key);
            due.push(key);
        }
        due
    }

    /// The earliest timer of any machine: the first in order, unless a touched machine (whose
    /// timer may have moved) has an earlier one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ordered = self
            .deadlines
            .iter()
            .find(|(_, k)| !self.touched.contains(k))
            .map(|(t, _)| *t);
        let touched = self
            .touched
            .iter()
            .filter_map(|k| self.machines.get(k)?.poll_timeout());
        ordered.into_iter().chain(touched).min()
    }

    /// Forgets `key`'s machine; with `in_data_plane` false, also its data-plane path.
    pub fn remove(&mut self, key: &PublicKey, in_data_plane: bool) {
        self.machines.remove(key);
        self.touched.remove(key);
        if let Some(old) = self.scheduled.remove(key) {
            self.deadlines.remove(&(old, *key));
        }
        if !in_data_plane {
            self.data_plane.remove(key);
        }
    }

    /// The data plane has `key` (its path is kept if it had one).
    pub fn added(&mut self, key: PublicKey) {
        self.data_plane.entry(key).or_insert(Path::None);
    }

    /// The node told the data plane `key`'s path.
    pub fn set(&mut self, key: PublicKey, path: Path) {
        self.data_plane.insert(key, path);
    }

    /// The data plane moved `key`'s path by itself: the machine adopts it.
    pub fn roamed(&mut self, now: Instant, key: PublicKey, path: Path) {
        self.data_plane.insert(key, path);
        if let Some(m) = self.machines.get_mut(&key) {
            self.touched.insert(key);
            m.on_data_plane_path(now, path);
        }
    }

    /// The path to use for `key` now: the data plane's, else the machine's.
    pub fn current(&self, key: &PublicKey) -> Path {
        self.data_plane
            .get(key)
            .copied()
            .or_else(|| self.machines.get(key).map(|m| m.path()))
            .unwrap_or(Path::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_new_machine_adopts_the_data_planes_path_and_follows_its_roaming() {
        let k = Identity::from_seed([4; 32]).public_key();
        let now = Instant::now();
        let a = Path::Direct("198.51.100.2:1".parse().unwrap());
        let b = Path::Direct("198.51.100.3:1".parse().unwrap());
        let mut paths = Paths::default();
        paths.added(k);
        assert_eq!(paths.current(&k), Path::None);
        paths.set(k, a);
        assert_eq!(paths.machine_or_new(k, || 1).path(), Path::None);
        paths.adopt_data_plane_path(now, &k);
        assert_eq!(paths.machine_path(&k), Some(a));
        paths.roamed(now, k, b);
        assert_eq!(paths.machine(&k).unwrap().path(), b);
        assert_eq!(paths.current(&k), b);
        paths.remove(&k, false);
        assert!(!paths.has_machine(&k));
        assert_eq!(paths.current(&k), Path::None);
    }

    #[test]
    fn a_timer_round_among_ten_thousand_machines_examines_only_the_touched_ones() {
        let t0 = Instant::now();
        let keys: Vec<PublicKey> = (0..10_000u32)
            .map(|i| {
                let mut seed = [9u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                Identity::from_seed(seed).public_key()
            })
            .collect();
        let mut paths = Paths::default();
        for k in &keys {
            paths.machine_or_new(*k, || 1);
        }
        let busy = keys[4321];
        paths.machine(&busy).unwrap().connect(t0);
        // The first round puts every new machine in order, once; only the punching one is due.
        assert_eq!(paths.due(t0), vec![busy]);
        let first = paths.examined();
        assert_eq!(first, 10_000);
        let mut now = t0;
        let mut fired = 0;
        for _ in 0..200 {
            let next = paths.poll_timeout().expect("the punch and its retries");
            assert!(next >= now);
            now = next;
            for k in paths.due(now) {
                assert_eq!(k, busy);
                paths.machine(&k).unwrap().handle_timeout(now);
                while paths.machine(&k).unwrap().poll_action().is_some() {}
                fired += 1;
            }
        }
        assert!(fired >= 200);
        // Each round re-ordered the one machine it touched, never the 9,999 idle ones.
        assert!(
            paths.examined() - first <= 2 * fired,
            "{} examined for {fired} timers",
            paths.examined() - first
        );
        paths.remove(&busy, false);
        assert_eq!(paths.poll_timeout(), None);
        assert!(paths
            .due(now + std::time::Duration::from_secs(3600))
            .is_empty());
    }
}
