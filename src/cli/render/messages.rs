//! Messages: `send-message`, `reply`, `inbox`, `inbox read`, `outbox`.

use super::{name_or_dash, untrusted};
use crate::api::{DeliveryStatus, InboxData, InboxEntry, MessageType, OutboxData, SentMessage};

/// `delivered`, `queued` or `refused (and queued)`.
pub fn delivery_word(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Queued => "queued",
        DeliveryStatus::Refused => "refused by the peer (and queued)",
    }
}

/// A payload for one line: text as text, JSON as JSON, binary as its size (escaped).
fn payload_text(kind: MessageType, data: &serde_json::Value) -> String {
    let text = match (kind, data) {
        (MessageType::Binary, serde_json::Value::String(b64)) => {
            use base64::Engine;
            let n = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_or(0, |b| b.len());
            format!("<binary, {n} bytes; base64 with --json>")
        }
        (_, serde_json::Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    };
    untrusted(&text).into_owned()
}

/// `send-message`: delivered, or queued for retries; with `--wait`, the reply.
pub fn sent_message(m: &SentMessage) -> String {
    let mut text = sent_status(m);
    if let Some(r) = &m.in_reply_to {
        text.push_str(&format!(" (a reply to {})", untrusted(r)));
    }
    if let Some(Some(reply)) = &m.reply {
        text.push_str(&format!(
            "
reply {} from {}: {}",
            untrusted(&reply.id),
            name_or_dash(reply.from_hostname.as_deref()),
            payload_text(reply.kind, &reply.data)
        ));
    }
    text
}

/// `inbox read ID`: one message in full.
pub fn inbox_entry(m: &InboxEntry) -> String {
    let mut text = format!(
        "id:        {}
from:      {} ({})
key:       {}
type:      {}
sent:      {} ms
received:  {} ms
",
        untrusted(&m.id),
        name_or_dash(m.from_hostname.as_deref()),
        untrusted(&m.from_address),
        untrusted(&m.from),
        serde_json::to_value(m.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        m.sent_ms,
        m.received_ms,
    );
    if let Some(r) = &m.in_reply_to {
        text.push_str(&format!(
            "reply to:  {}
",
            untrusted(r)
        ));
    }
    text.push_str(&format!("data:      {}", payload_text(m.kind, &m.data)));
    text
}

fn sent_status(m: &SentMessage) -> String {
    let id = untrusted(&m.id);
    match m.status {
        DeliveryStatus::Delivered => format!("message {id} delivered"),
        DeliveryStatus::Queued => format!(
            "message {id} queued: it is kept and retried until the peer acks (see `pilotctl outbox`)"
        ),
        DeliveryStatus::Refused => format!(
            "message {id} refused by the peer: {}\nit is kept and retried until the peer makes room (see `pilotctl outbox`); do not send it again",
            untrusted(m.refused.as_deref().unwrap_or("no reason given"))
        ),
    }
}

/// `inbox`: one line per message; text payloads as text, JSON payloads as JSON, both escaped.
pub fn inbox(d: &InboxData) -> String {
    if d.messages.is_empty() {
        return "inbox is empty".into();
    }
    d.messages
        .iter()
        .map(|m| {
            let reply = m
                .in_reply_to
                .as_deref()
                .map(|r| format!(" (reply to {})", untrusted(r)))
                .unwrap_or_default();
            format!(
                "{} from {} ({}){reply}: {}\n",
                untrusted(&m.id),
                name_or_dash(m.from_hostname.as_deref()),
                untrusted(&m.from_address),
                payload_text(m.kind, &m.data)
            )
        })
        .collect()
}

/// `set-webhook`, `clear-webhook`, `webhook`: the URL and the counters.
pub fn webhook_status(w: &crate::api::WebhookStatus) -> String {
    format!(
        "webhook: {}\ndelivered {}, failed {}, dropped {}, queued {}/{}",
        w.url
            .as_deref()
            .map_or_else(|| "none".into(), |u| untrusted(u).into_owned()),
        w.delivered,
        w.failed,
        w.dropped,
        w.queued,
        w.queue_capacity
    )
}

/// `outbox`: how many messages wait for an ack, then each one the recipient refused, with
/// its reason (escaped: the peer wrote it).
pub fn outbox(d: &OutboxData) -> String {
    let mut text = format!("{} message(s) waiting for an ack", d.outbox.len());
    for e in &d.outbox {
        if let Some(reason) = &e.refused {
            text.push_str(&format!(
                "\n{} refused by {}: {}",
                untrusted(&e.message.id),
                untrusted(&e.to),
                untrusted(reason)
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::services::message_store::{InboxEntry, MessageType, OutboxEntry, WireMessage};

    fn entry(id: &str, hostname: Option<&str>, data: serde_json::Value) -> InboxEntry {
        InboxEntry {
            from: "KEY=".into(),
            from_address: "0a1b.2c3d.4e5f".into(),
            from_hostname: hostname.map(String::from),
            id: id.into(),
            kind: if data.is_string() {
                MessageType::Text
            } else {
                MessageType::Json
            },
            data,
            sent_ms: 1,
            in_reply_to: None,
            received_ms: 2,
        }
    }

    #[test]
    fn sent_message_says_delivered_or_queued() {
        let key = Identity::from_seed([1; 32]).public_key();
        let mut m = SentMessage {
            id: "ab12".into(),
            to: key,
            to_ipv6: "fdc5:7a3e:91b4::1".parse().unwrap(),
            status: DeliveryStatus::Delivered,
            refused: None,
            in_reply_to: None,
            reply: None,
        };
        assert_eq!(sent_message(&m), "message ab12 delivered");
        m.status = DeliveryStatus::Queued;
        assert_eq!(
            sent_message(&m),
            "message ab12 queued: it is kept and retried until the peer acks (see `pilotctl outbox`)"
        );
        m.status = DeliveryStatus::Refused;
        m.refused = Some("inbox is full\u{1b}[2J".into());
        assert_eq!(
            sent_message(&m),
            "message ab12 refused by the peer: inbox is full\\u{1b}[2J\nit is kept and retried until the peer makes room (see `pilotctl outbox`); do not send it again"
        );
    }

    #[test]
    fn inbox_shows_text_as_text_and_json_as_json() {
        let d = InboxData {
            messages: vec![
                entry(
                    "m1",
                    Some("orchestrator-node"),
                    serde_json::json!({"status": "ok"}),
                ),
                entry("m2", None, serde_json::json!("hello")),
            ],
            cleared: false,
        };
        assert_eq!(
            inbox(&d),
            "m1 from orchestrator-node (0a1b.2c3d.4e5f): {\"status\":\"ok\"}\n\
             m2 from - (0a1b.2c3d.4e5f): hello\n"
        );
        let empty = InboxData {
            messages: vec![],
            cleared: true,
        };
        assert_eq!(inbox(&empty), "inbox is empty");
    }

    #[test]
    fn a_text_message_cannot_forge_inbox_lines_or_drive_the_terminal() {
        let d = InboxData {
            messages: vec![entry(
                "m1",
                Some("worker-node"),
                serde_json::json!("hi\nm9 from bank (0000.0000.0001): pay\u{1b}[2J"),
            )],
            cleared: false,
        };
        let text = inbox(&d);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn outbox_counts_the_waiting_messages() {
        let e = OutboxEntry {
            to: "KEY=".into(),
            to_ipv6: "fdc5:7a3e:91b4::1".parse().unwrap(),
            message: WireMessage {
                v: 1,
                id: "ab".into(),
                kind: MessageType::Text,
                data: serde_json::json!("x"),
                sent_ms: 0,
                in_reply_to: None,
            },
            refused: None,
        };
        let d = OutboxData {
            outbox: vec![e.clone(), e.clone()],
        };
        assert_eq!(outbox(&d), "2 message(s) waiting for an ack");
        let mut refused = e;
        refused.refused = Some("inbox is full\u{1b}[2J\nab refused by X: ok".into());
        let d = OutboxData {
            outbox: vec![refused],
        };
        assert_eq!(
            outbox(&d),
            "1 message(s) waiting for an ack\nab refused by KEY=: inbox is full\\u{1b}[2J\\nab \
             refused by X: ok"
        );
    }
}
