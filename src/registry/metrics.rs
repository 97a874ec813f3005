//! The registry's Prometheus endpoint (`[metrics] listen` in its config). The runner publishes
//! a [`Stats`] snapshot once a second from the counters and table sizes the core already keeps,
//! plus a count of received datagrams by request type (one array increment per datagram); a
//! scrape encodes the latest snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::server::{Counters, RegistryGauges};
use super::tls::hub::TlsStats;
use crate::exposition::{labels, process_metrics, MetricUnit, Sheet};

/// What a scrape shows, as of the runner's last publication.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// The core's counters.
    pub counters: Counters,
    /// The core's table sizes.
    pub gauges: RegistryGauges,
    /// Datagrams received, by request type byte.
    pub by_type: BTreeMap<u8, u64>,
    /// How the runner's relay sends went (batching, failures).
    pub relay_io: RelayIo,
    /// The TLS transport's counters, when it is on (`tls_listen`).
    pub tls: Option<TlsStats>,
}

/// The runner's relay sends: how well they batch, and what failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayIo {
    /// Relayed datagrams sent.
    pub datagrams: u64,
    /// Send system calls they took (GSO: many datagrams per call).
    pub sends: u64,
    /// Datagrams (relayed or answers) dropped: the send buffer stayed full, or the send failed.
    pub send_failed: u64,
}

/// The runner's shared, latest [`Stats`].
pub type SharedStats = Arc<Mutex<Stats>>;

/// The name of a request type byte (wire/registry.rs: requests below 0x80, relay 0x40).
pub fn type_name(ty: u8) -> &'static str {
    match ty {
        0x01 => "register",
        0x02 => "heartbeat",
        0x03 => "set_hostname",
        0x04 => "release_hostname",
        0x05 => "lookup",
        0x06 => "trust_request",
        0x07 => "trust_response",
        0x08 => "endpoint_request",
        0x09 => "endpoint_response",
        0x0a => "delivered",
        0x40 => "relay",
        _ => "other",
    }
}

/// The type byte a received datagram claims (`0xff` for anything that is not a control
/// message of our version): no parsing beyond the three-byte preamble.
pub fn claimed_type(bytes: &[u8]) -> u8 {
    match crate::wire::registry::is_request(bytes) {
        Some(true) => bytes[2],
        _ => 0xff,
    }
}

/// One scrape.
pub fn render(stats: &Stats) -> String {
    let mut s = Sheet::new();
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (ty, n) in &stats.by_type {
        *by_name.entry(type_name(*ty)).or_default() += n;
    }
    s.counters(
        "pilot_registry_datagrams_received",
        "Datagrams received, by the request type they claim (before any check).",
        None,
        by_name
            .into_iter()
            .map(|(k, v)| (labels(&[("type", k)]), v)),
    );
    let c = &stats.counters;
    let result = |r: &str, v: u64| (labels(&[("result", r)]), v);
    s.counters(
        "pilot_registry_requests",
        "Requests by result: accepted (processed), refused (valid, answered with an error), or dropped (garbage, bad_signature, replayed, stale, rate_limited, challenge_limited, amplification).",
        None,
        [
            result("accepted", c.accepted),
            result("refused", c.refused),
            result("garbage", c.garbage),
            result("bad_signature", c.bad_signature),
            result("replayed", c.replayed),
            result("stale", c.stale),
            result("rate_limited", c.rate_limited),
            result("challenge_limited", c.challenge_limited),
            result("amplification", c.amplification_dropped),
            result("unknown_target", c.unknown_target),
        ],
    );
    counter_metrics(&mut s, c);
    gauge_metrics(&mut s, &stats.gauges);
    relay_io_metrics(&mut s, &stats.relay_io);
    if let Some(t) = &stats.tls {
        tls_metrics(&mut s, t);
    }
    process_metrics(&mut s);
    s.encode()
}

fn counter_metrics(s: &mut Sheet, c: &Counters) {
    s.counter(
        "pilot_registry_challenges_sent",
        "Return-routability challenges sent.",
        None,
        c.challenged,
    );
    s.counter(
        "pilot_registry_trust_messages_pushed",
        "Trust requests and responses pushed to their target (re-pushes included).",
        None,
        c.pushed,
    );
    s.counter(
        "pilot_registry_held_messages_expired",
        "Held trust messages that expired undelivered.",
        None,
        c.expired,
    );
    s.counter(
        "pilot_registry_relayed_packets",
        "Datagrams relayed between nodes.",
        None,
        c.relayed_packets,
    );
    s.counter(
        "pilot_registry_relayed",
        "Payload bytes relayed between nodes.",
        Some(MetricUnit::Bytes),
        c.relayed_bytes,
    );
    s.counters(
        "pilot_registry_relay_dropped",
        "Relay frames dropped: refused (no exchange, unknown target), over the sender's budget or over the global one.",
        None,
        [
            (labels(&[("reason", "refused")]), c.relay_refused),
            (labels(&[("reason", "over_budget")]), c.relay_limited),
            (
                labels(&[("reason", "over_global_budget")]),
                c.relay_limited_global,
            ),
        ],
    );
    s.counters(
        "pilot_registry_signature_checks",
        "Request signatures checked: in batches that verified, or one by one (alone in their wake-up, in a failed batch, or while batches often fail).",
        None,
        [
            (labels(&[("how", "batch")]), c.batch_verified),
            (labels(&[("how", "single")]), c.verified_singly),
        ],
    );
    s.counter(
        "pilot_registry_signature_batches_failed",
        "Signature batches that held a bad signature (their members were then checked one by one).",
        None,
        c.batch_failed,
    );
    s.counter(
        "pilot_registry_nonces_evicted",
        "Nonces evicted from a full replay cache.",
        None,
        c.nonces_evicted,
    );
    s.counter(
        "pilot_registry_names_expired",
        "Hostnames released after their key's registration expired.",
        None,
        c.names_expired,
    );
}

fn relay_io_metrics(s: &mut Sheet, r: &RelayIo) {
    s.counter(
        "pilot_registry_relay_sends",
        "Send system calls that carried relayed datagrams (each carries up to 64 with GSO).",
        None,
        r.sends,
    );
    s.counter(
        "pilot_registry_send_failed",
        "Datagrams dropped because the socket's send buffer stayed full or the send failed.",
        None,
        r.send_failed,
    );
}

fn tls_metrics(s: &mut Sheet, t: &TlsStats) {
    s.gauges(
        "pilot_registry_tls_connections_open",
        "TLS transport connections open now, by wrapping (websocket: WebSocket over TLS; tls: frames on the TLS stream).",
        None,
        [
            (
                labels(&[("wrapping", "tls")]),
                t.open.saturating_sub(t.websocket_open) as i64,
            ),
            (labels(&[("wrapping", "websocket")]), t.websocket_open as i64),
        ],
    );
    let result = |r: &str, v: u64| (labels(&[("result", r)]), v);
    s.counters(
        "pilot_registry_tls_connections",
        "TLS transport connections by outcome: accepted (TLS handshake done), refused_full (over tls_max_connections), handshake_failed (TLS or upgrade failed or timed out), http_refused (an HTTP request that was not our WebSocket upgrade), closed_idle_or_bad (idle, or broke the framing).",
        None,
        [
            result("accepted", t.accepted),
            result("refused_full", t.refused_full),
            result("handshake_failed", t.handshake_failed),
            result("http_refused", t.websocket_refused),
            result("closed_idle_or_bad", t.closed_idle_or_bad),
        ],
    );
    s.counter(
        "pilot_registry_tls_websocket_connections",
        "TLS transport connections upgraded to WebSocket.",
        None,
        t.websocket_accepted,
    );
    let dir = |d: &str, v: u64| (labels(&[("direction", d)]), v);
    s.counters(
        "pilot_registry_tls_frames",
        "Datagrams carried by the TLS transport (keepalives not counted): in from nodes, out queued to them.",
        None,
        [dir("in", t.frames_in), dir("out", t.frames_out)],
    );
    s.counters(
        "pilot_registry_tls",
        "Datagram bytes carried by the TLS transport.",
        Some(MetricUnit::Bytes),
        [dir("in", t.bytes_in), dir("out", t.bytes_out)],
    );
    s.counter(
        "pilot_registry_tls_dropped",
        "Datagrams for a TLS connection dropped: its queue was full, or it was gone.",
        None,
        t.dropped,
    );
}

fn gauge_metrics(s: &mut Sheet, g: &RegistryGauges) {
    let rows: [(&str, &str, usize); 6] = [
        ("pilot_registry_nodes_online", "Nodes online now.", g.online),
        (
            "pilot_registry_nodes_registered",
            "Registered nodes remembered.",
            g.registered,
        ),
        ("pilot_registry_hostnames", "Hostnames bound.", g.names),
        (
            "pilot_registry_held_messages",
            "Trust messages held for offline targets.",
            g.held,
        ),
        (
            "pilot_registry_nonce_cache_entries",
            "Nonces in the replay cache.",
            g.nonces,
        ),
        (
            "pilot_registry_relay_pairs",
            "Pairs allowed to relay.",
            g.relay_pairs,
        ),
    ];
    for (name, help, v) in rows {
        s.gauge(name, help, None, v as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_types_results_and_gauges() {
        let mut st = Stats::default();
        st.by_type.insert(0x01, 3);
        st.by_type.insert(0x40, 7);
        st.by_type.insert(0xff, 1);
        st.counters.accepted = 9;
        st.gauges.held = 2;
        st.gauges.nonces = 5;
        let t = render(&st);
        assert!(
            t.contains("pilot_registry_datagrams_received_total{type=\"register\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("pilot_registry_datagrams_received_total{type=\"relay\"} 7"),
            "{t}"
        );
        assert!(
            t.contains("pilot_registry_datagrams_received_total{type=\"other\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("pilot_registry_requests_total{result=\"accepted\"} 9"),
            "{t}"
        );
        assert!(t.contains("pilot_registry_held_messages 2"), "{t}");
        assert!(t.contains("pilot_registry_nonce_cache_entries 5"), "{t}");
        st.relay_io.sends = 4;
        let t = render(&st);
        assert!(t.contains("pilot_registry_relay_sends_total 4"), "{t}");
        assert!(t.contains("pilot_registry_send_failed_total 0"), "{t}");
        assert!(
            !t.contains("pilot_registry_tls"),
            "no TLS transport, no TLS rows"
        );
        st.tls = Some(TlsStats {
            open: 3,
            websocket_open: 1,
            websocket_accepted: 2,
            bytes_out: 1400,
            ..Default::default()
        });
        let t = render(&st);
        for row in [
            "pilot_registry_tls_connections_open{wrapping=\"tls\"} 2",
            "pilot_registry_tls_connections_open{wrapping=\"websocket\"} 1",
            "pilot_registry_tls_websocket_connections_total 2",
            "pilot_registry_tls_bytes_total{direction=\"out\"} 1400",
            "pilot_registry_tls_connections_total{result=\"http_refused\"} 0",
            "pilot_registry_tls_dropped_total 0",
        ] {
            assert!(t.contains(row), "{row} in {t}");
        }
        assert_eq!(claimed_type(&[0x50, 1, 0x05, 0]), 0x05);
        assert_eq!(claimed_type(&[0x01, 0, 0, 0]), 0xff);
        assert_eq!(claimed_type(&[]), 0xff);
    }
}
