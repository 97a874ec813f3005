//! Trust between peers: `handshake`, `approve`, `reject`, `untrust`, `pending`, `trust`.

use super::{name_or_dash, untrusted};
use crate::node::views::{PendingList, TrustList, TrustStanding, TrustView};

/// `hostname (address)`, the address alone, or "the peer" when the daemon named none.
fn label(v: Option<&TrustView>) -> String {
    match v {
        Some(TrustView {
            hostname: Some(h),
            address,
            ..
        }) => format!("{} ({address})", untrusted(h.as_str())),
        Some(v) => v.address.to_string(),
        None => "the peer".into(),
    }
}

/// The standing as the API spells it.
fn standing(s: TrustStanding) -> &'static str {
    match s {
        TrustStanding::Pending => "pending",
        TrustStanding::Requested => "requested",
        TrustStanding::Trusted => "trusted",
        TrustStanding::Rejected => "rejected",
        TrustStanding::Static => "static",
        TrustStanding::None => "none",
    }
}

/// `handshake`: trusted already, or requested and waiting for the peer.
pub fn handshake(v: Option<&TrustView>) -> String {
    match v.map(|v| v.state) {
        Some(TrustStanding::Trusted | TrustStanding::Static) => {
            format!("{} is trusted: the tunnel may form", label(v))
        }
        _ => format!(
            "trust requested from {}; it appears in their `pilotctl pending` until they approve",
            label(v)
        ),
    }
}

/// `approve`.
pub fn approved(v: Option<&TrustView>) -> String {
    format!("approved {}: trust is mutual", label(v))
}

/// `reject`.
pub fn rejected(v: Option<&TrustView>) -> String {
    format!("rejected {}", label(v))
}

/// `untrust`.
pub fn untrusted_peer(v: Option<&TrustView>) -> String {
    format!("no longer trusting {}: tunnel torn down", label(v))
}

/// `pending`: each request with its justification on a line of its own.
pub fn pending(list: &PendingList) -> String {
    if list.pending.is_empty() {
        return "no pending trust requests".into();
    }
    list.pending
        .iter()
        .map(|p| {
            format!(
                "{}  {}  {}\n    justification: {}\n",
                name_or_dash(p.peer.hostname.as_ref().map(|h| h.as_str())),
                p.peer.address,
                p.peer.public_key,
                untrusted(&p.justification)
            )
        })
        .collect()
}

/// `trust`: one line per relation.
pub fn trust_list(list: &TrustList) -> String {
    if list.peers.is_empty() {
        return "no trust relations".into();
    }
    list.peers
        .iter()
        .map(|p| {
            format!(
                "{:<10} {:<24} {}  {}\n",
                standing(p.state),
                name_or_dash(p.hostname.as_ref().map(|h| h.as_str())),
                p.address,
                p.public_key
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::mapping::Hostname;
    use crate::node::views::PendingView;

    fn view(seed: u8, hostname: Option<&str>, state: TrustStanding) -> TrustView {
        let key = Identity::from_seed([seed; 32]).public_key();
        TrustView {
            public_key: key,
            address: key.addr48(),
            ipv6: "fdc5:7a3e:91b4::1".parse().unwrap(),
            hostname: hostname.map(|h| Hostname::new(h).unwrap()),
            state,
        }
    }

    #[test]
    fn handshake_says_whether_trust_is_there_or_requested() {
        let v = view(1, Some("worker-node"), TrustStanding::Requested);
        let a = v.address;
        assert_eq!(
            handshake(Some(&v)),
            format!(
                "trust requested from worker-node ({a}); it appears in their `pilotctl pending` \
                 until they approve"
            )
        );
        let v = view(1, None, TrustStanding::Static);
        assert_eq!(
            handshake(Some(&v)),
            format!("{a} is trusted: the tunnel may form")
        );
        assert!(handshake(None).starts_with("trust requested from the peer;"));
    }

    #[test]
    fn decisions_name_the_peer() {
        let v = view(2, Some("orchestrator-node"), TrustStanding::Trusted);
        let a = v.address;
        assert_eq!(
            approved(Some(&v)),
            format!("approved orchestrator-node ({a}): trust is mutual")
        );
        assert_eq!(
            rejected(Some(&v)),
            format!("rejected orchestrator-node ({a})")
        );
        assert_eq!(
            untrusted_peer(None),
            "no longer trusting the peer: tunnel torn down"
        );
    }

    #[test]
    fn pending_shows_the_justification_escaped() {
        let list = PendingList {
            pending: vec![PendingView {
                peer: view(3, Some("orchestrator-node"), TrustStanding::Pending),
                justification: "need it\n    justification: \u{1b}[8mapproved".into(),
                since_ms: 0,
            }],
        };
        let v = &list.pending[0].peer;
        assert_eq!(
            pending(&list),
            format!(
                "orchestrator-node  {}  {}\n    justification: need it\\n    justification: \
                 \\u{{1b}}[8mapproved\n",
                v.address, v.public_key
            )
        );
        let empty = PendingList { pending: vec![] };
        assert_eq!(pending(&empty), "no pending trust requests");
    }

    #[test]
    fn trust_lists_one_relation_per_line() {
        let list = TrustList {
            peers: vec![
                view(4, Some("worker-node"), TrustStanding::Trusted),
                view(5, None, TrustStanding::Rejected),
            ],
        };
        let (a, b) = (&list.peers[0], &list.peers[1]);
        assert_eq!(
            trust_list(&list),
            format!(
                "trusted    worker-node              {}  {}\nrejected   -                        {}  {}\n",
                a.address, a.public_key, b.address, b.public_key
            )
        );
        assert_eq!(
            trust_list(&TrustList { peers: vec![] }),
            "no trust relations"
        );
    }
}
