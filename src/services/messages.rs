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
use crate::services::message_journal::Durable;
use crate::services::message_outbox::Outbox;
use crate::services::message_store::{
    new_id, read_frame, read_frame_within, valid_id, write_frame, Inbox, InboxEntry, InboxFilter,
    MessageError, MessageType, OutboxEntry, StoreOutcome, WireAck, WireMessage, WireRefusal,
    WireReply, MESSAGE_PORT,
};
use crate::userspace::overlay_net::{OverlayNet, OverlayStream};
use crate::wg::DataPlane;

/// How long one delivery attempt may take (connect + send + ack).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a delivery connection is kept open for the next delivery (below the receivers'
/// default `idle_timeout_secs` of 60, so the sender usually closes first).
const KEEP_IDLE: Duration = Duration::from_secs(30);
/// Retry backoff bounds for undelivered messages.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Received messages buffered per listener of [`Messages::subscribe`] before a slow one misses
/// some.
const RECEIVED_QUEUE: usize = 256;

/// The message service: inbox, outbox, receiver and delivery task.
pub struct Messages {
    receiver: Receiver,
    outbox: Outbox,
    overlay: OverlayNet,
    plane: Arc<DataPlane>,
    wake: Notify,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Delivery>>>>,
    refusals: Mutex<HashMap<String, String>>,
    connections: ConnectionLimits,
    /// Delivered and retried counts (the metrics endpoint reads them).
    stats: crate::services::message_stats::MessageStats,
    /// The connection of the last delivery to each peer and when it was last used, kept open
    /// for the next one for at most [`KEEP_IDLE`].
    idle: Mutex<HashMap<Ipv6Addr, (Instant, OverlayStream)>>,
}

/// The receiving side: the inbox, its limits, the listeners of new messages and the requests
/// that wait for a reply.
pub struct Receiver {
    /// The persistent inbox.
    pub inbox: Mutex<Inbox>,
    /// `[messages]` limits.
    pub limits: MessagesConfig,
    /// Each message newly received (stored, or handed to the request that waited for it).
    pub received: broadcast::Sender<InboxEntry>,
    /// Requests waiting for their reply, by request id: the key of the peer asked, and where
    /// its reply goes.
    pub replies: Mutex<HashMap<String, (String, oneshot::Sender<InboxEntry>)>>,
}

impl Receiver {
    /// A receiver over `inbox` with no listener and no request waiting.
    pub fn new(inbox: Inbox, limits: &MessagesConfig) -> Self {
        Receiver {
            inbox: Mutex::new(inbox),
            limits: limits.clone(),
            received: broadcast::channel(RECEIVED_QUEUE).0,
            replies: Mutex::new(HashMap::new()),
        }
    }

    /// The waiter of the request `entry` answers, if `entry` is a reply, a request waits for
    /// it, and `entry` comes from the peer that request went to (anyone else's "reply" is an
    /// ordinary message).
    fn reply_waiter(&self, entry: &InboxEntry) -> Option<oneshot::Sender<InboxEntry>> {
        let rid = entry.in_reply_to.as_ref()?;
        let mut replies = self.replies.lock().expect("replies");
        match replies.get(rid) {
            Some((peer, _)) if *peer == entry.from => replies.remove(rid).map(|(_, tx)| tx),
            _ => None,
        }
    }

    /// Stores `entry`, or hands it to the request waiting for it (then only its id is
    /// recorded, for dedupe). The caller acks once the returned [`Durable`] completes: the
    /// group commit of the inbox journal that carries the message (or its original, for a
    /// duplicate); a reply handed over is acked at once (its dedupe line is not fsynced on
    /// its own, see [`Inbox::record_seen`]).
    fn accept(&self, entry: InboxEntry) -> Result<(StoreOutcome, Durable), MessageError> {
        if let Some(tx) = self.reply_waiter(&entry) {
            let mut inbox = self.inbox.lock().expect("inbox");
            if inbox.seen(&entry.from, &entry.id) {
                return Ok((StoreOutcome::Duplicate, inbox.durable()));
            }
            match tx.send(entry.clone()) {
                Ok(()) => {
                    inbox.record_seen(&entry.from, &entry.id, entry.received_ms)?;
                    return Ok((StoreOutcome::New, Durable::ready()));
                }
                // The request gave up just now: the reply goes to the inbox.
                Err(_) => {
                    let outcome = inbox.store(&entry)?;
                    return Ok((outcome, inbox.durable()));
                }
            }
        }
        let mut inbox = self.inbox.lock().expect("inbox");
        let outcome = inbox.store(&entry)?;
        Ok((outcome, inbox.durable()))
    }
}

/// What a request got: its delivery and, if it came in time, its reply.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The request's id.
    pub id: String,
    /// What became of the request.
    pub delivery: Delivery,
    /// The reply, if it came within the wait.
    pub reply: Option<InboxEntry>,
}

/// A message to queue: recipient, payload, and the message it answers, if any.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The recipient's key (base64).
    pub to_key: String,
    /// The recipient's overlay IPv6.
    pub to_ipv6: Ipv6Addr,
    /// The payload's type.
    pub kind: MessageType,
    /// The payload (checked against `kind` by the caller).
    pub data: serde_json::Value,
    /// For a reply: the id of the message it answers.
    pub in_reply_to: Option<String>,
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
            receiver: Receiver::new(inbox, limits),
            outbox: Outbox::open(state_dir.join("outbox"))?,
            overlay,
            plane,
            wake: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            connections: ConnectionLimits::new(
                limits.max_connections,
                limits.max_connections_per_peer,
            ),
            stats: Default::default(),
            idle: Mutex::new(HashMap::new()),
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
        let out = Outgoing {
            to_key,
            to_ipv6,
            kind,
            data,
            in_reply_to: None,
        };
        let (id, rx) = self.queue(out, new_id()).await?;
        Ok((id, Self::delivery_within(rx, wait).await))
    }

    /// Queues `out` durably under `id` and returns the receiver of its delivery outcome.
    /// Delivery starts at once; this returns when the message is durable in the outbox (its
    /// group commit), so a message whose send returned survives a crash.
    async fn queue(
        &self,
        out: Outgoing,
        id: String,
    ) -> Result<(String, oneshot::Receiver<Delivery>), MessageError> {
        let entry = OutboxEntry {
            to: out.to_key,
            to_ipv6: out.to_ipv6,
            message: WireMessage {
                v: 1,
                id: id.clone(),
                kind: out.kind,
                data: out.data,
                sent_ms: unix_ms_now(),
                in_reply_to: out.in_reply_to,
            },
            refused: None,
        };
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters")
            .entry(id.clone())
            .or_default()
            .push(tx);
        let committed = match self.outbox.put(&entry) {
            Ok(c) => {
                self.wake.notify_one();
                c.wait().await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            self.waiters.lock().expect("waiters").remove(&id);
            let _ = self.outbox.remove(&id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// The delivery outcome if it comes within `wait`, else [`Delivery::Queued`].
    async fn delivery_within(rx: oneshot::Receiver<Delivery>, wait: Duration) -> Delivery {
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(d)) => d,
            _ => Delivery::Queued,
        }
    }

    /// Queues `out` (a reply or not) and waits up to `ack_wait` for its ack, as [`Self::send`].
    pub async fn send_outgoing(
        &self,
        out: Outgoing,
        ack_wait: Duration,
    ) -> Result<(String, Delivery), MessageError> {
        let (id, rx) = self.queue(out, new_id()).await?;
        Ok((id, Self::delivery_within(rx, ack_wait).await))
    }

    /// Sends a request and waits up to `wait` for the reply from its recipient (a message
    /// whose `in_reply_to` is the request's id). A reply that comes later lands in the inbox.
    pub async fn request(&self, out: Outgoing, wait: Duration) -> Result<Answered, MessageError> {
        let id = new_id();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.receiver
            .replies
            .lock()
            .expect("replies")
            .insert(id.clone(), (out.to_key.clone(), reply_tx));
        let (id, mut delivered) = match self.queue(out, id.clone()).await {
            Ok(q) => q,
            Err(e) => {
                self.receiver.replies.lock().expect("replies").remove(&id);
                return Err(e);
            }
        };
        let reply = tokio::time::timeout(wait, reply_rx)
            .await
            .ok()
            .and_then(Result::ok);
        // From now on a reply goes to the inbox.
        self.receiver.replies.lock().expect("replies").remove(&id);
        let delivery = match (&reply, delivered.try_recv()) {
            (Some(_), _) => Delivery::Delivered,
            (None, Ok(d)) => d,
            (None, Err(_)) => Delivery::Queued,
        };
        Ok(Answered {
            id,
            delivery,
            reply,
        })
    }

    /// The key of the peer that sent us message `id`, while we remember it.
    pub fn sender_of(&self, id: &str) -> Option<String> {
        if !valid_id(id) {
            return None;
        }
        self.receiver.inbox.lock().expect("inbox").sender_of(id)
    }

    /// Messages in the inbox, oldest first; with `clear`, exactly those are deleted, in the
    /// same step (a message that arrives meanwhile waits for the next listing).
    pub fn inbox(&self, clear: bool) -> Result<Vec<InboxEntry>, MessageError> {
        self.inbox_select(&InboxFilter::default(), clear)
    }

    /// The inbox messages `filter` selects, oldest first; with `clear`, exactly those are
    /// deleted.
    pub fn inbox_select(
        &self,
        filter: &InboxFilter,
        clear: bool,
    ) -> Result<Vec<InboxEntry>, MessageError> {
        let mut inbox = self.receiver.inbox.lock().expect("inbox");
        if clear || filter != &InboxFilter::default() {
            inbox.select(filter, clear)
        } else {
            inbox.list()
        }
    }

    /// The inbox message `id`, if the inbox holds it.
    pub fn inbox_get(&self, id: &str) -> Result<Option<InboxEntry>, MessageError> {
        self.receiver.inbox.lock().expect("inbox").get(id)
    }

    /// Each message newly received from now on (a slow receiver misses some and is told how
    /// many).
    pub fn subscribe(&self) -> broadcast::Receiver<InboxEntry> {
        self.receiver.received.subscribe()
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
        serve_connection(&self.receiver, &sender, s).await
    }

    async fn delivery_loop(self: Arc<Self>) {
        let mut next_try: HashMap<String, (Instant, Duration)> = HashMap::new();
        loop {
            let now = Instant::now();
            self.idle
                .lock()
                .expect("idle connections")
                .retain(|_, (used, _)| used.elapsed() < KEEP_IDLE);
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

    /// Sends `msgs` to one peer over one connection (the one kept from the last delivery to
    /// it, if it is still open, else a new one); returns the ids it acked. A refusal (inbox
    /// full) is remembered for `outbox` and ends the attempt. The connection is kept for the
    /// next delivery when the attempt ends cleanly.
    async fn deliver_to(&self, ip: Ipv6Addr, msgs: &[OutboxEntry]) -> Vec<String> {
        let mut acked = Vec::new();
        let kept = self
            .idle
            .lock()
            .expect("idle connections")
            .remove(&ip)
            .filter(|(used, _)| used.elapsed() < KEEP_IDLE)
            .map(|(_, s)| s);
        let attempt = self.exchange_all(ip, kept, msgs, &mut acked);
        match tokio::time::timeout(ATTEMPT_TIMEOUT * msgs.len().max(1) as u32, attempt).await {
            Ok(Ok(Some(s))) => {
                let mut idle = self.idle.lock().expect("idle connections");
                idle.retain(|_, (used, _)| used.elapsed() < KEEP_IDLE);
                idle.insert(ip, (Instant::now(), s));
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::debug!(%ip, error = %e, "message delivery failed; will retry"),
            Err(_) => tracing::debug!(%ip, "message delivery timed out; will retry"),
        }
        acked
    }

    /// Sends each message and reads its answer, pushing acked ids to `acked`; a kept
    /// connection that fails before its first answer (the peer closed it while idle) is
    /// replaced by a new one once. Returns the connection if it may be kept.
    async fn exchange_all(
        &self,
        ip: Ipv6Addr,
        kept: Option<OverlayStream>,
        msgs: &[OutboxEntry],
        acked: &mut Vec<String>,
    ) -> Result<Option<OverlayStream>, MessageError> {
        let dst = SocketAddrV6::new(ip, MESSAGE_PORT, 0, 0);
        let (mut s, mut reused) = match kept {
            Some(s) => (s, true),
            None => (self.overlay.connect(dst).await?, false),
        };
        let mut i = 0;
        while let Some(m) = msgs.get(i) {
            let answer = async {
                write_frame(&mut s, &m.message).await?;
                read_frame::<_, WireReply>(&mut s).await
            }
            .await;
            match answer {
                Ok(Some(WireReply::Ack(a))) if a.ack == m.message.id => acked.push(a.ack),
                Ok(Some(WireReply::Refused(r))) if r.refused == m.message.id => {
                    tracing::warn!(%ip, id = %r.refused, reason = %r.reason.escape_debug(),
                        "message refused by its recipient; kept and retried");
                    self.refusals
                        .lock()
                        .expect("refusals")
                        .insert(r.refused, r.reason);
                    return Ok(Some(s));
                }
                Err(_) | Ok(None) if reused => {
                    s = self.overlay.connect(dst).await?;
                    reused = false;
                    continue;
                }
                Err(e) => return Err(e),
                _ => return Ok(None),
            }
            reused = false;
            i += 1;
        }
        Ok(Some(s))
    }
}

/// Refuses a message whose version, id, reply id or payload shape is wrong.
pub fn check_message(m: &WireMessage) -> Result<(), MessageError> {
    if m.v != 1 || !valid_id(&m.id) {
        return Err(MessageError::Malformed("bad version or id".into()));
    }
    if m.in_reply_to.as_deref().is_some_and(|r| !valid_id(r)) {
        return Err(MessageError::Malformed("bad in_reply_to".into()));
    }
    if !m.kind.fits(&m.data) {
        return Err(MessageError::Malformed(
            "payload does not fit its type (text: a string; binary: base64)".into(),
        ));
    }
    Ok(())
}

/// Serves one admitted connection from `sender`: each message is stored (or found stored
/// before, or handed to the request waiting for it) and then acked, or refused when a quota
/// is reached; the connection closes when the peer is idle longer than
/// `limits.idle_timeout_secs`, or takes longer than `limits.read_timeout_secs` to send a
/// message or take its answer.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    rx: &Receiver,
    sender: &Sender,
    mut s: S,
) -> Result<(), MessageError> {
    let idle = Duration::from_secs(rx.limits.idle_timeout_secs);
    let read = Duration::from_secs(rx.limits.read_timeout_secs);
    while let Some(m) = read_frame_within::<_, WireMessage>(&mut s, idle, read).await? {
        check_message(&m)?;
        let entry = InboxEntry {
            from: sender.key.clone(),
            from_address: sender.address.clone(),
            from_hostname: sender.hostname.clone(),
            id: m.id.clone(),
            kind: m.kind,
            data: m.data,
            sent_ms: m.sent_ms,
            received_ms: unix_ms_now(),
            in_reply_to: m.in_reply_to,
        };
        let (outcome, durable) = rx.accept(entry.clone())?;
        if !matches!(outcome, StoreOutcome::Refused(_)) {
            durable.wait().await?;
        }
        let reply = match outcome {
            StoreOutcome::New => {
                tracing::info!(from = %entry.from_address, id = %entry.id, "message received");
                let _ = rx.received.send(entry);
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
            in_reply_to: None,
        }
    }

    fn receiver(dir: &std::path::Path, cfg: &MessagesConfig) -> Receiver {
        let inbox = Inbox::open(dir.join("inbox"), dir.join("seen"), cfg, unix_ms_now());
        Receiver::new(inbox.unwrap(), cfg)
    }

    #[tokio::test]
    async fn a_sender_over_quota_gets_a_refusal_with_the_reason_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig {
            inbox_max_messages_per_sender: 1,
            ..MessagesConfig::default()
        };
        let rx = receiver(dir.path(), &cfg);
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
        let (served, (r1, r2)) = tokio::join!(serve_connection(&rx, &k1, ours), sent);
        served.unwrap();
        assert_eq!(r1, WireReply::Ack(WireAck { v: 1, ack: a }));
        match r2 {
            WireReply::Refused(r) => {
                assert_eq!(r.refused, b);
                assert!(r.reason.contains("inbox is full"), "{}", r.reason);
            }
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(rx.inbox.lock().unwrap().list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_reply_goes_to_the_request_waiting_for_it_only_from_the_peer_asked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig::default();
        let rx = receiver(dir.path(), &cfg);
        let request = new_id();
        let (tx, waiting) = oneshot::channel();
        rx.replies
            .lock()
            .unwrap()
            .insert(request.clone(), ("k1".into(), tx));
        let reply = |id: &str| WireMessage {
            in_reply_to: Some(request.clone()),
            ..message(id)
        };
        let (forged, real, late) = (new_id(), new_id(), new_id());
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let k2 = sender("k2");
        let sent = async {
            write_frame(&mut peer, &reply(&forged)).await.unwrap();
            let _: WireReply = read_frame(&mut peer).await.unwrap().unwrap();
            drop(peer);
        };
        let (served, ()) = tokio::join!(serve_connection(&rx, &k2, ours), sent);
        served.unwrap();
        // Another peer's "reply" is an ordinary message: stored, the request still waits.
        assert_eq!(rx.inbox.lock().unwrap().list().unwrap().len(), 1);
        assert!(rx.replies.lock().unwrap().contains_key(&request));
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let k1 = sender("k1");
        let sent = async {
            for id in [&real, &real, &late] {
                write_frame(&mut peer, &reply(id)).await.unwrap();
                let r: WireReply = read_frame(&mut peer).await.unwrap().unwrap();
                assert_eq!(
                    r,
                    WireReply::Ack(WireAck {
                        v: 1,
                        ack: id.clone()
                    })
                );
            }
            drop(peer);
        };
        let (served, ()) = tokio::join!(serve_connection(&rx, &k1, ours), sent);
        served.unwrap();
        let got = waiting.await.unwrap();
        assert_eq!((got.id.as_str(), got.from.as_str()), (real.as_str(), "k1"));
        // The retry of the handed-over reply is acked, not stored; a second reply once
        // nobody waits lands in the inbox.
        let ids: Vec<String> = rx
            .inbox
            .lock()
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![forged, late]);
        assert_eq!(
            rx.inbox.lock().unwrap().sender_of(&real).as_deref(),
            Some("k1")
        );
    }

    #[tokio::test]
    async fn payloads_that_do_not_fit_their_type_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rx = receiver(dir.path(), &MessagesConfig::default());
        for bad in [
            WireMessage {
                kind: MessageType::Binary,
                data: "not base64!".into(),
                ..message(&new_id())
            },
            WireMessage {
                kind: MessageType::Text,
                data: serde_json::json!(1),
                ..message(&new_id())
            },
            WireMessage {
                in_reply_to: Some("../x".into()),
                ..message(&new_id())
            },
        ] {
            let (mut peer, ours) = tokio::io::duplex(1 << 16);
            write_frame(&mut peer, &bad).await.unwrap();
            let served = serve_connection(&rx, &sender("k1"), ours).await;
            assert!(
                matches!(served, Err(MessageError::Malformed(_))),
                "{bad:?}: {served:?}"
            );
        }
        assert!(rx.inbox.lock().unwrap().list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig {
            idle_timeout_secs: 1,
            ..MessagesConfig::default()
        };
        let rx = receiver(dir.path(), &cfg);
        let (_peer, ours) = tokio::io::duplex(1 << 16);
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            serve_connection(&rx, &sender("k1"), ours),
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
        let rx = receiver(dir.path(), &cfg);
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        // A frame that announces 1000 bytes and never sends them.
        peer.write_all(&1000u32.to_be_bytes()).await.unwrap();
        peer.write_all(b"{").await.unwrap();
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            serve_connection(&rx, &sender("k1"), ours),
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
