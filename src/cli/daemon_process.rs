//! The daemon process: `daemon run` (foreground), `daemon start` (detached, waits until the
//! API answers), `daemon stop` (SIGTERM, then SIGKILL) and `daemon status`.

use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::args::DaemonArgs;
use super::output::{ask, decode, paths, Output};
use super::render;
use crate::api::{Client, Envelope, InfoData, Request};
use crate::daemon::{self, DaemonOptions};
use crate::error::{ErrorCode, PilotError};
use crate::mapping::Hostname;
use crate::state::lock::DaemonLock;
use crate::state::paths::StatePaths;

/// How long `daemon start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `daemon run` and `registry run`'s data once they stop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stopped {
    /// Always true.
    pub stopped: bool,
}

/// `daemon stop`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StopData {
    stopped: bool,
    pid: u32,
    /// Whether SIGKILL was needed.
    forced: bool,
}

/// `daemon status`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StatusData {
    running: bool,
    pid: u32,
    socket: String,
    info: InfoData,
}

/// `daemon run`: the daemon in this process until it stops.
pub fn run(args: &DaemonArgs) -> Result<Output, PilotError> {
    daemon::run(daemon_options(args)?)?;
    Output::local(&Stopped { stopped: true }, "")
}

/// `daemon start`: launches `pilotctl daemon run` detached, logging to `$PILOT_HOME/daemon.log`,
/// and waits until it answers `info` (or reports why it exited).
pub fn start(args: &DaemonArgs) -> Result<Output, PilotError> {
    let opts = daemon_options(args)?;
    let paths = paths()?;
    paths.ensure_dir()?;
    if let Some(pid) = DaemonLock::holder(&paths.lock()) {
        return Err(PilotError::new(
            ErrorCode::AlreadyExists,
            format!("a daemon is already running for {} (pid {pid})", paths.dir.display()),
            "use it, stop it with `pilotctl daemon stop`, or set PILOT_HOME to another directory for a second node",
        ));
    }
    let log_path = paths.log();
    let log = open_log(&log_path)?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let child = spawn(&opts, &paths, log)?;
    wait_ready(child, &paths, &log_path, log_start)
}

/// Opens the log for appending: created 0600, never through a symbolic link, ours only.
fn open_log(path: &Path) -> Result<std::fs::File, PilotError> {
    crate::state::files::open_private(path, crate::state::files::Access::Append)
        .map_err(|e| PilotError::internal(format!("cannot open {}: {e}", path.display())))
}

/// Starts `pilotctl --json daemon run …` in a session of its own, stdio to the log.
fn spawn(
    opts: &DaemonOptions,
    paths: &StatePaths,
    log: std::fs::File,
) -> Result<Child, PilotError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| PilotError::internal(format!("cannot find our own binary: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--json", "daemon", "run"]);
    if let Some(h) = &opts.hostname {
        cmd.args(["--hostname", h.as_str()]);
    }
    if let Some(c) = &opts.config {
        cmd.arg("--config").arg(c);
    }
    if let Some(m) = opts.mode {
        cmd.args(["--mode", &m.to_string()]);
    }
    for r in &opts.registries {
        cmd.args(["--registry", r]);
    }
    let out = log
        .try_clone()
        .map_err(|e| PilotError::internal(e.to_string()))?;
    cmd.env("PILOT_HOME", &paths.dir)
        .env("PILOT_SOCKET", &paths.socket)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(log);
    // SAFETY: setsid() is async-signal-safe; it detaches the daemon from our session and
    // terminal so that `$(pilotctl daemon start)` and pipes return at once.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| PilotError::internal(format!("cannot start the daemon: {e}")))
}

/// Polls the socket until the daemon answers `info`, it exits, or [`START_TIMEOUT`] passes.
fn wait_ready(
    mut child: Child,
    paths: &StatePaths,
    log_path: &Path,
    log_start: u64,
) -> Result<Output, PilotError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(startup_error(log_path, log_start).unwrap_or_else(|| {
                PilotError::internal(format!(
                    "the daemon exited at start ({status}); see {}",
                    log_path.display()
                ))
            }));
        }
        if let Some(raw) = Client::connect(&paths.socket)
            .ok()
            .and_then(|mut c| c.call(&Request::Info {}).ok())
        {
            let info: InfoData = decode("info", raw.clone())?;
            return Ok(Output {
                text: render::daemon_started(&info),
                data: raw,
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(PilotError::new(
                ErrorCode::Timeout,
                format!(
                    "the daemon did not become ready within {}s",
                    START_TIMEOUT.as_secs()
                ),
                format!("see {}", log_path.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The daemon's own error envelope from its log, if it wrote one before exiting.
fn startup_error(log: &Path, from: u64) -> Option<PilotError> {
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    s.lines().rev().find_map(|l| {
        serde_json::from_str::<Envelope>(l.trim())
            .ok()
            .and_then(|e| e.into_result().err())
    })
}

/// The pid of the daemon holding this state directory's lock, or `not_running`.
fn running_pid(paths: &StatePaths) -> Result<u32, PilotError> {
    DaemonLock::holder(&paths.lock()).ok_or_else(|| {
        PilotError::not_running(format!("no daemon is running for {}", paths.dir.display()))
    })
}

/// Waits up to `timeout` for the daemon to release its lock.
fn wait_stopped(paths: &StatePaths, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if DaemonLock::holder(&paths.lock()).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// `daemon stop`: SIGTERM, then SIGKILL after `timeout` seconds.
pub fn stop(timeout: u64) -> Result<Output, PilotError> {
    let paths = paths()?;
    let pid = running_pid(&paths)?;
    if pid == 0 {
        return Err(PilotError::internal(format!(
            "a daemon holds {} but its pid is unreadable",
            paths.lock().display()
        )));
    }
    // SAFETY: kill(2) with a pid read from the lock file held by that very process.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    if wait_stopped(&paths, Duration::from_secs(timeout)) {
        let data = StopData {
            stopped: true,
            pid,
            forced: false,
        };
        return Output::local(&data, format!("daemon stopped (pid {pid})"));
    }
    // SAFETY: as above; the lock is still held, so the pid is still that daemon.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    if wait_stopped(&paths, Duration::from_secs(5)) {
        let _ = std::fs::remove_file(&paths.socket);
        let data = StopData {
            stopped: true,
            pid,
            forced: true,
        };
        return Output::local(
            &data,
            format!("daemon did not stop within {timeout}s; killed (pid {pid})"),
        );
    }
    Err(PilotError::new(
        ErrorCode::Timeout,
        format!("daemon (pid {pid}) survived SIGKILL"),
        "check the process with `ps`; it may be stuck in the kernel",
    ))
}

/// `daemon status`: whether a daemon holds this state directory, and its address.
pub fn status() -> Result<Output, PilotError> {
    let paths = paths()?;
    let pid = running_pid(&paths)?;
    let info = ask::<InfoData>("info", &Request::Info {})?.typed;
    let text = render::daemon_status(pid, &info);
    let data = StatusData {
        running: true,
        pid,
        socket: paths.socket.display().to_string(),
        info,
    };
    Output::local(&data, text)
}

/// A hostname given on the command line, checked before it reaches the daemon.
pub fn parse_hostname(name: &str) -> Result<Hostname, PilotError> {
    Hostname::new(name).map_err(|e| {
        PilotError::invalid(
            e.to_string(),
            "use 1-63 lowercase letters, digits and hyphens, e.g. worker-node",
        )
    })
}

/// The daemon's options from the flags, `PILOT_REGISTRY` and an existing `--config` file.
fn daemon_options(args: &DaemonArgs) -> Result<DaemonOptions, PilotError> {
    let hostname = args.hostname.as_deref().map(parse_hostname).transpose()?;
    let mut registries = args.registries.clone();
    if registries.is_empty() {
        if let Ok(env) = std::env::var("PILOT_REGISTRY") {
            registries = env
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
    }
    if let Some(cfg) = &args.config {
        if !cfg.exists() {
            return Err(PilotError::new(
                ErrorCode::NotFound,
                format!("config file {} does not exist", cfg.display()),
                "give the path of an existing file (config/pilot.toml is a commented example)",
            ));
        }
    }
    Ok(DaemonOptions {
        hostname,
        config: args.config.as_ref().map(|p| absolute(p)),
        mode: args.mode,
        registries,
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
