//! No data-plane thread dies quietly. Each worker runs inside [`supervised`]: a panic, or a
//! return before shutdown was asked for, is logged with the thread's name and reason, recorded
//! (so `info` shows the data plane is dead), and, by default, ends the process with
//! [`EXIT_DATA_PLANE_DIED`] so a service manager (systemd) restarts it. A node whose receive
//! thread is gone answers its local API but can never receive again: better to restart.
//!
//! A thread that is alive but stuck (a deadlock, a blocked write) is caught by its heartbeat
//! instead: each worker's loop beats the [`crate::health::Heartbeat`] of its slot once per
//! turn, and the daemon's systemd watchdog stops petting when one goes stale.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::health::Heartbeat;
use serde::{Deserialize, Serialize};

/// The exit status of a process whose data-plane thread died (`EX_SOFTWARE`).
pub const EXIT_DATA_PLANE_DIED: i32 = 70;

/// What happens when a data-plane thread dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnThreadDeath {
    /// Log, then end the process with [`EXIT_DATA_PLANE_DIED`] (the daemon's choice).
    #[default]
    Exit,
    /// Log and record it only ([`DataPlaneHealth`] shows it): for tests and embedders that
    /// watch the health themselves.
    Record,
}

/// Liveness of the data plane, as `pilotctl info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataPlaneHealth {
    /// True while every data-plane thread runs.
    pub alive: bool,
    /// Each thread, in start order.
    pub threads: Vec<ThreadHealth>,
}

/// One data-plane thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThreadHealth {
    /// Its name (`pilot-udp-rx`, `pilot-inner-rx`, `pilot-timers`).
    pub name: String,
    /// True while it runs.
    pub alive: bool,
    /// Why it died (its panic message, or that it returned), if it did.
    pub died: Option<String>,
}

/// The shared record of one supervised thread.
#[derive(Debug)]
pub(crate) struct ThreadSlot {
    name: String,
    /// Beaten by the thread's loop once per turn (see [`crate::health`]).
    heartbeat: Heartbeat,
    alive: AtomicBool,
    died: Mutex<Option<String>>,
}

impl ThreadSlot {
    pub(crate) fn new(name: &str) -> Arc<ThreadSlot> {
        Arc::new(ThreadSlot {
            name: name.to_string(),
            heartbeat: Heartbeat::new(),
            alive: AtomicBool::new(true),
            died: Mutex::new(None),
        })
    }

    /// The thread's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The heartbeat the thread's loop beats.
    pub(crate) fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    pub(crate) fn health(&self) -> ThreadHealth {
        ThreadHealth {
            name: self.name.clone(),
            alive: self.alive.load(Ordering::Acquire),
            died: self.died.lock().clone(),
        }
    }
}

/// The health of a set of threads: alive only if all are.
pub(crate) fn health(slots: &[Arc<ThreadSlot>]) -> DataPlaneHealth {
    let threads: Vec<ThreadHealth> = slots.iter().map(|s| s.health()).collect();
    DataPlaneHealth {
        alive: !threads.is_empty() && threads.iter().all(|t| t.alive),
        threads,
    }
}

/// Wraps a worker's body: runs `f`; if it panics, or returns while `stopping` is false, the
/// death is logged and recorded in `slot`, then `policy` applies. A return after `stopping`
/// was set is a normal shutdown.
pub(crate) fn supervised(
    slot: Arc<ThreadSlot>,
    stopping: Arc<dyn Fn() -> bool + Send + Sync>,
    policy: OnThreadDeath,
    f: impl FnOnce() + Send + 'static,
) -> impl FnOnce() + Send + 'static {
    move || {
        let result = catch_unwind(AssertUnwindSafe(f));
        let why = match result {
            Ok(()) if stopping() => {
                slot.alive.store(false, Ordering::Release);
                return;
            }
            Ok(()) => "returned before shutdown".to_string(),
            Err(payload) => format!("panicked: {}", panic_message(&*payload)),
        };
        *slot.died.lock() = Some(why.clone());
        slot.alive.store(false, Ordering::Release);
        tracing::error!(
            thread = %slot.name,
            reason = %why,
            "data-plane thread died: this node can no longer pass traffic"
        );
        if policy == OnThreadDeath::Exit {
            // Also on stderr, in case logging goes nowhere.
            eprintln!(
                "pilot: data-plane thread {} died ({why}); exiting with status {EXIT_DATA_PLANE_DIED}",
                slot.name
            );
            std::process::exit(EXIT_DATA_PLANE_DIED);
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        policy: OnThreadDeath,
        stopping: bool,
        f: impl FnOnce() + Send + 'static,
    ) -> Arc<ThreadSlot> {
        let slot = ThreadSlot::new("pilot-test");
        let body = supervised(Arc::clone(&slot), Arc::new(move || stopping), policy, f);
        std::thread::spawn(body)
            .join()
            .expect("the supervisor itself never panics");
        slot
    }

    #[test]
    fn a_panicking_thread_is_detected_with_its_reason() {
        let slot = run(OnThreadDeath::Record, false, || {
            panic!("The destination buffer is too small")
        });
        let h = health(&[slot]);
        assert!(!h.alive);
        assert_eq!(h.threads[0].name, "pilot-test");
        assert_eq!(
            h.threads[0].died.as_deref(),
            Some("panicked: The destination buffer is too small")
        );
    }

    #[test]
    fn a_thread_that_returns_before_shutdown_is_dead_but_one_that_stops_is_not_a_death() {
        let early = run(OnThreadDeath::Record, false, || {});
        assert_eq!(
            early.health().died.as_deref(),
            Some("returned before shutdown")
        );
        let stopped = run(OnThreadDeath::Record, true, || {});
        assert_eq!(stopped.health().died, None);
        assert!(!stopped.health().alive);
        let running = ThreadSlot::new("pilot-running");
        assert!(health(&[running]).alive);
    }

    /// Runs in a child process (see the next test): a panicking supervised thread with the
    /// default policy ends the process with `EXIT_DATA_PLANE_DIED`.
    #[test]
    #[ignore = "run by a_dead_thread_ends_the_process_with_a_nonzero_status in a child process"]
    fn child_whose_data_plane_thread_panics() {
        if std::env::var_os("PILOT_SUPERVISE_CHILD").is_none() {
            return;
        }
        let _ = run(OnThreadDeath::default(), false, || panic!("boom"));
        // Not reached: the process exits from the dying thread.
        std::thread::sleep(std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_dead_thread_ends_the_process_with_a_nonzero_status() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "wg::supervise::tests::child_whose_data_plane_thread_panics",
                "--include-ignored",
                "--nocapture",
            ])
            .env("PILOT_SUPERVISE_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_DATA_PLANE_DIED), "{stderr}");
        assert!(
            stderr.contains("data-plane thread pilot-test died (panicked: boom)"),
            "{stderr}"
        );
    }
}
