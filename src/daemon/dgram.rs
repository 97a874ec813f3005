//! `POST /v1/dgram/send` and `GET /v1/dgram/listen`: UDP datagrams on overlay ports, over
//! kernel sockets (TUN mode) or the netstack (userspace mode) through [`OverlayNet`].

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use base64::Engine;

use crate::api::types::{DgramListenData, DgramReceived, DgramSendRequest, DgramSent};
use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::userspace::overlay_net::OverlayNet;
use crate::wg::DataPlane;

/// Datagrams one `listen` answers with at most.
pub const MAX_COUNT: u32 = 1000;

/// Queue room of a netstack UDP socket opened for the API.
const QUEUE: usize = 64;

/// A port of the API (wider than u16 so 0 and 70000 get a clear error).
pub fn check_port(port: u32) -> Result<u16, PilotError> {
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(PilotError::invalid(
            format!("port {port} is not a UDP port"),
            "give a port from 1 to 65535, e.g. pilotctl dgram listen 5000",
        )),
    }
}

/// An I/O error of a datagram socket, with a code.
fn io_error(what: &str, port: u16, e: std::io::Error) -> PilotError {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => PilotError::new(
            ErrorCode::AlreadyExists,
            format!("overlay UDP port {port} is in use"),
            "pick another port, or stop what holds it",
        ),
        _ => PilotError::new(
            ErrorCode::ConnectionFailed,
            format!("{what} on overlay UDP port {port}: {e}"),
            "check the daemon log",
        ),
    }
}

/// The payload of a send request: text, or base64-decoded.
fn payload(req: &DgramSendRequest) -> Result<Vec<u8>, PilotError> {
    if !req.base64 {
        return Ok(req.data.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(req.data.as_bytes())
        .map_err(|_| {
            PilotError::invalid(
                "the datagram is not valid base64",
                "give binary payloads as standard base64, or send text without --base64",
            )
        })
}

/// Sends one datagram from an ephemeral port to the trusted peer `key` at `ip`.
pub async fn send(
    overlay: &OverlayNet,
    key: PublicKey,
    ip: Ipv6Addr,
    req: &DgramSendRequest,
) -> Result<DgramSent, PilotError> {
    let port = check_port(req.port)?;
    let data = payload(req)?;
    if data.len() > 65507 {
        return Err(PilotError::invalid(
            format!(
                "the datagram is {} bytes; UDP carries at most 65507",
                data.len()
            ),
            "send less, or use a stream (pilotctl connect) for bulk data",
        ));
    }
    let sock = overlay
        .bind_udp(0, QUEUE)
        .await
        .map_err(|e| io_error("bind", 0, e))?;
    let from_port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    sock.send_to(&data, SocketAddrV6::new(ip, port, 0, 0))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => PilotError::invalid(
                format!("cannot send this datagram: {e}"),
                "send at most the tunnel MTU less 48 bytes",
            ),
            _ => io_error("send", port, e),
        })?;
    // Let the netstack flush the datagram before the socket closes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(DgramSent {
        peer: key,
        ipv6: ip,
        port,
        from_port,
        bytes: data.len(),
    })
}

/// Binds our overlay UDP `port` and collects up to `count` datagrams from trusted peers,
/// for `timeout` at most; the rest are dropped and counted.
pub async fn listen(
    overlay: &OverlayNet,
    dataplane: &DataPlane,
    port: u32,
    count: Option<u32>,
    timeout: Option<Duration>,
) -> Result<DgramListenData, PilotError> {
    let port = check_port(port)?;
    let count = count.unwrap_or(1);
    if count == 0 || count > MAX_COUNT {
        return Err(PilotError::invalid(
            format!("count {count} is out of range"),
            format!("give a count from 1 to {MAX_COUNT}"),
        ));
    }
    let mut sock = overlay
        .bind_udp(port, QUEUE)
        .await
        .map_err(|e| io_error("bind", port, e))?;
    let mut out = DgramListenData {
        port,
        datagrams: Vec::new(),
        dropped_untrusted: 0,
        timed_out: false,
    };
    let collect = async {
        while out.datagrams.len() < count as usize {
            let (data, from) = sock
                .recv_from()
                .await
                .map_err(|e| io_error("receive", port, e))?;
            match dataplane.peer_by_ip(from.ip()) {
                Some(p) => out.datagrams.push(received(p, from, data)),
                None => out.dropped_untrusted += 1,
            }
        }
        Ok::<_, PilotError>(())
    };
    match timeout {
        Some(t) => match tokio::time::timeout(t, collect).await {
            Ok(r) => r?,
            Err(_) => out.timed_out = true,
        },
        None => collect.await?,
    }
    Ok(out)
}

/// One received datagram as the API shows it.
fn received(p: crate::wg::PeerId, from: SocketAddrV6, data: Vec<u8>) -> DgramReceived {
    let (data, base64) = match String::from_utf8(data) {
        Ok(s) => (s, false),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            true,
        ),
    };
    DgramReceived {
        from: p.public_key,
        hostname: p.hostname,
        address: p.addr48.to_string(),
        ipv6: p.ipv6,
        from_port: from.port(),
        data,
        base64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_outside_1_to_65535_are_refused_with_invalid_argument() {
        assert_eq!(check_port(5000).unwrap(), 5000);
        for bad in [0, 65536, 70000] {
            assert_eq!(
                check_port(bad).unwrap_err().code,
                ErrorCode::InvalidArgument
            );
        }
    }
}
