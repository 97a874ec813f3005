//! The API socket: bound owner-only, served until `POST /v1/shutdown`, SIGTERM or SIGINT.

use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::daemon::local_api::Node;
use crate::error::{ErrorCode, PilotError};
use crate::state::paths::StatePaths;

/// Binds the API socket with mode 0600 from its first instant, replacing a stale one.
pub fn bind_api(paths: &StatePaths) -> Result<UnixListener, PilotError> {
    use std::os::unix::fs::PermissionsExt;
    // We hold the state directory's lock, so a socket file left here is stale.
    if paths.socket.exists() {
        std::fs::remove_file(&paths.socket).map_err(|e| {
            PilotError::internal(format!(
                "cannot remove stale socket {}: {e}",
                paths.socket.display()
            ))
        })?;
    }
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&paths.socket);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| {
        PilotError::new(
            ErrorCode::InvalidArgument,
            format!("cannot listen on {}: {e}", paths.socket.display()),
            "set PILOT_SOCKET to a path you can write (at most 107 bytes long)",
        )
    })?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| PilotError::internal(format!("cannot chmod the socket: {e}")))?;
    Ok(listener)
}

/// Completes on SIGTERM, SIGINT or a stop requested over the API.
async fn stop_requested(mut shutdown: watch::Receiver<bool>) {
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        _ = shutdown.changed() => tracing::info!("stop requested over the API"),
    }
    crate::daemon::notify::stopping("stopping: closing tunnels and the API");
}

/// Serves the local API until the daemon is told to stop.
pub async fn serve(node: Arc<Node>, listener: UnixListener, shutdown: watch::Receiver<bool>) {
    crate::api::server::serve(node, listener, stop_requested(shutdown)).await;
}
