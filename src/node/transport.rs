//! Which transport reaches a registry, UDP or TLS (issue 14), one sans-IO machine per
//! registry. Fed the time, what the data plane saw of the registry over UDP
//! ([`UdpHealth`]) and whether the TLS connection is up; answers with [`Action`]s the daemon
//! carries out. The rules (docs/PROTOCOL.md, "TLS transport", node rules):
//!
//! - `never`: UDP only. `always`: TLS only (divert at once, connect, stay; nothing goes to
//!   the registry over UDP, not even before the connection is up).
//! - `auto`: on UDP until a request stays unanswered for `udp_timeout`; then connect over TLS,
//!   divert the registry's datagrams there and register again. While on TLS, probe UDP every
//!   `probe_every`; the first datagram heard over UDP moves back: undivert, register again,
//!   and keep the connection `linger` longer for what is still in flight on it.
//! - A TLS connection that drops sends `auto` back to UDP (which moves to TLS again if UDP is
//!   still dead) and `always` to reconnecting.

use std::time::{Duration, Instant};

use crate::config::{RelayConfig, TlsMode};

/// What the data plane saw of a registry over UDP.
pub use crate::wg::divert::UdpHealth;

/// What the daemon must do for one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open the TLS connection (and keep retrying while the machine wants it).
    Connect,
    /// Close the TLS connection.
    Disconnect,
    /// Send the registry's datagrams over TLS (`true`) or UDP (`false`).
    Divert(bool),
    /// Register with the registry again at once (its transport changed).
    Reregister,
    /// Send a UDP probe to the registry (a datagram it answers over UDP).
    ProbeUdp,
}

/// Where the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// On UDP; no TLS connection.
    Udp,
    /// Wants TLS; the connection is not up yet.
    Connecting {
        /// Since when.
        since: Instant,
    },
    /// On TLS.
    Tls {
        /// Since when.
        since: Instant,
    },
    /// Back on UDP; the TLS connection closes at `until`.
    Returning {
        /// When the connection closes.
        until: Instant,
    },
}

/// The transport machine of one registry.
#[derive(Debug, Clone)]
pub struct TransportMachine {
    mode: TlsMode,
    udp_timeout: Duration,
    probe_every: Duration,
    linger: Duration,
    state: State,
    next_probe: Option<Instant>,
}

impl TransportMachine {
    /// A machine with the `[relay]` settings, on UDP.
    pub fn new(config: &RelayConfig) -> Self {
        TransportMachine {
            mode: config.tls,
            udp_timeout: Duration::from_millis(config.udp_timeout_ms),
            probe_every: Duration::from_millis(config.udp_probe_ms.max(100)),
            linger: Duration::from_millis(config.tls_linger_ms),
            state: State::Udp,
            next_probe: None,
        }
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the TLS connection should be open (connect when it is not).
    pub fn wants_tls(&self) -> bool {
        !matches!(self.state, State::Udp)
    }

    /// Whether UDP has gone unanswered too long at `now`.
    fn udp_dead(&self, now: Instant, udp: &UdpHealth) -> bool {
        udp.unanswered_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.udp_timeout)
    }

    /// Advances to `now`; what to do.
    pub fn step(&mut self, now: Instant, udp: UdpHealth, tls_up: bool) -> Vec<Action> {
        use Action::*;
        let heard_since = |t: Instant| udp.last_heard.is_some_and(|h| h > t);
        let auto = self.mode == TlsMode::Auto;
        let (next, actions) = match self.state {
            _ if self.mode == TlsMode::Never => (State::Udp, vec![]),
            // `always` never sends to the registry over UDP, not even while connecting.
            State::Udp if !auto => (
                State::Connecting { since: now },
                vec![Connect, Divert(true)],
            ),
            State::Udp if self.udp_dead(now, &udp) => {
                (State::Connecting { since: now }, vec![Connect])
            }
            State::Udp => (State::Udp, vec![]),
            State::Connecting { .. } if tls_up => {
                self.next_probe = Some(now + self.probe_every);
                (State::Tls { since: now }, vec![Divert(true), Reregister])
            }
            State::Connecting { since } if auto && heard_since(since) => {
                (State::Udp, vec![Disconnect])
            }
            State::Connecting { since } => (State::Connecting { since }, vec![]),
            State::Tls { .. } if !tls_up && auto => (State::Udp, vec![Divert(false), Reregister]),
            State::Tls { .. } if !tls_up => (State::Connecting { since: now }, vec![Connect]),
            State::Tls { since } if auto && heard_since(since) => (
                State::Returning {
                    until: now + self.linger,
                },
                vec![Divert(false), Reregister],
            ),
            State::Tls { since } if auto && self.next_probe.is_some_and(|p| now >= p) => {
                self.next_probe = Some(now + self.probe_every);
                (State::Tls { since }, vec![ProbeUdp])
            }
            State::Tls { since } => (State::Tls { since }, vec![]),
            State::Returning { .. } if tls_up && self.udp_dead(now, &udp) => {
                self.next_probe = Some(now + self.probe_every);
                (State::Tls { since: now }, vec![Divert(true), Reregister])
            }
            State::Returning { until } if now >= until || !tls_up => (State::Udp, vec![Disconnect]),
            State::Returning { until } => (State::Returning { until }, vec![]),
        };
        self.state = next;
        actions
    }

    /// When [`TransportMachine::step`] should run next at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Tls { .. } => self.next_probe,
            State::Returning { until } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn cfg(mode: TlsMode) -> RelayConfig {
        RelayConfig {
            tls: mode,
            ..RelayConfig::default()
        }
    }

    const QUIET: UdpHealth = UdpHealth {
        last_heard: None,
        unanswered_since: None,
    };

    #[test]
    fn auto_moves_to_tls_after_the_udp_timeout_and_back_when_udp_answers() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut m = TransportMachine::new(&cfg(TlsMode::Auto));
        assert_eq!(m.step(s(0), QUIET, false), vec![]);
        let unanswered = UdpHealth {
            last_heard: None,
            unanswered_since: Some(s(0)),
        };
        assert_eq!(m.step(s(2999), unanswered, false), vec![], "not yet");
        assert_eq!(m.step(s(3000), unanswered, false), vec![Connect]);
        assert!(m.wants_tls());
        assert_eq!(m.step(s(3100), unanswered, false), vec![], "connecting");
        assert_eq!(m.step(s(3200), QUIET, true), vec![Divert(true), Reregister]);
        assert_eq!(m.poll_timeout(), Some(s(8200)));
        assert_eq!(m.step(s(5000), QUIET, true), vec![]);
        assert_eq!(m.step(s(8200), QUIET, true), vec![ProbeUdp]);
        assert_eq!(m.step(s(13200), QUIET, true), vec![ProbeUdp]);
        // The probe is answered over UDP: back to UDP, the connection lingers.
        let heard = UdpHealth {
            last_heard: Some(s(13250)),
            unanswered_since: None,
        };
        assert_eq!(
            m.step(s(13300), heard, true),
            vec![Divert(false), Reregister]
        );
        assert_eq!(m.state(), State::Returning { until: s(23300) });
        assert_eq!(m.step(s(20000), heard, true), vec![]);
        assert_eq!(m.step(s(23300), heard, true), vec![Disconnect]);
        assert_eq!(m.state(), State::Udp);
    }

    #[test]
    fn auto_goes_back_to_tls_when_udp_dies_while_the_connection_lingers() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut m = TransportMachine::new(&cfg(TlsMode::Auto));
        m.state = State::Returning { until: s(10_000) };
        let dead = UdpHealth {
            last_heard: Some(s(0)),
            unanswered_since: Some(s(1000)),
        };
        assert_eq!(m.step(s(4000), dead, true), vec![Divert(true), Reregister]);
        assert!(matches!(m.state(), State::Tls { .. }));
    }

    #[test]
    fn a_dropped_connection_returns_auto_to_udp_and_always_to_connecting() {
        let t0 = Instant::now();
        let mut auto = TransportMachine::new(&cfg(TlsMode::Auto));
        auto.state = State::Tls { since: t0 };
        assert_eq!(auto.step(t0, QUIET, false), vec![Divert(false), Reregister]);
        assert_eq!(auto.state(), State::Udp);
        let mut always = TransportMachine::new(&cfg(TlsMode::Always));
        assert_eq!(always.step(t0, QUIET, false), vec![Connect, Divert(true)]);
        assert_eq!(always.step(t0, QUIET, true), vec![Divert(true), Reregister]);
        let heard = UdpHealth {
            last_heard: Some(t0 + Duration::from_secs(1)),
            unanswered_since: None,
        };
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            always.step(later, heard, true),
            vec![],
            "always stays, never probes"
        );
        assert_eq!(always.step(later, QUIET, false), vec![Connect]);
    }

    #[test]
    fn never_stays_on_udp() {
        let t0 = Instant::now();
        let mut m = TransportMachine::new(&cfg(TlsMode::Never));
        let dead = UdpHealth {
            last_heard: None,
            unanswered_since: Some(t0),
        };
        assert_eq!(m.step(t0 + Duration::from_secs(60), dead, false), vec![]);
        assert!(!m.wants_tls());
    }
}
