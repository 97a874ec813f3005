//! Processes: running commands, bounded waits, and stopping children and daemons by PID
//! (never by name).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Polls `f` every 50 ms until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` with stdin closed and returns its output; panics if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and panics, with its stderr, unless it succeeds.
pub fn must(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `bin` run under `launcher` (a program and its arguments, e.g. `ip netns exec NS`), or
/// directly when `launcher` is empty.
pub fn launch(launcher: &[String], bin: &Path) -> Command {
    match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a PID this kit started (or that holds a daemon lock we created); no
    // memory is passed.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Stops a child: SIGTERM by PID, SIGKILL after `grace`. Returns its exit status if it
/// exited on SIGTERM, `None` if it had to be killed.
pub fn terminate(c: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = c.try_wait() {
        return Some(status);
    }
    signal(c.id(), libc::SIGTERM);
    let mut status = None;
    wait_until(grace, || {
        status = c.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = c.kill();
        let _ = c.wait();
    }
    status
}

/// A child that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        terminate(&mut self.0, STOP_GRACE);
    }
}

/// The PID of the daemon holding the `flock` on `lock` (a state directory's `daemon.lock`),
/// or `None` when nobody holds it. A held lock proves the process is alive, so the PID in the
/// file is safe to signal.
pub fn lock_holder(lock: &Path) -> Option<u32> {
    let f = File::open(lock).ok()?;
    // SAFETY: flock on a descriptor we own; closing it (drop) releases our lock if we got it.
    let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if free {
        return None;
    }
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}
