//! Shared helpers for the namespace tests: a lab of network namespaces joined by a bridge on
//! 198.51.100.0/24, hosts that each run a real `pilotctl daemon run` with their own PILOT_HOME
//! and socket, process handling by PID, and a bounded wait.
//!
//! Everything lives in namespaces whose names carry this process's pid, and is torn down in
//! `Drop` (daemons and helper processes are killed by PID, namespaces deleted).

#![allow(dead_code)]

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use pilot::identity::{Identity, PublicKey};
use pilot::mapping::DEFAULT_NETWORK;

/// Whether the tests can run: root is needed for namespaces. Without root they are skipped
/// loudly, except under CI, where that is a failure.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("netns tests need root, and CI is set: run them as root");
    }
    eprintln!("\n*** SKIP: netns tests need root (network namespaces, TUN) ***\n");
    false
}

/// The release binary; built once if missing.
pub fn pilotctl() -> PathBuf {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/pilotctl");
    BUILD.call_once(|| {
        if !bin.exists() {
            let st = Command::new(env!("CARGO"))
                .args(["build", "--release", "--bin", "pilotctl"])
                .current_dir(root)
                .status()
                .expect("cargo build --release");
            assert!(st.success(), "cargo build --release failed");
        }
    });
    bin
}

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

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn must(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static LAB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A set of namespaces: one "switch" holding a bridge, and hosts with a veth into it.
pub struct Lab {
    tag: String,
    switch: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// A new, empty lab with names unique to this process and call.
    pub fn new() -> Lab {
        let n = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id() & 0xfffff);
        let switch = format!("pt{tag}sw");
        must(Command::new("ip").args(["netns", "add", &switch]));
        let lab = Lab {
            tag,
            switch: switch.clone(),
            namespaces: vec![switch.clone()],
        };
        lab.exec(&switch, &["ip", "link", "add", "br0", "type", "bridge"]);
        lab.exec(&switch, &["ip", "link", "set", "br0", "up"]);
        lab.exec(&switch, &["ip", "link", "set", "lo", "up"]);
        lab
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        must(Command::new("ip").args(["netns", "exec", ns]).args(args));
    }

    /// Adds a host namespace with `ip` (198.51.100.x/24) on interface `eth0`.
    pub fn host(&mut self, name: &str, ip: &str) -> Host {
        let ns = format!("pt{}{name}", self.tag);
        must(Command::new("ip").args(["netns", "add", &ns]));
        self.namespaces.push(ns.clone());
        let port = format!("p{}{name}", self.tag);
        let port = &port[..port.len().min(15)];
        must(Command::new("ip").args([
            "link",
            "add",
            "eth0",
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &self.switch,
        ]));
        self.exec(&self.switch, &["ip", "link", "set", port, "master", "br0"]);
        self.exec(&self.switch, &["ip", "link", "set", port, "up"]);
        self.exec(
            &ns,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        );
        self.exec(&ns, &["ip", "link", "set", "lo", "up"]);
        self.exec(
            &ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        self.exec(&ns, &["ip", "link", "set", "eth0", "up"]);
        let home = tempfile::Builder::new()
            .prefix("pilot-netns-")
            .tempdir()
            .expect("tempdir");
        let identity = Identity::generate();
        identity
            .save_new(&home.path().join("identity.key"))
            .expect("save key");
        Host {
            ns,
            ip: ip.to_string(),
            key: identity.public_key(),
            home,
            daemon: None,
            helpers: Vec::new(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A peer entry for a host's config.
pub struct PeerEntry {
    /// The peer's key.
    pub key: PublicKey,
    /// Where to reach it, if known.
    pub endpoint: Option<String>,
}

/// One host: a namespace, a state directory, maybe a daemon and helper processes.
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// Its outer IPv4 address.
    pub ip: String,
    /// Its identity.
    pub key: PublicKey,
    home: tempfile::TempDir,
    daemon: Option<Child>,
    helpers: Vec<Child>,
}

impl Host {
    /// Its overlay IPv6 address.
    pub fn ipv6(&self) -> Ipv6Addr {
        DEFAULT_NETWORK.ipv6(self.key.addr48())
    }

    /// Its state directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// This host as a peer entry for another host's config (endpoint on port 51820).
    pub fn as_peer(&self) -> PeerEntry {
        PeerEntry {
            key: self.key,
            endpoint: Some(format!("{}:51820", self.ip)),
        }
    }

    /// Writes the config: TUN mode, port 51820, the given keepalive and static peers.
    pub fn configure(&self, keepalive_secs: u16, peers: &[PeerEntry]) {
        let mut c = format!(
            "mode = \"tun\"\nlog_level = \"debug\"\n[tunnel]\nlisten_port = 51820\nkeepalive_secs = {keepalive_secs}\n"
        );
        for p in peers {
            c.push_str(&format!("[[peer]]\npublic_key = \"{}\"\n", p.key));
            if let Some(e) = &p.endpoint {
                c.push_str(&format!("endpoint = \"{e}\"\n"));
            }
        }
        std::fs::write(self.home().join("config.toml"), c).expect("write config");
    }

    /// A command run inside this host's namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Runs a command in the namespace and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        run(self.cmd(program).args(args))
    }

    /// Starts `pilotctl daemon run` in the namespace and waits until its API answers.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = std::fs::File::create(self.home().join("daemon.out")).expect("log file");
        let child = self
            .cmd(pilotctl().to_str().expect("utf-8 path"))
            .args(["daemon", "run"])
            .env("PILOT_HOME", self.home())
            .env("PILOT_SOCKET", self.home().join("pilot.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.daemon = Some(child);
        let ok = wait_until(Duration::from_secs(10), || {
            self.pilotctl(&["info", "--json"]).status.success()
        });
        assert!(ok, "daemon did not come up:\n{}", self.daemon_log());
    }

    /// Stops the daemon: SIGTERM by PID, then SIGKILL after 5 s.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            stop_child(&mut c);
        }
    }

    /// The daemon's stderr so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home().join("daemon.out")).unwrap_or_default()
    }

    /// Runs pilotctl against this host's daemon.
    pub fn pilotctl(&self, args: &[&str]) -> Output {
        run(Command::new(pilotctl())
            .args(args)
            .env("PILOT_HOME", self.home())
            .env("PILOT_SOCKET", self.home().join("pilot.sock")))
    }

    /// `pilotctl peers --json`'s data.
    pub fn peers_json(&self) -> serde_json::Value {
        let out = self.pilotctl(&["peers", "--json"]);
        assert!(
            out.status.success(),
            "peers failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["data"].clone()
    }

    /// One ping to `dst` (IPv6) with a 1 s deadline; true on a reply.
    pub fn ping(&self, dst: Ipv6Addr) -> bool {
        self.run(
            "ping",
            &["-6", "-n", "-q", "-c", "1", "-W", "1", &dst.to_string()],
        )
        .status
        .success()
    }

    /// Keeps pinging `dst` until a reply comes or `timeout` passes.
    pub fn ping_until(&self, dst: Ipv6Addr, timeout: Duration) -> bool {
        wait_until(timeout, || self.ping(dst))
    }

    /// Starts `python3 -m http.server port` serving `dir` and waits until it listens.
    pub fn serve_http(&mut self, dir: &Path, port: u16) {
        let child = self
            .cmd("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "::",
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn http.server");
        self.helpers.push(child);
        let needle = format!(":{port} ");
        let ok = wait_until(Duration::from_secs(10), || {
            let out = self.run("ss", &["-ltn"]);
            String::from_utf8_lossy(&out.stdout).contains(&needle)
        });
        assert!(ok, "http.server did not start");
    }
}

fn stop_child(c: &mut Child) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe {
        libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
    }
    let done = wait_until(Duration::from_secs(5), || {
        matches!(c.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        self.stop_daemon();
    }
}
