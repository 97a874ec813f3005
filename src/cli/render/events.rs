//! `events`: one line per live event.

use super::{name_or_dash, untrusted};
use crate::api::{ApiEvent, NodeEvent, StreamEvent};

/// One event as one line: its type, then what it is about (peer text escaped).
pub fn event(e: &ApiEvent) -> String {
    let kind = e.kind();
    match e {
        ApiEvent::Node(NodeEvent::TrustRequest {
            from,
            hostname,
            justification,
        }) => format!(
            "{kind} from {from} ({}): {}",
            name_or_dash(hostname.as_ref().map(|h| h.as_str())),
            untrusted(justification)
        ),
        ApiEvent::Node(NodeEvent::PathChanged {
            peer,
            path,
            endpoint,
        }) => format!(
            "{kind} {peer}: {} {}",
            untrusted(path),
            endpoint.map_or_else(|| "-".into(), |e| e.to_string())
        ),
        ApiEvent::Node(
            NodeEvent::TrustRejected { peer }
            | NodeEvent::PeerTrusted { peer }
            | NodeEvent::PeerUntrusted { peer }
            | NodeEvent::PeerUp { peer }
            | NodeEvent::PeerDown { peer },
        ) => format!("{kind} {peer}"),
        ApiEvent::Api(StreamEvent::MessageReceived(m)) => {
            let one = super::inbox(&crate::api::InboxData {
                messages: vec![m.message.clone()],
                cleared: false,
            });
            format!("{kind} {}", one.trim_end())
        }
        ApiEvent::Api(StreamEvent::Lagged { missed }) => {
            format!("{kind}: this stream missed {missed} event(s)")
        }
        #[allow(unreachable_patterns)]
        other => format!(
            "{kind} {}",
            untrusted(&serde_json::to_string(other).unwrap_or_default())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn events_read_as_one_line_each_with_peer_text_escaped() {
        let key = Identity::from_seed([3; 32]).public_key();
        let e = ApiEvent::Node(NodeEvent::TrustRequest {
            from: key,
            hostname: None,
            justification: "let me in\nfake line\u{1b}[2J".into(),
        });
        let line = event(&e);
        assert!(line.starts_with(&format!("trust_request from {key} (-): let me in")));
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.contains('\u{1b}'));
        let up = event(&ApiEvent::Node(NodeEvent::PeerUp { peer: key }));
        assert_eq!(up, format!("peer_up {key}"));
        let lag = event(&ApiEvent::Api(StreamEvent::Lagged { missed: 2 }));
        assert_eq!(lag, "lagged: this stream missed 2 event(s)");
    }
}
