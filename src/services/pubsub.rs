//! Publish/subscribe on overlay port 1002: a broker in every daemon, for trusted peers only.
//!
//! - [`topic`]: topic names and patterns (`*` one segment, `>`/`**` the rest), pure.
//! - [`wire`]: the frames (v1), documented in docs/PROTOCOL.md.
//! - [`broker`]: topics, sequence numbers, subscribers, the non-blocking fan-out.
//!
//! A connection to port 1002 may subscribe (then events flow to it until it closes) and
//! publish (each answered with `published` or `error`). The publisher of an event is the
//! peer the connection comes from (the data plane admits only trusted peers and checks inner
//! source addresses), or this node for a local publish: nobody can publish under another key.

pub mod broker;
pub mod epoch;
pub mod topic;
pub mod wire;

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

use crate::clock::unix_ms_now;
use crate::config::PubsubConfig;
use crate::identity::PublicKey;
use crate::services::frame::{self, FrameError};
use crate::userspace::overlay_net::{OverlayListener, OverlayNet, OverlayStream};
use crate::wg::DataPlane;
use broker::{Broker, Queue, Refusal, SubscriberId, SubscriberView, TopicView};
use wire::{Frame, PubsubEvent, WireCode, ENVELOPE_ROOM, PUBSUB_PORT, VERSION};

/// How long connecting to a broker and getting its answer may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Events received by this node's subscriptions, buffered per listener of
/// [`Pubsub::received`] (the API's event stream) before a slow one misses some.
const RECEIVED_QUEUE: usize = 1024;
/// Events a remote subscription buffers on this side for its API client; when full, it stops
/// reading from the broker, whose own bounded queue then drops and counts.
const FORWARD_QUEUE: usize = 64;

/// Errors of the pub/sub service.
#[derive(Debug, thiserror::Error)]
pub enum PubsubError {
    /// The broker (ours or a peer's) refused the request.
    #[error("the broker refused: {message} [{}]", code.as_str())]
    Refused {
        /// The wire code.
        code: WireCode,
        /// Its message (from a peer: escape before showing).
        message: String,
    },
    /// The peer's broker could not be reached or answered nothing usable.
    #[error("the broker of {peer} could not be reached: {why}")]
    Unreachable {
        /// The broker's address.
        peer: Ipv6Addr,
        /// Why.
        why: String,
    },
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<Refusal> for PubsubError {
    fn from(r: Refusal) -> Self {
        PubsubError::Refused {
            code: r.code,
            message: r.message,
        }
    }
}

impl From<PubsubError> for crate::error::PilotError {
    fn from(e: PubsubError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        match &e {
            PubsubError::Refused { code, .. } => {
                let hint = match code {
                    WireCode::BadTopic => {
                        "topics are dotted names of letters, digits, `-` and `_`; subscribe \
                         patterns may use `*` for one segment and a final `>` for the rest"
                    }
                    WireCode::TooLarge => "send less data per event (see [pubsub] max_data_bytes)",
                    _ => "see the broker's limits ([pubsub] in its config)",
                };
                let code = match code {
                    WireCode::BadTopic | WireCode::TooLarge => ErrorCode::InvalidArgument,
                    _ => ErrorCode::ConnectionFailed,
                };
                PilotError::new(code, e.to_string(), hint)
            }
            PubsubError::Unreachable { .. } | PubsubError::Frame(_) => PilotError::new(
                ErrorCode::ConnectionFailed,
                e.to_string(),
                "check `pilotctl peers` (a path to the peer) and that its daemon runs",
            ),
        }
    }
}

/// What a publish did, at the broker that took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// Its sequence number.
    pub seq: u64,
    /// Subscribers it was queued for.
    pub subscribers: u32,
    /// Subscribers it was dropped for (queue full).
    pub dropped: u32,
}

/// An event received by one of this node's subscriptions, and whose broker it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The broker's key (ours for a local subscription).
    pub broker: PublicKey,
    /// The event.
    pub event: Arc<PubsubEvent>,
}

/// A subscription of this node (for one API client): events in order, until it is dropped.
pub struct Subscription {
    broker: PublicKey,
    rx: mpsc::Receiver<Arc<PubsubEvent>>,
    local: Option<(Arc<Pubsub>, SubscriberId)>,
}

impl Subscription {
    /// The next event; `None` when the broker's connection ended.
    pub async fn next(&mut self) -> Option<Received> {
        let event = self.rx.recv().await?;
        if let Some((p, _)) = &self.local {
            let _ = p.received.send(Received {
                broker: self.broker,
                event: event.clone(),
            });
        }
        Some(Received {
            broker: self.broker,
            event,
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((p, id)) = self.local.take() {
            p.broker.lock().expect("broker").remove(id);
        }
    }
}

/// The broker's state for `GET /v1/pubsub`.
#[derive(Debug, Clone)]
pub struct Status {
    /// Topics and their last sequence numbers.
    pub topics: Vec<TopicView>,
    /// Subscribers and their counters.
    pub subscribers: Vec<SubscriberView>,
}

/// The pub/sub service: our broker, and subscriptions and publishes to peers' brokers.
pub struct Pubsub {
    me: PublicKey,
    broker: Mutex<Broker>,
    overlay: OverlayNet,
    plane: Arc<DataPlane>,
    limits: PubsubConfig,
    received: broadcast::Sender<Received>,
    open: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl Pubsub {
    /// Starts the broker on port 1002, in the next epoch recorded in `state_dir`.
    pub async fn start(
        state_dir: &std::path::Path,
        me: PublicKey,
        overlay: OverlayNet,
        plane: Arc<DataPlane>,
        limits: &PubsubConfig,
    ) -> std::io::Result<Arc<Self>> {
        let epoch = epoch::advance(state_dir, crate::clock::unix_ms_now() / 1000)?;
        let p = Arc::new(Pubsub {
            me,
            broker: Mutex::new(Broker::new(limits.clone()).with_epoch(epoch)),
            overlay,
            plane,
            limits: limits.clone(),
            received: broadcast::channel(RECEIVED_QUEUE).0,
            open: Mutex::new(HashMap::new()),
        });
        let listener = p.overlay.listen(PUBSUB_PORT).await?;
        let me = p.clone();
        tokio::spawn(async move { me.accept_loop(listener).await });
        Ok(p)
    }

    fn max_frame(&self) -> usize {
        self.limits.max_data_bytes + ENVELOPE_ROOM
    }

    /// Every event this node's subscriptions receive from now on (the API's event stream).
    pub fn received(&self) -> broadcast::Receiver<Received> {
        self.received.subscribe()
    }

    /// Our broker's topics and subscribers.
    pub fn status(&self) -> Status {
        let b = self.broker.lock().expect("broker");
        Status {
            topics: b.topics(),
            subscribers: b.subscribers(),
        }
    }

    /// Publishes on our own broker, as this node.
    pub fn publish_local(&self, topic: &str, data: String) -> Result<Published, PubsubError> {
        let f = self
            .broker
            .lock()
            .expect("broker")
            .publish(self.me, topic, data, unix_ms_now())?;
        Ok(Published {
            topic: topic.into(),
            seq: f.seq,
            subscribers: f.queued + f.dropped,
            dropped: f.dropped,
        })
    }

    /// Subscribes to `pattern` on our own broker.
    pub fn subscribe_local(self: &Arc<Self>, pattern: &str) -> Result<Subscription, PubsubError> {
        let mut b = self.broker.lock().expect("broker");
        let (id, q) = b.add_subscriber(None)?;
        if let Err(e) = b.add_pattern(id, pattern) {
            b.remove(id);
            return Err(e.into());
        }
        let Queue { rx, delivered } = q;
        // A local subscriber's events count as delivered when queued for its client.
        let (tx, out) = mpsc::channel(1);
        tokio::spawn(count_delivered(rx, tx, delivered));
        Ok(Subscription {
            broker: self.me,
            rx: out,
            local: Some((self.clone(), id)),
        })
    }

    /// Publishes on the broker of the peer at `ip`, as this node.
    pub async fn publish_remote(
        &self,
        ip: Ipv6Addr,
        topic: &str,
        data: String,
    ) -> Result<Published, PubsubError> {
        topic::validate_topic(topic).map_err(|e| PubsubError::Refused {
            code: WireCode::BadTopic,
            message: e.to_string(),
        })?;
        let req = Frame::Publish {
            v: VERSION,
            topic: topic.into(),
            data,
        };
        match self.request(ip, &req).await?.1 {
            Frame::Published {
                topic,
                seq,
                subscribers,
                dropped,
                ..
            } => Ok(Published {
                topic,
                seq,
                subscribers,
                dropped,
            }),
            other => Err(unexpected(ip, other)),
        }
    }

    /// Subscribes to `pattern` on the broker of the peer `key` at `ip`.
    pub async fn subscribe_remote(
        self: &Arc<Self>,
        key: PublicKey,
        ip: Ipv6Addr,
        pattern: &str,
    ) -> Result<Subscription, PubsubError> {
        topic::validate_pattern(pattern).map_err(|e| PubsubError::Refused {
            code: WireCode::BadTopic,
            message: e.to_string(),
        })?;
        let req = Frame::Subscribe {
            v: VERSION,
            topic: pattern.into(),
        };
        let (s, answer) = self.request(ip, &req).await?;
        if !matches!(answer, Frame::Subscribed { .. }) {
            return Err(unexpected(ip, answer));
        }
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        let me = self.clone();
        tokio::spawn(async move { me.forward(key, s, tx).await });
        Ok(Subscription {
            broker: key,
            rx,
            local: None,
        })
    }

    /// Sends `req` on a new connection to `ip`'s broker and reads its answer.
    async fn request(
        &self,
        ip: Ipv6Addr,
        req: &Frame,
    ) -> Result<(OverlayStream, Frame), PubsubError> {
        let unreachable = |why: String| PubsubError::Unreachable { peer: ip, why };
        let max = self.max_frame();
        let attempt = async {
            let mut s = self
                .overlay
                .connect(SocketAddrV6::new(ip, PUBSUB_PORT, 0, 0))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            frame::write(&mut s, req, max).await?;
            let answer: Option<Frame> = frame::read(&mut s, max).await?;
            Ok::<_, PubsubError>((s, answer))
        };
        let (s, answer) = tokio::time::timeout(REQUEST_TIMEOUT, attempt)
            .await
            .map_err(|_| unreachable("no answer in time".into()))??;
        match answer {
            Some(Frame::Error { code, message, .. }) => Err(PubsubError::Refused { code, message }),
            Some(f) => Ok((s, f)),
            None => Err(unreachable("it closed the connection".into())),
        }
    }

    /// Reads a remote subscription's events into `tx` (waiting when it is full) and copies
    /// them to the event stream, until either side ends.
    async fn forward(
        self: Arc<Self>,
        broker: PublicKey,
        mut s: OverlayStream,
        tx: mpsc::Sender<Arc<PubsubEvent>>,
    ) {
        let max = self.max_frame();
        loop {
            let f = tokio::select! {
                f = frame::read::<_, Frame>(&mut s, max) => f,
                _ = tx.closed() => return,
            };
            let event = match f {
                Ok(Some(Frame::Event { event, .. })) => Arc::new(event),
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "pub/sub subscription ended");
                    return;
                }
            };
            let _ = self.received.send(Received {
                broker,
                event: event.clone(),
            });
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, mut listener: OverlayListener) {
        loop {
            match listener.accept().await {
                Ok(s) => {
                    let me = self.clone();
                    tokio::spawn(async move { me.admit(s).await });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "pub/sub accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// One connection from a trusted peer, within the per-peer cap.
    async fn admit(self: Arc<Self>, s: OverlayStream) {
        let Ok(SocketAddr::V6(remote)) = s.peer_addr() else {
            return;
        };
        let ip = *remote.ip();
        let Some(peer) = self.plane.peer_by_ip(&ip) else {
            tracing::warn!(%remote, "pub/sub connection from an address that is no peer: closed");
            return;
        };
        {
            let mut open = self.open.lock().expect("open");
            let n = open.entry(ip).or_insert(0);
            if *n >= self.limits.max_connections_per_peer {
                tracing::warn!(%remote, "pub/sub connection refused: too many from this peer");
                return;
            }
            *n += 1;
        }
        if let Err(e) = self.serve(peer.public_key, s).await {
            tracing::debug!(%remote, error = %e, "pub/sub connection ended");
        }
        let mut open = self.open.lock().expect("open");
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }

    /// Serves one peer's connection: its requests in, answers and events out.
    pub async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: &Arc<Self>,
        peer: PublicKey,
        s: S,
    ) -> Result<(), FrameError> {
        let (mut r, w) = tokio::io::split(s);
        let (ctl_tx, ctl_rx) = mpsc::channel::<Frame>(16);
        let (queue_tx, queue_rx) = tokio::sync::oneshot::channel::<Queue>();
        let writer = tokio::spawn(write_loop(w, ctl_rx, queue_rx, self.max_frame()));
        let mut queue_tx = Some(queue_tx);
        let mut sub: Option<SubscriberId> = None;
        let result = loop {
            let f = match frame::read::<_, Frame>(&mut r, self.max_frame()).await {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => {
                    let _ = ctl_tx
                        .send(Frame::error(WireCode::Malformed, e.to_string()))
                        .await;
                    break Err(e);
                }
            };
            let answer = self.handle(peer, f, &mut sub, &mut queue_tx);
            if ctl_tx.send(answer).await.is_err() {
                break Ok(());
            }
        };
        if let Some(id) = sub {
            self.broker.lock().expect("broker").remove(id);
        }
        drop(ctl_tx);
        let _ = writer.await;
        result
    }

    /// The answer to one request frame.
    fn handle(
        &self,
        peer: PublicKey,
        f: Frame,
        sub: &mut Option<SubscriberId>,
        queue_tx: &mut Option<tokio::sync::oneshot::Sender<Queue>>,
    ) -> Frame {
        if f.version() != VERSION {
            return Frame::error(
                WireCode::BadVersion,
                format!("this broker speaks v{VERSION}, not v{}", f.version()),
            );
        }
        let mut b = self.broker.lock().expect("broker");
        let result = match f {
            Frame::Publish { topic, data, .. } => {
                b.publish(peer, &topic, data, unix_ms_now())
                    .map(|o| Frame::Published {
                        v: VERSION,
                        topic,
                        seq: o.seq,
                        subscribers: o.queued + o.dropped,
                        dropped: o.dropped,
                    })
            }
            Frame::Subscribe { topic, .. } => {
                let id = match *sub {
                    Some(id) => Ok(id),
                    None => b.add_subscriber(Some(peer)).map(|(id, q)| {
                        if let Some(tx) = queue_tx.take() {
                            let _ = tx.send(q);
                        }
                        *sub = Some(id);
                        id
                    }),
                };
                id.and_then(|id| b.add_pattern(id, &topic))
                    .map(|()| Frame::Subscribed { v: VERSION, topic })
            }
            _ => Err(Refusal {
                code: WireCode::Malformed,
                message: "a client sends only subscribe and publish".into(),
            }),
        };
        result.unwrap_or_else(|r| Frame::error(r.code, r.message))
    }
}

/// Writes answers (first) and queued events to one connection until the answers end. Events
/// waiting together are written in one batch (one write, one flush).
async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut ctl: mpsc::Receiver<Frame>,
    queue: tokio::sync::oneshot::Receiver<Queue>,
    max: usize,
) {
    let mut queue = queue;
    let mut events: Option<Queue> = None;
    loop {
        let bytes = tokio::select! {
            biased;
            c = ctl.recv() => match c.map(|f| frame::encode(&f, max)) {
                Some(Ok(b)) => b,
                _ => return,
            },
            q = &mut queue, if events.is_none() => {
                match q {
                    Ok(q) => events = Some(q),
                    Err(_) => queue = tokio::sync::oneshot::channel().1,
                }
                continue;
            }
            e = next_event(&mut events) => match (e, events.as_mut()) {
                (Some(first), Some(q)) => encode_batch(first, q, max),
                _ => return,
            },
        };
        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

/// An event frame, serialised from the shared event without copying it.
#[derive(serde::Serialize)]
struct EventOut<'a> {
    v: u8,
    op: &'static str,
    #[serde(flatten)]
    event: &'a PubsubEvent,
}

/// `first` and up to 63 more events already queued, as frames in one buffer; each counts as
/// delivered.
fn encode_batch(first: Arc<PubsubEvent>, q: &mut Queue, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = Some(first);
    let mut n = 0;
    while let Some(e) = next.take() {
        let f = EventOut {
            v: VERSION,
            op: "event",
            event: &e,
        };
        if let Ok(b) = frame::encode(&f, max) {
            out.extend_from_slice(&b);
        }
        q.delivered.fetch_add(1, Ordering::Relaxed);
        n += 1;
        if n < 64 {
            next = q.rx.try_recv().ok();
        }
    }
    out
}

async fn next_event(q: &mut Option<Queue>) -> Option<Arc<PubsubEvent>> {
    match q {
        Some(q) => q.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Moves a local subscriber's events to its client, counting each as delivered.
async fn count_delivered(
    mut rx: mpsc::Receiver<Arc<PubsubEvent>>,
    tx: mpsc::Sender<Arc<PubsubEvent>>,
    delivered: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Some(e) = rx.recv().await {
        if tx.send(e).await.is_err() {
            return;
        }
        delivered.fetch_add(1, Ordering::Relaxed);
    }
}

fn unexpected(ip: Ipv6Addr, f: Frame) -> PubsubError {
    PubsubError::Unreachable {
        peer: ip,
        why: format!("unexpected answer: {f:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_of_queued_events_reads_back_as_event_frames_in_order() {
        let mut b = Broker::new(PubsubConfig::default());
        let (id, mut q) = b.add_subscriber(None).unwrap();
        b.add_pattern(id, "t").unwrap();
        let key = crate::identity::Identity::from_seed([4; 32]).public_key();
        for i in 0..3 {
            b.publish(key, "t", format!("{i}"), 7).unwrap();
        }
        let first = q.rx.recv().await.unwrap();
        let bytes = encode_batch(first, &mut q, 1 << 16);
        let mut r = &bytes[..];
        for seq in 1..=3 {
            match frame::read::<_, Frame>(&mut r, 1 << 16).await.unwrap() {
                Some(Frame::Event { event, .. }) => assert_eq!((event.seq, event.ts_ms), (seq, 7)),
                other => panic!("{other:?}"),
            }
        }
        assert!(frame::read::<_, Frame>(&mut r, 1 << 16)
            .await
            .unwrap()
            .is_none());
        assert_eq!(q.delivered.load(Ordering::Relaxed), 3);
    }
}
