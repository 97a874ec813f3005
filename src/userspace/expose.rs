//! Port forwarding into this node: an overlay TCP port is exposed to a local `HOST:PORT`, so an
//! agent without root (userspace mode) can serve peers. Each connection accepted on the overlay
//! port is spliced to a fresh TCP connection to the target.
//!
//! `pilotctl expose 8080 --to 127.0.0.1:3000`, `expose --list`, `expose --remove 8080` drive an
//! [`Exposer`] through the local API; `[[expose]]` entries in the config are added at start.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::userspace::overlay_net::{OverlayNet, OverlayStream};

/// How long a connection to the local target may take.
pub const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections spliced at once per exposed port.
pub const MAX_CONNECTIONS_PER_PORT: usize = 1024;
/// Buffer of each direction of a spliced connection.
const SPLICE_BUFFER: usize = 256 * 1024;

/// One exposed port, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exposed {
    /// The overlay port.
    pub port: u16,
    /// The local target, `HOST:PORT`.
    pub to: String,
}

/// Errors from changing the exposed ports.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    /// The target is not `HOST:PORT`.
    #[error("`{0}` is not a target: expected HOST:PORT, e.g. 127.0.0.1:3000 or [::1]:3000")]
    InvalidTarget(String),
    /// Port 0 cannot be exposed.
    #[error("overlay port 0 cannot be exposed")]
    PortZero,
    /// The port is exposed already.
    #[error("overlay port {port} is already exposed to {to}")]
    AlreadyExposed {
        /// The port.
        port: u16,
        /// Where it goes now.
        to: String,
    },
    /// The port is not exposed.
    #[error("overlay port {0} is not exposed")]
    NotExposed(u16),
    /// Listening on the overlay port failed (another service holds it?).
    #[error("cannot listen on overlay port {port}: {source}")]
    Listen {
        /// The port.
        port: u16,
        /// Why.
        source: io::Error,
    },
}

impl From<ExposeError> for crate::error::PilotError {
    fn from(e: ExposeError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        let (code, hint) = match e {
            ExposeError::InvalidTarget(_) | ExposeError::PortZero => (
                ErrorCode::InvalidArgument,
                "give a port and a target: expose 8080 --to 127.0.0.1:3000",
            ),
            ExposeError::AlreadyExposed { .. } => (
                ErrorCode::AlreadyExists,
                "remove it first with `pilotctl expose --remove PORT`",
            ),
            ExposeError::NotExposed(_) => (
                ErrorCode::NotFound,
                "see the exposed ports with `pilotctl expose --list`",
            ),
            ExposeError::Listen { .. } => (
                ErrorCode::AlreadyExists,
                "another service holds that overlay port; choose another",
            ),
        };
        PilotError::new(code, e.to_string(), hint)
    }
}

/// Checks that `to` looks like `HOST:PORT` with a non-zero port.
pub fn validate_target(to: &str) -> Result<(), ExposeError> {
    if crate::config::is_valid_expose_target(to) {
        Ok(())
    } else {
        Err(ExposeError::InvalidTarget(to.to_string()))
    }
}

struct Entry {
    to: String,
    task: JoinHandle<()>,
}

/// The table of exposed ports and the tasks that serve them. Dropping it stops them all.
pub struct Exposer {
    net: OverlayNet,
    entries: Mutex<BTreeMap<u16, Entry>>,
}

impl std::fmt::Debug for Exposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposer")
            .field("exposed", &self.list())
            .finish()
    }
}

impl Exposer {
    /// An empty table over `net`.
    pub fn new(net: OverlayNet) -> Self {
        Exposer {
            net,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// Exposes overlay `port` to the local `to` (`HOST:PORT`). The overlay port listens when
    /// this returns.
    pub async fn add(&self, port: u16, to: &str) -> Result<(), ExposeError> {
        if port == 0 {
            return Err(ExposeError::PortZero);
        }
        validate_target(to)?;
        if let Some(e) = self.lock().get(&port) {
            return Err(ExposeError::AlreadyExposed {
                port,
                to: e.to.clone(),
            });
        }
        let mut listener = self
            .net
            .listen(port)
            .await
            .map_err(|source| ExposeError::Listen { port, source })?;
        let target = Arc::<str>::from(to);
        let task_target = target.clone();
        let task = tokio::spawn(async move {
            let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_PORT));
            loop {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(port, error = %e, "exposed port stopped accepting");
                        return;
                    }
                };
                let to = task_target.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = splice_to(stream, &to).await {
                        tracing::debug!(port, %to, error = %e, "exposed connection ended");
                    }
                });
            }
        });
        let mut entries = self.lock();
        if let Some(e) = entries.get(&port) {
            // Another add won the race while we were listening.
            task.abort();
            return Err(ExposeError::AlreadyExposed {
                port,
                to: e.to.clone(),
            });
        }
        entries.insert(
            port,
            Entry {
                to: target.to_string(),
                task,
            },
        );
        tracing::info!(port, %to, "overlay port exposed");
        Ok(())
    }

    /// Stops exposing `port`. Connections already spliced keep running.
    pub fn remove(&self, port: u16) -> Result<Exposed, ExposeError> {
        let e = self
            .lock()
            .remove(&port)
            .ok_or(ExposeError::NotExposed(port))?;
        e.task.abort();
        tracing::info!(port, to = %e.to, "overlay port no longer exposed");
        Ok(Exposed { port, to: e.to })
    }

    /// The exposed ports, in order.
    pub fn list(&self) -> Vec<Exposed> {
        self.lock()
            .iter()
            .map(|(port, e)| Exposed {
                port: *port,
                to: e.to.clone(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Exposer {
    fn drop(&mut self) {
        for e in self.lock().values() {
            e.task.abort();
        }
    }
}

async fn splice_to(mut overlay: OverlayStream, to: &str) -> io::Result<()> {
    let mut local = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "target did not answer"))??;
    let _ = local.set_nodelay(true);
    tokio::io::copy_bidirectional_with_sizes(
        &mut overlay,
        &mut local,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_host_and_port() {
        for ok in [
            "127.0.0.1:3000",
            "[::1]:80",
            "localhost:8080",
            "my-host.lan:1",
        ] {
            assert!(validate_target(ok).is_ok(), "{ok}");
        }
        for bad in [
            "3000",
            "127.0.0.1",
            "127.0.0.1:0",
            ":80",
            "::1:80",
            "a b:80",
            "[zz]:80",
            "h:99999",
        ] {
            assert!(validate_target(bad).is_err(), "{bad}");
        }
    }
}
