//! Integration tests of `pilotctl registry run`, the real binary: it serves a client core over
//! UDP loopback, stops cleanly on SIGTERM, and refuses a missing listen address.

mod support;

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pilot::clock::unix_ms_now;
use pilot::identity::Identity;
use pilot::node::registry_client::{Client, ClientConfig, ClientEvent};

use support::home::BIN;
use support::registry::Registry;

#[test]
fn registry_run_serves_clients_and_stops_on_sigterm() {
    // The registry logs "registry running listen=127.0.0.1:PORT"; the kit reads the port.
    let mut registry = Registry::loopback();
    let state = registry.state();
    let addr = registry.socket_addr();
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

    let status = registry
        .stop()
        .expect("the registry did not stop on SIGTERM");
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
