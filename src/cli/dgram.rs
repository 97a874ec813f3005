//! `pilotctl dgram send` and `pilotctl dgram listen`: UDP datagrams on overlay ports,
//! through the daemon's `/v1/dgram/…` routes.

use std::time::Duration;

use super::escape::untrusted;
use super::output::{decode, paths, Output};
use super::parity_args::DgramCmd;
use crate::api::client::Client;
use crate::api::{DgramListenData, DgramListenQuery, DgramSendRequest, DgramSent, Request};
use crate::error::PilotError;

/// How long `listen` without `--timeout` waits for the daemon (in effect: no limit).
const FOREVER: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Runs `dgram send` or `dgram listen`.
pub fn run(cmd: DgramCmd) -> Result<Output, PilotError> {
    match cmd {
        DgramCmd::Send {
            peer,
            port,
            data,
            base64,
            timeout,
        } => {
            let req = Request::DgramSend(DgramSendRequest {
                peer,
                port,
                data,
                base64,
            });
            call(
                "dgram send",
                &req,
                Duration::from_secs(timeout),
                render_sent,
            )
        }
        DgramCmd::Listen {
            port,
            count,
            timeout,
        } => {
            let ms = timeout.map(|t| t.saturating_mul(1000));
            let req = Request::DgramListen(DgramListenQuery {
                port,
                count: Some(count),
                timeout_ms: ms,
            });
            // The daemon waits; this client waits a little longer.
            let within = ms.map_or(FOREVER, |ms| {
                Duration::from_millis(ms) + Duration::from_secs(5)
            });
            call("dgram listen", &req, within, render_listen)
        }
    }
}

/// Sends `req`, waits up to `within` for the answer and renders it.
fn call<T: serde::de::DeserializeOwned>(
    command: &str,
    req: &Request,
    within: Duration,
    render: fn(&T) -> String,
) -> Result<Output, PilotError> {
    let raw = Client::connect(&paths()?.socket)?.call_within(req, within)?;
    let typed: T = decode(command, raw.clone())?;
    Ok(Output {
        text: render(&typed),
        data: raw,
    })
}

/// `dgram send`'s text.
pub fn render_sent(s: &DgramSent) -> String {
    format!(
        "sent {} bytes to {} port {} (from port {})",
        s.bytes, s.ipv6, s.port, s.from_port
    )
}

/// `dgram listen`'s text: one line per datagram, then a summary when something was dropped
/// or the wait timed out.
pub fn render_listen(d: &DgramListenData) -> String {
    let mut lines: Vec<String> = d
        .datagrams
        .iter()
        .map(|g| {
            let who = g.hostname.clone().unwrap_or_else(|| g.address.clone());
            let kind = if g.base64 { " (base64)" } else { "" };
            format!("{}{kind}: {}", untrusted(&who), untrusted(&g.data))
        })
        .collect();
    if d.dropped_untrusted > 0 {
        lines.push(format!(
            "dropped {} datagrams from untrusted sources",
            d.dropped_untrusted
        ));
    }
    if d.timed_out {
        lines.push(format!(
            "timed out after {} datagrams on port {}",
            d.datagrams.len(),
            d.port
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DgramReceived;

    #[test]
    fn listen_text_names_the_sender_escapes_the_data_and_reports_drops() {
        let key = crate::identity::Identity::generate().public_key();
        let d = DgramListenData {
            port: 5000,
            datagrams: vec![DgramReceived {
                from: key,
                hostname: Some("node-a".into()),
                address: "0a1b.2c3d.4e5f".into(),
                ipv6: "fd00::1".parse().unwrap(),
                from_port: 40000,
                data: "hi\u{1b}[2J".into(),
                base64: false,
            }],
            dropped_untrusted: 2,
            timed_out: true,
        };
        let t = render_listen(&d);
        assert!(t.starts_with("node-a: hi"), "{t}");
        assert!(!t.contains('\u{1b}'), "{t}");
        assert!(t.contains("dropped 2"), "{t}");
        assert!(t.contains("timed out after 1"), "{t}");
    }
}
