//! Wiring into systemd-resolved: the TUN link gets our resolver as its DNS server and the
//! routing domain `~pilot`, so only `.pilot` names go to us and everything else keeps the
//! system's resolver. Nothing is written to a system file: the settings are per-link runtime
//! state held by resolved (set with `resolvectl`), and they vanish with the link.

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Command;

/// The routing domain we set on the link.
pub const ROUTING_DOMAIN: &str = "~pilot";

/// Why resolved could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ResolvedError {
    /// systemd-resolved is not running here.
    #[error("systemd-resolved is not running on this host")]
    Absent,
    /// `resolvectl` failed.
    #[error("`resolvectl {args}` failed: {reason}")]
    Command {
        /// The arguments given.
        args: String,
        /// Its error output, or why it could not run.
        reason: String,
    },
}

impl From<ResolvedError> for crate::error::PilotError {
    fn from(e: ResolvedError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        match e {
            ResolvedError::Absent => PilotError::new(
                ErrorCode::NotFound,
                e.to_string(),
                "point your resolver's `pilot` zone at the address `pilotctl dns setup` prints (dnsmasq: server=/pilot/ADDR)",
            ),
            ResolvedError::Command { .. } => PilotError::new(
                ErrorCode::Internal,
                e.to_string(),
                "run as root (or with CAP_NET_ADMIN) and check `systemctl status systemd-resolved`",
            ),
        }
    }
}

/// What resolved holds for a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// systemd-resolved is not running.
    Absent,
    /// The link has our server and `~pilot`.
    Configured,
    /// resolved runs but the link lacks our settings (or the link does not exist).
    NotConfigured,
}

impl LinkState {
    /// `absent`, `configured` or `not-configured`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Absent => "absent",
            LinkState::Configured => "configured",
            LinkState::NotConfigured => "not-configured",
        }
    }
}

/// Whether systemd-resolved runs here (its runtime directory exists).
pub fn present() -> bool {
    Path::new("/run/systemd/resolve").is_dir()
}

/// The `resolvectl` argument lists that wire `link` to `server`.
pub fn setup_commands(link: &str, server: Ipv6Addr) -> Vec<Vec<String>> {
    vec![
        vec!["dns".into(), link.into(), server.to_string()],
        vec!["domain".into(), link.into(), ROUTING_DOMAIN.into()],
    ]
}

/// Sets our server and routing domain on `link`.
pub fn apply(link: &str, server: Ipv6Addr) -> Result<(), ResolvedError> {
    if !present() {
        return Err(ResolvedError::Absent);
    }
    for args in setup_commands(link, server) {
        run(&args)?;
    }
    Ok(())
}

/// Drops every per-link setting of `link` (`resolvectl revert`).
pub fn revert(link: &str) -> Result<(), ResolvedError> {
    if !present() {
        return Err(ResolvedError::Absent);
    }
    run(&["revert".to_string(), link.to_string()]).map(|_| ())
}

/// What resolved holds for `link` with respect to `server`.
pub fn link_state(link: &str, server: Ipv6Addr) -> LinkState {
    if !present() {
        return LinkState::Absent;
    }
    match run(&["status".to_string(), link.to_string()]) {
        Ok(out) if out.contains(ROUTING_DOMAIN) && out.contains(&server.to_string()) => {
            LinkState::Configured
        }
        _ => LinkState::NotConfigured,
    }
}

fn run(args: &[String]) -> Result<String, ResolvedError> {
    let err = |reason: String| ResolvedError::Command {
        args: args.join(" "),
        reason,
    };
    let out = Command::new("resolvectl")
        .args(args)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
