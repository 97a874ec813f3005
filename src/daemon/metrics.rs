//! The daemon's Prometheus endpoint (`[metrics] listen`): every value is read at scrape time
//! from views the local API already serves (the data plane's counters and peer table, the
//! trust store, the message outbox and inbox), so metrics add no work to the hot path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::api::service::Api;
use crate::daemon::local_api::Node;
use crate::exposition::{labels, process_metrics, Labels, MetricUnit, Sheet};
use crate::wg::{CountersSnapshot, PeerStatus};

/// A peer whose last handshake is younger than this has a live session (WireGuard rekeys
/// every 2 minutes and drops a session after 3).
const SESSION_SECS: u64 = 180;

/// Starts the endpoint when the config asks for it; returns where it listens.
pub async fn start(node: &Arc<Node>) -> Result<Option<SocketAddr>, crate::error::PilotError> {
    let Some(listen) = node.config.metrics.listen else {
        return Ok(None);
    };
    let n = Arc::clone(node);
    let received = count_received(node);
    let events = count_events(node);
    let render: crate::exposition::Render = Arc::new(move || {
        let n = Arc::clone(&n);
        let received = received.load(Ordering::Relaxed);
        let events = events.lock().clone();
        Box::pin(async move { render(&n, received, &events).await })
    });
    let addr = crate::exposition::serve(listen, render)
        .await
        .map_err(|e| {
            crate::error::PilotError::invalid(
                format!("cannot serve metrics on {listen}: {e}"),
                "set [metrics] listen to a free loopback address, e.g. 127.0.0.1:9469",
            )
        })?;
    Ok(Some(addr))
}

/// Counts the messages stored in our inbox from now on (a listener on the service's
/// broadcast of new messages, the one `GET /v1/events` uses).
fn count_received(node: &Node) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    if let Some(m) = &node.messages {
        let mut rx = m.subscribe();
        let c = Arc::clone(&count);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let n = match rx.recv().await {
                    Ok(_) => 1,
                    Err(RecvError::Lagged(n)) => n,
                    Err(RecvError::Closed) => return,
                };
                c.fetch_add(n, Ordering::Relaxed);
            }
        });
    }
    count
}

/// Node events counted by (metric, label value) since metrics started.
type EventCounts = Arc<parking_lot::Mutex<BTreeMap<(&'static str, String), u64>>>;

/// Counts trust outcomes, path changes and peers going up or down from the node's event
/// stream (the one `GET /v1/events` serves): no work on the node's side.
fn count_events(node: &Node) -> EventCounts {
    use crate::node::views::NodeEvent;
    let counts: EventCounts = Default::default();
    let mut rx = node.events.subscribe();
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let key = match rx.recv().await {
                Ok(NodeEvent::TrustRequest { .. }) => ("trust", "request_received".to_string()),
                Ok(NodeEvent::TrustRejected { .. }) => ("trust", "rejected".to_string()),
                Ok(NodeEvent::PeerTrusted { .. }) => ("trust", "trusted".to_string()),
                Ok(NodeEvent::PeerUntrusted { .. }) => ("trust", "untrusted".to_string()),
                Ok(NodeEvent::PathChanged { path, .. }) => ("path", path),
                Ok(NodeEvent::PeerUp { .. }) => ("peer", "up".to_string()),
                Ok(NodeEvent::PeerDown { .. }) => ("peer", "down".to_string()),
                #[allow(unreachable_patterns)] // events added later count nowhere yet
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => ("lagged", n.to_string()),
                Err(RecvError::Closed) => return,
            };
            *c.lock().entry(key).or_default() += 1;
        }
    });
    counts
}

fn event_metrics(s: &mut Sheet, counts: &BTreeMap<(&'static str, String), u64>) {
    let of = |kind: &str, label: &str, known: &[&str]| {
        let mut v: BTreeMap<String, u64> = known.iter().map(|k| (k.to_string(), 0)).collect();
        for ((k, l), n) in counts {
            if *k == kind {
                *v.entry(l.clone()).or_default() += n;
            }
        }
        v.into_iter()
            .map(|(l, n)| (labels(&[(label, &l)]), n))
            .collect::<Vec<(Labels, u64)>>()
    };
    s.counters(
        "pilot_trust_events",
        "Trust outcomes since start: requests received, our requests rejected, peers trusted, peers untrusted.",
        None,
        of("trust", "event", &["request_received", "rejected", "trusted", "untrusted"]),
    );
    s.counters(
        "pilot_path_changes",
        "Peer path changes since start, by the new path.",
        None,
        of("path", "path", &["direct", "relay", "none"]),
    );
    s.counters(
        "pilot_peer_transitions",
        "Peers going up (a session came up) or down (no path left) since start.",
        None,
        of("peer", "to", &["up", "down"]),
    );
}

/// One scrape; `received` and `events` are what the listeners counted since metrics started.
pub async fn render(
    node: &Node,
    received: u64,
    events: &BTreeMap<(&'static str, String), u64>,
) -> String {
    let mut s = Sheet::new();
    let peers = node.peers();
    peer_metrics(&mut s, &peers.peers);
    if let Some(c) = &peers.counters {
        drop_metrics(&mut s, c, &peers.peers);
    }
    s.gauge(
        "pilot_data_plane_up",
        "1 while every data-plane thread runs.",
        None,
        i64::from(node.dataplane.health().alive),
    );
    if let Ok(t) = node.trust().await {
        let mut by: BTreeMap<String, i64> = BTreeMap::new();
        for p in &t.peers {
            let state = serde_json::to_value(p.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *by.entry(state).or_default() += 1;
        }
        s.gauges(
            "pilot_trust_peers",
            "Trust records by state (pending: asked us; requested: we asked; trusted; rejected; static).",
            None,
            by.into_iter().map(|(k, v)| (labels(&[("state", &k)]), v)),
        );
    }
    message_metrics(&mut s, node);
    event_metrics(&mut s, events);
    s.counter(
        "pilot_messages_received",
        "Messages stored in this node's inbox since the daemon started.",
        None,
        received,
    );
    process_metrics(&mut s);
    s.encode()
}

fn peer_metrics(s: &mut Sheet, peers: &[PeerStatus]) {
    let mut by_path: BTreeMap<&str, i64> = ["direct", "relay", "none"]
        .into_iter()
        .map(|p| (p, 0))
        .collect();
    for p in peers {
        *by_path.entry(p.path.as_str()).or_default() += 1;
    }
    s.gauges(
        "pilot_peers",
        "Peers in the peer table by path (direct, relay, none).",
        None,
        by_path
            .into_iter()
            .map(|(k, v)| (labels(&[("path", k)]), v)),
    );
    let now = crate::clock::unix_ms_now() / 1000;
    let live = peers
        .iter()
        .filter(|p| {
            p.last_handshake
                .is_some_and(|t| now.saturating_sub(t) < SESSION_SECS)
        })
        .count();
    s.gauge(
        "pilot_peers_with_session",
        "Peers whose last WireGuard handshake is under 180 s old.",
        None,
        live as i64,
    );
    let sum = |f: fn(&PeerStatus) -> u64| peers.iter().map(f).sum::<u64>();
    let dir = |d: &str| labels(&[("direction", d)]);
    s.counters(
        "pilot_tunnel",
        "Inner bytes through the tunnels of the peers in the table.",
        Some(MetricUnit::Bytes),
        [
            (dir("rx"), sum(|p| p.rx_bytes)),
            (dir("tx"), sum(|p| p.tx_bytes)),
        ],
    );
    s.counters(
        "pilot_tunnel_packets",
        "Inner packets through the tunnels of the peers in the table.",
        None,
        [
            (dir("rx"), sum(|p| p.rx_packets)),
            (dir("tx"), sum(|p| p.tx_packets)),
        ],
    );
    let relayed: u64 = peers
        .iter()
        .filter(|p| p.path == "relay")
        .map(|p| p.tx_bytes + p.rx_bytes)
        .sum();
    s.counter(
        "pilot_relayed",
        "Inner bytes of the peers currently on the relay path.",
        Some(MetricUnit::Bytes),
        relayed,
    );
}

fn drop_metrics(s: &mut Sheet, c: &CountersSnapshot, peers: &[PeerStatus]) {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(c) {
        for (k, v) in m {
            if let Some(n) = v.as_u64() {
                by.insert(k, n);
            }
        }
    }
    // Not drops: control datagrams handed over, and handshake refusals shown below.
    let control = by.remove("control_received").unwrap_or(0);
    let completed = by.remove("handshakes_completed").unwrap_or(0);
    s.counter(
        "pilot_handshakes_completed",
        "WireGuard handshakes completed with trusted peers.",
        None,
        completed,
    );
    for p in peers {
        for (k, v) in &p.drops {
            *by.entry(k.clone()).or_default() += v;
        }
    }
    s.counter(
        "pilot_control_datagrams_received",
        "Control datagrams (registry, probes) handed to the control plane.",
        None,
        control,
    );
    s.counters(
        "pilot_handshakes_refused",
        "WireGuard handshakes refused: from untrusted keys, or over the rate limit.",
        None,
        [
            (
                labels(&[("reason", "untrusted")]),
                by.get("unknown_key_handshakes").copied().unwrap_or(0),
            ),
            (
                labels(&[("reason", "rate_limited")]),
                by.get("handshakes_limited").copied().unwrap_or(0),
            ),
        ],
    );
    s.counters(
        "pilot_dropped_packets",
        "Datagrams and packets dropped, by reason (data-plane and per-peer counters).",
        None,
        by.into_iter()
            .map(|(k, v)| (labels(&[("reason", &k)]), v))
            .collect::<Vec<(Labels, u64)>>(),
    );
}

fn message_metrics(s: &mut Sheet, node: &Node) {
    if let Some(m) = &node.messages {
        let st = m.stats();
        s.counter(
            "pilot_messages_delivered",
            "Messages acked by their recipient and removed from the outbox.",
            None,
            st.delivered,
        );
        s.counter(
            "pilot_message_delivery_retries",
            "Failed delivery attempts scheduled for a retry.",
            None,
            st.retried,
        );
    }
    if let Ok(o) = node.outbox() {
        let refused = o.outbox.iter().filter(|e| e.refused.is_some()).count();
        s.gauges(
            "pilot_messages_queued",
            "Messages in the outbox waiting for their recipient's ack (retried until acked).",
            None,
            [
                (labels(&[("last_attempt", "refused")]), refused as i64),
                (
                    labels(&[("last_attempt", "pending")]),
                    (o.outbox.len() - refused) as i64,
                ),
            ],
        );
    }
    if let Ok(i) = node.inbox(crate::api::types::InboxQuery::default()) {
        s.gauge(
            "pilot_inbox_messages",
            "Messages delivered to this node and held in its inbox.",
            None,
            i.messages.len() as i64,
        );
    }
}
