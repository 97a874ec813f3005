//! The message service on port 1001: a durable outbox retried until the peer acks, and a
//! receiver that stores before it acks ([`super::message_store`]).

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot, Notify};

use crate::clock::unix_ms_now;
use crate::services::message_store::{
    read_frame, write_frame, Inbox, InboxEntry, MessageError, MessageType, Outbox, OutboxEntry,
    WireAck, WireMessage, MESSAGE_PORT,
};
use crate::userspace::overlay_net::{OverlayNet, OverlayStream};
use crate::wg::DataPlane;

/// How long one delivery attempt may take (connect + send + ack).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry backoff bounds for undelivered messages.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Received messages buffered per listener of [`Messages::subscribe`] before a slow one misses
/// some.
const RECEIVED_QUEUE: usize = 256;

/// The message service: inbox, outbox, receiver and delivery task.
pub struct Messages {
    inbox: Mutex<Inbox>,
    outbox: Outbox,
    overlay: OverlayNet,
    plane: Arc<DataPlane>,
    wake: Notify,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    received: broadcast::Sender<InboxEntry>,
}

impl Messages {
    /// Opens the inbox and outbox under `state_dir` and starts the receiver (port 1001) and the
    /// delivery task (which resumes whatever the outbox holds from before a restart).
    pub async fn start(
        state_dir: &std::path::Path,
        overlay: OverlayNet,
        plane: Arc<DataPlane>,
    ) -> Result<Arc<Self>, MessageError> {
        let m = Arc::new(Messages {
            inbox: Mutex::new(Inbox::open(state_dir.join("inbox"))?),
            outbox: Outbox::open(state_dir.join("outbox"))?,
            overlay,
            plane,
            wake: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            received: broadcast::channel(RECEIVED_QUEUE).0,
        });
        let listener = m.overlay.listen(MESSAGE_PORT).await?;
        let recv = m.clone();
        tokio::spawn(async move { recv.receive_loop(listener).await });
        let deliver = m.clone();
        tokio::spawn(async move { deliver.delivery_loop().await });
        Ok(m)
    }

    /// Queues a message durably and returns its id; waits up to `wait` for the peer's ack and
    /// says whether it came.
    pub async fn send(
        &self,
        to_key: String,
        to_ipv6: Ipv6Addr,
        kind: MessageType,
        data: serde_json::Value,
        wait: Duration,
    ) -> Result<(String, bool), MessageError> {
        let id = crate::services::message_store::new_id();
        let entry = OutboxEntry {
            to: to_key,
            to_ipv6,
            message: WireMessage {
                v: 1,
                id: id.clone(),
                kind,
                data,
                sent_ms: unix_ms_now(),
            },
        };
        self.outbox.put(&entry)?;
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters")
            .entry(id.clone())
            .or_default()
            .push(tx);
        self.wake.notify_one();
        let delivered = tokio::time::timeout(wait, rx).await.is_ok();
        Ok((id, delivered))
    }

    /// Messages in the inbox, oldest first.
    pub fn inbox(&self) -> Result<Vec<InboxEntry>, MessageError> {
        self.inbox.lock().expect("inbox").list()
    }

    /// Empties the inbox; returns how many were removed.
    pub fn clear_inbox(&self) -> Result<usize, MessageError> {
        self.inbox.lock().expect("inbox").clear()
    }

    /// Each message newly stored in the inbox from now on (a slow receiver misses some and
    /// is told how many).
    pub fn subscribe(&self) -> broadcast::Receiver<InboxEntry> {
        self.received.subscribe()
    }

    /// Messages not yet acked by their recipients.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, MessageError> {
        self.outbox.pending()
    }

    async fn receive_loop(
        self: Arc<Self>,
        mut listener: crate::userspace::overlay_net::OverlayListener,
    ) {
        loop {
            match listener.accept().await {
                Ok(s) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.receive(s).await {
                            tracing::debug!(error = %e, "message connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "message accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// One sender's connection: store each message, then ack it.
    async fn receive(&self, mut s: OverlayStream) -> Result<(), MessageError> {
        let SocketAddr::V6(remote) = s.peer_addr()? else {
            return Ok(());
        };
        // The data plane only lets trusted peers in and checks inner sources, so the remote
        // address names the sender; find its key.
        let Some(peer) = self.plane.peer_by_ip(remote.ip()) else {
            tracing::warn!(%remote, "message from an address that is no peer: closed");
            return Ok(());
        };
        while let Some(m) = read_frame::<_, WireMessage>(&mut s).await? {
            if m.v != 1 || !crate::services::message_store::valid_id(&m.id) {
                return Err(MessageError::Malformed("bad version or id".into()));
            }
            if m.kind == MessageType::Text && !m.data.is_string() {
                return Err(MessageError::Malformed(
                    "text message without a string".into(),
                ));
            }
            let entry = InboxEntry {
                from: peer.public_key.to_string(),
                from_address: peer.addr48.to_string(),
                from_hostname: peer.hostname.clone(),
                id: m.id.clone(),
                kind: m.kind,
                data: m.data,
                sent_ms: m.sent_ms,
                received_ms: unix_ms_now(),
            };
            let new = self.inbox.lock().expect("inbox").store(&entry)?;
            if new {
                tracing::info!(from = %entry.from_address, id = %entry.id, "message received");
                let _ = self.received.send(entry);
            }
            write_frame(&mut s, &WireAck { v: 1, ack: m.id }).await?;
        }
        Ok(())
    }

    async fn delivery_loop(self: Arc<Self>) {
        let mut next_try: HashMap<String, (Instant, Duration)> = HashMap::new();
        loop {
            let now = Instant::now();
            let pending = self.outbox.pending().unwrap_or_default();
            let mut by_peer: HashMap<Ipv6Addr, Vec<OutboxEntry>> = HashMap::new();
            for e in pending {
                let due = next_try.get(&e.message.id).is_none_or(|(t, _)| *t <= now);
                if due {
                    by_peer.entry(e.to_ipv6).or_default().push(e);
                }
            }
            let attempts = by_peer.into_iter().map(|(ip, msgs)| {
                let me = self.clone();
                async move {
                    let done = me.deliver_to(ip, &msgs).await;
                    (msgs, done)
                }
            });
            let results = futures_join_all(attempts).await;
            for (msgs, done) in results {
                for m in msgs {
                    let id = m.message.id;
                    if done.contains(&id) {
                        next_try.remove(&id);
                        let _ = self.outbox.remove(&id);
                        if let Some(ws) = self.waiters.lock().expect("waiters").remove(&id) {
                            for w in ws {
                                let _ = w.send(());
                            }
                        }
                    } else {
                        let backoff = next_try
                            .get(&id)
                            .map(|(_, b)| (*b * 2).min(RETRY_MAX))
                            .unwrap_or(RETRY_MIN);
                        next_try.insert(id, (Instant::now() + backoff, backoff));
                    }
                }
            }
            let wait = next_try
                .values()
                .map(|(t, _)| t.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(RETRY_MAX);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends `msgs` to one peer over one connection; returns the ids it acked.
    async fn deliver_to(&self, ip: Ipv6Addr, msgs: &[OutboxEntry]) -> Vec<String> {
        let mut acked = Vec::new();
        let attempt = async {
            let mut s = self
                .overlay
                .connect(SocketAddrV6::new(ip, MESSAGE_PORT, 0, 0))
                .await?;
            for m in msgs {
                write_frame(&mut s, &m.message).await?;
                match read_frame::<_, WireAck>(&mut s).await? {
                    Some(a) if a.ack == m.message.id => acked.push(a.ack),
                    _ => break,
                }
            }
            Ok::<(), MessageError>(())
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT * msgs.len().max(1) as u32, attempt).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%ip, error = %e, "message delivery failed; will retry"),
            Err(_) => tracing::debug!(%ip, "message delivery timed out; will retry"),
        }
        acked
    }
}

/// Runs futures concurrently and collects their outputs (no extra dependency).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
