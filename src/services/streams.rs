//! Byte streams on any overlay port (`pilotctl connect PEER PORT`, `pilotctl listen PORT`; 1000
//! by convention): the overlay side of the local API's stream requests. The daemon splices
//! each to its API connection, so streams work the same in TUN and userspace mode.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use crate::error::{ErrorCode, PilotError};
use crate::userspace::overlay_net::{OverlayNet, OverlayStream};

/// How long `connect` waits for the peer's port to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a stream to `[ip]:port` on the overlay.
pub async fn connect(
    overlay: &OverlayNet,
    ip: Ipv6Addr,
    port: u16,
) -> Result<OverlayStream, PilotError> {
    let dst = SocketAddrV6::new(ip, port, 0, 0);
    tokio::time::timeout(CONNECT_TIMEOUT, overlay.connect(dst))
        .await
        .map_err(|_| {
            PilotError::new(
                ErrorCode::Timeout,
                format!("no answer from [{ip}]:{port} within {} s", CONNECT_TIMEOUT.as_secs()),
                "check `pilotctl peers` for a recent handshake",
            )
        })?
        .map_err(|e| {
            PilotError::new(
                ErrorCode::ConnectionFailed,
                format!("cannot connect to [{ip}]:{port}: {e}"),
                format!("is anything listening on port {port} of the peer (`pilotctl listen {port}` there)?"),
            )
        })
}

/// Listens on our overlay `port` until one peer connects; returns its stream and address.
/// The port is free again as soon as this returns (or is dropped).
pub async fn accept_one(
    overlay: &OverlayNet,
    port: u16,
) -> Result<(OverlayStream, Ipv6Addr), PilotError> {
    let mut l = overlay.listen(port).await.map_err(|e| {
        PilotError::new(
            ErrorCode::AlreadyExists,
            format!("cannot listen on overlay port {port}: {e}"),
            "another listener or exposed port holds it; choose another port",
        )
    })?;
    let s = l
        .accept()
        .await
        .map_err(|e| PilotError::internal(format!("accept failed: {e}")))?;
    match s.peer_addr() {
        Ok(SocketAddr::V6(a)) => Ok((s, *a.ip())),
        Ok(other) => Err(PilotError::internal(format!(
            "overlay peer {other} is not IPv6"
        ))),
        Err(e) => Err(PilotError::internal(format!("peer address: {e}"))),
    }
}
