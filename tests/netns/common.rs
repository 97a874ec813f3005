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
        let ns = self.switch_ns(name, ip);
        new_host(ns, ip)
    }

    /// A namespace named after `name` with `eth0` (address `ip`/24) on the switch.
    fn switch_ns(&mut self, name: &str, ip: &str) -> String {
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
        ns
    }

    /// Adds a NAT router: WAN `eth0` on the switch at `wan_ip` (198.51.100.x), a LAN bridge
    /// `lanbr` at `{lan}.1/24` (e.g. `lan` = "10.1.1"), forwarding with `nat`, and — as home
    /// routers do — nothing unsolicited let in from the WAN (see DESIGN.md: otherwise conntrack
    /// lets a peer's early punch packet take the port our own mapping needs).
    pub fn router(&mut self, name: &str, wan_ip: &str, lan: &str, nat: Nat) -> Router {
        let ns = self.switch_ns(name, wan_ip);
        for net in ["198.51.100.0/24", "203.0.113.0/24"] {
            let _ = run(Command::new("ip").args([
                "netns", "exec", &ns, "ip", "route", "add", net, "dev", "eth0",
            ]));
        }
        self.exec(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        self.exec(&ns, &["ip", "link", "add", "lanbr", "type", "bridge"]);
        for k in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            let _ = run(Command::new("ip").args([
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                &format!("{k}=0"),
            ]));
        }
        self.exec(
            &ns,
            &["ip", "addr", "add", &format!("{lan}.1/24"), "dev", "lanbr"],
        );
        self.exec(&ns, &["ip", "link", "set", "lanbr", "up"]);
        let rules = format!(
            "table ip pilotnat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"eth0\" {}
  }}
}}
table ip pilotfw {{
  chain forwarding {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname \"lanbr\" accept
  }}
  chain incoming {{
    type filter hook input priority filter; policy accept;
    iifname \"eth0\" ct state established,related accept
    iifname \"eth0\" drop
  }}
}}
",
            nat.expr()
        );
        let file = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&file, rules).expect("write nft rules");
        self.exec(&ns, &["nft", "-f", file.to_str().expect("utf-8")]);
        let _ = std::fs::remove_file(&file);
        Router {
            ns,
            wan_ip: wan_ip.to_string(),
            lan: lan.to_string(),
        }
    }

    /// Adds a host behind `router`: `eth0` at `{lan}.{octet}/24` on the router's LAN bridge,
    /// default route via the router.
    pub fn nat_host(&mut self, router: &Router, name: &str, octet: u8) -> Host {
        let ns = format!("pt{}{name}", self.tag);
        must(Command::new("ip").args(["netns", "add", &ns]));
        self.namespaces.push(ns.clone());
        let port = format!("v{name}");
        let port = &port[..port.len().min(15)];
        must(Command::new("ip").args([
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", port, "netns",
            &router.ns,
        ]));
        self.exec(&router.ns, &["ip", "link", "set", port, "master", "lanbr"]);
        self.exec(&router.ns, &["ip", "link", "set", port, "up"]);
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
        let ip = format!("{}.{octet}", router.lan);
        self.exec(
            &ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        self.exec(&ns, &["ip", "link", "set", "eth0", "up"]);
        self.exec(
            &ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{}.1", router.lan),
            ],
        );
        new_host(ns, &ip)
    }
}

/// How a NAT router maps the ports of outgoing flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `masquerade`: endpoint-independent, keeps the local port when free (punching works).
    PortPreserving,
    /// `masquerade fully-random`: a new port per destination (symmetric-like: relay needed).
    FullyRandom,
    /// `masquerade to :LO-HI`: endpoint-independent, ports moved into a range.
    Range(u16, u16),
}

impl Nat {
    fn expr(self) -> String {
        match self {
            Nat::PortPreserving => "masquerade".into(),
            Nat::FullyRandom => "masquerade fully-random".into(),
            Nat::Range(lo, hi) => format!("meta l4proto {{ tcp, udp }} masquerade to :{lo}-{hi}"),
        }
    }
}

/// A NAT router namespace (see [`Lab::router`]).
pub struct Router {
    /// Namespace name.
    pub ns: String,
    /// Its WAN address.
    pub wan_ip: String,
    /// Its LAN's first three octets.
    pub lan: String,
}

impl Router {
    /// Changes how the router maps ports and forgets every mapping (`conntrack -F`), as a
    /// router reboot or a carrier NAT rebalancing would.
    pub fn set_nat(&self, nat: Nat) {
        must(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns,
            "nft",
            "flush",
            "chain",
            "ip",
            "pilotnat",
            "postrouting",
        ]));
        let rule = format!("oifname \"eth0\" {}", nat.expr());
        must(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns,
            "nft",
            "add",
            "rule",
            "ip",
            "pilotnat",
            "postrouting",
            &rule,
        ]));
        let _ = run(Command::new("ip").args(["netns", "exec", &self.ns, "conntrack", "-F"]));
    }
}

/// A host record for namespace `ns` at outer address `ip`, with a fresh identity and state
/// directory.
fn new_host(ns: String, ip: &str) -> Host {
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
        bg_pid: None,
        helpers: Vec::new(),
    }
}

impl Lab {
    /// Adds a host on a second simulated public range (203.0.113.0/24 for registries) on the
    /// same bridge; every host gets on-link routes to both ranges.
    pub fn public_host(&mut self, name: &str, ip: &str) -> Host {
        let h = self.host(name, ip);
        for net in ["198.51.100.0/24", "203.0.113.0/24"] {
            let _ = h.run("ip", &["route", "add", net, "dev", "eth0"]);
        }
        h
    }
}

/// A registry process (`pilotctl registry run`) in a host's namespace.
pub struct RegistryProc {
    /// Where it listens.
    pub addr: String,
    state: tempfile::TempDir,
    child: Option<Child>,
    ns: String,
}

impl RegistryProc {
    /// Starts a registry in `host`'s namespace on `host.ip:port`.
    pub fn start(host: &Host, port: u16) -> RegistryProc {
        let mut r = RegistryProc {
            addr: format!("{}:{port}", host.ip),
            state: tempfile::Builder::new()
                .prefix("pilot-registry-")
                .tempdir()
                .expect("tempdir"),
            child: None,
            ns: host.ns.clone(),
        };
        r.restart();
        r
    }

    /// Starts it again (after [`RegistryProc::stop`]) with the same state directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "registry already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.path().join("registry.out"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(pilotctl())
            .args(["registry", "run", "--listen", &self.addr, "--state"])
            .arg(self.state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn registry");
        self.child = Some(child);
        let needle = format!("{} ", self.addr);
        let ns = self.ns.clone();
        let ok = wait_until(Duration::from_secs(10), || {
            let out = run(Command::new("ip").args(["netns", "exec", &ns, "ss", "-lun"]));
            String::from_utf8_lossy(&out.stdout).contains(&needle)
        });
        assert!(ok, "registry did not start:\n{}", self.log());
    }

    /// Stops it (SIGTERM by PID, SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("registry.out")).unwrap_or_default()
    }
}

impl Drop for RegistryProc {
    fn drop(&mut self) {
        self.stop();
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
    /// PID of a daemon started with `pilotctl daemon start` (detached; killed by PID on drop).
    bg_pid: Option<u32>,
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

    /// Runs `pilotctl daemon start ARGS` (the command users type) in the namespace with
    /// `env` set, and remembers the daemon's PID.
    pub fn daemon_start(&mut self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd(pilotctl().to_str().expect("utf-8 path"));
        c.args(["--json", "daemon", "start"])
            .args(args)
            .env("PILOT_HOME", self.home())
            .env("PILOT_SOCKET", self.home().join("pilot.sock"));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run(&mut c);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            self.bg_pid = v["data"]["pid"].as_u64().map(|p| p as u32);
        }
        out
    }

    /// Stops the daemon: SIGTERM by PID, then SIGKILL after 5 s.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            stop_child(&mut c);
        }
        if let Some(pid) = self.bg_pid.take() {
            let out = self.pilotctl(&["daemon", "stop", "--timeout", "5"]);
            if !out.status.success() {
                // SAFETY: kill(2) on the PID the daemon reported for itself.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }

    /// Runs `pilotctl --json ARGS`, asserts success (showing the daemon log if not), and returns
    /// the envelope's data.
    pub fn ok(&self, args: &[&str]) -> serde_json::Value {
        let (code, v) = self.json(args);
        assert_eq!(
            code,
            0,
            "pilotctl {args:?} failed: {v}\nlog:\n{}",
            self.bg_log()
        );
        v["data"].clone()
    }

    /// Runs `pilotctl --json ARGS`; returns the exit code and the envelope.
    pub fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.pilotctl(&all);
        let code = out.status.code().unwrap_or(-1);
        let text = if code == 0 { &out.stdout } else { &out.stderr };
        let v = serde_json::from_slice(text).unwrap_or_else(|_| {
            serde_json::json!({
                "unparsed_stdout": String::from_utf8_lossy(&out.stdout),
                "unparsed_stderr": String::from_utf8_lossy(&out.stderr),
            })
        });
        (code, v)
    }

    /// The background daemon's log (`pilotctl daemon start` writes it in PILOT_HOME).
    pub fn bg_log(&self) -> String {
        std::fs::read_to_string(self.home().join("daemon.log")).unwrap_or_default()
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

// --- Userspace-mode helpers (tests/netns/userspace.rs) ---

impl Host {
    /// Keeps `child` (a process started in this host's namespace, e.g. a daemon run as another
    /// user) until the host is dropped, then kills it by PID.
    pub fn adopt(&mut self, child: Child) {
        self.helpers.push(child);
    }
}
