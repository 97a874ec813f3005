//! The data plane: WireGuard tunnels (boringtun `Tunn`) to trusted peers over one UDP socket.
//!
//! * [`core`]: peer table, trust and anti-spoofing rules; no I/O, tested in memory.
//! * [`io`]: dedicated threads with batched syscalls (recvmmsg, UDP GSO/GRO, TUN offload).
//! * [`inner`]: the trait the TUN device and the userspace netstack implement.
//! * [`events`]: what the data plane pushes to the node core (needs a path, roamed, handshake
//!   done).
//! * [`supervise`]: no worker thread dies quietly (a dead thread ends the process).
//!
//! The UDP socket also carries pilot control messages: every datagram is sorted once by
//! [`crate::wire::classify`]; registry messages and probes go to the node core, already
//! classified (see `docs/PROTOCOL.md`, "UDP socket demultiplexing (v1)").

pub mod core;
pub mod divert;
pub mod events;
pub mod inner;
mod io;
pub mod path;
pub mod peer;
pub mod supervise;
mod udp;

pub(crate) use self::udp::poll_fd;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

pub use self::core::{CountersSnapshot, NoPeerHook, PeerId, PeerTableError};
pub use self::events::{DataPlaneEvent, EventReceiver};
pub use self::inner::{Inner, InnerReader, InnerWriter, INNER_OFFSET};
pub use self::path::Path;
pub use self::peer::{DropReason, PeerStatus};
pub use self::supervise::{DataPlaneHealth, OnThreadDeath, ThreadHealth, EXIT_DATA_PLANE_DIED};

use crate::identity::{Identity, PublicKey};
use crate::mapping::NetworkPrefix;

pub use crate::config::DEFAULT_KEEPALIVE_SECS;
pub use crate::wire::CONTROL_MAGIC;

/// How the data plane is set up.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// UDP port to listen on; 0 picks a free one.
    pub listen_port: u16,
    /// Persistent keepalive in seconds; 0 disables it.
    pub keepalive_secs: u16,
    /// The overlay network.
    pub network: NetworkPrefix,
    /// Depth of the control-plane queue.
    pub control_queue: usize,
    /// Depth of the data-plane event queue (a `NeedsPath` is queued at most once per peer).
    pub event_queue: usize,
    /// What a dead worker thread does to the process (default: exit with status 70).
    pub on_thread_death: OnThreadDeath,
    /// Handshake messages per second answered per source (IPv4 address, IPv6 /64, relayed
    /// sender); default [`core::DEFAULT_HANDSHAKES_PER_SOURCE`].
    pub handshakes_per_source: u32,
    /// Handshake messages per second answered without a cookie from all sources together;
    /// default [`core::DEFAULT_HANDSHAKES_GLOBAL`].
    pub handshakes_global: u32,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        DataPlaneConfig {
            listen_port: 0,
            keepalive_secs: DEFAULT_KEEPALIVE_SECS,
            network: NetworkPrefix::default(),
            control_queue: 1024,
            event_queue: 256,
            on_thread_death: OnThreadDeath::Exit,
            handshakes_per_source: core::DEFAULT_HANDSHAKES_PER_SOURCE,
            handshakes_global: core::DEFAULT_HANDSHAKES_GLOBAL,
        }
    }
}

/// Why the data plane could not start or send.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The UDP socket could not be opened.
    #[error("cannot open UDP port {port}: {source}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// The system's reason.
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("cannot start data-plane thread: {0}")]
    Thread(std::io::Error),
    /// A control message did not start with [`CONTROL_MAGIC`].
    #[error("control message must start with 0x50 ('P'), got {0:#04x}")]
    NotControl(u8),
    /// Sending on the UDP socket failed.
    #[error("UDP send to {dst} failed: {source}")]
    Send {
        /// Where to.
        dst: SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
}

impl From<DataPlaneError> for crate::error::PilotError {
    fn from(e: DataPlaneError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        match e {
            DataPlaneError::Bind { .. } => PilotError::new(
                ErrorCode::InvalidArgument,
                e.to_string(),
                "choose a free tunnel.listen_port (or 0 for any)",
            ),
            _ => PilotError::internal(e.to_string()),
        }
    }
}

/// Receives every control datagram (registry message or probe) that arrives on the data-plane
/// socket, already classified.
pub type ControlReceiver = crate::wire::classify::ControlReceiver;

/// A running data plane. Dropping it shuts it down.
pub struct DataPlane {
    shared: Arc<io::Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    slots: Mutex<Vec<Arc<supervise::ThreadSlot>>>,
    on_thread_death: OnThreadDeath,
    control_rx: Mutex<Option<ControlReceiver>>,
    events_rx: Mutex<Option<EventReceiver>>,
}

impl DataPlane {
    /// Opens the UDP socket and starts the worker threads, with `inner` as the inner side.
    pub fn start(
        identity: &Identity,
        config: &DataPlaneConfig,
        inner: Inner,
        no_peer_hook: Option<NoPeerHook>,
    ) -> Result<DataPlane, DataPlaneError> {
        let udp = udp::Udp::bind(config.listen_port).map_err(|source| DataPlaneError::Bind {
            port: config.listen_port,
            source,
        })?;
        let (ctl_tx, ctl_rx) = crate::wire::classify::control_queues(config.control_queue);
        let (ev_tx, ev_rx) = events::channel(config.event_queue);
        let core = Arc::new(
            core::Core::new(
                identity,
                config.network,
                config.keepalive_secs,
                Some(ctl_tx),
                no_peer_hook,
                Some(ev_tx),
            )
            .with_max_packet(io::max_packet(inner.mtu))
            .with_handshake_limits(config.handshakes_per_source, config.handshakes_global),
        );
        let events_rx = ev_rx(Arc::clone(&core));
        let shared = Arc::new(io::Shared {
            core,
            udp,
            stop: Default::default(),
        });
        let plane = DataPlane {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Vec::new()),
            slots: Mutex::new(Vec::new()),
            on_thread_death: config.on_thread_death,
            control_rx: Mutex::new(Some(ctl_rx)),
            events_rx: Mutex::new(Some(events_rx)),
        };
        let Inner { reader, writer, .. } = inner;
        // The receive thread takes turns at a pollable outbound side (the TUN device).
        let pollable = reader.readable_fd().is_some();
        let outbound = Arc::new(Mutex::new(io::Outbound::new(&shared, reader)));
        let s = Arc::clone(&shared);
        let turn = pollable.then(|| Arc::clone(&outbound));
        plane.spawn("pilot-udp-rx", move |hb| {
            io::udp_rx_loop(s, writer, turn, hb)
        })?;
        let s = Arc::clone(&shared);
        plane.spawn("pilot-inner-rx", move |hb| {
            io::inner_rx_loop(s, outbound, hb)
        })?;
        let s = Arc::clone(&shared);
        plane.spawn("pilot-timers", move |hb| io::timer_loop(s, hb))?;
        tracing::info!(port = plane.local_port(), "data plane started");
        Ok(plane)
    }

    /// Starts a supervised worker thread (see [`supervise`]); `f` gets the heartbeat its loop
    /// beats.
    fn spawn(
        &self,
        name: &str,
        f: impl FnOnce(crate::health::Heartbeat) + Send + 'static,
    ) -> Result<(), DataPlaneError> {
        let slot = supervise::ThreadSlot::new(name);
        let hb = slot.heartbeat();
        let f = move || f(hb);
        let shared = Arc::clone(&self.shared);
        let stopping = Arc::new(move || shared.stop.load(Ordering::Relaxed));
        let body = supervise::supervised(Arc::clone(&slot), stopping, self.on_thread_death, f);
        let h = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(body)
            .map_err(DataPlaneError::Thread)?;
        self.threads.lock().push(h);
        self.slots.lock().push(slot);
        Ok(())
    }

    /// Liveness of the worker threads (`alive` is false once any died, or after shutdown).
    pub fn health(&self) -> DataPlaneHealth {
        supervise::health(&self.slots.lock())
    }

    /// Each worker thread's name and heartbeat: a thread that is stuck or dead stops beating
    /// (the systemd watchdog watches them).
    pub fn heartbeats(&self) -> Vec<(String, crate::health::Heartbeat)> {
        self.slots
            .lock()
            .iter()
            .map(|s| (s.name().to_string(), s.heartbeat()))
            .collect()
    }

    /// The UDP port the data plane listens on.
    pub fn local_port(&self) -> u16 {
        self.shared.udp.local_port()
    }

    /// The receiver of control datagrams (first byte [`CONTROL_MAGIC`]); `None` after the
    /// first call.
    pub fn take_control_receiver(&self) -> Option<ControlReceiver> {
        self.control_rx.lock().take()
    }

    /// The receiver of data-plane events for the node core; `None` after the first call.
    pub fn take_event_receiver(&self) -> Option<EventReceiver> {
        self.events_rx.lock().take()
    }

    /// Sends a control datagram from the data-plane socket (same NAT mapping as the tunnels).
    pub fn send_control(&self, dst: SocketAddr, bytes: &[u8]) -> Result<(), DataPlaneError> {
        match bytes.first() {
            Some(&CONTROL_MAGIC) => {}
            other => return Err(DataPlaneError::NotControl(other.copied().unwrap_or(0))),
        }
        self.shared
            .udp
            .send(dst, bytes, None)
            .map_err(|source| DataPlaneError::Send { dst, source })
    }

    /// Which registries go over a stream transport, and what UDP tells of them (issue 14).
    pub fn diversion(&self) -> Arc<divert::Diversion> {
        Arc::clone(&self.shared.udp.divert)
    }

    /// Sends a control datagram over UDP even to a registry diverted to a stream transport
    /// (that transport's probes of the UDP path).
    pub fn send_control_udp(&self, dst: SocketAddr, bytes: &[u8]) -> Result<(), DataPlaneError> {
        self.shared
            .udp
            .send_undiverted(dst, bytes)
            .map_err(|source| DataPlaneError::Send { dst, source })
    }

    /// Tells the node that `registry` is now reached over another transport (it registers
    /// there again at once).
    pub fn transport_changed(&self, registry: SocketAddr) {
        self.shared
            .core
            .emit_event(DataPlaneEvent::TransportChanged { registry });
    }

    /// Trusts a peer: its handshakes are accepted and traffic to its address flows.
    pub fn add_peer(
        &self,
        key: PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), PeerTableError> {
        self.shared.core.add_peer(key, endpoint)
    }

    /// Adds many trusted peers with one copy of the peer table (see
    /// [`core::Core::add_peers`]); one result per peer, in order.
    pub fn add_peers(
        &self,
        peers: &[(PublicKey, Option<SocketAddr>)],
    ) -> Vec<Result<(), PeerTableError>> {
        self.shared.core.add_peers(peers)
    }

    /// Stops trusting a peer; nothing passes to or from it from the moment this returns.
    pub fn remove_peer(&self, key: &PublicKey) -> Result<(), PeerTableError> {
        self.shared.core.remove_peer(key)
    }

    /// Sets where a peer's datagrams go (until an authenticated packet from elsewhere moves it).
    pub fn set_endpoint(
        &self,
        key: &PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), PeerTableError> {
        self.shared.core.set_endpoint(key, endpoint)
    }

    /// Sets how a peer's datagrams travel (direct to an address, or through a relay); on a
    /// change a handshake or keepalive goes out on the new path at once.
    pub fn set_path(&self, key: &PublicKey, path: crate::wg::Path) -> Result<(), PeerTableError> {
        let shared = &self.shared;
        shared.core.set_path(key, path, &mut |dst, d| {
            if let Err(e) = shared.udp.send(dst, d, None) {
                tracing::debug!(%dst, error = %e, "UDP send failed");
            }
        })
    }

    /// A peer's current path.
    pub fn path(&self, key: &PublicKey) -> Option<crate::wg::Path> {
        self.shared.core.path(key)
    }

    /// Records the round-trip time measured on a peer's path.
    pub fn set_rtt(&self, key: &PublicKey, rtt: Option<std::time::Duration>) {
        self.shared.core.set_rtt(key, rtt)
    }

    /// Sets the registries whose relay deliveries are accepted.
    pub fn set_relays(&self, relays: Vec<SocketAddr>) {
        self.shared.core.set_relays(relays)
    }

    /// Sets the hostname shown for a peer.
    pub fn set_hostname(
        &self,
        key: &PublicKey,
        hostname: Option<String>,
    ) -> Result<(), PeerTableError> {
        self.shared.core.set_hostname(key, hostname)
    }

    /// Status of every peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.core.peers()
    }

    /// How many peers the table holds.
    pub fn peer_count(&self) -> usize {
        self.shared.core.peer_count()
    }

    /// The trusted peer with this overlay IPv6 address (key and hostname, no status).
    pub fn peer_by_ip(&self, ip: &std::net::Ipv6Addr) -> Option<PeerId> {
        self.shared.core.peer_by_ip(ip)
    }

    /// The trusted peer with this key (key and hostname, no status).
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.shared.core.peer_by_key(key)
    }

    /// The trusted peer known by this hostname.
    pub fn peer_by_hostname(&self, hostname: &str) -> Option<PeerId> {
        self.shared.core.peer_by_hostname(hostname)
    }

    /// Global counters (drops that belong to no peer).
    pub fn counters(&self) -> CountersSnapshot {
        self.shared.core.counters()
    }

    /// Stops the worker threads and waits for them (at most about one poll interval).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddr};
    use std::time::{Duration, Instant};

    fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        p[6] = 59;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    fn recv(ends: &inner::ChannelEnds) -> Option<Vec<u8>> {
        ends.from_plane.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// Two data planes on loopback (threads recorded, not exiting, when they die), each
    /// knowing the other as a peer at its port; with their inner channel ends.
    fn started_pair(
        ida: &Identity,
        idb: &Identity,
    ) -> (DataPlane, inner::ChannelEnds, DataPlane, inner::ChannelEnds) {
        let (ia, ea) = inner::channel(1420, 64);
        let (ib, eb) = inner::channel(1420, 64);
        let (a, b) = started_with(ida, idb, ia, ib);
        (a, ea, b, eb)
    }

    /// Two data planes on loopback over the inner sides given, each knowing the other as a
    /// peer at its port (threads recorded, not exiting, when they die).
    fn started_with(
        ida: &Identity,
        idb: &Identity,
        ia: Inner,
        ib: Inner,
    ) -> (DataPlane, DataPlane) {
        let cfg = DataPlaneConfig {
            on_thread_death: OnThreadDeath::Record,
            ..Default::default()
        };
        let a = DataPlane::start(ida, &cfg, ia, None).unwrap();
        let b = DataPlane::start(idb, &cfg, ib, None).unwrap();
        let ep = |p: &DataPlane| SocketAddr::from(([127, 0, 0, 1], p.local_port()));
        a.add_peer(idb.public_key(), Some(ep(&b))).unwrap();
        b.add_peer(ida.public_key(), Some(ep(&a))).unwrap();
        (a, b)
    }

    /// The watchdog's view of the data plane: a receive thread stuck in a write to the inner
    /// side stops its heartbeat while the other threads keep beating, and beats again once
    /// it is released.
    #[test]
    fn a_stuck_thread_stops_its_heartbeat_while_the_others_keep_beating() {
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl inner::InnerWriter for Stuck {
            fn send_batch(&mut self, _: &mut [Vec<u8>]) -> std::io::Result<()> {
                let _ = self.0.recv();
                Ok(())
            }
        }
        let ida = Identity::from_seed([5; 32]);
        let idb = Identity::from_seed([6; 32]);
        let (ia, _ea) = inner::channel(1420, 64);
        let (ib, eb) = inner::channel(1420, 64);
        let (release, stuck) = std::sync::mpsc::channel();
        let ia = Inner {
            writer: Box::new(Stuck(stuck)),
            ..ia
        };
        let (a, _b) = started_with(&ida, &idb, ia, ib);
        let beats = crate::health::Heartbeats::new();
        for (name, hb) in a.heartbeats() {
            beats.add(&name, hb);
        }
        assert_eq!(beats.len(), 3);
        let max = Duration::from_millis(1500);
        assert!(beats.stale_at(Instant::now(), max).is_empty());
        // B's packet reaches A's receive thread, which blocks writing it to the inner side.
        let net = NetworkPrefix::default();
        let (ipa, ipb) = (net.ipv6(ida.addr48()), net.ipv6(idb.addr48()));
        eb.to_plane.send(ipv6_packet(ipb, ipa, b"jam")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let stale = loop {
            std::thread::sleep(Duration::from_millis(100));
            let stale = beats.stale_at(Instant::now(), max);
            if !stale.is_empty() || Instant::now() > deadline {
                break stale;
            }
        };
        let names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pilot-udp-rx"], "only the stuck thread is stale");
        drop(release);
        std::thread::sleep(Duration::from_millis(600));
        assert!(beats.stale_at(Instant::now(), max).is_empty());
        assert!(a.health().alive);
    }

    /// C1: a handshake that completes drains the packets WireGuard queued meanwhile into the
    /// receive thread's output buffer; that buffer must hold a full-size packet even when the
    /// last datagram it held was small.
    #[test]
    fn a_full_size_packet_queued_during_a_new_handshake_arrives_after_small_traffic() {
        let ida = Identity::from_seed([3; 32]);
        let idb = Identity::from_seed([4; 32]);
        let (a, ea, b, eb) = started_pair(&ida, &idb);
        let ep = |p: &DataPlane| SocketAddr::from(([127, 0, 0, 1], p.local_port()));
        let net = NetworkPrefix::default();
        let (ipa, ipb) = (net.ipv6(ida.addr48()), net.ipv6(idb.addr48()));
        // Small packets both ways: every receive buffer last held a small packet.
        for _ in 0..3 {
            let p = ipv6_packet(ipa, ipb, b"x");
            ea.to_plane.send(p.clone()).unwrap();
            assert_eq!(recv(&eb), Some(p));
            let p = ipv6_packet(ipb, ipa, b"y");
            eb.to_plane.send(p.clone()).unwrap();
            assert_eq!(recv(&ea), Some(p));
        }
        // B loses the session (untrust and re-trust) and sends a full-size packet at once: it
        // waits in WireGuard until the new handshake completes on B's receive thread.
        b.remove_peer(&ida.public_key()).unwrap();
        b.add_peer(ida.public_key(), Some(ep(&a))).unwrap();
        let big = ipv6_packet(ipb, ipa, &[7u8; 1000 - 40]);
        assert_eq!(big.len(), 1000);
        eb.to_plane.send(big.clone()).unwrap();
        assert!(recv(&ea) == Some(big), "the queued packet did not arrive");
        // And the receive threads still work, both ways.
        let p = ipv6_packet(ipa, ipb, b"still there");
        ea.to_plane.send(p.clone()).unwrap();
        assert_eq!(recv(&eb), Some(p));
        let p = ipv6_packet(ipb, ipa, b"and here");
        eb.to_plane.send(p.clone()).unwrap();
        assert_eq!(recv(&ea), Some(p));
        for plane in [&a, &b] {
            let h = plane.health();
            assert!(h.alive, "no data-plane thread died: {h:?}");
            assert_eq!(h.threads.len(), 3);
        }
    }

    /// An inner side that answers every packet written to it inside the write, as a kernel
    /// answers a ping: the answer (source and destination swapped) is queued on a socket pair
    /// the reader reads, and the reader records which thread read each answer. The descriptor
    /// it offers for polling never turns readable, so the reader thread never wakes for an
    /// answer: only the receive thread's turn can send it.
    struct Echoing {
        rx: std::os::unix::net::UnixDatagram,
        silent: std::os::unix::net::UnixDatagram,
        readers: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl inner::InnerReader for Echoing {
        fn recv_batch(
            &mut self,
            bufs: &mut [Vec<u8>],
            sizes: &mut [usize],
            timeout: Duration,
        ) -> std::io::Result<usize> {
            use std::os::fd::AsRawFd;
            let (mut n, mut waited) = (0, timeout.is_zero());
            while n < bufs.len() {
                match self.rx.recv(&mut bufs[n][INNER_OFFSET..]) {
                    Ok(len) => {
                        sizes[n] = len;
                        n += 1;
                        let me = std::thread::current();
                        self.readers
                            .lock()
                            .unwrap()
                            .push(me.name().unwrap_or("").into());
                    }
                    Err(_) if n == 0 && !waited => {
                        udp::poll_fd(self.rx.as_raw_fd(), libc::POLLIN, timeout);
                        waited = true;
                    }
                    Err(_) => break,
                }
            }
            Ok(n)
        }

        fn readable_fd(&self) -> Option<std::os::fd::RawFd> {
            use std::os::fd::AsRawFd;
            Some(self.silent.as_raw_fd())
        }
    }

    struct Answering(std::os::unix::net::UnixDatagram);

    impl inner::InnerWriter for Answering {
        fn send_batch(&mut self, bufs: &mut [Vec<u8>]) -> std::io::Result<()> {
            for b in bufs.iter() {
                let mut p = b[INNER_OFFSET..].to_vec();
                let (src, dst) = (p[8..24].to_vec(), p[24..40].to_vec());
                p[8..24].copy_from_slice(&dst);
                p[24..40].copy_from_slice(&src);
                self.0.send(&p)?;
            }
            Ok(())
        }
    }

    /// An answer the inner side queues while the receive thread writes to it leaves from the
    /// receive thread (the turnaround: no wake-up of the reader thread is needed), and answers
    /// keep the order of the packets they answer.
    #[test]
    fn the_receive_thread_sends_what_the_inner_side_answered_during_its_write_in_order() {
        let ida = Identity::from_seed([7; 32]);
        let idb = Identity::from_seed([8; 32]);
        let (ia, ea) = inner::channel(1420, 64);
        let (tx, rx) = std::os::unix::net::UnixDatagram::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let (silent, _never_written) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let readers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let ib = Inner {
            reader: Box::new(Echoing {
                rx,
                silent,
                readers: std::sync::Arc::clone(&readers),
            }),
            writer: Box::new(Answering(tx)),
            mtu: 1420,
        };
        let (_a, _b) = started_with(&ida, &idb, ia, ib);
        let net = NetworkPrefix::default();
        let (ipa, ipb) = (net.ipv6(ida.addr48()), net.ipv6(idb.addr48()));
        for i in 0..30u8 {
            ea.to_plane.send(ipv6_packet(ipa, ipb, &[i; 20])).unwrap();
            let answer = recv(&ea).expect("the answer comes back");
            assert_eq!(
                answer,
                ipv6_packet(ipb, ipa, &[i; 20]),
                "answer {i}, in order"
            );
        }
        let readers = readers.lock().unwrap();
        assert_eq!(readers.len(), 30);
        assert!(
            readers.iter().all(|n| n == "pilot-udp-rx"),
            "every answer read by the receive thread: {readers:?}"
        );
    }

    #[test]
    fn two_data_planes_on_loopback_pass_packets_and_control_messages() {
        let ida = Identity::from_seed([1; 32]);
        let idb = Identity::from_seed([2; 32]);
        let (a, ea, b, eb) = started_pair(&ida, &idb);
        let ep = |p: &DataPlane| SocketAddr::from(([127, 0, 0, 1], p.local_port()));
        let net = NetworkPrefix::default();
        let (ipa, ipb) = (net.ipv6(ida.addr48()), net.ipv6(idb.addr48()));

        let pkt = ipv6_packet(ipa, ipb, b"through the tunnel");
        ea.to_plane.send(pkt.clone()).unwrap();
        assert_eq!(
            eb.from_plane.recv_timeout(Duration::from_secs(5)).unwrap(),
            pkt
        );
        let back = ipv6_packet(ipb, ipa, b"and back");
        eb.to_plane.send(back.clone()).unwrap();
        assert_eq!(
            ea.from_plane.recv_timeout(Duration::from_secs(5)).unwrap(),
            back
        );

        // Control messages share the socket.
        let mut rx = b.take_control_receiver().unwrap();
        a.send_control(ep(&b), b"Pping").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            match rx.try_recv() {
                Ok(m) => break m,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no control message: {e}"),
            }
        };
        assert_eq!(
            got,
            crate::wire::classify::ControlDatagram {
                from: ep(&a),
                kind: crate::wire::classify::ControlKind::Control,
                bytes: b"Pping".to_vec()
            }
        );
        assert!(matches!(
            a.send_control(ep(&b), b"\x01"),
            Err(DataPlaneError::NotControl(1))
        ));

        // Removing the peer stops its traffic at once.
        b.remove_peer(&ida.public_key()).unwrap();
        assert!(b.peers().is_empty());
        ea.to_plane.send(pkt.clone()).unwrap();
        assert!(eb
            .from_plane
            .recv_timeout(Duration::from_millis(500))
            .is_err());
        assert!(b.counters().unknown_index >= 1);

        let started = Instant::now();
        a.shutdown();
        b.shutdown();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
