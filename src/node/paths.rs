//! The node's paths: one [`PeerPath`] machine per peer (with a registry configured), and the
//! path the data plane has for each peer as the node last set it or heard it move. The node is
//! the one owner of both: the data plane reports its own moves (roaming) as events.

use std::collections::HashMap;
use std::time::Instant;

use crate::identity::PublicKey;
use crate::node::traversal::{Path, PeerPath, Timing};

/// The path machines and the data plane's paths.
#[derive(Debug, Default)]
pub struct Paths {
    machines: HashMap<PublicKey, PeerPath>,
    data_plane: HashMap<PublicKey, Path>,
    timing: Timing,
}

impl Paths {
    /// No machines, no known paths; machines run with `timing`.
    pub fn new(timing: Timing) -> Self {
        Paths {
            machines: HashMap::new(),
            data_plane: HashMap::new(),
            timing,
        }
    }

    /// `key`'s machine, if it has one.
    pub fn machine(&mut self, key: &PublicKey) -> Option<&mut PeerPath> {
        self.machines.get_mut(key)
    }

    /// `key`'s machine, made (seeded with `seed`) if it has none.
    pub fn machine_or_new(&mut self, key: PublicKey, seed: impl FnOnce() -> u64) -> &mut PeerPath {
        let timing = self.timing;
        self.machines
            .entry(key)
            .or_insert_with(|| PeerPath::new(timing, seed()))
    }

    /// `key`'s machine adopts the path the data plane has, if it differs (a configured
    /// endpoint the machine never set, or a roamed one).
    pub fn adopt_data_plane_path(&mut self, now: Instant, key: &PublicKey) {
        let known = self.data_plane.get(key).copied();
        if let (Some(m), Some(p)) = (self.machines.get_mut(key), known) {
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

    /// Peers whose machine is due at `now`.
    pub fn due(&self, now: Instant) -> Vec<PublicKey> {
        self.machines
            .iter()
            .filter(|(_, m)| m.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect()
    }

    /// The earliest timer of any machine.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machines
            .values()
            .filter_map(|m| m.poll_timeout())
            .min()
    }

    /// Forgets `key`'s machine; with `in_data_plane` false, also its data-plane path.
    pub fn remove(&mut self, key: &PublicKey, in_data_plane: bool) {
        self.machines.remove(key);
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
}
