//! Names and UDP with real daemons in namespaces (issue 13): in TUN mode an ordinary program
//! (`curl`, `getent`) resolves `worker-node.pilot` through the daemon's resolver, configured as
//! the namespace's only nameserver (`/etc/netns/NS/resolv.conf`, which `ip netns exec` mounts);
//! an untrusted name is not found, and an untrusted peer's name stops resolving within the TTL.
//! In userspace mode, an unprivileged agent's SOCKS5 UDP ASSOCIATE reaches a TUN peer's UDP
//! echo server: 10,000 requests with loss counted.

use std::time::{Duration, Instant};

use crate::support::netns::{Host, Lab};
use crate::support::process::wait_until;
use crate::support::registry::Registry;

/// `/etc/netns/NS/resolv.conf` naming the daemon's resolver; removed on drop.
struct NetnsResolvConf {
    dir: std::path::PathBuf,
}

impl NetnsResolvConf {
    fn new(ns: &str) -> Self {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        std::fs::write(
            dir.join("resolv.conf"),
            "nameserver fdc5:7a3e:91b4::53\noptions timeout:2 attempts:2\n",
        )
        .expect("write resolv.conf");
        NetnsResolvConf { dir }
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("resolv.conf"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The host's TUN config, without the systemd-resolved wiring (the lab shares /run with the
/// machine: a namespace's daemon must not touch the machine's resolved).
fn configure_tun(h: &Host) {
    h.configure(25, &[]);
    let path = h.home().join("config.toml");
    let mut c = std::fs::read_to_string(&path).unwrap();
    c.push_str("[dns]\nresolved = false\n");
    std::fs::write(path, c).unwrap();
}

/// `getent ahosts NAME` in `h`'s namespace: the addresses, or `None` when not found.
fn getent(h: &Host, name: &str) -> Option<String> {
    let out = h.run("getent", &["ahosts", name]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn curl_and_getent_resolve_trusted_names_through_the_daemon_and_untrust_removes_them() {
    let mut lab = Lab::new();
    let reg_host = lab.public_host("reg", "203.0.113.40");
    let mut orch = lab.public_host("orch", "198.51.100.41");
    let mut work = lab.public_host("work", "198.51.100.42");
    let mut stranger = lab.public_host("strg", "198.51.100.43");
    let registry = Registry::start(&reg_host, 7946);
    let env = [("PILOT_REGISTRY", registry.addr.as_str())];
    for (h, name) in [
        (&mut orch, "orchestrator-node"),
        (&mut work, "worker-node"),
        (&mut stranger, "stranger-node"),
    ] {
        configure_tun(h);
        h.start_env(&["--hostname", name], &env);
    }
    let _resolv = NetnsResolvConf::new(&orch.ns);
    assert!(wait_until(Duration::from_secs(10), || {
        orch.json(&["find", "worker-node"]).0 == 0 && orch.json(&["find", "stranger-node"]).0 == 0
    }));
    let info = orch.ok(&["info"]);
    assert_eq!(info["dns"], "fdc5:7a3e:91b4::53", "{info}");

    orch.ok(&["handshake", "worker-node"]);
    assert!(wait_until(Duration::from_secs(5), || {
        work.json(&["approve", "orchestrator-node"]).0 == 0
    }));
    assert!(orch.ping_until(work.ipv6(), Duration::from_secs(10)));
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "hello over pilot names\n").unwrap();
    work.serve_http(site.path(), 8080);

    let got = getent(&orch, "worker-node.pilot").expect("getent finds worker-node.pilot");
    assert!(got.contains(&work.ipv6().to_string()), "{got}");
    let out = orch.run(
        "curl",
        &["-sS", "--max-time", "10", "http://worker-node.pilot:8080/"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over pilot names\n",
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Registered at the registry but not trusted: not found (NXDOMAIN), no enumeration.
    assert_eq!(getent(&orch, "stranger-node.pilot"), None);
    let st = orch.ok(&["dns", "status"]);
    assert!(st["nxdomain"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["answered"].as_u64().unwrap() >= 2, "{st}");

    orch.ok(&["untrust", "worker-node"]);
    let untrusted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || getent(
            &orch,
            "worker-node.pilot"
        )
        .is_none()),
        "worker-node.pilot still resolves after untrust"
    );
    // The documented bound is the TTL (5 s) for caches; the daemon itself has no cache.
    assert!(untrusted.elapsed() < Duration::from_secs(5));
}

/// A UDP echo server on port `port` of every address of `h`'s namespace.
fn udp_echo(h: &mut Host, port: u16) {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
         s.bind(('::',{port}))\nwhile True:\n d,a=s.recvfrom(4096)\n s.sendto(d,a)\n"
    );
    let child = h
        .cmd("python3")
        .args(["-c", &code])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn udp echo");
    h.adopt(child);
    let needle = format!(":{port} ");
    assert!(wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&h.run("ss", &["-lun"]).stdout).contains(&needle)
    }));
}

/// A SOCKS5 UDP client (python, in the namespace) sending `n` requests to NAME:PORT through
/// the proxy, 32 in flight; prints the number lost.
const UDP_CLIENT: &str = r#"
import socket, struct, sys
proxy, name, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host, pport = proxy.rsplit(':', 1)
c = socket.create_connection((host, int(pport)))
c.sendall(b'\x05\x01\x00'); assert c.recv(2) == b'\x05\x00'
c.sendall(b'\x05\x03\x00\x01' + b'\x00' * 6)
r = c.recv(10); assert r[1] == 0, r
relay = (socket.inet_ntoa(r[4:8]), struct.unpack('>H', r[8:10])[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(0.5)
head = b'\x00\x00\x00\x03' + bytes([len(name)]) + name.encode() + struct.pack('>H', port)
for _ in range(40):
    u.sendto(head + b'warm', relay)
    try:
        u.recv(2048); break
    except socket.timeout:
        pass
seen = set()
for w in range(0, n, 32):
    for i in range(w, min(w + 32, n)):
        u.sendto(head + struct.pack('>I', i), relay)
    for _ in range(w, min(w + 32, n)):
        try:
            d = u.recv(2048)
        except socket.timeout:
            break
        if len(d) == 26:
            seen.add(struct.unpack('>I', d[22:26])[0])
print(n - len(seen))
"#;

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn an_unprivileged_agents_socks5_udp_reaches_a_tun_peers_udp_echo() {
    let mut lab = Lab::new();
    let mut tun = lab.host("tunu", "198.51.100.51");
    let mut us = lab.host("usru", "198.51.100.52");
    let entry = |peer: &Host, name: &str| {
        format!(
            "[[peer]]\npublic_key = \"{}\"\nhostname = \"{name}\"\nendpoint = \"{}:51820\"\n",
            peer.key, peer.ip
        )
    };
    let base = |mode: &str| {
        format!("mode = \"{mode}\"\n[tunnel]\nlisten_port = 51820\n[dns]\nresolved = false\n")
    };
    std::fs::write(
        tun.home().join("config.toml"),
        base("tun") + &entry(&us, "us-node"),
    )
    .unwrap();
    std::fs::write(
        us.home().join("config.toml"),
        base("userspace") + "[socks5]\nlisten = \"127.0.0.1:1080\"\n" + &entry(&tun, "tun-node"),
    )
    .unwrap();
    tun.start_daemon();
    us.start_daemon();
    udp_echo(&mut tun, 7007);
    let out = us.run(
        "python3",
        &[
            "-c",
            UDP_CLIENT,
            "127.0.0.1:1080",
            "tun-node.pilot",
            "7007",
            "10000",
        ],
    );
    let lost: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "client failed: {}{}\nUS:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                us.daemon_log()
            )
        });
    eprintln!("10000 UDP requests userspace -> TUN through SOCKS5: {lost} lost");
    assert!(lost <= 20, "lost {lost} of 10000");
}
