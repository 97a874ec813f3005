//! A real registry (`pilotctl registry run`) with its own state directory, started directly
//! on loopback or under a launcher (inside a lab namespace), and stopped by PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use super::home::BIN;
use super::process::{launch, terminate, wait_until, STOP_GRACE};

/// A registry process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Registry {
    /// Where it listens, as `IP:PORT`.
    pub addr: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    launcher: Vec<String>,
    child: Option<Child>,
    /// More arguments for `registry run` (a cluster's `--store`, `--instance`, `--key-file`).
    extra: Vec<String>,
}

impl Registry {
    /// A registry on 127.0.0.1 with a port the kernel picks, using the crate's `pilotctl`.
    pub fn loopback() -> Registry {
        Registry::start_with(Path::new(BIN), Vec::new(), "127.0.0.1:0")
    }

    /// Starts `bin registry run --listen LISTEN` under `launcher` and waits until it logs the
    /// address it runs on.
    pub fn start_with(bin: &Path, launcher: Vec<String>, listen: &str) -> Registry {
        Registry::start_with_args(bin, launcher, listen, &[])
    }

    /// As [`Registry::start_with`], with more arguments for `registry run`.
    pub fn start_with_args(
        bin: &Path,
        launcher: Vec<String>,
        listen: &str,
        extra: &[&str],
    ) -> Registry {
        let mut r = Registry {
            addr: listen.to_string(),
            dir: tempfile::Builder::new()
                .prefix("pilot-registry-")
                .tempdir()
                .expect("tempdir"),
            bin: bin.to_path_buf(),
            launcher,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    /// Its state directory (`--state`; the registry creates it).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The listen address, parsed.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().expect("registry address")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.out")
    }

    /// Starts it (again, after [`Registry::stop`]) on the same address and state directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "registry already running");
        let seen = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let mut c = launch(&self.launcher, &self.bin);
        let child = c
            .args(["registry", "run", "--listen", &self.addr, "--state"])
            .arg(self.state())
            .args(&self.extra)
            .env("PILOT_HOME", self.dir.path())
            .env("PILOT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn registry");
        self.child = Some(child);
        // The log line "registry running listen=IP:PORT" tells the address (and the port,
        // when it listens on port 0).
        let mut addr = None;
        let up = wait_until(Duration::from_secs(20), || {
            addr = self.log()[seen..]
                .lines()
                .filter(|l| l.contains("registry running"))
                .find_map(|l| l.split("listen=").nth(1)?.split_whitespace().next())
                .map(String::from);
            addr.is_some()
        });
        assert!(up, "registry did not start:\n{}", self.log());
        self.addr = addr.unwrap_or_default();
    }

    /// Stops it: SIGTERM by PID, SIGKILL after a grace period. Returns its exit status if it
    /// exited on SIGTERM (`None` if it had to be killed or was not running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        terminate(&mut self.child.take()?, STOP_GRACE)
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
