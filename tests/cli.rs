//! Integration tests of the real `pilotctl` binary in a temporary PILOT_HOME: daemon life
//! cycle, info, set-hostname, refusal of bad keys, bad configs and second daemons, and a local
//! API that survives garbage.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use support::home::Home;

fn low48(ipv6: &str) -> u64 {
    let ip: std::net::Ipv6Addr = ipv6.parse().unwrap();
    (u128::from(ip) & ((1u128 << 48) - 1)) as u64
}

fn addr48_value(text: &str) -> u64 {
    u64::from_str_radix(&text.replace('.', ""), 16).unwrap()
}

#[test]
fn start_info_set_hostname_stop() {
    let home = Home::new("pilot-cli");
    let started = home.start(&["--mode", "userspace", "--hostname", "orchestrator-node"]);
    assert_eq!(started["status"], "ok");
    assert_eq!(started["data"]["hostname"], "orchestrator-node");

    let (code, info) = home.json(&["info"]);
    assert_eq!(code, 0);
    let d = &info["data"];
    for field in ["address", "ipv6", "hostname", "public_key", "mode"] {
        assert!(d.get(field).is_some(), "info lacks {field}: {d}");
    }
    assert_eq!(d["mode"], "userspace");
    let address = d["address"].as_str().unwrap();
    let ipv6 = d["ipv6"].as_str().unwrap();
    assert_eq!(low48(ipv6), addr48_value(address), "{ipv6} vs {address}");
    assert!(ipv6.starts_with("fdc5:7a3e:91b4:"), "{ipv6}");

    let (code, v) = home.json(&["set-hostname", "worker-node"]);
    assert_eq!(code, 0, "{v}");
    let (_, info) = home.json(&["info"]);
    assert_eq!(info["data"]["hostname"], "worker-node");

    // The key was made 0600 on first start, and the socket is owner-only.
    let key_mode = std::fs::metadata(home.path().join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let sock_mode = std::fs::metadata(home.path().join("pilot.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(sock_mode & 0o077, 0);

    let (code, v) = home.json(&["daemon", "stop"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["data"]["forced"], false);
    let (code, v) = home.json(&["info"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "not_running");

    // A restart keeps the identity and the hostname.
    home.start(&["--mode", "userspace"]);
    let (_, again) = home.json(&["info"]);
    assert_eq!(again["data"]["address"], address);
    assert_eq!(again["data"]["hostname"], "worker-node");
}

#[test]
fn info_without_a_daemon_says_not_running_with_a_hint() {
    let home = Home::new("pilot-cli");
    let (code, v) = home.json(&["info"]);
    assert_eq!(code, 1);
    assert_eq!(v["status"], "error");
    assert_eq!(v["code"], "not_running");
    assert!(v["hint"].as_str().unwrap().contains("daemon start"));
    let out = home.pilotctl(&["info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
}

#[test]
fn key_file_readable_by_others_is_refused_at_start() {
    let home = Home::new("pilot-cli");
    home.start(&["--mode", "userspace"]);
    assert_eq!(home.json(&["daemon", "stop"]).0, 0);
    let key = home.path().join("identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, v) = home.json(&["daemon", "start", "--mode", "userspace"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "unauthorized");
    assert!(
        v["message"].as_str().unwrap().contains("identity.key"),
        "{v}"
    );
    assert!(v["hint"].as_str().unwrap().contains("chmod 600"), "{v}");
    // Nothing was left running.
    assert_eq!(home.json(&["info"]).1["code"], "not_running");
}

#[test]
fn a_symlinked_key_file_is_refused_at_start_and_its_target_untouched() {
    let home = Home::new("pilot-cli");
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("planted.key");
    let planted = format!("pilot-ed25519-v1 {}\n", "A".repeat(43) + "=");
    std::fs::write(&target, &planted).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, home.path().join("identity.key")).unwrap();
    let (code, v) = home.json(&["daemon", "start", "--mode", "userspace"]);
    assert_eq!(code, 1, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("identity.key") && msg.contains("symbolic link"),
        "{v}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), planted);
    assert_eq!(home.json(&["info"]).1["code"], "not_running");
}

#[test]
fn a_state_directory_others_can_write_is_refused_at_start() {
    let home = Home::new("pilot-cli");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, v) = home.json(&["daemon", "start", "--mode", "userspace"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "unauthorized", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("state directory refused"),
        "{v}"
    );
    assert!(v["hint"].as_str().unwrap().contains("chmod go-w"), "{v}");
    assert!(
        !home.path().join("identity.key").exists(),
        "a key was made in it"
    );
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_config_file_others_can_write_is_refused() {
    let home = Home::new("pilot-cli");
    let cfg = home.path().join("open.toml");
    std::fs::write(&cfg, "mode = \"userspace\"\n").unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    for args in [
        vec!["config", "check", cfg_s],
        vec!["daemon", "start", "--config", cfg_s],
    ] {
        let (code, v) = home.json(&args);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["code"], "unauthorized", "{args:?}: {v}");
        assert!(v["hint"].as_str().unwrap().contains("chmod go-w"), "{v}");
    }
}

#[test]
fn config_with_an_unknown_key_is_refused_naming_it() {
    let home = Home::new("pilot-cli");
    let cfg = home.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "mode = \"userspace\"\n[tun]\nmtu = 1400\nfrobnicate = true\n",
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let (code, v) = home.json(&["config", "check", cfg_s]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "invalid_argument");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("frobnicate") && msg.contains(":4"), "{msg}");

    let (code, v) = home.json(&["daemon", "start", "--config", cfg_s]);
    assert_eq!(code, 1, "{v}");
    assert!(v["message"].as_str().unwrap().contains("frobnicate"), "{v}");

    let good = home.path().join("good.toml");
    std::fs::write(&good, include_str!("../config/pilot.toml")).unwrap();
    let (code, v) = home.json(&["config", "check", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn second_daemon_on_the_same_state_directory_is_refused() {
    let home = Home::new("pilot-cli");
    let first = home.start(&["--mode", "userspace"]);
    let pid = first["data"]["pid"].as_u64().unwrap();
    let (code, v) = home.json(&["daemon", "start", "--mode", "userspace"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "already_exists");
    assert!(
        v["message"].as_str().unwrap().contains(&pid.to_string()),
        "{v}"
    );
    // `daemon run` directly is refused the same way, by the lock itself.
    let (code, v) = home.json(&["daemon", "run", "--mode", "userspace"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "already_exists");
    // The first daemon is unharmed.
    assert_eq!(home.json(&["info"]).1["data"]["pid"].as_u64(), Some(pid));
}

#[test]
fn garbage_on_the_api_socket_does_not_kill_the_daemon() {
    let home = Home::new("pilot-cli");
    home.start(&["--mode", "userspace"]);
    let sock: PathBuf = home.path().join("pilot.sock");
    // Each garbage request gets an HTTP error status on its own connection.
    for (garbage, status) in [
        (&b"hello\r\n\r\n"[..], "400"),
        (b"\xff\xfe\x00\r\n\r\n", "400"),
        (b"GET /v1/launch-missiles HTTP/1.1\r\nHost: pilot\r\n\r\n", "404"),
        (
            b"PUT /v1/hostname HTTP/1.1\r\nHost: pilot\r\nContent-Length: 20\r\n\r\n{\"hostname\":\"NOPE!\"}",
            "400",
        ),
    ] {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(garbage).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {line}",
            String::from_utf8_lossy(garbage)
        );
    }
    // After an error answer, the same keep-alive connection still serves requests.
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut answer = |req: &[u8]| -> (String, serde_json::Value) {
        w.write_all(req).unwrap();
        let (mut status, mut length) = (String::new(), 0usize);
        r.read_line(&mut status).unwrap();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(&mut r, &mut body).unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    };
    let (status, v) = answer(
        b"PUT /v1/hostname HTTP/1.1\r\nHost: pilot\r\nContent-Length: 20\r\n\r\n{\"hostname\":\"NOPE!\"}",
    );
    assert!(status.starts_with("HTTP/1.1 400 "), "{status}");
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["code"], "invalid_argument", "{v}");
    let (status, v) = answer(b"GET /v1/launch HTTP/1.1\r\nHost: pilot\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404 "), "{status}");
    assert_eq!(v["code"], "not_found", "{v}");
    let (status, v) = answer(b"GET /v1/info HTTP/1.1\r\nHost: pilot\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    assert_eq!(v["status"], "ok", "{v}");
    // An endless line is cut off without harm.
    let mut flood = UnixStream::connect(&sock).unwrap();
    let _ = flood.write_all(&vec![b'x'; 200_000]);
    drop(flood);
    // A connection that closes half-way is fine too.
    let mut half = UnixStream::connect(&sock).unwrap();
    half.write_all(b"GET /v1/in").unwrap();
    drop(half);
    let (code, v) = home.json(&["info"]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn usage_errors_exit_2_with_an_envelope() {
    let home = Home::new("pilot-cli");
    let (code, v) = home.json(&["frobnicate"]);
    assert_eq!(code, 2);
    assert_eq!(v["code"], "invalid_argument");
    let (code, v) = home.json(&["daemon", "start", "--mode", "kernel"]);
    assert_eq!(code, 2, "{v}");
    let out = home.pilotctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn bad_hostname_is_refused_before_reaching_the_daemon() {
    let home = Home::new("pilot-cli");
    let (code, v) = home.json(&["daemon", "start", "--hostname", "Not_Valid"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "invalid_argument");
    assert_eq!(home.json(&["info"]).1["code"], "not_running");
}

#[test]
fn daemon_start_detaches_from_the_callers_stdio() {
    // `output()` waits for EOF on stdout/stderr: it returns only if the daemon did not keep the
    // pipes open.
    let home = Home::new("pilot-cli");
    let t = std::time::Instant::now();
    let out = home.pilotctl(&["daemon", "start", "--mode", "userspace"]);
    assert!(out.status.success());
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fdc5:7a3e:91b4:"));
}

#[test]
fn dropping_a_home_stops_its_daemon() {
    // The test kit's promise: no daemon outlives the test that started it.
    let home = Home::new("pilot-cli");
    let started = home.start(&["--mode", "userspace"]);
    let pid = started["data"]["pid"].as_u64().unwrap() as u32;
    let lock = home.path().join("daemon.lock");
    assert_eq!(support::process::lock_holder(&lock), Some(pid));
    assert!(support::process::running(pid));
    let dir = home.path().to_path_buf();
    drop(home);
    assert!(
        !support::process::running(pid),
        "daemon {pid} outlived its home"
    );
    assert!(!dir.exists());
}

/// `info` lists each registry with its key and where the key comes from; `registry
/// forget-key` forgets a learned key (the file too) and the node learns it again, while a
/// pinned key or an unconfigured registry is refused.
#[test]
fn info_shows_registry_key_pinning_and_forget_key_forgets_a_learned_key() {
    let reg = support::registry::Registry::loopback();
    let home = Home::new("pilot-cli");
    home.start(&["--mode", "userspace", "--registry", &reg.addr]);
    let learned = |h: &Home| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info = h.ok(&["info"]);
            let r = info["registries"][0].clone();
            if r["source"] != "unknown" || std::time::Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let r = learned(&home);
    assert_eq!(r["registry"], reg.addr.as_str(), "{r}");
    assert_eq!(r["source"], "learned", "{r}");
    let key = r["key"].as_str().unwrap().to_string();
    let keys_file = home.path().join("registry_keys.json");
    assert!(std::fs::read_to_string(&keys_file).unwrap().contains(&key));
    let human = home.pilotctl(&["info"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains(&format!("{}  key {key} (learned", reg.addr)),
        "{human}"
    );

    let (code, v) = home.json(&["registry", "forget-key", &reg.addr]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["data"]["source"], "unknown", "{v}");
    assert!(v["data"]["key"].is_null(), "{v}");
    assert!(!std::fs::read_to_string(&keys_file).unwrap().contains(&key));
    // It registers again and learns the (same) key anew.
    let r = learned(&home);
    assert_eq!(r["source"], "learned", "{r}");
    assert_eq!(r["key"], key.as_str(), "{r}");

    let (code, v) = home.json(&["registry", "forget-key", "127.0.0.1:9"]);
    assert_ne!(code, 0);
    assert_eq!(v["code"], "not_found", "{v}");

    let pinned = Home::new("pilot-cli");
    let spec = format!("{}#{key}", reg.addr);
    pinned.start(&["--mode", "userspace", "--registry", &spec]);
    let r = &pinned.ok(&["info"])["registries"][0];
    assert_eq!(r["source"], "pinned", "{r}");
    assert_eq!(r["key"], key.as_str(), "{r}");
    let (code, v) = pinned.json(&["registry", "forget-key", &reg.addr]);
    assert_ne!(code, 0);
    assert_eq!(v["code"], "invalid_argument", "{v}");
}
