//! `GET /v1/health`: the daemon's short status, and the ring of the last warnings and errors
//! it logged (a `tracing` layer beside the log writer keeps them).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::api::types::{HealthData, LoggedProblem};
use crate::services::Messages;
use crate::wg::DataPlane;

/// How many problems the ring keeps.
pub const KEPT: usize = 10;
/// A problem this recent makes the status `degraded`.
const RECENT_MS: u64 = 60_000;
/// A WireGuard session older than this is expired (REJECT_AFTER_TIME).
const SESSION_SECS: u64 = 180;

fn ring() -> &'static Mutex<VecDeque<LoggedProblem>> {
    static RING: OnceLock<Mutex<VecDeque<LoggedProblem>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEPT)))
}

/// The last problems logged, oldest first.
pub fn last_problems() -> Vec<LoggedProblem> {
    ring()
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default()
}

/// Keeps a problem, dropping the oldest past [`KEPT`].
fn keep(p: LoggedProblem) {
    if let Ok(mut r) = ring().lock() {
        if r.len() == KEPT {
            r.pop_front();
        }
        r.push_back(p);
    }
}

/// A `tracing` layer that records every WARN and ERROR event in the ring.
pub struct ProblemLayer;

impl<S: Subscriber> Layer<S> for ProblemLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        keep(LoggedProblem {
            at_ms: crate::clock::unix_ms_now(),
            level: level.to_string(),
            target: event.metadata().target().to_string(),
            message: text.0.trim().to_string(),
        });
    }
}

/// `message k=v k=v`, as the log line shows an event.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?} ");
        } else {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }
}

/// What the report is made of (the daemon's `Node` passes its parts).
pub struct Parts<'a> {
    /// The data plane.
    pub dataplane: &'a DataPlane,
    /// The message service, if it runs.
    pub messages: Option<&'a Messages>,
    /// When the daemon started.
    pub started: std::time::Instant,
    /// The mode that runs.
    pub mode: String,
    /// Configured registries.
    pub registries: usize,
}

/// The health report now.
pub fn report(p: Parts<'_>) -> HealthData {
    let now_s = crate::clock::unix_ms_now() / 1000;
    let peers = p.dataplane.peers();
    let peers_up = peers
        .iter()
        .filter(|p| {
            p.last_handshake
                .is_some_and(|t| now_s.saturating_sub(t) < SESSION_SECS)
        })
        .count();
    let (inbox, outbox) = match p.messages {
        Some(m) => (
            m.inbox(false).ok().map(|v| v.len()),
            m.outbox().ok().map(|v| v.len()),
        ),
        None => (None, None),
    };
    let alive = p.dataplane.health().alive;
    let last_errors = last_problems();
    let now_ms = crate::clock::unix_ms_now();
    let recent = last_errors
        .iter()
        .any(|e| now_ms.saturating_sub(e.at_ms) < RECENT_MS);
    HealthData {
        status: if alive && !recent { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: p.started.elapsed().as_secs(),
        mode: p.mode,
        peers: peers.len(),
        peers_up,
        registries: p.registries,
        inbox,
        outbox,
        data_plane_alive: alive,
        last_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_and_errors_are_kept_but_not_info_and_the_ring_is_bounded() {
        let sub = tracing_subscriber::registry().with(ProblemLayer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!("fine");
            for i in 0..(KEPT + 3) {
                tracing::warn!(n = i, "registry unreachable");
            }
            tracing::error!("bad");
        });
        let kept = last_problems();
        assert_eq!(kept.len(), KEPT);
        let last = kept.last().unwrap();
        assert_eq!(
            (last.level.as_str(), last.message.as_str()),
            ("ERROR", "bad")
        );
        assert!(kept.iter().all(|p| p.message != "fine"));
        assert!(
            kept[0].message.contains("registry unreachable n="),
            "{:?}",
            kept[0]
        );
    }
}
