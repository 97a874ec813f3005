//! The namespace lab of tests/netns: network namespaces joined by a bridge on 198.51.100.0/24
//! (and 203.0.113.0/24 for registries), nftables NAT routers with LANs behind them, and hosts
//! that each run a real `pilotctl` daemon with their own PILOT_HOME.
//!
//! Everything lives in namespaces whose names carry this process's pid, and is torn down in
//! `Drop` (daemons and helper processes are killed by PID, namespaces deleted). Root only: the
//! tests that use it are `#[ignore]`d and `scripts/test.sh` runs them as root.

use std::net::Ipv6Addr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use pilot::identity::{Identity, PublicKey};
use pilot::mapping::DEFAULT_NETWORK;
use sha2::{Digest, Sha256};

use super::home::Home;
use super::process::{must, run, wait_until};
use super::registry::Registry;

/// Panics unless this process is root: namespace tests must fail loudly, never pass unrun.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, TUN): run scripts/test.sh as root"
    );
}

/// The release binary the lab runs; built once if missing.
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

/// Writes `size` (as `head -c` reads it, e.g. "100M") random bytes to `path` and returns their
/// SHA-256.
pub fn random_file(path: &Path, size: &str) -> sha2::digest::Output<Sha256> {
    let st = Command::new("head")
        .args(["-c", size, "/dev/urandom"])
        .stdout(std::fs::File::create(path).expect("create file"))
        .status()
        .expect("run head");
    assert!(st.success(), "head -c {size} /dev/urandom failed");
    Sha256::digest(std::fs::read(path).expect("read file"))
}

/// `mib` MiB of a fixed pattern with no short period, cheap to make (no file needed).
pub fn pattern(mib: u32) -> Vec<u8> {
    (0..mib << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// A file of [`pattern`] bytes a host serves over HTTP on its overlay address (see
/// [`Host::serve_blob`]), for transfers checked end to end.
pub struct Blob {
    /// The bytes served.
    pub data: Vec<u8>,
    /// `http://[OVERLAY]:PORT/blob`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Blob {
    /// Asserts that `got` is the served file: same length, same SHA-256.
    pub fn assert_same(&self, got: &[u8]) {
        assert_eq!(
            got.len(),
            self.data.len(),
            "the transfer lost or gained bytes"
        );
        assert_eq!(
            Sha256::digest(got),
            Sha256::digest(&self.data),
            "sha256 differs"
        );
    }
}

/// `ip netns exec NS`, as a launcher for [`Home`] and [`Registry`].
fn in_ns(ns: &str) -> Vec<String> {
    ["ip", "netns", "exec", ns].map(String::from).to_vec()
}

static LAB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A set of namespaces: one "switch" holding a bridge, and hosts with a veth into it.
pub struct Lab {
    tag: String,
    switch: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// A new, empty lab with names unique to this process and call. Panics unless root.
    pub fn new() -> Lab {
        assert_root();
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

    /// A command run inside the switch namespace (the one holding the bridge every host and
    /// router's WAN is plugged into), e.g. to load nftables `bridge` rules on the path.
    pub fn switch_cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.switch, program]);
        c
    }

    /// Adds a host namespace with `ip` (198.51.100.x/24) on interface `eth0`.
    pub fn host(&mut self, name: &str, ip: &str) -> Host {
        let ns = self.switch_ns(name, ip);
        Host::new(ns, ip)
    }

    /// Adds a host on a second simulated public range (203.0.113.0/24 for registries) on the
    /// same bridge; every host gets on-link routes to both ranges.
    pub fn public_host(&mut self, name: &str, ip: &str) -> Host {
        let h = self.host(name, ip);
        for net in ["198.51.100.0/24", "203.0.113.0/24"] {
            let _ = h.run("ip", &["route", "add", net, "dev", "eth0"]);
        }
        h
    }

    /// A namespace named after `name` with `eth0` (address `ip`/24) on the switch.
    fn switch_ns(&mut self, name: &str, ip: &str) -> String {
        let port = format!("p{}{name}", self.tag);
        let switch = self.switch.clone();
        self.wired_ns(name, ip, &port, &switch, "br0")
    }

    /// A new namespace named after `name` whose `eth0` (address `ip`/24) is a veth to `port`,
    /// a port of `bridge` in namespace `parent`.
    fn wired_ns(&mut self, name: &str, ip: &str, port: &str, parent: &str, bridge: &str) -> String {
        let ns = format!("pt{}{name}", self.tag);
        must(Command::new("ip").args(["netns", "add", &ns]));
        self.namespaces.push(ns.clone());
        let port = &port[..port.len().min(15)];
        must(Command::new("ip").args([
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", port, "netns",
            parent,
        ]));
        self.exec(parent, &["ip", "link", "set", port, "master", bridge]);
        self.exec(parent, &["ip", "link", "set", port, "up"]);
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
        let file = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&file, nat_rules(nat)).expect("write nft rules");
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
        let ip = format!("{}.{octet}", router.lan);
        let ns = self.wired_ns(name, &ip, &format!("v{name}"), &router.ns, "lanbr");
        let gateway = format!("{}.1", router.lan);
        self.exec(&ns, &["ip", "route", "add", "default", "via", &gateway]);
        Host::new(ns, &ip)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The nftables ruleset of a router: `nat` on the way out of `eth0`, forwarding only from the
/// LAN or for established flows, nothing unsolicited from the WAN.
fn nat_rules(nat: Nat) -> String {
    format!(
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
    )
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
        let nft = |args: &[&str]| {
            must(
                Command::new("ip")
                    .args(["netns", "exec", &self.ns, "nft"])
                    .args(args),
            )
        };
        nft(&["flush", "chain", "ip", "pilotnat", "postrouting"]);
        let rule = format!("oifname \"eth0\" {}", nat.expr());
        nft(&["add", "rule", "ip", "pilotnat", "postrouting", &rule]);
        let _ = run(Command::new("ip").args(["netns", "exec", &self.ns, "conntrack", "-F"]));
    }
}

impl Registry {
    /// Starts a registry (the lab's release binary) in `host`'s namespace on `host.ip:port`.
    pub fn start(host: &Host, port: u16) -> Registry {
        Registry::start_with(&pilotctl(), in_ns(&host.ns), &format!("{}:{port}", host.ip))
    }

    /// As [`Registry::start`], with more arguments for `registry run`.
    pub fn start_args(host: &Host, port: u16, extra: &[&str]) -> Registry {
        let listen = format!("{}:{port}", host.ip);
        Registry::start_with_args(&pilotctl(), in_ns(&host.ns), &listen, extra)
    }
}

/// A peer entry for a host's config.
pub struct PeerEntry {
    /// The peer's key.
    pub key: PublicKey,
    /// Where to reach it, if known.
    pub endpoint: Option<String>,
}

/// One host: a namespace, a [`Home`] whose daemons run in it (so the `Home` methods work on a
/// host), a fresh identity, and helper processes killed by PID on drop.
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// Its outer IPv4 address.
    pub ip: String,
    /// Its identity.
    pub key: PublicKey,
    home: Home,
    helpers: Vec<Child>,
}

impl Deref for Host {
    type Target = Home;
    fn deref(&self) -> &Home {
        &self.home
    }
}

impl DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Home {
        &mut self.home
    }
}

impl Host {
    /// A host record for namespace `ns` at outer address `ip`, with a fresh identity and
    /// state directory.
    fn new(ns: String, ip: &str) -> Host {
        let home = Home::with("pilot-netns-", &pilotctl(), in_ns(&ns));
        let identity = Identity::generate();
        identity
            .save_new(&home.path().join("identity.key"))
            .expect("save key");
        Host {
            ns,
            ip: ip.to_string(),
            key: identity.public_key(),
            home,
            helpers: Vec::new(),
        }
    }

    /// Its entry for `peer` in `pilotctl peers --json` (`None` until it lists it).
    pub fn peer_entry(&self, peer: &Host) -> Option<serde_json::Value> {
        let (code, v) = self.json(&["peers"]);
        if code != 0 {
            return None;
        }
        v["data"]["peers"]
            .as_array()?
            .iter()
            .find(|p| p["public_key"] == peer.key.to_string())
            .cloned()
    }

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

    /// `pilotctl peers --json`'s data.
    pub fn peers_json(&self) -> serde_json::Value {
        self.ok(&["peers"])
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

    /// Serves `mib` MiB of [`pattern`] at `http://[OVERLAY]:port/blob`.
    pub fn serve_blob(&mut self, mib: u32, port: u16) -> Blob {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = pattern(mib);
        std::fs::write(dir.path().join("blob"), &data).expect("write blob");
        self.serve_http(dir.path(), port);
        Blob {
            data,
            url: format!("http://[{}]:{port}/blob", self.ipv6()),
            _dir: dir,
        }
    }

    /// Fetches `blob` with curl from this host within `max_secs`, asserts that it arrived
    /// intact, and returns the seconds it took.
    pub fn fetch_intact(&self, blob: &Blob, max_secs: u32) -> f64 {
        let t = std::time::Instant::now();
        let out = self.run(
            "curl",
            &["-sS", "--max-time", &max_secs.to_string(), &blob.url],
        );
        assert!(
            out.status.success(),
            "curl {}: {}",
            blob.url,
            String::from_utf8_lossy(&out.stderr)
        );
        let secs = t.elapsed().as_secs_f64();
        blob.assert_same(&out.stdout);
        secs
    }

    /// Keeps `child` (a process started in this host's namespace, e.g. a daemon run as another
    /// user) until the host is dropped, then kills it by PID.
    pub fn adopt(&mut self, child: Child) {
        self.helpers.push(child);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        // The home's own drop stops its daemon.
    }
}
