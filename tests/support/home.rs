//! A node's state directory for tests: a temporary PILOT_HOME, the real `pilotctl` run
//! against it (with `--json` parsing), and its daemon started in the background (`daemon
//! start`) or the foreground (`daemon run`). Dropping a `Home` stops its daemon: `daemon stop`,
//! then SIGKILL by PID to whatever still holds the state directory's lock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::process::{
    launch, lock_holder, run, running, signal, terminate, wait_until, STOP_GRACE,
};

/// The `pilotctl` cargo built for this test crate (debug, unless testing with `--release`).
pub const BIN: &str = env!("CARGO_BIN_EXE_pilotctl");

/// A temporary state directory and the daemon that may run on it.
pub struct Home {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Program and arguments that daemons and registries are started under (for example
    /// `ip netns exec NS`); empty to start them directly.
    launcher: Vec<String>,
    /// A daemon started with `daemon run` by [`Home::start_daemon`].
    foreground: Option<Child>,
}

impl Home {
    /// A fresh home (directory name starting with `prefix`) using the crate's `pilotctl`.
    pub fn new(prefix: &str) -> Home {
        Home::with(prefix, Path::new(BIN), Vec::new())
    }

    /// A fresh home using `bin`, with daemons started under `launcher`.
    ///
    /// A home on this machine's own loopback (no launcher) starts with a config whose SOCKS5
    /// proxy takes any free port: tests run side by side, and a taken 127.0.0.1:1080 stops a
    /// daemon's start. A test that writes its own config.toml replaces it.
    pub fn with(prefix: &str, bin: &Path, launcher: Vec<String>) -> Home {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        if launcher.is_empty() {
            std::fs::write(
                dir.path().join("config.toml"),
                "[socks5]\nlisten = \"127.0.0.1:0\"\n",
            )
            .expect("write config");
        }
        Home {
            dir,
            bin: bin.to_path_buf(),
            launcher,
            foreground: None,
        }
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary this home runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `pilotctl` with this home's environment (PILOT_HOME; no PILOT_SOCKET or PILOT_REGISTRY
    /// from the caller), not yet given arguments: for tests that pipe stdin or spawn.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        self.env(&mut c);
        c
    }

    /// Like [`Home::command`], but under the launcher (inside a namespace for lab hosts).
    pub fn launched(&self) -> Command {
        let mut c = launch(&self.launcher, &self.bin);
        self.env(&mut c);
        c
    }

    fn env(&self, c: &mut Command) {
        c.env("PILOT_HOME", self.path())
            .env_remove("PILOT_SOCKET")
            .env_remove("PILOT_REGISTRY");
    }

    /// Runs `pilotctl ARGS` and returns its output.
    pub fn pilotctl(&self, args: &[&str]) -> Output {
        run(self.command().args(args))
    }

    /// Runs `pilotctl --json ARGS`; returns the exit code and the envelope (stdout on success,
    /// stderr otherwise). Panics, showing both, when that is not JSON.
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        envelope(&all, &self.pilotctl(&all))
    }

    /// Runs `pilotctl --json ARGS`, asserts success (showing the daemon's logs if not), and
    /// returns the envelope's data.
    pub fn ok(&self, args: &[&str]) -> Value {
        let (code, v) = self.json(args);
        assert_eq!(code, 0, "pilotctl {args:?} failed: {v}\n{}", self.logs());
        v["data"].clone()
    }

    /// Makes this home's identity (a short userspace-mode start and stop) and returns its
    /// public key, so two homes can name each other in their configs before they run.
    pub fn identity_key(&self) -> String {
        // Without the SOCKS5 proxy: homes made in parallel would race for its default port.
        let cfg = self.path().join("identity-only.toml");
        std::fs::write(&cfg, "[socks5]\nenabled = false\n").unwrap();
        let cfg = cfg.to_str().unwrap();
        self.ok(&["daemon", "start", "--mode", "userspace", "--config", cfg]);
        let key = self.ok(&["info"])["public_key"]
            .as_str()
            .unwrap()
            .to_string();
        self.ok(&["daemon", "stop", "--timeout", "3"]);
        key
    }

    /// Runs `pilotctl --json daemon start ARGS` under the launcher with `env` added, and
    /// returns its output.
    pub fn daemon_start(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.launched();
        c.args(["--json", "daemon", "start"]).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// `pilotctl daemon start ARGS`, asserted to succeed; the whole envelope.
    pub fn start(&self, args: &[&str]) -> Value {
        self.start_env(args, &[])
    }

    /// `pilotctl daemon start ARGS` with `env` added, asserted to succeed; the whole envelope.
    pub fn start_env(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all = vec!["--json", "daemon", "start"];
        all.extend_from_slice(args);
        let (code, v) = envelope(&all, &self.daemon_start(args, env));
        assert_eq!(
            code,
            0,
            "daemon start {args:?} failed: {v}\n{}",
            self.logs()
        );
        v
    }

    /// Starts `pilotctl daemon run` under the launcher (stderr to `daemon.out`) and waits until
    /// its API answers.
    pub fn start_daemon(&mut self) {
        assert!(self.foreground.is_none(), "daemon already running");
        let log = std::fs::File::create(self.path().join("daemon.out")).expect("log file");
        let child = self
            .launched()
            .args(["daemon", "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.foreground = Some(child);
        let up = wait_until(Duration::from_secs(10), || {
            self.pilotctl(&["info", "--json"]).status.success()
        });
        assert!(up, "daemon did not come up:\n{}", self.daemon_log());
    }

    /// Stops the daemon however it was started: SIGTERM by PID to a `daemon run` child, then
    /// `daemon stop`, then SIGKILL by PID to whatever still holds the lock.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.foreground.take() {
            terminate(&mut c, STOP_GRACE);
        }
        let lock = self.path().join("daemon.lock");
        let Some(pid) = lock_holder(&lock) else {
            return;
        };
        let _ = self.pilotctl(&["daemon", "stop", "--timeout", "5"]);
        // The daemon lets go of its lock a moment before its process is gone: wait for both.
        let gone = || !running(pid) && lock_holder(&lock).is_none();
        if !wait_until(STOP_GRACE, gone) {
            signal(pid, libc::SIGKILL);
            wait_until(STOP_GRACE, gone);
        }
    }

    /// Kills the daemon with SIGKILL (by the PID holding the state directory's lock, or of the
    /// `daemon run` child), as a crash or an OOM kill would, and waits until it is gone. No
    /// clean shutdown runs: files are left as the process left them.
    pub fn kill_daemon(&mut self) {
        let lock = self.path().join("daemon.lock");
        let pid = lock_holder(&lock);
        if let Some(pid) = pid {
            signal(pid, libc::SIGKILL);
        }
        if let Some(mut c) = self.foreground.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = pid {
            // A killed multi-threaded process shows as a zombie once its main thread is gone,
            // while its other threads may still hold the open files (and so the lock): wait
            // for both, or the next `daemon start` finds the lock held.
            wait_until(STOP_GRACE, || !running(pid) && lock_holder(&lock).is_none());
        }
    }

    /// The log of a daemon started with `daemon start` (`daemon.log` in PILOT_HOME).
    pub fn bg_log(&self) -> String {
        std::fs::read_to_string(self.path().join("daemon.log")).unwrap_or_default()
    }

    /// The stderr of a daemon started with [`Home::start_daemon`].
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path().join("daemon.out")).unwrap_or_default()
    }

    /// Both logs, labelled, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "daemon.log:\n{}\ndaemon.out:\n{}",
            self.bg_log(),
            self.daemon_log()
        )
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

/// The exit code and JSON envelope of a `pilotctl --json` run; panics when it is not JSON.
pub fn envelope(args: &[&str], out: &Output) -> (i32, Value) {
    let code = out.status.code().unwrap_or(-1);
    let text = if code == 0 { &out.stdout } else { &out.stderr };
    let v = serde_json::from_slice(text).unwrap_or_else(|e| {
        panic!(
            "pilotctl {args:?}: not JSON ({e}): stdout={} stderr={}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}
