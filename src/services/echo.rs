//! The echo service on overlay port 7: what a peer sends comes back (for `bench` and checks).

use std::time::Duration;

use crate::userspace::overlay_net::OverlayNet;

/// The echo service's port.
pub const ECHO_PORT: u16 = 7;

/// Starts the echo service on port 7 (a warning if the port cannot be had).
pub fn start_echo(overlay: OverlayNet) {
    tokio::spawn(async move {
        let mut l = match overlay.listen(ECHO_PORT).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "echo service not started (port 7)");
                return;
            }
        };
        loop {
            match l.accept().await {
                Ok(mut s) => {
                    tokio::spawn(async move {
                        let (mut r, mut w) = tokio::io::split(&mut s);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "echo accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}
