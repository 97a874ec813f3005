//! Files: `send-file`, `transfers`, `received`.

use super::{human_bytes, table, untrusted};
use crate::api::{ReceivedData, Transfer, TransferState, TransfersData};
use crate::services::files::Direction;

/// Cells of the progress bar.
const BAR: usize = 20;

/// `send-file`: the transfer is queued.
pub fn sent_file(t: &Transfer) -> String {
    format!(
        "transfer {} queued: {} ({}) to {}; `pilotctl transfers` shows its progress",
        untrusted(&t.id),
        untrusted(&t.name),
        human_bytes(t.size),
        peer_name(t)
    )
}

/// `send-file --wait`: the peer has the file.
pub fn delivered_file(t: &Transfer) -> String {
    format!(
        "delivered {} ({}) to {}: stored as {} in its received/, sha256 {}",
        untrusted(&t.name),
        human_bytes(t.size),
        peer_name(t),
        untrusted(t.stored_as.as_deref().unwrap_or("?")),
        untrusted(t.sha256.as_deref().unwrap_or("?"))
    )
}

fn peer_name(t: &Transfer) -> String {
    match (&t.peer_hostname, t.peer_address.is_empty()) {
        (Some(h), _) => untrusted(h).into_owned(),
        (None, false) => untrusted(&t.peer_address).into_owned(),
        (None, true) => untrusted(&t.peer).into_owned(),
    }
}

/// How far a transfer is: a bar on a terminal (`[#####...............]  25%`), a
/// percentage otherwise.
fn progress(t: &Transfer, bar: bool) -> String {
    let done = if t.state == TransferState::Done {
        t.size
    } else {
        t.offset.min(t.size)
    };
    let pct = if t.size == 0 {
        100
    } else {
        (done as u128 * 100 / t.size as u128) as usize
    };
    if !bar {
        return format!("{pct}%");
    }
    let filled = pct * BAR / 100;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        ".".repeat(BAR - filled)
    )
}

fn state(t: &Transfer) -> String {
    let s = serde_json::to_value(t.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    match &t.error {
        Some(e) if t.state != TransferState::Done => {
            format!("{s} ({}: {})", untrusted(&e.code), untrusted(&e.message))
        }
        _ => s,
    }
}

/// `transfers`: one line per transfer, outgoing then incoming; `bar` draws progress bars
/// (when stdout is a terminal).
pub fn transfers(d: &TransfersData, bar: bool) -> String {
    if d.transfers.is_empty() {
        return "no transfers".into();
    }
    let mut rows =
        vec![["DIR", "ID", "PEER", "NAME", "PROGRESS", "BYTES", "STATE"].map(String::from)];
    for t in &d.transfers {
        rows.push([
            match t.direction {
                Direction::Outgoing => "out".into(),
                Direction::Incoming => "in".into(),
            },
            untrusted(&t.id[..t.id.len().min(8)]).into_owned(),
            peer_name(t),
            untrusted(&t.name).into_owned(),
            progress(t, bar),
            format!(
                "{}/{}",
                human_bytes(t.offset.min(t.size)),
                human_bytes(t.size)
            ),
            state(t),
        ]);
    }
    table(&rows)
}

/// A unix-ms time as an age (`12s ago`, `5m ago`, `3h ago`, `2d ago`).
fn age(ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `received`: name, size, sender, SHA-256 and arrival of each file.
pub fn received(d: &ReceivedData, now_ms: u64) -> String {
    if d.files.is_empty() {
        return if d.cleared {
            "received/ had no files".into()
        } else {
            "no files received".into()
        };
    }
    let mut rows = vec![["NAME", "SIZE", "FROM", "SHA256", "RECEIVED"].map(String::from)];
    for f in &d.files {
        let from = f.from_hostname.as_deref().unwrap_or(&f.from_address);
        rows.push([
            untrusted(&f.name).into_owned(),
            human_bytes(f.size),
            untrusted(from).into_owned(),
            untrusted(&f.sha256).into_owned(),
            age(f.received_ms, now_ms),
        ]);
    }
    let mut text = table(&rows);
    if d.cleared {
        text.push_str(&format!("\n{} file(s) deleted", d.files.len()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ReceivedFile, TransferError};

    fn transfer(offset: u64, state: TransferState) -> Transfer {
        Transfer {
            id: "0123456789abcdef0123456789abcdef".into(),
            direction: Direction::Outgoing,
            peer: "KEY=".into(),
            peer_address: "0a1b.2c3d.4e5f".into(),
            peer_hostname: Some("worker-node".into()),
            name: "data.bin".into(),
            path: Some("/tmp/data.bin".into()),
            size: 1 << 20,
            offset,
            bytes_sent: offset,
            state,
            error: None,
            sha256: None,
            stored_as: None,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn transfers_show_a_bar_on_a_terminal_and_a_percentage_otherwise() {
        let d = TransfersData {
            transfers: vec![transfer(1 << 19, TransferState::Sending)],
        };
        let tty = transfers(&d, true);
        assert!(tty.contains("[##########..........]  50%"), "{tty}");
        let plain = transfers(&d, false);
        assert!(plain.contains(" 50% ") && !plain.contains('#'), "{plain}");
        assert!(plain.contains("512.0 KiB/1.0 MiB"), "{plain}");
    }

    #[test]
    fn a_refusal_shows_its_code_and_the_peers_text_escaped() {
        let mut t = transfer(0, TransferState::Failed);
        t.error = Some(TransferError {
            code: "too_large".into(),
            message: "no\u{1b}[2J".into(),
        });
        t.name = "evil\nname".into();
        let text = transfers(&TransfersData { transfers: vec![t] }, false);
        assert!(text.contains("failed (too_large: no\\u{1b}[2J)"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn received_lists_name_size_sender_hash_and_age() {
        let d = ReceivedData {
            files: vec![ReceivedFile {
                id: "0123456789abcdef0123456789abcdef".into(),
                name: "report.csv".into(),
                path: "/home/a/.pilot/received/report.csv".into(),
                size: 2048,
                sha256: "ab".repeat(32),
                from: "KEY=".into(),
                from_address: "0a1b.2c3d.4e5f".into(),
                from_hostname: None,
                received_ms: 1_000,
            }],
            cleared: false,
        };
        let text = received(&d, 61_000);
        let line = text.lines().nth(1).unwrap();
        for want in [
            "report.csv",
            "2.0 KiB",
            "0a1b.2c3d.4e5f",
            &"ab".repeat(32),
            "1m ago",
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        assert_eq!(
            received(
                &ReceivedData {
                    files: vec![],
                    cleared: false
                },
                0
            ),
            "no files received"
        );
    }
}
