//! Text renderings of the daemon's typed answers, one function per answer: pure functions of
//! the typed struct (and, where time matters, the current time), unit-tested below each. Text
//! from strangers goes through [`untrusted`] on its way in.

mod events;
mod expose;
mod files;
mod messages;
mod node;
mod parity;
mod pubsub_tasks;
mod trust;

pub use events::event;
pub use expose::{expose_added, expose_list, expose_removed};
pub use files::{delivered_file, received, sent_file, transfers};
pub use messages::{delivery_word, inbox, inbox_entry, outbox, sent_message, webhook_status};
pub use node::{
    daemon_started, daemon_status, find, hostname_claim, info, peers, ping, registry_key_forgotten,
};
pub use parity::{
    bench, config_settings, connections, health, netcheck, node_view, recv_report, registration,
    trace,
};
pub use pubsub_tasks::{published, pubsub_event, pubsub_status, task_list, task_view};
pub use trust::{approved, handshake, pending, rejected, trust_list, untrusted_peer};

use super::escape::untrusted;

/// Lays rows out in columns two spaces apart, each as wide as its widest cell.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `n` bytes in binary units with one decimal (`512 B`, `1.5 KiB`).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An optional stranger-given name, escaped, or `-`.
fn name_or_dash(name: Option<&str>) -> String {
    name.map_or_else(|| "-".into(), |n| untrusted(n).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InboxData, PeersData};
    use crate::identity::Identity;
    use crate::mapping::Hostname;
    use crate::node::views::{PendingList, PendingView, TrustList, TrustStanding, TrustView};
    use crate::services::message_store::{InboxEntry, MessageType};

    /// What a stranger would put in a hostname or a justification: a fake line and escape
    /// sequences that clear the screen and retitle the terminal.
    const HOSTILE: &str = "ok\nworker-node  0000.0000.0001  trusted\u{1b}[2J\u{1b}]0;pwn\u{7}\r";

    fn view(hostname: Option<&str>) -> TrustView {
        let key = Identity::from_seed([9; 32]).public_key();
        TrustView {
            public_key: key,
            address: key.addr48(),
            ipv6: "fdc5:7a3e:91b4::1".parse().unwrap(),
            hostname: hostname.map(|h| Hostname::new(h).unwrap()),
            state: TrustStanding::Pending,
        }
    }

    /// One line per record (`lines` of them), and no raw control character but line breaks,
    /// even after the final pass `Output::print` makes.
    fn assert_contained(text: &str, lines: usize) {
        assert_eq!(text.trim_end().lines().count(), lines, "{text}");
        for t in [text, &crate::cli::escape::terminal(text)] {
            assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        }
        assert!(
            text.contains("\\u{1b}[2J"),
            "the text is not shown escaped: {text}"
        );
    }

    #[test]
    fn stranger_text_is_escaped_in_pending_trust_inbox_and_peers() {
        let pending_list = PendingList {
            pending: vec![PendingView {
                peer: view(Some("orchestrator-node")),
                justification: HOSTILE.into(),
                since_ms: 0,
            }],
        };
        assert_contained(&pending(&pending_list), 2);

        // Hostnames in trust answers are typed: one with control characters never decodes,
        // and the error that quotes it is escaped when printed.
        for listing in [
            serde_json::json!({"peers": [view(None)]}),
            serde_json::json!({"pending": [{"justification": "x", "since_ms": 0}]}),
        ] {
            let mut v = listing.clone();
            let rec = v.as_object_mut().unwrap().values_mut().next().unwrap();
            let rec = rec.as_array_mut().unwrap()[0].as_object_mut().unwrap();
            for (k, val) in serde_json::to_value(view(None))
                .unwrap()
                .as_object()
                .unwrap()
            {
                rec.entry(k.clone()).or_insert(val.clone());
            }
            rec.insert("hostname".into(), HOSTILE.into());
            assert!(crate::cli::output::decode::<TrustList>("trust", v.clone()).is_err());
            assert!(crate::cli::output::decode::<PendingList>("pending", v).is_err());
        }

        let inbox_data = InboxData {
            messages: vec![InboxEntry {
                from: "KEY=".into(),
                from_address: "0a1b.2c3d.4e5f".into(),
                from_hostname: Some(HOSTILE.into()),
                id: "m1".into(),
                kind: MessageType::Text,
                data: HOSTILE.into(),
                sent_ms: 1,
                in_reply_to: None,
                received_ms: 2,
            }],
            cleared: false,
        };
        assert_contained(&inbox(&inbox_data), 1);

        let mut peer: crate::wg::PeerStatus = serde_json::from_value(serde_json::json!({
            "public_key": "KEY=", "address": "0a1b.2c3d.4e5f",
            "ipv6": "fdc5:7a3e:91b4::1", "hostname": HOSTILE, "endpoint": null,
            "path": "direct", "rtt_ms": null, "last_change": null, "last_handshake": null,
            "rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0, "drops": {}
        }))
        .unwrap();
        peer.path = HOSTILE.into();
        peer.address = HOSTILE.into();
        let peers_data = PeersData {
            peers: vec![peer],
            counters: None,
        };
        assert_contained(&peers(&peers_data, 0), 2);
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let rows = [
            ["A".to_string(), "BB".into(), "C".into()],
            ["long".into(), "x".into(), "".into()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x");
    }
}
