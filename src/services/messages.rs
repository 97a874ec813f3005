//! The message service on port 1001: a durable outbox retried until the peer acks, and a
//! receiver that stores before it acks ([`super::message_store`]).

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot, Notify};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::clock::unix_ms_now;
use crate::config::MessagesConfig;
use crate::services::message_store::{
    read_frame, read_frame_within, write_frame, Inbox, InboxEntry, MessageError, MessageType,
    Outbox, OutboxEntry, StoreOutcome, WireAck, WireMessage, WireRefusal, WireReply, MESSAGE_PORT,
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
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Delivery>>>>,
    received: broadcast::Sender<InboxEntry>,
    refusals: Mutex<HashMap<String, String>>,
    connections: ConnectionLimits,
    limits: MessagesConfig,
    /// Delivered and retried counts (the metrics endpoint reads them).
    stats: crate::services::message_stats::MessageStats,
}

/// What became of a message while its sender waited (`send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The recipient acked it: it is in the recipient's inbox.
    Delivered,
    /// Not answered yet: it stays in the outbox and is retried.
    Queued,
    /// The recipient refused it (its inbox quota is reached; the reason is the peer's text).
    /// The refusal is not final: the message stays in the outbox and is retried until the
    /// recipient makes room and acks it.
    Refused(String),
}

/// Who sent the messages of one connection (the trusted peer the data plane admitted).
#[derive(Debug, Clone)]
pub struct Sender {
    /// Its public key (base64).
    pub key: String,
    /// Its address (addr48 text).
    pub address: String,
    /// Its hostname, if known.
    pub hostname: Option<String>,
}

/// Counts the connections open to the message service, per peer and in total.
#[derive(Debug)]
pub struct ConnectionLimits {
    open: Mutex<(usize, HashMap<Ipv6Addr, usize>)>,
    total_max: usize,
    peer_max: usize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot<'a> {
    limits: &'a ConnectionLimits,
    peer: Ipv6Addr,
}

impl ConnectionLimits {
    /// At most `total_max` connections at once, and `peer_max` from one peer.
    pub fn new(total_max: usize, peer_max: usize) -> Self {
        ConnectionLimits {
            open: Mutex::new((0, HashMap::new())),
            total_max,
            peer_max,
        }
    }

    /// A place for one more connection from `peer`, or `None` when a cap is reached.
    pub fn admit(&self, peer: Ipv6Addr) -> Option<ConnectionSlot<'_>> {
        let mut open = self.open.lock().expect("connections");
        let from_peer = open.1.get(&peer).copied().unwrap_or(0);
        if open.0 >= self.total_max || from_peer >= self.peer_max {
            return None;
        }
        open.0 += 1;
        open.1.insert(peer, from_peer + 1);
        Some(ConnectionSlot { limits: self, peer })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("connections");
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.peer);
            }
        }
    }
}

impl Messages {
    /// Opens the inbox and outbox under `state_dir` and starts the receiver (port 1001) and the
    /// delivery task (which resumes whatever the outbox holds from before a restart).
    pub async fn start(
        state_dir: &std::path::Path,
        overlay: OverlayNet,
        plane: Arc<DataPlane>,
        limits: &MessagesConfig,
    ) -> Result<Arc<Self>, MessageError> {
        let inbox = Inbox::open(
            state_dir.join("inbox"),
            state_dir.join("inbox-seen"),
            limits,
            unix_ms_now(),
        )?;
        let m = Arc::new(Messages {
            inbox: Mutex::new(inbox),
            outbox: Outbox::open(state_dir.join("outbox"))?,
            overlay,
            plane,
            wake: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            received: broadcast::channel(RECEIVED_QUEUE).0,
            refusals: Mutex::new(HashMap::new()),
            connections: ConnectionLimits::new(
                limits.max_connections,
                limits.max_connections_per_peer,
            ),
            limits: limits.clone(),
            stats: Default::default(),
        });
        let listener = m.overlay.listen(MESSAGE_PORT).await?;
        let recv = m.clone();
        tokio::spawn(async move { recv.receive_loop(listener).await });
        let deliver = m.clone();
        tokio::spawn(async move { deliver.delivery_loop().await });
        Ok(m)
    }

    /// Messages delivered and delivery attempts retried so far.
    pub fn stats(&self) -> crate::services::message_stats::MessageStatsSnapshot {
        self.stats.snapshot()
    }

    /// Queues a message durably and returns its id; waits up to `wait` for the peer's ack or
    /// refusal and says which came (or [`Delivery::Queued`] if neither).
    pub async fn send(
        &self,
        to_key: String,
        to_ipv6: Ipv6Addr,
        kind: MessageType,
        data: serde_json::Value,
        wait: Duration,
    ) -> Result<(String, Delivery), MessageError> {
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
            refused: None,
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
        let outcome = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(d)) => d,
            _ => Delivery::Queued,
        };
        Ok((id, outcome))
    }

    /// Messages in the inbox, oldest first; with `clear`, exactly those are deleted, in the
    /// same step (a message that arrives meanwhile waits for the next listing).
    pub fn inbox(&self, clear: bool) -> Result<Vec<InboxEntry>, MessageError> {
        let mut inbox = self.inbox.lock().expect("inbox");
        if clear {
            inbox.take()
        } else {
            inbox.list()
        }
    }

    /// Each message newly stored in the inbox from now on (a slow receiver misses some and
    /// is told how many).
    pub fn subscribe(&self) -> broadcast::Receiver<InboxEntry> {
        self.received.subscribe()
    }

    /// Messages not yet acked by their recipients, each with the recipient's last refusal.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, MessageError> {
        let refusals = self.refusals.lock().expect("refusals");
        let mut pending = self.outbox.pending()?;
        for e in &mut pending {
            e.refused = refusals.get(&e.message.id).cloned();
        }
        Ok(pending)
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

    /// One sender's connection, if the connection caps admit it.
    async fn receive(&self, s: OverlayStream) -> Result<(), MessageError> {
        let SocketAddr::V6(remote) = s.peer_addr()? else {
            return Ok(());
        };
        let Some(_slot) = self.connections.admit(*remote.ip()) else {
            tracing::warn!(%remote, "message connection refused: too many open");
            return Ok(());
        };
        // The data plane only lets trusted peers in and checks inner sources, so the remote
        // address names the sender; find its key.
        let Some(peer) = self.plane.peer_by_ip(remote.ip()) else {
            tracing::warn!(%remote, "message from an address that is no peer: closed");
            return Ok(());
        };
        let sender = Sender {
            key: peer.public_key.to_string(),
            address: peer.addr48.to_string(),
            hostname: peer.hostname.clone(),
        };
        serve_connection(&self.inbox, &sender, s, &self.limits, &self.received).await
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
                        self.refusals.lock().expect("refusals").remove(&id);
                        next_try.remove(&id);
                        let _ = self.outbox.remove(&id);
                        self.stats.delivered();
                        self.answer_waiters(&id, Delivery::Delivered);
                    } else {
                        let refused = self.refusals.lock().expect("refusals").get(&id).cloned();
                        if let Some(reason) = refused {
                            self.answer_waiters(&id, Delivery::Refused(reason));
                        }
                        let backoff = next_try
                            .get(&id)
                            .map(|(_, b)| (*b * 2).min(RETRY_MAX))
                            .unwrap_or(RETRY_MIN);
                        next_try.insert(id, (Instant::now() + backoff, backoff));
                        self.stats.retried();
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

    /// Tells whoever waits in `send` for message `id` what became of it.
    fn answer_waiters(&self, id: &str, outcome: Delivery) {
        if let Some(ws) = self.waiters.lock().expect("waiters").remove(id) {
            for w in ws {
                let _ = w.send(outcome.clone());
            }
        }
    }

    /// Sends `msgs` to one peer over one connection; returns the ids it acked. A refusal
    /// (inbox full) is remembered for `outbox` and ends the attempt.
    async fn deliver_to(&self, ip: Ipv6Addr, msgs: &[OutboxEntry]) -> Vec<String> {
        let mut acked = Vec::new();
        let attempt = async {
            let mut s = self
                .overlay
                .connect(SocketAddrV6::new(ip, MESSAGE_PORT, 0, 0))
                .await?;
            for m in msgs {
                write_frame(&mut s, &m.message).await?;
                match read_frame::<_, WireReply>(&mut s).await? {
                    Some(WireReply::Ack(a)) if a.ack == m.message.id => acked.push(a.ack),
                    Some(WireReply::Refused(r)) if r.refused == m.message.id => {
                        tracing::warn!(%ip, id = %r.refused, reason = %r.reason.escape_debug(),
                            "message refused by its recipient; kept and retried");
                        self.refusals
                            .lock()
                            .expect("refusals")
                            .insert(r.refused, r.reason);
                        break;
                    }
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

/// Serves one admitted connection from `sender`: each message is stored (or found stored
/// before) and then acked, or refused when a quota is reached; the connection closes when
/// the peer is idle longer than `limits.idle_timeout_secs`, or takes longer than
/// `limits.read_timeout_secs` to send a message or take its answer.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    inbox: &Mutex<Inbox>,
    sender: &Sender,
    mut s: S,
    limits: &MessagesConfig,
    received: &broadcast::Sender<InboxEntry>,
) -> Result<(), MessageError> {
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let read = Duration::from_secs(limits.read_timeout_secs);
    while let Some(m) = read_frame_within::<_, WireMessage>(&mut s, idle, read).await? {
        if m.v != 1 || !crate::services::message_store::valid_id(&m.id) {
            return Err(MessageError::Malformed("bad version or id".into()));
        }
        if m.kind == MessageType::Text && !m.data.is_string() {
            return Err(MessageError::Malformed(
                "text message without a string".into(),
            ));
        }
        let entry = InboxEntry {
            from: sender.key.clone(),
            from_address: sender.address.clone(),
            from_hostname: sender.hostname.clone(),
            id: m.id.clone(),
            kind: m.kind,
            data: m.data,
            sent_ms: m.sent_ms,
            received_ms: unix_ms_now(),
        };
        let outcome = inbox.lock().expect("inbox").store(&entry)?;
        let reply = match outcome {
            StoreOutcome::New => {
                tracing::info!(from = %entry.from_address, id = %entry.id, "message received");
                let _ = received.send(entry);
                WireReply::Ack(WireAck { v: 1, ack: m.id })
            }
            StoreOutcome::Duplicate => WireReply::Ack(WireAck { v: 1, ack: m.id }),
            StoreOutcome::Refused(q) => {
                tracing::warn!(from = %entry.from_address, id = %entry.id, reason = %q.0,
                    "message refused");
                WireReply::Refused(WireRefusal {
                    v: 1,
                    refused: m.id,
                    reason: q.0,
                })
            }
        };
        tokio::time::timeout(read, write_frame(&mut s, &reply))
            .await
            .map_err(|_| MessageError::TimedOut("sending an ack"))??;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::message_store::new_id;
    use tokio::io::AsyncWriteExt;

    fn sender(key: &str) -> Sender {
        Sender {
            key: key.into(),
            address: "0a1b.2c3d.4e5f".into(),
            hostname: Some("worker-node".into()),
        }
    }

    fn message(id: &str) -> WireMessage {
        WireMessage {
            v: 1,
            id: id.into(),
            kind: MessageType::Text,
            data: "hello".into(),
            sent_ms: 1,
        }
    }

    fn inbox(dir: &std::path::Path, cfg: &MessagesConfig) -> Mutex<Inbox> {
        let inbox = Inbox::open(dir.join("inbox"), dir.join("seen"), cfg, unix_ms_now());
        Mutex::new(inbox.unwrap())
    }

    #[tokio::test]
    async fn a_sender_over_quota_gets_a_refusal_with_the_reason_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig {
            inbox_max_messages_per_sender: 1,
            ..MessagesConfig::default()
        };
        let inbox = inbox(dir.path(), &cfg);
        let (tx, _) = broadcast::channel(8);
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let (a, b) = (new_id(), new_id());
        let sent = async {
            write_frame(&mut peer, &message(&a)).await.unwrap();
            let r1: WireReply = read_frame(&mut peer).await.unwrap().unwrap();
            write_frame(&mut peer, &message(&b)).await.unwrap();
            let r2: WireReply = read_frame(&mut peer).await.unwrap().unwrap();
            drop(peer);
            (r1, r2)
        };
        let k1 = sender("k1");
        let (served, (r1, r2)) = tokio::join!(serve_connection(&inbox, &k1, ours, &cfg, &tx), sent);
        served.unwrap();
        assert_eq!(r1, WireReply::Ack(WireAck { v: 1, ack: a }));
        match r2 {
            WireReply::Refused(r) => {
                assert_eq!(r.refused, b);
                assert!(r.reason.contains("inbox is full"), "{}", r.reason);
            }
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(inbox.lock().unwrap().list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig {
            idle_timeout_secs: 1,
            ..MessagesConfig::default()
        };
        let inbox = inbox(dir.path(), &cfg);
        let (tx, _) = broadcast::channel(8);
        let (_peer, ours) = tokio::io::duplex(1 << 16);
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            serve_connection(&inbox, &sender("k1"), ours, &cfg, &tx),
        )
        .await
        .expect("the idle connection was kept open");
        assert!(
            matches!(served, Err(MessageError::TimedOut(_))),
            "{served:?}"
        );
    }

    #[tokio::test]
    async fn a_message_sent_too_slowly_is_cut_off_after_the_read_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig {
            read_timeout_secs: 1,
            ..MessagesConfig::default()
        };
        let inbox = inbox(dir.path(), &cfg);
        let (tx, _) = broadcast::channel(8);
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        // A frame that announces 1000 bytes and never sends them.
        peer.write_all(&1000u32.to_be_bytes()).await.unwrap();
        peer.write_all(b"{").await.unwrap();
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            serve_connection(&inbox, &sender("k1"), ours, &cfg, &tx),
        )
        .await
        .expect("the slow message was waited for past the read timeout");
        assert!(
            matches!(served, Err(MessageError::TimedOut("reading a message"))),
            "{served:?}"
        );
    }

    #[test]
    fn connections_are_capped_per_peer_and_in_total() {
        let limits = ConnectionLimits::new(3, 2);
        let (p, q, r): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            "fd00::3".parse().unwrap(),
        );
        let p1 = limits.admit(p).unwrap();
        let _p2 = limits.admit(p).unwrap();
        assert!(limits.admit(p).is_none(), "third connection from one peer");
        let _q1 = limits.admit(q).unwrap();
        assert!(limits.admit(r).is_none(), "fourth connection in total");
        drop(p1);
        assert!(
            limits.admit(r).is_some(),
            "a closed connection frees its place"
        );
    }
}
