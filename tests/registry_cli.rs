//! Integration tests of `pilotctl registry run`, the real binary: it serves a client core over
//! UDP loopback, stops cleanly on SIGTERM, and refuses a missing listen address.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pilot::clock::unix_ms_now;
use pilot::identity::Identity;
use pilot::node::registry_client::{Client, ClientConfig, ClientEvent};

const BIN: &str = env!("CARGO_BIN_EXE_pilotctl");

/// Kills the registry if a test fails before stopping it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn registry_run_serves_clients_and_stops_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state");
    let mut child = Child(
        Command::new(BIN)
            .args(["registry", "run", "--listen", "127.0.0.1:0", "--state"])
            .arg(&state)
            .env("PILOT_HOME", home.path())
            .env("PILOT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The log line "registry running listen=127.0.0.1:PORT" tells the port.
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: SocketAddr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the registry logs that it runs");
        if let Some(rest) = line.split("listen=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    assert!(state.join("registry.redb").exists());
    let key_mode = std::fs::metadata(state.join("registry.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let id = Arc::new(Identity::from_seed([7; 32]));
    let mut client = Client::new(
        id,
        ClientConfig::new(vec![addr]),
        Instant::now(),
        unix_ms_now(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut registered = false;
    while !registered {
        assert!(Instant::now() < deadline, "no registration");
        while let Some((to, bytes)) = client.poll_transmit() {
            assert!(to.ip().is_loopback());
            socket.send_to(&bytes, to).unwrap();
        }
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            client.handle_datagram(Instant::now(), from, &buf[..n]);
        }
        if client.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            client.handle_timeout(Instant::now());
        }
        while let Some(e) = client.poll_event() {
            registered |= matches!(e, ClientEvent::Registered { .. });
        }
    }

    // SAFETY: kill(2) on the child we spawned and still own.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the registry did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn registry_run_without_a_listen_address_is_refused_with_a_hint() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--json", "registry", "run"])
        .env("PILOT_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["code"], "invalid_argument");
    assert!(v["hint"].as_str().unwrap().contains("--listen"));
}
