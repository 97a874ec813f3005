//! The local API as plain HTTP/1.1 over the Unix socket, driven by hand-written request bytes
//! against real daemons in userspace mode: envelopes and status codes, limits on size and time,
//! garbage, the OpenAPI document (served and committed), server-sent events (a message from a
//! static peer; a trust request through a loopback registry) and HTTP Upgrade streams.
//!
//! `UPDATE_OPENAPI=1 cargo test --test api_http` rewrites docs/api/openapi.json.

mod support;

use pilot::api::{ApiEvent, NodeEvent, StreamEvent};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::home::Home;
use support::net::free_udp_port;

/// A home whose daemon runs in userspace mode with no registry.
fn started() -> Home {
    let h = Home::new("pilot-http");
    h.start(&["--mode", "userspace"]);
    h
}

fn sock(home: &Home) -> PathBuf {
    home.path().join("pilot.sock")
}

fn connect(home: &Home) -> UnixStream {
    let s = UnixStream::connect(sock(home)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `raw` on a new connection and reads the whole answer (the daemon closes after
/// `Connection: close` or after garbage).
fn raw(home: &Home, raw: &[u8]) -> Response {
    let mut s = connect(home);
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Response::parse(&buf)
}

/// One request with `Connection: close` and an optional body.
fn request(home: &Home, method: &str, target: &str, body: Option<&str>) -> Response {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: pilot\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    raw(home, req.as_bytes())
}

/// An HTTP response: status, lower-cased headers, body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn parse(buf: &[u8]) -> Self {
        let text = String::from_utf8_lossy(buf);
        let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let head_len = head.len() + 4;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = buf.get(head_len..).unwrap_or_default().to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[test]
fn info_peers_and_errors_are_envelopes_with_matching_statuses() {
    let home = started();
    let r = request(&home, "GET", "/v1/info", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["data"]["mode"], "userspace");
    assert!(v["data"]["public_key"].as_str().unwrap().len() == 44, "{v}");
    assert_eq!(v["data"]["data_plane"]["alive"], true, "{v}");
    assert_eq!(
        v["data"]["data_plane"]["threads"].as_array().unwrap().len(),
        3
    );

    let v = request(&home, "GET", "/v1/peers", None).json();
    assert_eq!(v["status"], "ok");
    assert!(v["data"]["peers"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["data"]["counters"]["malformed"].is_u64(), "{v}");

    let r = request(&home, "GET", "/v1/launch-missiles", None);
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["code"], "not_found");
    assert!(!v["hint"].as_str().unwrap().is_empty(), "{v}");

    let r = request(&home, "PUT", "/v1/hostname", Some("{\"hostname\":"));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid_argument");
    let r = request(
        &home,
        "PUT",
        "/v1/hostname",
        Some("{\"hostname\":\"NOPE!\"}"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid_argument");
    let r = request(&home, "PUT", "/v1/hostname", Some("{\"name\":\"a\"}"));
    assert_eq!(r.status, 400, "unknown fields are refused");

    let r = request(&home, "POST", "/v1/info", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["status"], "error");

    let r = request(&home, "GET", "/v1/messages/inbox?clear=maybe", None);
    assert_eq!(r.status, 400);
    let r = request(&home, "DELETE", "/v1/expose/8080", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "not_found");
    let r = request(
        &home,
        "POST",
        "/v1/expose",
        Some("{\"port\":8080,\"to\":\"127.0.0.1:3000\"}"),
    );
    assert_eq!(r.status, 200);
    let r = request(
        &home,
        "POST",
        "/v1/expose",
        Some("{\"port\":8080,\"to\":\"127.0.0.1:3000\"}"),
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["code"], "already_exists");
    let r = request(&home, "GET", "/v1/find/Not_A_Name", None);
    assert_eq!(r.status, 400);

    // Keep-alive: two requests on one connection.
    let mut s = connect(&home);
    let req = b"GET /v1/info HTTP/1.1\r\nHost: pilot\r\n\r\n";
    s.write_all(req).unwrap();
    s.write_all(req).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count()
        < 2
    {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn curl_reads_info_over_the_socket() {
    let home = started();
    let sock = sock(&home);
    let out = match Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&sock)
        .arg("http://pilot/v1/info")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("curl is needed for this test (apt-get install curl): {e}"),
    };
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["data"]["state_dir"], home.path().display().to_string());
}

#[test]
fn oversized_bodies_are_refused() {
    let home = started();
    let big = format!("{{\"hostname\":\"{}\"}}", "a".repeat(70_000));
    let r = request(&home, "PUT", "/v1/hostname", Some(&big));
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "invalid_argument");
    // The same without a declared length (chunked) is cut off at the limit too.
    let mut req = String::from(
        "PUT /v1/hostname HTTP/1.1\r\nHost: pilot\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for chunk in big.as_bytes().chunks(8192) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    req.push_str("0\r\n\r\n");
    let r = raw(&home, req.as_bytes());
    assert_eq!(r.status, 413);
    // A huge request head gets an HTTP error, not the daemon's memory.
    let head = format!(
        "GET /v1/info HTTP/1.1\r\nHost: pilot\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let r = raw(&home, head.as_bytes());
    assert!(r.status == 431 || r.status == 400, "{}", r.status);
    assert_eq!(request(&home, "GET", "/v1/info", None).status, 200);
}

#[test]
fn garbage_and_slow_clients_do_not_stop_the_daemon() {
    let home = started();
    for garbage in [
        &b"hello\r\n\r\n"[..],
        b"\xff\xfe\x00\x01\r\n\r\n",
        b"GET\r\n\r\n",
        b"{\"cmd\":\"info\"}\n\r\n\r\n",
    ] {
        let r = raw(&home, garbage);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(garbage));
    }
    // A client that sends half a head and stalls is dropped after the header timeout.
    let mut slow = connect(&home);
    slow.write_all(b"GET /v1/info HTTP/1.1\r\nHost: pil")
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "slow client kept for {:?}",
        t.elapsed()
    );
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    // The daemon still answers.
    assert_eq!(request(&home, "GET", "/v1/info", None).status, 200);
    assert_eq!(home.ok(&["info"])["mode"], "userspace");
}

#[test]
fn the_served_openapi_document_is_the_committed_one() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api/openapi.json");
    let generated = pilot::api::openapi::document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/api/openapi.json differs from the API's types; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test --test api_http` and commit it"
    );
    let home = started();
    let r = request(&home, "GET", "/v1/openapi.json", None);
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), on_disk);
    let doc: Value = serde_json::from_str(&on_disk).unwrap();
    assert!(doc["paths"]["/v1/events"]["get"].is_object());
}

#[test]
fn the_event_stream_opens_at_once() {
    let home = started();
    let mut s = connect(&home);
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: pilot\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let mut first = String::new();
    while !first.contains("pilot events v1") {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "stream ended: {first}");
        first.push_str(&line);
    }
}

/// Sends a stream request with the upgrade headers; returns the connection and the answer's
/// head (or None when nothing came within `wait`).
fn upgrade(home: &Home, target: &str, wait: Duration) -> (UnixStream, Option<String>) {
    let mut s = connect(home);
    s.set_read_timeout(Some(wait)).unwrap();
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: pilot\r\nConnection: Upgrade\r\nUpgrade: pilot-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => {
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            (s, Some(head))
        }
        Err(_) => (s, None),
    }
}

#[test]
fn streams_need_an_upgrade_and_a_listener_that_leaves_frees_its_port() {
    let home = started();
    let r = request(&home, "POST", "/v1/listen?port=1000", None);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("Upgrade"),
        "{}",
        r.json()
    );
    // Connecting to a peer we do not trust is refused before any upgrade.
    let (_, head) = upgrade(
        &home,
        "/v1/connect?peer=0123.4567.89ab&port=1000",
        Duration::from_secs(5),
    );
    let head = head.unwrap();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("\"code\":\"unauthorized\""), "{head}");
    // A listener waits for a peer; when its client leaves, the port is free again.
    let (first, head) = upgrade(&home, "/v1/listen?port=1000", Duration::from_millis(500));
    assert!(head.is_none(), "listen answered before any peer: {head:?}");
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let (_second, head) = upgrade(&home, "/v1/listen?port=1000", Duration::from_millis(500));
    assert!(head.is_none(), "the port stayed taken: {head:?}");
}

#[test]
fn a_peers_message_arrives_as_an_event_and_an_upgrade_reaches_its_echo_port() {
    let a = Home::new("pilot-http");
    let b = Home::new("pilot-http");
    let keys = [a.identity_key(), b.identity_key()];
    let (pa, pb) = (free_udp_port(), free_udp_port());
    for (h, me, other, name, port) in [
        (&a, pa, &keys[1], "node-b", pb),
        (&b, pb, &keys[0], "node-a", pa),
    ] {
        std::fs::write(
            h.path().join("config.toml"),
            format!(
                "mode = \"userspace\"\n[tunnel]\nlisten_port = {me}\n[socks5]\nenabled = false\n\
                 [[peer]]\npublic_key = \"{other}\"\nhostname = \"{name}\"\nendpoint = \"127.0.0.1:{port}\"\n"
            ),
        )
        .unwrap();
    }
    a.ok(&["daemon", "start"]);
    b.ok(&["daemon", "start"]);
    let mut s = connect(&b);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: pilot\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut seen = String::new();
    while !seen.contains("pilot events v1") {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0);
        seen.push_str(&line);
    }
    // A second subscriber through the library's client.
    let (tx, typed) = std::sync::mpsc::channel();
    let events = pilot::api::Client::connect(&sock(&b))
        .unwrap()
        .events()
        .unwrap();
    std::thread::spawn(move || {
        for e in events {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    // `events()` returns once the daemon answered, so the subscription exists.
    let sent = a.ok(&[
        "send-message",
        "node-b",
        "--type",
        "text",
        "--data",
        "hello b",
    ]);
    assert_eq!(sent["status"], "delivered", "{sent}");
    let mut event = String::new();
    let data = loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "stream ended: {event}");
        if let Some(d) = line.strip_prefix("data: ") {
            if event.contains("message_received") {
                break d.trim().to_string();
            }
        }
        event.push_str(&line);
    };
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["type"], "message_received");
    let m = &v["message"];
    assert_eq!(m["type"], "text", "{v}");
    assert_eq!(m["data"], "hello b");
    assert_eq!(m["from"], keys[0].as_str());
    assert_eq!(m["from_hostname"], "node-a");
    // The typed stream carries the same events; node events (peer_up, path_changed) may come
    // first.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match typed.recv_timeout(left).unwrap().unwrap() {
            ApiEvent::Api(StreamEvent::MessageReceived(r)) => break r,
            ApiEvent::Node(_) => continue,
            other => panic!("expected message_received, got {other:?}"),
        }
    };
    assert_eq!(r.message.data, "hello b");
    assert_eq!(r.message.from, keys[0]);

    // A raw HTTP Upgrade from A to B's echo port: 101, the first reply in a header, then bytes.
    let (mut s, head) = upgrade(
        &a,
        "/v1/connect?peer=node-b&port=7",
        Duration::from_secs(10),
    );
    let head = head.expect("no answer to the upgrade");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let first = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("pilot-stream").then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no pilot-stream header: {head}"));
    let first: Value = serde_json::from_str(first).unwrap();
    assert_eq!(first["status"], "ok");
    assert_eq!(first["data"]["peer"], keys[1].as_str());
    assert_eq!(first["data"]["port"], 7);
    assert!(
        head.ends_with("\r\n\r\n"),
        "stream bytes before any were sent: {head:?}"
    );
    s.write_all(b"echo over upgrade").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"echo over upgrade");
}

#[test]
fn a_trust_request_arrives_as_an_event() {
    let reg = support::registry::Registry::loopback();
    let a = Home::new("pilot-http");
    let b = Home::new("pilot-http");
    for (h, name) in [(&a, "node-a"), (&b, "node-b")] {
        h.start(&[
            "--mode",
            "userspace",
            "--registry",
            &reg.addr,
            "--hostname",
            name,
        ]);
    }
    let a_key = a.ok(&["info"])["public_key"].as_str().unwrap().to_string();
    let events = pilot::api::Client::connect(&sock(&b))
        .unwrap()
        .events()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for e in events {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    // B's name may take a moment to reach the registry.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, v) = a.json(&["handshake", "node-b", "hello from a"]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "handshake failed: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = loop {
        match rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap() {
            ApiEvent::Node(e @ NodeEvent::TrustRequest { .. }) => break e,
            _ => continue,
        }
    };
    let NodeEvent::TrustRequest {
        from,
        hostname,
        justification,
    } = got
    else {
        unreachable!()
    };
    assert_eq!(from.to_string(), a_key);
    assert_eq!(hostname.map(|h| h.to_string()).as_deref(), Some("node-a"));
    assert_eq!(justification, "hello from a");
}
