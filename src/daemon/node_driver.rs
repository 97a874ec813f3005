//! The tokio task that drives the sans-IO [`Node`] for the daemon.
//!
//! One task owns the node. It waits for a command from the local API, a classified control
//! datagram from the data-plane socket, a data-plane event, or the node's next timer; hands it
//! to the node with the time; then carries out what the node asks: datagrams on the shared
//! socket, calls on [`Tunnels`], events on the API's broadcast channel, trust-file snapshots
//! to the writer (a blocking thread: no file I/O on the async runtime). Every rule lives in
//! [`crate::node`]; nothing here decides anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::clock::unix_ms_now;
use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::node::control::{ControlPlane, TRUST_SAVE_DELAY};
use crate::node::traversal::Path;
use crate::node::trust::TrustSave;
use crate::node::views::NodeEvent;
use crate::node::{Effect, Node, NodeConfig};
use crate::wg::{DataPlaneEvent, EventReceiver};
use crate::wire::classify::{ControlDatagram, ControlReceiver};

pub use crate::node::{NodeCommand, Reply};

/// What the node needs from the data plane.
pub trait Tunnels: Send + Sync + 'static {
    /// Sends a control datagram from the tunnel socket.
    fn send_control(&self, dst: SocketAddr, bytes: &[u8]);
    /// Lets `key` build a tunnel with us (idempotent).
    fn add_peer(&self, key: PublicKey, hostname: Option<&Hostname>);
    /// Lets many peers build tunnels with us (as [`Tunnels::add_peer`] for each, in order);
    /// implementations may do it in one step (the data plane copies its table once).
    fn add_peers(&self, peers: &[(PublicKey, Option<Hostname>)]) {
        for (key, hostname) in peers {
            self.add_peer(*key, hostname.as_ref());
        }
    }
    /// Tears down `key`'s tunnel and forgets its endpoint.
    fn remove_peer(&self, key: &PublicKey);
    /// Sets where `key`'s datagrams go.
    fn set_endpoint(&self, key: &PublicKey, endpoint: SocketAddr);
    /// Sets how `key`'s datagrams travel (direct or through a relay).
    fn set_path(&self, key: &PublicKey, path: Path) {
        if let Path::Direct(a) = path {
            self.set_endpoint(key, a);
        }
    }
    /// `key`'s path as the data plane has it; read once at start for the static peers (their
    /// configured endpoints). Later moves arrive as [`DataPlaneEvent::Roamed`].
    fn path(&self, _key: &PublicKey) -> Option<Path> {
        None
    }
    /// Records the round-trip time measured on `key`'s path.
    fn set_rtt(&self, _key: &PublicKey, _rtt: Option<Duration>) {}
    /// The registries whose relay deliveries the data plane accepts.
    fn set_relays(&self, _relays: Vec<SocketAddr>) {}
    /// The data plane's event stream (needs a path, roamed, handshake done), taken once.
    /// Required: without it traffic that finds no path and roaming peers go unnoticed.
    fn take_events(&self) -> Option<EventReceiver>;
}

/// The API side's handle on the node driver.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<NodeCommand>,
    /// Asks for the trust file to be written now (see [`NodeHandle::save_trust_now`]).
    save_now: mpsc::Sender<oneshot::Sender<()>>,
}

/// How long an API call waits for the registries before answering `timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the node's idea of the wall clock is corrected.
const CLOCK_SYNC: Duration = Duration::from_secs(60);

impl NodeHandle {
    /// Writes the trust changes still waiting for their delay, and waits (at most 5 s) until
    /// they are on disk: a daemon that stops must not lose a trust a peer's message made just
    /// before.
    pub async fn save_trust_now(&self) {
        let (done, written) = oneshot::channel();
        if self.save_now.send(done).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), written).await;
        }
    }

    /// Runs the command `make` builds around its reply channel, and waits for the answer.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> NodeCommand,
    ) -> Result<T, PilotError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| PilotError::internal("the control plane has stopped"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PilotError::internal(
                "the control plane dropped the request",
            )),
            Err(_) => Err(PilotError::new(
                ErrorCode::Timeout,
                "no registry answered in time",
                "check that the registries are reachable; the request is still being retried",
            )),
        }
    }
}

/// The node driver: the node and the data plane it drives.
pub struct NodeDriver<T: Tunnels> {
    node: Node,
    tunnels: Arc<T>,
    events: broadcast::Sender<NodeEvent>,
    trust_writer: std::sync::mpsc::Sender<TrustWrite>,
}

/// What the trust-file writer is sent.
enum TrustWrite {
    /// A snapshot to write.
    Save(TrustSave),
    /// Answered once everything sent before it is written.
    Synced(oneshot::Sender<()>),
}

/// One input to the node.
enum Input {
    Command(NodeCommand),
    Datagram(ControlDatagram),
    DataPlane(DataPlaneEvent),
    Timer,
    ClockSync,
    /// Write the trust file now, and answer once it is written.
    SaveTrust(oneshot::Sender<()>),
}

impl<T: Tunnels> NodeDriver<T> {
    /// Starts the task around `plane`, with randomness seeded from the OS; node events go to
    /// `events` (nobody listening is fine).
    pub fn spawn(
        plane: ControlPlane,
        tunnels: Arc<T>,
        config: NodeConfig,
        control_rx: ControlReceiver,
        events: broadcast::Sender<NodeEvent>,
    ) -> NodeHandle {
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let statics = config.static_peers.clone();
        let now = Instant::now();
        let mut node = Node::new(plane, config, seed, now);
        for k in statics {
            if let Some(p) = tunnels.path(&k) {
                node.set_known_path(now, k, p);
            }
        }
        let dp_events = tunnels.take_events();
        let (trust_writer, snapshots) = std::sync::mpsc::channel();
        tokio::task::spawn_blocking(move || write_trust_snapshots(snapshots));
        let task = NodeDriver {
            node,
            tunnels,
            events,
            trust_writer,
        };
        let (tx, rx) = mpsc::channel(64);
        let (save_now, save_requests) = mpsc::channel(1);
        tokio::spawn(task.run(rx, save_requests, control_rx, dp_events));
        NodeHandle { tx, save_now }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<NodeCommand>,
        mut save_requests: mpsc::Receiver<oneshot::Sender<()>>,
        mut datagrams: ControlReceiver,
        mut dp_events: Option<EventReceiver>,
    ) {
        let mut clock_sync = tokio::time::interval(CLOCK_SYNC);
        loop {
            self.flush();
            let deadline = self.node.poll_timeout();
            let input = tokio::select! {
                cmd = commands.recv() => cmd.map(Input::Command),
                Some(done) = save_requests.recv() => Some(Input::SaveTrust(done)),
                dg = datagrams.recv() => dg.map(Input::Datagram),
                ev = next_event(&mut dp_events) => match ev {
                    Some(ev) => Some(Input::DataPlane(ev)),
                    None => {
                        dp_events = None;
                        continue;
                    }
                },
                _ = sleep_until(deadline) => Some(Input::Timer),
                _ = clock_sync.tick() => Some(Input::ClockSync),
            };
            let Some(input) = input else {
                // Write what is still waiting for its delay before we go.
                self.save_trust(Instant::now() + TRUST_SAVE_DELAY);
                return;
            };
            self.handle(Instant::now(), input);
        }
    }

    fn handle(&mut self, now: Instant, input: Input) {
        if let Input::SaveTrust(done) = input {
            self.save_trust(now + TRUST_SAVE_DELAY);
            let _ = self.trust_writer.send(TrustWrite::Synced(done));
            return;
        }
        let node = &mut self.node;
        match input {
            Input::Command(cmd) => node.handle_command(now, cmd),
            Input::Datagram(d) => node.handle_datagram(now, d.from, d.kind, &d.bytes),
            Input::DataPlane(ev) => node.handle_data_plane_event(now, ev),
            Input::Timer => node.handle_timeout(now),
            Input::ClockSync => node.handle_clock_sync(now, unix_ms_now()),
            Input::SaveTrust(_) => {}
        }
    }

    /// Carries out everything the node queued.
    fn flush(&mut self) {
        // Peers to add are handed over together (10,000 loaded at start: one table copy).
        let mut adds = Vec::new();
        while let Some(effect) = self.node.poll_effect() {
            match effect {
                Effect::AddPeer { key, hostname } => adds.push((key, hostname)),
                other => {
                    self.add_peers(&mut adds);
                    self.apply(other);
                }
            }
        }
        self.add_peers(&mut adds);
        while let Some((dst, bytes)) = self.node.poll_transmit() {
            self.tunnels.send_control(dst, &bytes);
        }
        while let Some(ev) = self.node.poll_event() {
            let _ = self.events.send(ev);
        }
        self.save_trust(Instant::now());
    }

    /// Hands the trust file's snapshot, if one is due at `now`, to the writer thread.
    fn save_trust(&mut self, now: Instant) {
        if let Some(save) = self.node.poll_trust_save(now) {
            if self.trust_writer.send(TrustWrite::Save(save)).is_err() {
                tracing::error!("the trust-file writer has stopped: trust changes are not saved");
            }
        }
    }

    fn add_peers(&self, adds: &mut Vec<(PublicKey, Option<Hostname>)>) {
        match adds.len() {
            0 => {}
            1 => self.tunnels.add_peer(adds[0].0, adds[0].1.as_ref()),
            _ => self.tunnels.add_peers(adds),
        }
        adds.clear();
    }

    fn apply(&self, effect: Effect) {
        let t = &self.tunnels;
        match effect {
            Effect::AddPeer { key, hostname } => t.add_peer(key, hostname.as_ref()),
            Effect::RemovePeer(key) => t.remove_peer(&key),
            Effect::SetPath { key, path } => t.set_path(&key, path),
            Effect::SetRtt { key, rtt } => t.set_rtt(&key, rtt),
            Effect::SetRelays(relays) => t.set_relays(relays),
        }
    }
}

/// The trust-file writer (on a blocking thread): writes each snapshot, folding the ones that
/// queued meanwhile into the newest (many changes, one write), then answers the `Synced`
/// requests that came with them. A failed write is logged with the file and what to do; trust
/// in memory is unaffected. Returns the number of writes once the node driver is gone.
fn write_trust_snapshots(rx: std::sync::mpsc::Receiver<TrustWrite>) -> usize {
    let mut writes = 0;
    while let Ok(first) = rx.recv() {
        let (mut newest, mut synced) = (None, Vec::new());
        for msg in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match msg {
                TrustWrite::Save(save) => newest = Some(save),
                TrustWrite::Synced(done) => synced.push(done),
            }
        }
        if let Some(save) = newest {
            writes += 1;
            if let Err(e) = save.write() {
                tracing::error!(hint = %e.hint(), "trust changes not saved: {e}");
            }
        }
        for done in synced {
            let _ = done.send(());
        }
    }
    writes
}

/// The next data-plane event, or never when there is no event stream.
async fn next_event(rx: &mut Option<EventReceiver>) -> Option<DataPlaneEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::node::trust::{TrustStore, TRUST_FILE};

    #[test]
    fn a_sync_request_is_answered_once_the_snapshot_sent_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUST_FILE);
        let me = Identity::from_seed([1; 32]).public_key();
        let mut store = TrustStore::open(me, &path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || write_trust_snapshots(rx));
        let peer = Identity::from_seed([2; 32]).public_key();
        store.request(peer, None, "", 1_750_000_000_000).unwrap();
        tx.send(TrustWrite::Save(store.take_save().unwrap()))
            .unwrap();
        let (done, written) = oneshot::channel();
        tx.send(TrustWrite::Synced(done)).unwrap();
        written
            .blocking_recv()
            .expect("the sync request is answered");
        let again = TrustStore::open(me, &path).unwrap();
        assert_eq!(again.peers().count(), 1, "written before the answer");
        drop(tx);
        assert_eq!(writer.join().unwrap(), 1);
    }

    #[test]
    fn queued_trust_snapshots_make_one_write_of_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUST_FILE);
        let me = Identity::from_seed([1; 32]).public_key();
        let mut store = TrustStore::open(me, &path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for n in 2..=5u8 {
            let peer = Identity::from_seed([n; 32]).public_key();
            store.request(peer, None, "", 1_750_000_000_000).unwrap();
            tx.send(TrustWrite::Save(store.take_save().unwrap()))
                .unwrap();
        }
        drop(tx);
        assert_eq!(write_trust_snapshots(rx), 1);
        let again = TrustStore::open(me, &path).unwrap();
        assert_eq!(again.peers().count(), 4, "the newest snapshot was written");
    }
}
