//! The file service on overlay port 1004: resumable, verified file transfer between trusted
//! peers, in both modes (over [`OverlayNet`]).
//!
//! - `send-file` records the transfer in the sender's state directory (`files/outgoing/`)
//!   and returns; a worker ([`send`]) offers it to the peer and streams it from the
//!   receiver's verified offset, retrying with backoff while the peer is offline, after a
//!   dropped connection and after a restart of either daemon.
//! - The receiver ([`receive`]) checks its limits, writes into a partial file outside
//!   `received/` ([`store`]), fsyncs and records its offset periodically, checks the SHA-256
//!   end to end and only then moves the file into `received/` under a name no file has.
//! - Frames: [`wire`]; docs/PROTOCOL.md ("File transfer") documents them.

pub mod outgoing;
pub mod receive;
pub mod send;
pub mod store;
pub mod wire;
pub mod writer;

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};

use crate::clock::unix_ms_now;
use crate::config::FilesConfig;
use crate::error::{ErrorCode, PilotError};
use crate::services::messages::ConnectionLimits;
pub use crate::services::messages::Sender;
use crate::userspace::overlay_net::{OverlayListener, OverlayNet, OverlayStream};
use crate::wg::DataPlane;

use outgoing::{Outgoing, OutgoingStore};
pub use store::ReceivedFile;
use store::Store;
pub use wire::{RefuseCode, FILE_PORT};

/// Received files buffered per listener of [`Files::subscribe`] before a slow one misses some.
const RECEIVED_QUEUE: usize = 256;

/// Errors of the file service.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A frame longer than its kind allows.
    #[error("frame of {0} bytes exceeds its limit")]
    FrameTooLarge(usize),
    /// A frame that is not what the protocol allows here.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A control frame whose `v` is not 1.
    #[error("unsupported file protocol version")]
    Version,
    /// The peer refused the transfer.
    #[error("refused by the peer ({}): {message}", code.as_str())]
    Refused {
        /// Why.
        code: RefuseCode,
        /// The peer's text.
        message: String,
    },
    /// The peer sent or took nothing for too long.
    #[error("timed out {0}")]
    TimedOut(&'static str),
    /// A newer connection of the same transfer took over.
    #[error("superseded by a newer connection of the same transfer")]
    Superseded,
    /// The file to send is not usable.
    #[error("{0}")]
    BadFile(String),
    /// Reading or writing a stream or file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<FileError> for PilotError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::BadFile(m) => PilotError::invalid(
                m,
                "give the path of a regular file you can read, e.g. pilotctl send-file worker-node ./data.csv",
            ),
            FileError::Refused { .. } => PilotError::new(
                ErrorCode::ConnectionFailed,
                e.to_string(),
                "see `pilotctl transfers` for the code",
            ),
            _ => PilotError::internal(format!("the file service failed: {e}")),
        }
    }
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We send it.
    Outgoing,
    /// We receive it.
    Incoming,
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Waiting for its next attempt (peer offline, connection dropped, not started yet).
    Queued,
    /// Bytes are moving.
    Sending,
    /// Incoming: bytes are arriving.
    Receiving,
    /// Incoming: a partial file waits for its sender to resume.
    Partial,
    /// The receiver refused it for now (`quota`, `disk_full`, `busy`): retried with backoff.
    Refused,
    /// Complete and verified in the receiver's `received/`.
    Done,
    /// Stopped for good (see `error`).
    Failed,
}

/// Why a transfer failed or was refused, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferError {
    /// `too_large`, `quota`, `disk_full`, `bad_offer`, `hash_mismatch`, `busy`, `io` (the
    /// receiver's refusals), `file_changed`, `file_unreadable` (ours), `unreachable`,
    /// `interrupted` (the last attempt's connection; retried).
    pub code: String,
    /// Details (a peer's refusal text: escape it before showing it).
    pub message: String,
}

/// One transfer, either way, as `transfers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transfer {
    /// The transfer id (32 hex digits).
    pub id: String,
    /// Outgoing or incoming.
    pub direction: Direction,
    /// The peer's public key (base64).
    pub peer: String,
    /// The peer's address (addr48 text).
    pub peer_address: String,
    /// The peer's hostname, if known.
    pub peer_hostname: Option<String>,
    /// The file name offered.
    pub name: String,
    /// Outgoing: the local path read at send time.
    pub path: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Bytes the receiver holds durably (outgoing: as the receiver last said).
    pub offset: u64,
    /// Outgoing: file bytes written to the network in total, over every attempt; incoming:
    /// bytes received by the current connection.
    pub bytes_sent: u64,
    /// Where it stands.
    pub state: TransferState,
    /// The last refusal or failure, if any.
    pub error: Option<TransferError>,
    /// SHA-256 of the file (outgoing: once hashed).
    pub sha256: Option<String>,
    /// Outgoing: the name the receiver stored it under.
    pub stored_as: Option<String>,
    /// When it was queued or first offered (unix ms).
    pub created_ms: u64,
    /// Last change (unix ms).
    pub updated_ms: u64,
}

/// The file service: receiver on port 1004, outgoing queue and its worker.
pub struct Files {
    store: Store,
    outgoing: OutgoingStore,
    overlay: OverlayNet,
    plane: Arc<DataPlane>,
    limits: FilesConfig,
    wake: Notify,
    /// Woken whenever an attempt of an outgoing transfer ends (see [`Files::wait_final`]).
    settled: Notify,
    received: broadcast::Sender<ReceivedFile>,
    live_out: Mutex<HashMap<String, send::Live>>,
    incoming: receive::Incoming,
    connections: ConnectionLimits,
}

impl Files {
    /// Opens the state under `state_dir`, starts the receiver on port 1004 and the worker
    /// (which resumes the queued transfers from before a restart).
    pub async fn start(
        state_dir: &Path,
        overlay: OverlayNet,
        plane: Arc<DataPlane>,
        limits: &FilesConfig,
    ) -> Result<Arc<Self>, FileError> {
        let store = Store::open(state_dir)?;
        let f = Arc::new(Files {
            incoming: receive::Incoming::new(store.clone(), limits.clone()),
            store,
            outgoing: OutgoingStore::open(state_dir.join("files").join("outgoing"))?,
            overlay,
            plane,
            limits: limits.clone(),
            wake: Notify::new(),
            settled: Notify::new(),
            received: broadcast::channel(RECEIVED_QUEUE).0,
            live_out: Mutex::new(HashMap::new()),
            connections: ConnectionLimits::new(
                limits.max_connections,
                limits.max_connections_per_peer,
            ),
        });
        let listener = f.overlay.listen(FILE_PORT).await?;
        let me = f.clone();
        tokio::spawn(async move { me.accept_loop(listener).await });
        let me = f.clone();
        tokio::spawn(async move { me.worker().await });
        Ok(f)
    }

    /// Queues `path` (absolute) for the peer `to_key` at `to_ipv6`, under `name` (default:
    /// the file's own name); records its size and modification time, which must not change.
    pub fn send(
        &self,
        to_key: String,
        to_ipv6: Ipv6Addr,
        path: &Path,
        name: Option<String>,
    ) -> Result<Transfer, FileError> {
        let peer = self.plane.peer_by_ip(&to_ipv6);
        let o = outgoing::new_outgoing(path, name, to_key, to_ipv6, peer, unix_ms_now())?;
        self.outgoing.put(&o)?;
        self.wake.notify_one();
        Ok(o.transfer)
    }

    /// The outgoing transfer `id` once it is final (`done` or `failed`), or as it stands when
    /// `within` has passed (the transfer goes on).
    pub async fn wait_final(&self, id: &str, within: Duration) -> Result<Transfer, FileError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the state is read, so an attempt ending in between still wakes.
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let t = self
                .outgoing
                .get(id)
                .map(|o| self.with_live(o))
                .ok_or_else(|| FileError::Malformed(format!("no outgoing transfer {id}")))?;
            if matches!(t.state, TransferState::Done | TransferState::Failed)
                || tokio::time::timeout_at(deadline, settled).await.is_err()
            {
                return Ok(t);
            }
        }
    }

    /// Every transfer: outgoing (with live progress) and incoming (partial files).
    pub fn transfers(&self) -> Result<Vec<Transfer>, FileError> {
        let mut out: Vec<Transfer> = self
            .outgoing
            .all()?
            .into_iter()
            .map(|o| self.with_live(o))
            .collect();
        out.extend(self.incoming.transfers());
        Ok(out)
    }

    fn with_live(&self, o: Outgoing) -> Transfer {
        let mut t = o.transfer;
        if let Some(l) = self.live_out.lock().expect("live").get(&t.id) {
            l.apply(&mut t);
        }
        t
    }

    /// The files in `received/`, oldest first; with `clear`, exactly those are deleted.
    pub fn received(&self, clear: bool) -> Result<Vec<ReceivedFile>, FileError> {
        self.store.received(clear)
    }

    /// Each file newly stored in `received/` from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReceivedFile> {
        self.received.subscribe()
    }

    async fn accept_loop(self: Arc<Self>, mut listener: OverlayListener) {
        loop {
            match listener.accept().await {
                Ok(s) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.serve(s).await {
                            tracing::debug!(error = %e, "file connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "file accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// One sender's connection, if it is a trusted peer and the connection caps admit it.
    async fn serve(&self, s: OverlayStream) -> Result<(), FileError> {
        let SocketAddr::V6(remote) = s.peer_addr()? else {
            return Ok(());
        };
        let Some(_slot) = self.connections.admit(*remote.ip()) else {
            tracing::warn!(%remote, "file connection refused: too many open");
            return Ok(());
        };
        let Some(peer) = self.plane.peer_by_ip(remote.ip()) else {
            tracing::warn!(%remote, "file connection from an address that is no peer: closed");
            return Ok(());
        };
        let sender = Sender {
            key: peer.public_key.to_string(),
            address: peer.addr48.to_string(),
            hostname: peer.hostname.clone(),
        };
        if let Some(file) = self.incoming.serve(&sender, s).await? {
            tracing::info!(from = %sender.address, name = %file.name.escape_debug(),
                size = file.size, "file received");
            let _ = self.received.send(file);
        }
        Ok(())
    }
}
