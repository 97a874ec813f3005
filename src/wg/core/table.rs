//! The peer table: adding and removing trusted peers, setting their paths, and typed lookups by
//! key, overlay address or IP, hostname and (for received datagrams) receiver index.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use boringtun::noise::{Tunn, TunnResult};
use parking_lot::Mutex;
use rand_core::{OsRng, RngCore};

use super::outbound::send_on;
use super::{normalize, Core};
use crate::identity::PublicKey;
use crate::mapping::Addr48;
use crate::wg::peer::{Peer, PeerState, PeerStatus};
use crate::wg::Path;

/// Who a trusted peer is, as a lookup in the peer table answers: no counters, no paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerId {
    /// The peer's Ed25519 public key.
    pub public_key: PublicKey,
    /// Its overlay address.
    pub addr48: Addr48,
    /// Its overlay IPv6 address.
    pub ipv6: Ipv6Addr,
    /// Its hostname, if one is known.
    pub hostname: Option<String>,
}

impl PeerId {
    fn of(p: &Peer) -> Self {
        PeerId {
            public_key: p.public_key,
            addr48: p.addr48,
            ipv6: p.ipv6,
            hostname: p.hostname.lock().clone(),
        }
    }
}

/// Errors from changing the peer table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerTableError {
    /// The key is our own.
    #[error("{0} is this node's own key; a node cannot be its own peer")]
    OwnKey(PublicKey),
    /// Another key already owns this addr48 (a 48-bit collision).
    #[error("address {addr} is already taken by peer {existing}; refusing {new}")]
    AddressCollision {
        /// The contested address.
        addr: Addr48,
        /// The peer that has it.
        existing: PublicKey,
        /// The key that was refused.
        new: PublicKey,
    },
    /// The key is not in the table.
    #[error("no peer with key {0}")]
    NotFound(PublicKey),
    /// The key is a small-order (weak) point: a handshake with it would give a shared secret
    /// anyone can compute.
    #[error("{0} is a small-order public key, not a real node's key; refused")]
    WeakKey(PublicKey),
}

impl From<PeerTableError> for crate::error::PilotError {
    fn from(e: PeerTableError) -> Self {
        crate::error::PilotError::invalid(e.to_string(), "fix the [[peer]] entries in the config")
    }
}

#[derive(Default, Clone)]
pub(super) struct PeerTable {
    pub(super) by_addr: HashMap<Addr48, Arc<Peer>>,
    pub(super) by_index: HashMap<u32, Arc<Peer>>,
    pub(super) by_wg_key: HashMap<[u8; 32], Arc<Peer>>,
}

impl Core {
    /// Adds a trusted peer (or updates the endpoint of an existing one). Traffic flows at once.
    pub fn add_peer(
        &self,
        key: PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), PeerTableError> {
        self.add_peers(&[(key, endpoint)]).remove(0)
    }

    /// Adds many trusted peers at once (as [`Core::add_peer`] each, one result per peer, in
    /// order), with one copy of the table for all: loading 10,000 peers at start costs
    /// 10,000 inserts, not 10,000 copies of a growing table.
    pub fn add_peers(
        &self,
        peers: &[(PublicKey, Option<SocketAddr>)],
    ) -> Vec<Result<(), PeerTableError>> {
        let _w = self.table_writer.lock();
        let cur = self.table.load();
        let mut next: Option<PeerTable> = None;
        let mut results = Vec::with_capacity(peers.len());
        let mut added = Vec::new();
        for &(key, endpoint) in peers {
            let table = next.as_ref().unwrap_or(&cur);
            match self.new_peer(table, key, endpoint) {
                Ok(Some(peer)) => {
                    let t = next.get_or_insert_with(|| PeerTable::clone(&cur));
                    t.by_addr.insert(peer.addr48, Arc::clone(&peer));
                    t.by_index.insert(peer.index, Arc::clone(&peer));
                    t.by_wg_key.insert(peer.wg_public, Arc::clone(&peer));
                    added.push(peer);
                    results.push(Ok(()));
                }
                Ok(None) => results.push(Ok(())),
                Err(e) => results.push(Err(e)),
            }
        }
        if let Some(t) = next {
            self.table.store(Arc::new(t));
        }
        for peer in added {
            let mut st = peer.state.lock();
            let path = st.path;
            self.reindex_endpoint(&peer, Path::None, path);
            if path != Path::None {
                // A configured endpoint: persistent keepalives start the tunnel, as before.
                self.tunn(&peer, &mut st);
            }
        }
        results
    }

    /// A new peer for `key` checked against `table` (`None`: it is there already, and only
    /// its endpoint was updated). Called with the table writer's lock held.
    fn new_peer(
        &self,
        table: &PeerTable,
        key: PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<Option<Arc<Peer>>, PeerTableError> {
        if key == self.own_key {
            return Err(PeerTableError::OwnKey(key));
        }
        if self.is_weak(&key) {
            return Err(PeerTableError::WeakKey(key));
        }
        let addr = key.addr48();
        if let Some(existing) = table.by_addr.get(&addr) {
            if existing.public_key != key {
                return Err(PeerTableError::AddressCollision {
                    addr,
                    existing: existing.public_key,
                    new: key,
                });
            }
            if let Some(ep) = endpoint {
                self.move_path(existing, Path::Direct(normalize(ep)));
            }
            return Ok(None);
        }
        let index = loop {
            let i = OsRng.next_u32() & 0x00ff_ffff;
            if !table.by_index.contains_key(&i) {
                break i;
            }
        };
        let wg_public = key.wg_public();
        Ok(Some(Arc::new(Peer {
            public_key: key,
            wg_public: wg_public.to_bytes(),
            addr48: addr,
            ipv6: self.network.ipv6(addr),
            index,
            hostname: Mutex::new(None),
            state: Mutex::new(PeerState {
                tunn: None,
                active: false,
                path: endpoint.map_or(Path::None, |e| Path::Direct(normalize(e))),
                last_change: endpoint.map(|_| SystemTime::now()),
                removed: false,
            }),
            counters: Default::default(),
            rtt_us: AtomicU64::new(u64::MAX),
            needs_path_queued: AtomicBool::new(false),
        })))
    }

    /// True for a small-order key: the Ed25519 point has small order, or X25519 with its
    /// Montgomery form gives an all-zero (non-contributory) shared secret.
    fn is_weak(&self, key: &PublicKey) -> bool {
        let ed_weak =
            ed25519_dalek::VerifyingKey::from_bytes(key.as_bytes()).map_or(true, |vk| vk.is_weak());
        ed_weak
            || !self
                .secret
                .diffie_hellman(&key.wg_public())
                .was_contributory()
    }

    /// Removes a peer. From the moment this returns nothing passes to or from it.
    pub fn remove_peer(&self, key: &PublicKey) -> Result<(), PeerTableError> {
        let _w = self.table_writer.lock();
        let cur = self.table.load();
        let Some(peer) = cur
            .by_addr
            .get(&key.addr48())
            .filter(|p| p.public_key == *key)
        else {
            return Err(PeerTableError::NotFound(*key));
        };
        let peer = Arc::clone(peer);
        let mut next = PeerTable::clone(&cur);
        next.by_addr.remove(&peer.addr48);
        next.by_index.remove(&peer.index);
        next.by_wg_key.remove(&peer.wg_public);
        self.table.store(Arc::new(next));
        // Workers that loaded the old table check this flag under the peer's lock.
        let mut st = peer.state.lock();
        st.removed = true;
        self.reindex_endpoint(&peer, st.path, Path::None);
        self.deactivate(&peer, &mut st);
        drop(st);
        if let Some(h) = peer.hostname.lock().as_ref() {
            let mut index = self.hostnames.lock();
            if index.get(h).is_some_and(|p| Arc::ptr_eq(p, &peer)) {
                index.remove(h);
            }
        }
        Ok(())
    }

    /// Sets (or clears) a peer's endpoint.
    pub fn set_endpoint(
        &self,
        key: &PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), PeerTableError> {
        let peer = self.peer(key).ok_or(PeerTableError::NotFound(*key))?;
        self.move_path(
            &peer,
            endpoint.map_or(Path::None, |e| Path::Direct(normalize(e))),
        );
        Ok(())
    }

    /// Sets how a peer's datagrams travel. On a change, a handshake starts at once over the new
    /// path if there is no session (so packets queued meanwhile flow), or a keepalive goes out
    /// on it (so the peer sees the new path); both go through `send`.
    pub fn set_path(
        &self,
        key: &PublicKey,
        path: Path,
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<(), PeerTableError> {
        let peer = self.peer(key).ok_or(PeerTableError::NotFound(*key))?;
        let path = match path {
            Path::Direct(a) => Path::Direct(normalize(a)),
            Path::Relay(a) => Path::Relay(normalize(a)),
            Path::None => Path::None,
        };
        let mut st = peer.state.lock();
        if st.removed || st.path == path {
            return Ok(());
        }
        let old = st.path;
        st.set_path(path);
        self.reindex_endpoint(&peer, old, path);
        let mut buf = [0u8; 256];
        let tunn = self.tunn(&peer, &mut st);
        let has_session = tunn
            .time_since_last_handshake()
            .is_some_and(|d| d < std::time::Duration::from_secs(170));
        let r = if has_session {
            tunn.encapsulate(&[], &mut buf)
        } else {
            tunn.format_handshake_initiation(&mut buf, true)
        };
        if let TunnResult::WriteToNetwork(p) = r {
            send_on(path, peer.addr48, p, send);
        }
        Ok(())
    }

    /// Sets a peer's path (under its lock) and keeps the endpoint index in step.
    fn move_path(&self, peer: &Arc<Peer>, path: Path) {
        let mut st = peer.state.lock();
        if st.removed {
            return;
        }
        let old = st.path;
        st.set_path(path);
        self.reindex_endpoint(peer, old, path);
        if path != Path::None {
            self.tunn(peer, &mut st);
        }
    }

    /// `peer`'s WireGuard state machine, made on first use; the peer joins the timer set (see
    /// [`Core::tick`]). Call with the peer's lock held (`st`): the lock order is the peer's,
    /// then the timer set's.
    pub(super) fn tunn<'a>(&self, peer: &Arc<Peer>, st: &'a mut PeerState) -> &'a mut Tunn {
        if !st.active {
            st.active = true;
            self.active.lock().insert(peer.index, Arc::clone(peer));
        }
        st.tunn.get_or_insert_with(|| {
            Tunn::new(
                self.secret.clone(),
                x25519_dalek::PublicKey::from(peer.wg_public),
                None,
                self.keepalive,
                peer.index,
                Some(Arc::clone(&self.mac_check)),
            )
        })
    }

    /// Takes `peer` out of the timer set (with its lock held, `st`).
    pub(super) fn deactivate(&self, peer: &Peer, st: &mut PeerState) {
        if std::mem::take(&mut st.active) {
            self.active.lock().remove(&peer.index);
        }
    }

    /// Peers in the timer set: those with a live `Tunn` (idle peers are not in it).
    pub fn active_peers(&self) -> usize {
        self.active.lock().len()
    }

    /// Keeps the endpoint index in step with a peer's path moving from `old` to `new` (call
    /// with the peer's lock held). Two peers on one endpoint: the last one to arrive owns it.
    pub(super) fn reindex_endpoint(&self, peer: &Arc<Peer>, old: Path, new: Path) {
        if old == new {
            return;
        }
        let mut index = self.endpoints.lock();
        if let Path::Direct(a) = old {
            if index.get(&a).is_some_and(|p| Arc::ptr_eq(p, peer)) {
                index.remove(&a);
            }
        }
        if let Path::Direct(a) = new {
            index.insert(a, Arc::clone(peer));
        }
    }

    /// The peer whose direct endpoint is `addr`, from the endpoint index (no scan).
    pub(super) fn peer_at(&self, addr: SocketAddr) -> Option<Arc<Peer>> {
        self.endpoints.lock().get(&addr).cloned()
    }

    /// Records the round-trip time measured on a peer's path (`None` clears it).
    pub fn set_rtt(&self, key: &PublicKey, rtt: Option<std::time::Duration>) {
        if let Some(p) = self.peer(key) {
            let v = rtt.map_or(u64::MAX, |d| d.as_micros().min(u64::MAX as u128 - 1) as u64);
            p.rtt_us.store(v, Ordering::Relaxed);
        }
    }

    /// The node core took a `NeedsPath` for `key`: the next packet without a path may report
    /// again.
    pub fn rearm_needs_path(&self, key: &PublicKey) {
        if let Some(p) = self.peer(key) {
            p.needs_path_queued.store(false, Ordering::Release);
        }
    }

    /// A peer's current path.
    pub fn path(&self, key: &PublicKey) -> Option<Path> {
        self.peer(key).map(|p| p.state.lock().path)
    }

    /// Sets the hostname shown for a peer.
    pub fn set_hostname(
        &self,
        key: &PublicKey,
        hostname: Option<String>,
    ) -> Result<(), PeerTableError> {
        let peer = self.peer(key).ok_or(PeerTableError::NotFound(*key))?;
        let mut current = peer.hostname.lock();
        let mut index = self.hostnames.lock();
        if let Some(old) = current.take() {
            if index.get(&old).is_some_and(|p| Arc::ptr_eq(p, &peer)) {
                index.remove(&old);
            }
        }
        if let Some(h) = &hostname {
            index.insert(h.clone(), Arc::clone(&peer));
        }
        *current = hostname;
        Ok(())
    }

    /// The peer with this key, if trusted.
    pub fn peer(&self, key: &PublicKey) -> Option<Arc<Peer>> {
        self.table
            .load()
            .by_addr
            .get(&key.addr48())
            .filter(|p| p.public_key == *key)
            .cloned()
    }

    /// The trusted peer with this overlay IPv6 address: its key and hostname.
    pub fn peer_by_ip(&self, ip: &Ipv6Addr) -> Option<PeerId> {
        let addr = self.network.addr48_of(*ip)?;
        let table = self.table.load();
        table
            .by_addr
            .get(&addr)
            .filter(|p| p.ipv6 == *ip)
            .map(|p| PeerId::of(p))
    }

    /// The trusted peer with this key: its key and hostname.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.peer(key).map(|p| PeerId::of(&p))
    }

    /// The receiver index our handshakes hand out for `key` (its local index in the top 24
    /// bits, as received datagrams carry it), for diagnostics and benchmarks.
    pub fn receiver_index_of(&self, key: &PublicKey) -> Option<u32> {
        self.peer(key).map(|p| p.index << 8)
    }

    /// The trusted peer a received datagram with this receiver index is for (the lookup the
    /// receive path makes: one hash lookup).
    pub fn peer_by_receiver_index(&self, receiver_idx: u32) -> Option<PeerId> {
        let table = self.table.load();
        table
            .by_index
            .get(&(receiver_idx >> 8))
            .map(|p| PeerId::of(p))
    }

    /// The trusted peer known by this hostname (one lookup in the hostname index; the last
    /// peer given a name owns it).
    pub fn peer_by_hostname(&self, hostname: &str) -> Option<PeerId> {
        let peer = self.hostnames.lock().get(hostname).cloned()?;
        let id = PeerId::of(&peer);
        let live = self
            .peer(&peer.public_key)
            .is_some_and(|p| Arc::ptr_eq(&p, &peer));
        (live && id.hostname.as_deref() == Some(hostname)).then_some(id)
    }

    /// Status of every peer, sorted by address.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let table = self.table.load();
        let mut v: Vec<PeerStatus> = table.by_addr.values().map(|p| p.status()).collect();
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.table.load().by_addr.len()
    }
}

impl PeerState {
    pub(super) fn set_path(&mut self, path: Path) {
        if self.path != path {
            self.path = path;
            self.last_change = Some(SystemTime::now());
        }
    }
}
