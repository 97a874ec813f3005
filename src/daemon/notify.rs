//! systemd integration (`Type=notify`): `READY=1` once the process really serves, `STATUS=`
//! lines for `systemctl status`, `WATCHDOG=1` while every heartbeat is fresh, `RELOADING=1` and
//! `STOPPING=1`. Without `NOTIFY_SOCKET` every call here is a no-op, and without
//! `WATCHDOG_USEC` no watchdog task starts.
//!
//! The watchdog pets at half of `WATCHDOG_USEC` (as sd_watchdog_enabled(3) advises), and only
//! when every member of its [`Heartbeats`] beat within that half (at least one second): the
//! data-plane threads beat once per loop turn, the daemon's API probe beats when a real
//! `GET /v1/info` over the socket (which also asks the node driver) answers, the registry's
//! loop beats once per turn. A stuck or dead member stops the petting and systemd restarts
//! the process after `WatchdogSec=`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::health::{Heartbeat, Heartbeats};

/// The shortest staleness the watchdog tolerates, whatever `WATCHDOG_USEC` says.
const MIN_MAX_AGE: Duration = Duration::from_secs(1);

/// True when systemd (or a test) gave us a notification socket.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A `STATUS=` line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1` (with the monotonic time systemd wants for `Type=notify-reload`).
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(t) => send(&[NotifyState::Reloading, t]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1` with a status line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How the watchdog runs for a given `WATCHDOG_USEC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogPlan {
    /// How often `WATCHDOG=1` is considered.
    pub pet_every: Duration,
    /// The oldest a heartbeat may be for a pet.
    pub max_age: Duration,
    /// How often the probes (API, registry loop) beat when healthy.
    pub probe_every: Duration,
}

impl WatchdogPlan {
    /// The plan for systemd's `WatchdogSec=` (`WATCHDOG_USEC`).
    pub fn for_timeout(timeout: Duration) -> WatchdogPlan {
        let half = timeout / 2;
        WatchdogPlan {
            pet_every: half.max(Duration::from_millis(10)),
            max_age: half.max(MIN_MAX_AGE),
            probe_every: (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    /// From the environment (`WATCHDOG_USEC`, `WATCHDOG_PID`), when a watchdog is asked for.
    pub fn from_env() -> Option<WatchdogPlan> {
        sd_notify::watchdog_enabled().map(WatchdogPlan::for_timeout)
    }
}

/// Whether to pet now: `Ok` when every heartbeat is fresh, else the stale ones.
pub fn check(beats: &Heartbeats, now: Instant, max_age: Duration) -> Result<(), String> {
    let stale = beats.stale_at(now, max_age);
    if stale.is_empty() {
        return Ok(());
    }
    Err(stale
        .iter()
        .map(|(n, age)| format!("{n} silent for {:.1} s", age.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Starts the watchdog task when `WATCHDOG_USEC` asks for one; returns its plan.
pub fn spawn_watchdog(beats: Heartbeats) -> Option<WatchdogPlan> {
    let plan = WatchdogPlan::from_env()?;
    tracing::info!(
        every_ms = plan.pet_every.as_millis() as u64,
        members = beats.len(),
        "systemd watchdog on"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(plan.pet_every);
        let mut healthy = true;
        loop {
            tick.tick().await;
            match check(&beats, Instant::now(), plan.max_age) {
                Ok(()) => {
                    if !healthy {
                        tracing::warn!("all threads answer again: watchdog resumed");
                        status("running");
                    }
                    healthy = true;
                    send(&[NotifyState::Watchdog]);
                }
                Err(why) => {
                    if healthy {
                        tracing::error!(stale = %why, "a thread stopped making progress: not petting the systemd watchdog");
                        status(&format!("unhealthy: {why}"));
                    }
                    healthy = false;
                }
            }
        }
    });
    Some(plan)
}

/// Asks the daemon's own API for `GET /v1/info` over `socket`; true on an `ok` answer within
/// `timeout`.
pub async fn api_answers(socket: &Path, timeout: Duration) -> bool {
    let probe = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
        s.write_all(b"GET /v1/info HTTP/1.1\r\nHost: pilot\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = Vec::with_capacity(1024);
        s.read_to_end(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") && contains(&head, b"\"status\":\"ok\""))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Beats `hb` each time the API answers, probing every `plan.probe_every`.
pub fn spawn_api_probe(socket: PathBuf, hb: Heartbeat, plan: WatchdogPlan) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(plan.probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if api_answers(&socket, plan.max_age).await {
                hb.beat();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_pets_at_half_the_timeout_and_never_tolerates_less_than_a_second() {
        let p = WatchdogPlan::for_timeout(Duration::from_secs(30));
        assert_eq!(p.pet_every, Duration::from_secs(15));
        assert_eq!(p.max_age, Duration::from_secs(15));
        assert_eq!(p.probe_every, Duration::from_secs(5));
        let p = WatchdogPlan::for_timeout(Duration::from_millis(800));
        assert_eq!(p.pet_every, Duration::from_millis(400));
        assert_eq!(p.max_age, Duration::from_secs(1));
        assert_eq!(p.probe_every, Duration::from_millis(200));
    }

    #[test]
    fn a_stuck_thread_stops_the_petting_and_names_itself() {
        let beats = Heartbeats::new();
        let t0 = Instant::now();
        let rx = beats.register("pilot-udp-rx");
        let api = beats.register("api");
        rx.beat_at(t0);
        api.beat_at(t0);
        let max = Duration::from_secs(15);
        assert_eq!(check(&beats, t0 + Duration::from_secs(10), max), Ok(()));
        // The API keeps answering; the receive thread is stuck.
        api.beat_at(t0 + Duration::from_secs(20));
        let why = check(&beats, t0 + Duration::from_secs(20), max).unwrap_err();
        assert!(why.contains("pilot-udp-rx silent for 20"), "{why}");
        assert!(!why.contains("api"), "{why}");
    }
}
