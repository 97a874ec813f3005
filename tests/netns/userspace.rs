//! Userspace mode with real daemons in namespaces: an agent run as an unprivileged user (no
//! capabilities, `mode = "auto"`) beside a TUN agent, reaching it through its SOCKS5 proxy and
//! serving it through `pilotctl expose`; and two userspace agents moving a 100 MB file and 50
//! concurrent connections through SOCKS5 and an exposed port.
//!
//! SOCKS5 reply codes for unknown names and refused ports are covered by
//! tests/userspace_daemons.rs (real daemons on loopback); here only the one it lacks: a real
//! daemon refuses an overlay address that is not in its peer table (reply 2).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pilot::identity::Identity;
use pilot::mapping::DEFAULT_NETWORK;
use sha2::{Digest, Sha256};

use crate::support::netns::{pilotctl, random_file, Host, Lab};
use crate::support::process::wait_until;

/// The unprivileged user the userspace agent runs as (`nobody`).
const NOBODY: u32 = 65534;
const PROXY: &str = "127.0.0.1:1080";

/// A copy of the release binary in a 0755 directory, so that `nobody` can run it (the build
/// tree may not be reachable for other users).
struct SharedBin {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn shared_bin() -> SharedBin {
    let dir = tempfile::Builder::new()
        .prefix("pilot-bin-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("pilotctl");
    std::fs::copy(pilotctl(), &path).expect("copy pilotctl");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    SharedBin { _dir: dir, path }
}

/// `program` run in `host`'s namespace as `nobody`, with no capabilities at all, and with
/// `host`'s PILOT_HOME.
fn as_nobody(host: &Host, program: &Path) -> Command {
    let mut c = host.cmd("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(program)
    .env("PILOT_HOME", host.home())
    .env("PILOT_SOCKET", host.home().join("pilot.sock"))
    .stdin(Stdio::null());
    c
}

/// Hands the host's state directory (and its key) to `nobody`, mode 0700.
fn give_home_to_nobody(host: &Host) {
    for entry in std::fs::read_dir(host.home()).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(host.home(), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(host.home(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A `[[peer]]` entry for `peer` with a hostname (so `NAME.pilot` resolves from the peer table).
fn peer_entry(peer: &Host, hostname: &str) -> String {
    format!(
        "[[peer]]\npublic_key = \"{}\"\nhostname = \"{hostname}\"\nendpoint = \"{}:51820\"\n",
        peer.key, peer.ip
    )
}

fn write_config(host: &Host, mode: &str, peers: &[String]) {
    let mut c = format!(
        "mode = \"{mode}\"\nlog_level = \"info\"\n[tunnel]\nlisten_port = 51820\nkeepalive_secs = 25\n"
    );
    for p in peers {
        c.push_str(p);
    }
    std::fs::write(host.home().join("config.toml"), c).expect("write config");
}

/// Starts `pilotctl daemon run` as `nobody` in the host's namespace and waits for its API.
fn start_daemon_as_nobody(host: &mut Host, bin: &Path) {
    let log = std::fs::File::create(host.home().join("daemon.out")).expect("log file");
    let child = as_nobody(host, bin)
        .args(["daemon", "run"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn daemon");
    host.adopt(child);
    let up = wait_until(Duration::from_secs(10), || {
        as_nobody(host, bin)
            .args(["info", "--json"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(up, "daemon did not come up:\n{}", host.daemon_log());
}

/// `pilotctl --json ARGS` as `nobody`; the envelope's data, or a panic with the error.
fn ok_as_nobody(host: &Host, bin: &Path, args: &[&str]) -> serde_json::Value {
    let out = as_nobody(host, bin)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pilotctl {args:?} as nobody failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["data"].clone()
}

/// curl in `host`'s namespace, through the local SOCKS5 proxy when `socks` is set; returns
/// (exit code, stdout, stderr).
fn curl(host: &Host, socks: bool, args: &[&str]) -> (i32, String, String) {
    let mut c = host.cmd("curl");
    c.args(["-sS", "--max-time", "20"]);
    if socks {
        c.args(["--socks5-hostname", PROXY]);
    }
    let out = c.args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn www(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, body) in files {
        std::fs::write(d.path().join(name), body).unwrap();
    }
    d
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn an_agent_without_privileges_reaches_a_tun_agent_by_name_and_serves_it_through_expose() {
    let bin = shared_bin();
    let mut lab = Lab::new();
    let mut agent = lab.host("ua", "198.51.100.1");
    let mut worker = lab.host("tw", "198.51.100.2");
    write_config(&worker, "tun", &[peer_entry(&agent, "agent-node")]);
    // `auto`: no CAP_NET_ADMIN, so the userspace stack runs.
    write_config(&agent, "auto", &[peer_entry(&worker, "worker-node")]);
    give_home_to_nobody(&agent);
    worker.start_daemon();
    start_daemon_as_nobody(&mut agent, &bin.path);

    let info = ok_as_nobody(&agent, &bin.path, &["info"]);
    assert_eq!(info["mode"], "userspace", "{info}");
    assert_eq!(info["socks5"], PROXY, "{info}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", info["pid"])).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "the daemon is not running as nobody:\n{status}"
    );
    assert!(
        status.contains("CapEff:\t0000000000000000"),
        "the daemon has capabilities:\n{status}"
    );

    // From the userspace agent, through its SOCKS5 proxy: by name (the first request also
    // brings the tunnel up) and by IPv6 literal.
    let site = www(&[("hello.txt", "hello from the worker\n")]);
    worker.serve_http(site.path(), 8080);
    let by_name = "http://worker-node.pilot:8080/hello.txt";
    let up = wait_until(Duration::from_secs(10), || {
        curl(&agent, true, &[by_name]).0 == 0
    });
    assert!(
        up,
        "no path:\nAGENT:\n{}\nWORKER:\n{}",
        agent.daemon_log(),
        worker.daemon_log()
    );
    // The userspace stack answers pings like a kernel would.
    assert!(worker.ping(agent.ipv6()), "no echo reply from the netstack");
    for url in [
        by_name.to_string(),
        format!("http://[{}]:8080/hello.txt", worker.ipv6()),
    ] {
        let (code, body, err) = curl(&agent, true, &[&url]);
        assert_eq!(code, 0, "curl {url}: {err}\n{}", agent.daemon_log());
        assert_eq!(body, "hello from the worker\n", "{url}");
    }

    // The userspace agent serves the TUN agent: `pilotctl expose`, run as the same user.
    let site = www(&[("hello.txt", "hello from the agent\n")]);
    agent.serve_http(site.path(), 9000);
    ok_as_nobody(
        &agent,
        &bin.path,
        &["expose", "8080", "--to", "127.0.0.1:9000"],
    );
    let url = format!("http://[{}]:8080/hello.txt", agent.ipv6());
    let (code, body, err) = curl(&worker, false, &[&url]);
    assert_eq!(code, 0, "curl {url}: {err}\n{}", agent.daemon_log());
    assert_eq!(body, "hello from the agent\n");

    // An overlay address outside the peer table: the proxy refuses it (reply 2).
    let stranger = DEFAULT_NETWORK.ipv6(Identity::generate().public_key().addr48());
    let url = format!("http://[{stranger}]:8080/");
    let (code, _, err) = curl(&agent, true, &[&url]);
    // curl: "(97) Can't complete SOCKS5 connection to ADDR. (2)"
    assert_eq!(code, 97, "curl {url}: {err}");
    assert!(err.trim_end().ends_with(". (2)"), "not reply 2: {err}");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn two_userspace_agents_move_100_mb_intact_and_serve_50_concurrent_connections() {
    let mut lab = Lab::new();
    let mut a = lab.host("ua", "198.51.100.1");
    let mut b = lab.host("ub", "198.51.100.2");
    // Root, but userspace forced.
    write_config(&a, "userspace", &[peer_entry(&b, "node-b")]);
    write_config(&b, "userspace", &[peer_entry(&a, "node-a")]);
    a.start_daemon();
    b.start_daemon();
    let (code, info) = a.json(&["info"]);
    assert_eq!(code, 0, "{info}");
    assert_eq!(info["data"]["mode"], "userspace");

    let site = www(&[("one", &"x".repeat(1 << 20))]);
    let blob = site.path().join("blob");
    let want = random_file(&blob, "100M");
    b.serve_http(site.path(), 9000);
    let (code, v) = b.json(&["expose", "8080", "--to", "127.0.0.1:9000"]);
    assert_eq!(code, 0, "{v}");

    // The first request also brings the tunnel up.
    let up = wait_until(Duration::from_secs(10), || {
        curl(
            &a,
            true,
            &["-o", "/dev/null", "http://node-b.pilot:8080/one"],
        )
        .0 == 0
    });
    assert!(
        up,
        "no path:\nA:\n{}\nB:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );

    let dl = tempfile::tempdir().unwrap();
    let got_path = dl.path().join("got");
    let (code, _, err) = curl(
        &a,
        true,
        &[
            "--max-time",
            "60",
            "-o",
            got_path.to_str().unwrap(),
            "http://node-b.pilot:8080/blob",
        ],
    );
    assert_eq!(code, 0, "curl: {err}\nA:\n{}", a.daemon_log());
    let got = Sha256::digest(std::fs::read(&got_path).unwrap());
    assert_eq!(got, want, "the file changed in transit");

    // 50 connections at once, each a 1 MiB download.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            a.cmd("curl")
                .args(["-sS", "--max-time", "30", "--socks5-hostname", PROXY])
                .args(["-o", "/dev/null", "-w", "%{http_code} %{size_download}"])
                .arg("http://node-b.pilot:8080/one")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failed = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || text != "200 1048576" {
            failed.push(format!(
                "#{i}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 50 failed: {failed:?}\nB:\n{}",
        failed.len(),
        b.daemon_log()
    );
}
