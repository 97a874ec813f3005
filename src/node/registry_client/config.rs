//! What the client is configured with: registries (optionally with pinned keys), timers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::keys::LearnedKeys;
use crate::error::PilotError;
use crate::identity::PublicKey;
use crate::mapping::Hostname;

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The registries to register with (all of them; tunnels never depend on one).
    pub registries: Vec<SocketAddr>,
    /// The hostname to claim, if any.
    pub hostname: Option<Hostname>,
    /// Our tags (v1.3), sent again after every registration.
    pub tags: Vec<String>,
    /// Our local (LAN) endpoints, offered to trusted peers.
    pub candidates: Vec<SocketAddr>,
    /// Time between heartbeats (at most 25 s).
    pub heartbeat_interval: Duration,
    /// First retransmission timeout; doubled at each retry.
    pub initial_rto: Duration,
    /// Cap on the retransmission timeout.
    pub max_backoff: Duration,
    /// Sends of a one-shot request before it fails (heartbeats use 3).
    pub max_attempts: u32,
    /// How long to wait for a peer's endpoint answer after the registry forwarded our request.
    pub endpoint_answer_timeout: Duration,
    /// Registry keys pinned by configuration. A registry without a pinned key is trusted on
    /// first use: its key is learned from the first signed `Registered` answer to one of our
    /// registrations, remembered in [`ClientConfig::learned_keys`], and never changed after.
    pub pinned_keys: HashMap<SocketAddr, PublicKey>,
    /// Keys learned on first use in earlier runs, and where to remember new ones.
    pub learned_keys: LearnedKeys,
    /// A registry that leaves a request unanswered this long stops being our home relay until
    /// it answers again (v1.4; the daemon uses `[relay] udp_timeout_ms`, 3 s by default).
    pub home_timeout: Duration,
    /// Largest clock correction taken from a registry's `stale_timestamp` answer; a larger
    /// one is ignored and counted (default 24 h).
    pub max_clock_offset: Duration,
}

/// Default of [`ClientConfig::max_clock_offset`]: one day (`[registry] max_clock_offset_secs`).
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration =
    Duration::from_secs(crate::config::DEFAULT_MAX_CLOCK_OFFSET_SECS);

impl ClientConfig {
    /// Defaults for the given registries.
    pub fn new(registries: Vec<SocketAddr>) -> Self {
        ClientConfig {
            registries,
            hostname: None,
            tags: Vec::new(),
            candidates: Vec::new(),
            heartbeat_interval: Duration::from_secs(20),
            initial_rto: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_attempts: 5,
            endpoint_answer_timeout: Duration::from_secs(10),
            pinned_keys: HashMap::new(),
            learned_keys: LearnedKeys::in_memory(),
            max_clock_offset: DEFAULT_MAX_CLOCK_OFFSET,
            home_timeout: Duration::from_secs(3),
        }
    }
}

/// Why a registry entry from configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrySpecError {
    /// No `:PORT`.
    #[error("registry `{0}` has no port")]
    NoPort(String),
    /// The text after `#` is not a public key.
    #[error("registry `{spec}`: the pinned key is invalid: {source}")]
    BadKey {
        /// The whole entry.
        spec: String,
        /// Why the key was refused.
        source: crate::identity::PublicKeyError,
    },
}

impl From<RegistrySpecError> for PilotError {
    fn from(e: RegistrySpecError) -> Self {
        let hint = match e {
            RegistrySpecError::NoPort(_) => {
                "write HOST:PORT, optionally followed by #KEY to pin the registry's key"
            }
            RegistrySpecError::BadKey { .. } => {
                "copy the key from the registry's log line `registry running ... key=...`"
            }
        };
        PilotError::invalid(e.to_string(), hint)
    }
}

/// Splits a registry entry from configuration, `HOST:PORT` or `HOST:PORT#KEY` (KEY = the
/// registry's public key, base64 or hex, as `pilotctl registry run` logs it), into the address
/// text (to resolve) and the pinned key, if any.
pub fn parse_registry_spec(spec: &str) -> Result<(String, Option<PublicKey>), RegistrySpecError> {
    let spec = spec.trim();
    let (addr, key) = match spec.split_once('#') {
        Some((a, k)) => (a.trim(), Some(k.trim())),
        None => (spec, None),
    };
    if addr.is_empty() || !addr.contains(':') {
        return Err(RegistrySpecError::NoPort(spec.to_string()));
    }
    let key = key
        .map(|k| {
            k.parse::<PublicKey>()
                .map_err(|source| RegistrySpecError::BadKey {
                    spec: spec.to_string(),
                    source,
                })
        })
        .transpose()?;
    Ok((addr.to_string(), key))
}
