//! The node's side of the TLS transport (issue 14): one tokio task that carries out what each
//! registry's [`TransportMachine`] decides. It opens the TLS connections (directly or through
//! an HTTP proxy), moves datagrams between the data plane's diversion ([`Diversion`]) and the
//! connections, sends the UDP probes, and tells the node when a registry's transport changed.
//! Every rule lives in [`crate::node::transport`]; nothing here decides anything.

pub mod connect;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;
use tokio::sync::mpsc;

use crate::config::{RelayConfig, TlsMode};
use crate::identity::{Identity, PublicKey};
use crate::node::registry_client::LearnedKeys;
use crate::node::transport::{Action, TransportMachine};
use crate::registry::tls::framed::{read_frames, write_frames, StreamEnd};
use crate::registry::tls::ws;
use crate::wg::divert::{self, Diversion, ADDR_LEN};
use crate::wg::DataPlane;
use crate::wire::registry::{Header, Request, RequestBody};
use crate::wire::stream::MAX_FRAME;

/// How often the machines run (besides their own timers).
const TICK: Duration = Duration::from_millis(250);
/// A node sends a keepalive frame after this long without sending.
pub const KEEPALIVE: Duration = Duration::from_secs(25);
/// A connection that brings no frame for this long is dead (the registry's keepalives are
/// our answers; 3 missed heartbeats).
const IDLE: Duration = Duration::from_secs(75);
/// Datagrams queued towards one connection.
const QUEUE: usize = 1024;
/// Backoff between failed connection attempts: from 1 s, doubling, up to 30 s.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the transport reaches each registry, and which keys it must prove.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The registries (their UDP addresses, as configured).
    pub registries: Vec<SocketAddr>,
    /// Keys pinned in the config, by registry.
    pub pinned: HashMap<SocketAddr, PublicKey>,
    /// The file of keys learned on first use (read at each connection).
    pub learned: Option<PathBuf>,
}

/// A live connection: its queue, and whether its reader still runs.
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
}

/// One registry's transport.
struct Link {
    registry: SocketAddr,
    tls_addr: SocketAddr,
    machine: TransportMachine,
    diverted: bool,
    conn: Option<Conn>,
    connecting: Option<tokio::task::JoinHandle<Result<connect::Stream, String>>>,
    next_attempt: Instant,
    backoff: Duration,
}

/// Starts the transport task; `None` when `[relay] tls = "never"` or there is no registry.
pub fn spawn(
    plane: Arc<DataPlane>,
    identity: Arc<Identity>,
    targets: Targets,
    config: &RelayConfig,
) -> Result<Option<tokio::task::JoinHandle<()>>, crate::error::PilotError> {
    if config.tls == TlsMode::Never || targets.registries.is_empty() {
        return Ok(None);
    }
    let proxy = connect::proxy_from(config.proxy.as_deref())?;
    let diversion = plane.diversion();
    let Some(port) = diversion.take_port() else {
        return Err(crate::error::PilotError::internal(
            "diversion port taken twice",
        ));
    };
    diversion.watch(targets.registries.clone());
    if config.tls == TlsMode::Always {
        // Before the node's first registration goes out.
        diversion.set_diverted(targets.registries.clone());
    }
    let from_plane = UnixDatagram::from_std(port.from_plane)
        .map_err(|e| crate::error::PilotError::internal(format!("diversion socket: {e}")))?;
    let to_plane = UnixDatagram::from_std(port.to_plane)
        .map_err(|e| crate::error::PilotError::internal(format!("diversion socket: {e}")))?;
    let now = Instant::now();
    let links = targets
        .registries
        .iter()
        .map(|&registry| Link {
            registry,
            tls_addr: SocketAddr::new(registry.ip(), config.tls_port),
            machine: TransportMachine::new(config),
            diverted: config.tls == TlsMode::Always,
            conn: None,
            connecting: None,
            next_attempt: now,
            backoff: Duration::from_secs(1),
        })
        .collect();
    let task = Transport {
        plane,
        identity,
        diversion,
        targets,
        proxy,
        websocket: config.websocket,
        links,
        to_plane: Arc::new(to_plane),
    };
    tracing::info!(mode = ?config.tls, port = config.tls_port, websocket = config.websocket, proxy = ?task.proxy, "TLS transport ready");
    Ok(Some(tokio::spawn(task.run(from_plane))))
}

struct Transport {
    plane: Arc<DataPlane>,
    identity: Arc<Identity>,
    diversion: Arc<Diversion>,
    targets: Targets,
    proxy: Option<String>,
    websocket: bool,
    links: Vec<Link>,
    to_plane: Arc<UnixDatagram>,
}

impl Transport {
    async fn run(mut self, from_plane: UnixDatagram) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; ADDR_LEN + MAX_FRAME + 64];
        loop {
            tokio::select! {
                r = from_plane.recv(&mut buf) => match r {
                    Ok(n) => self.outbound(&buf[..n]),
                    Err(e) => {
                        tracing::warn!("TLS transport: the data plane's queue failed: {e}");
                        return;
                    }
                },
                _ = tick.tick() => self.step(Instant::now()).await,
            }
        }
    }

    /// A datagram the data plane diverted: onto its registry's connection (dropped when
    /// there is none or its queue is full, as UDP would drop it).
    fn outbound(&mut self, msg: &[u8]) {
        let Some(addr) = divert::get_addr(msg) else {
            return;
        };
        let link = self.links.iter().find(|l| same(l.registry, addr));
        if let Some(conn) = link.and_then(|l| l.conn.as_ref()) {
            let _ = conn.tx.try_send(msg[ADDR_LEN..].to_vec());
        }
    }

    /// Runs every machine and carries out its actions.
    async fn step(&mut self, now: Instant) {
        let mut changed = false;
        for i in 0..self.links.len() {
            self.reap(i, now).await;
            let l = &mut self.links[i];
            let health = self.diversion.health(l.registry);
            let up = l.conn.is_some();
            for action in l.machine.step(now, health, up) {
                changed |= self.apply(i, action, now);
            }
            let l = &mut self.links[i];
            if l.machine.wants_tls()
                && l.conn.is_none()
                && l.connecting.is_none()
                && now >= l.next_attempt
            {
                self.start_connect(i);
            }
        }
        if changed {
            let diverted = self
                .links
                .iter()
                .filter(|l| l.diverted)
                .map(|l| l.registry)
                .collect();
            self.diversion.set_diverted(diverted);
        }
    }

    /// Takes a finished connection attempt, and forgets a connection whose reader ended.
    async fn reap(&mut self, i: usize, now: Instant) {
        let l = &mut self.links[i];
        if l.conn.as_ref().is_some_and(|c| c.reader.is_finished()) {
            tracing::info!(registry = %l.registry, "TLS connection to the registry closed");
            l.conn = None;
        }
        if !l.connecting.as_ref().is_some_and(|h| h.is_finished()) {
            return;
        }
        let Some(h) = l.connecting.take() else { return };
        let result = h.await;
        let registry = l.registry;
        if let Ok(Ok(stream)) = result {
            let how = stream.name();
            tracing::info!(%registry, tls = %l.tls_addr, transport = how, "connected to the registry over TLS");
            let conn = self.attach(stream, registry);
            let l = &mut self.links[i];
            l.backoff = Duration::from_secs(1);
            l.conn = Some(conn);
            return;
        }
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(registry = %l.registry, "TLS transport: {e}");
                l.next_attempt = now + l.backoff;
                l.backoff = (l.backoff * 2).min(MAX_BACKOFF);
            }
            Err(_) => l.next_attempt = now + l.backoff,
        }
    }

    /// Carries out one action; whether the set of diverted registries changed.
    fn apply(&mut self, i: usize, action: Action, _now: Instant) -> bool {
        let l = &mut self.links[i];
        match action {
            Action::Connect => {}
            Action::Disconnect => {
                if let Some(c) = l.conn.take() {
                    c.reader.abort();
                }
            }
            Action::Divert(on) => {
                tracing::info!(registry = %l.registry, tls = on, "registry transport: {}", if on { "TLS" } else { "UDP" });
                l.diverted = on;
                return true;
            }
            Action::Reregister => {
                self.diversion.reset_unanswered(l.registry);
                self.plane.transport_changed(l.registry);
            }
            Action::ProbeUdp => {
                let registry = l.registry;
                self.probe(registry);
            }
        }
        false
    }

    /// Sends a cookie-less `Register` over UDP: the registry answers it with a `Challenge`
    /// over UDP (no state change, no signature work), which tells us UDP works again.
    fn probe(&self, registry: SocketAddr) {
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let req = Request {
            header: Header {
                sender: self.identity.public_key(),
                nonce,
                timestamp_ms: crate::clock::unix_ms_now(),
            },
            body: RequestBody::Register {
                hostname: None,
                candidates: Vec::new(),
                cookie: None,
            },
        };
        if let Ok(bytes) = req.encode_signed(&self.identity) {
            let _ = self.plane.send_control_udp(registry, &bytes);
        }
    }

    /// Starts a connection attempt for link `i` in the background.
    fn start_connect(&mut self, i: usize) {
        let l = &mut self.links[i];
        let expected = self.targets.pinned.get(&l.registry).copied().or_else(|| {
            let path = self.targets.learned.as_ref()?;
            LearnedKeys::open(path).ok()?.get(&l.registry)
        });
        let (target, proxy, websocket) = (l.tls_addr, self.proxy.clone(), self.websocket);
        l.connecting = Some(tokio::spawn(async move {
            match connect::open(target, proxy.as_deref(), expected, websocket).await {
                Ok((s, _)) => Ok(s),
                Err(e) => {
                    let e = crate::error::PilotError::from(e);
                    Err(format!("{} ({}): {}", e.message, e.code, e.hint))
                }
            }
        }));
    }

    /// Runs a connection: a writer fed by its queue, a reader that hands datagrams to the
    /// data plane as if they came over UDP from `registry`.
    fn attach(&self, stream: connect::Stream, registry: SocketAddr) -> Conn {
        let (tx, rx) = mpsc::channel(QUEUE);
        let to_plane = Arc::clone(&self.to_plane);
        let reader = tokio::spawn(async move {
            let (in_tx, mut in_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
            let forward = async move {
                while let Some(msg) = in_rx.recv().await {
                    if to_plane.send(&msg).await.is_err() {
                        return;
                    }
                }
            };
            let wrap = |d: &[u8]| {
                let mut m = vec![0u8; ADDR_LEN + d.len()];
                divert::put_addr(&mut m, registry);
                m[ADDR_LEN..].copy_from_slice(d);
                m
            };
            let read = async {
                match stream {
                    connect::Stream::Tls(s) => {
                        let (r, w) = tokio::io::split(s);
                        tokio::spawn(write_frames(w, rx, Some(KEEPALIVE)));
                        read_frames(r, MAX_FRAME, IDLE, &in_tx, wrap).await
                    }
                    connect::Stream::WebSocket(s) => {
                        let (w, r) = futures_util::StreamExt::split(*s);
                        tokio::spawn(ws::write_messages(w, rx, Some(KEEPALIVE)));
                        ws::read_messages(r, MAX_FRAME, IDLE, &in_tx, wrap).await
                    }
                }
            };
            tokio::select! {
                end = read => {
                    let end: StreamEnd = end;
                    tracing::debug!(%registry, "TLS connection ended: {end}");
                }
                _ = forward => {}
            }
        });
        Conn { tx, reader }
    }
}

/// Whether two addresses are the same endpoint (IPv4-mapped or not).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    crate::wg::core::normalize(a) == crate::wg::core::normalize(b)
}
