//! Two real daemons in userspace mode on loopback (no TUN, no root): static peers, WireGuard
//! over 127.0.0.1, B exposes overlay ports to local servers (one from its config file, one with
//! `pilotctl expose`), and a SOCKS5 client reaches them through A's proxy by hostname.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::home::Home;
use support::net::free_udp_port;
use support::pair::{pair_with, SOCKS_ANY, SOCKS_OFF};
use support::socks::{byte_server, pattern, socks_connect};

#[test]
fn a_socks_client_reaches_a_port_exposed_by_another_userspace_daemon() {
    let from_config = byte_server(3 << 20, 8);
    let from_cli = byte_server(1000, 8);
    let exposed = format!("{SOCKS_ANY}[[expose]]\nport = 8080\nto = \"127.0.0.1:{from_config}\"\n");
    let (a, b, keys) = pair_with("pilot-us", ["", ""], [SOCKS_ANY, &exposed]);
    b.ok(&["expose", "8081", "--to", &format!("127.0.0.1:{from_cli}")]);
    let listed = b.ok(&["expose", "--list"]);
    assert_eq!(listed["exposed"].as_array().unwrap().len(), 2, "{listed}");

    let info = a.ok(&["info"]);
    assert_eq!(info["mode"], "userspace");
    let proxy = info["socks5"].as_str().unwrap().to_string();

    let (code, mut s) = socks_connect(&proxy, "node-b.pilot", 8080);
    assert_eq!(code, 0);
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 3 << 20);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));

    let (code, mut s) = socks_connect(&proxy, "node-b.pilot", 8081);
    assert_eq!(code, 0);
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 1000);

    b.ok(&["expose", "--remove", "8081"]);
    assert_eq!(
        socks_connect(&proxy, "node-b.pilot", 8081).0,
        5,
        "removed port refuses"
    );
    assert_eq!(
        socks_connect(&proxy, "nobody.pilot", 8080).0,
        4,
        "unknown name"
    );
    let (code, v) = b.json(&["expose", "--remove", "8081"]);
    assert_eq!(code, 1);
    assert_eq!(v["code"], "not_found");

    // `pilotctl ping` is a control-level probe: it works without a TUN device.
    let ping = a.ok(&["ping", &keys[1], "--count", "2"]);
    assert_eq!(ping["path"], "direct", "{ping}");
    assert_eq!(ping["received"], 2, "{ping}");
    assert!(ping["avg_ms"].as_f64().is_some(), "{ping}");

    // Agent services run the same on the netstack: messages, streams and echo.
    let m = a.ok(&[
        "send-message",
        "node-b",
        "--type",
        "json",
        "--data",
        "{\"status\":\"operational\"}",
    ]);
    assert_eq!(m["status"], "delivered", "{m}");
    let inbox = b.ok(&["inbox"]);
    assert_eq!(
        inbox["messages"][0]["data"]["status"], "operational",
        "{inbox}"
    );
    assert_eq!(inbox["messages"][0]["from"], keys[0].as_str());

    let mut listener = b
        .command()
        .args(["listen", "1000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    listener.stdin.take().unwrap().write_all(b"pong\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for (port, input, want) in [(1000u16, "ping\n", "pong\n"), (7, "echo me\n", "echo me\n")] {
        let mut c = a
            .command()
            .args(["connect", "node-b", &port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "connect to port {port}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "port {port}");
    }
    let heard = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&heard.stdout), "ping\n");
}

/// A local HTTP server that answers every request with `hello`.
fn http_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(16) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
            });
        }
    });
    port
}

/// `curl --socks5-hostname` through `proxy` (with `user`, `USER:PASS`, if any): its exit
/// status and body.
fn curl(proxy: &str, user: Option<&str>, url: &str) -> (i32, String) {
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "--max-time", "20", "--socks5-hostname", proxy]);
    if let Some(u) = user {
        c.args(["--proxy-user", u]);
    }
    let out = c.arg(url).output().expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_password_protected_socks_proxy_admits_curl_with_the_credentials_file_only() {
    use std::os::unix::fs::PermissionsExt;
    let web = http_server();
    let auth = format!("{SOCKS_ANY}auth = \"password\"\n");
    let exposed = format!("{SOCKS_ANY}[[expose]]\nport = 8080\nto = \"127.0.0.1:{web}\"\n");
    let (a, b, _) = pair_with("pilot-us", ["", ""], [&auth, &exposed]);

    let info = a.ok(&["info"]);
    assert_eq!(info["socks5_auth"], "password", "{info}");
    let file = std::path::PathBuf::from(info["socks5_credentials"].as_str().unwrap());
    assert_eq!(file, a.path().join("socks5.credentials"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the credentials file is owner-only");
    let line = std::fs::read_to_string(&file).unwrap();
    let creds = line.trim_end();
    let password = creds.split_once(':').unwrap().1;
    assert!(
        !info.to_string().contains(password),
        "info never shows the password"
    );
    let human = String::from_utf8_lossy(&a.pilotctl(&["info"]).stdout).into_owned();
    assert!(human.contains("(auth: password)"), "{human}");
    assert!(human.contains(&file.display().to_string()), "{human}");
    assert!(!human.contains(password), "{human}");
    assert_eq!(b.ok(&["info"])["socks5_auth"], "none");

    let proxy = info["socks5"].as_str().unwrap().to_string();
    let url = "http://node-b.pilot:8080/";
    assert_eq!(curl(&proxy, Some(creds), url), (0, "hello".to_string()));
    let wrong = format!("pilot:{}x", password);
    assert_ne!(
        curl(&proxy, Some(&wrong), url).0,
        0,
        "a wrong password fails"
    );
    assert_ne!(curl(&proxy, None, url).0, 0, "no credentials fail");
    let mut s = TcpStream::connect(&proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0xff], "no-auth is not offered");

    // A restart reuses the same credentials.
    a.ok(&["daemon", "stop"]);
    a.ok(&["daemon", "start"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), line);
    let proxy = a.ok(&["info"])["socks5"].as_str().unwrap().to_string();
    assert_eq!(curl(&proxy, Some(creds), url), (0, "hello".to_string()));
}

/// `curl` over the daemon's API socket: the JSON envelope it answered.
fn api(home: &Home, method: &str, path: &str, body: &str) -> serde_json::Value {
    let sock = home.path().join("pilot.sock");
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket", sock.to_str().unwrap(), "-X", method])
        .args(["-H", "content-type: application/json", "--data", body])
        .arg(format!("http://pilot{path}"))
        .output()
        .expect("curl is installed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

#[test]
fn expose_refuses_link_local_and_metadata_targets_unless_the_flag_is_given() {
    let a = Home::new("pilot-us");
    std::fs::write(
        a.path().join("config.toml"),
        format!(
            "mode = \"userspace\"\n[tunnel]\nlisten_port = {}\n[socks5]\nenabled = false\n",
            free_udp_port()
        ),
    )
    .unwrap();
    a.ok(&["daemon", "start"]);

    // The CLI refuses it with the code and a hint that names the flag.
    let (code, v) = a.json(&["expose", "8082", "--to", "169.254.169.254:80"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "unauthorized", "{v}");
    assert!(v["message"].as_str().unwrap().contains("metadata"), "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("--allow-link-local"),
        "{v}"
    );
    // So does the API, whatever client asks.
    let v = api(
        &a,
        "POST",
        "/v1/expose",
        r#"{"port":8083,"to":"[fe80::1]:80"}"#,
    );
    assert_eq!(v["code"], "unauthorized", "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("allow_link_local"),
        "{v}"
    );
    assert!(a.ok(&["expose", "--list"])["exposed"]
        .as_array()
        .unwrap()
        .is_empty());

    // With the flag both are exposed.
    a.ok(&[
        "expose",
        "8082",
        "--to",
        "169.254.169.254:80",
        "--allow-link-local",
    ]);
    let v = api(
        &a,
        "POST",
        "/v1/expose",
        r#"{"port":8083,"to":"[fe80::1]:80","allow_link_local":true}"#,
    );
    assert_eq!(v["status"], "ok", "{v}");
    let listed = a.ok(&["expose", "--list"]);
    assert_eq!(listed["exposed"].as_array().unwrap().len(), 2, "{listed}");
}

/// A recipient whose inbox quota for us is reached refuses the message: `send-message` says
/// `refused` with the peer's reason at once (exit 0: the message is kept in the outbox and
/// retried, so sending it again would duplicate it).
#[test]
fn send_message_reports_a_quota_refusal_at_once_and_keeps_the_message() {
    let quota = format!("{SOCKS_OFF}[messages]\ninbox_max_messages_per_sender = 1\n");
    let (a, _b, keys) = pair_with("pilot-us", ["", ""], [SOCKS_OFF, &quota]);
    let send = |text: &str| a.json(&["send-message", &keys[1], "--type", "text", "--data", text]);
    let (code, first) = send("one");
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["data"]["status"], "delivered", "{first}");
    let (code, second) = send("two");
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["data"]["status"], "refused", "{second}");
    let why = second["data"]["refused"].as_str().unwrap();
    assert!(why.contains("inbox is full"), "{second}");
    let out = a.ok(&["outbox"]);
    assert_eq!(
        out["outbox"][0]["message"]["id"], second["data"]["id"],
        "{out}"
    );
}
