//! `[relay]`: how a node reaches its registries when UDP does not (issue 14): the TLS
//! transport, its fallback timers, an HTTP proxy. See docs/PROTOCOL.md, "TLS transport (v1,
//! issue 14)", and config/pilot.toml.

use serde::{Deserialize, Serialize};

/// When to use the TLS transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// UDP first; TLS when a registry leaves UDP requests unanswered, back to UDP when it
    /// answers there again.
    #[default]
    Auto,
    /// TLS only.
    Always,
    /// UDP only.
    Never,
}

/// `[relay]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// auto | always | never.
    pub tls: TlsMode,
    /// TCP port of the registries' TLS transport, on each registry's host.
    pub tls_port: u16,
    /// Wrap the TLS transport in WebSocket (`GET /pilot/relay/v1`, ALPN `http/1.1`), for
    /// middleboxes that pass only HTTP on TLS ports.
    pub websocket: bool,
    /// An HTTP proxy for the TLS connections (`http://HOST:PORT`); unset: the `https_proxy`
    /// or `HTTPS_PROXY` environment variable, if any.
    pub proxy: Option<String>,
    /// A registry request unanswered over UDP for this long moves that registry to TLS (ms).
    pub udp_timeout_ms: u64,
    /// While on TLS, how often UDP is probed (ms).
    pub udp_probe_ms: u64,
    /// After moving back to UDP, how long the TLS connection stays open for what is still in
    /// flight on it (ms).
    pub tls_linger_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            tls: TlsMode::Auto,
            tls_port: 443,
            websocket: false,
            proxy: None,
            udp_timeout_ms: 3000,
            udp_probe_ms: 5000,
            tls_linger_ms: 10_000,
        }
    }
}
