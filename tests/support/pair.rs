//! Two daemons in userspace mode on loopback that trust each other as static peers (`node-a`
//! and `node-b`), and plain HTTP requests to a daemon's local API.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use super::home::Home;
use super::net::free_udp_port;

/// A `[socks5]` table: the proxy off.
pub const SOCKS_OFF: &str = "[socks5]\nenabled = false\n";
/// A `[socks5]` table: the proxy on a free loopback port (`info` tells which).
pub const SOCKS_ANY: &str = "[socks5]\nlisten = \"127.0.0.1:0\"\n";

/// Starts `node-a` and `node-b`, each with the other as a static peer and its SOCKS5 proxy
/// off; `extra` goes into each one's config after its first line (top-level keys, then any
/// sections: A's first, then B's). Returns both homes and their keys.
pub fn pair(prefix: &str, extra: [&str; 2]) -> (Home, Home, [String; 2]) {
    pair_with(prefix, extra, [SOCKS_OFF, SOCKS_OFF])
}

/// Starts `node-a` and `node-b`, each with the other as a static peer: in each one's config
/// `head` goes after the first line (top-level keys, then any sections) and `tail` after the
/// `[[peer]]` table (sections: `[socks5]`, `[[expose]]`, ...), A's first, then B's. Returns
/// both homes and their keys.
pub fn pair_with(prefix: &str, head: [&str; 2], tail: [&str; 2]) -> (Home, Home, [String; 2]) {
    let a = Home::new(prefix);
    let b = Home::new(prefix);
    let keys = [a.identity_key(), b.identity_key()];
    let (pa, pb) = (free_udp_port(), free_udp_port());
    for (h, me, other, name, port, head, tail) in [
        (&a, pa, &keys[1], "node-b", pb, head[0], tail[0]),
        (&b, pb, &keys[0], "node-a", pa, head[1], tail[1]),
    ] {
        std::fs::write(
            h.path().join("config.toml"),
            format!(
                "mode = \"userspace\"\n{head}\n[tunnel]\nlisten_port = {me}\n[[peer]]\n\
                 public_key = \"{other}\"\nhostname = \"{name}\"\nendpoint = \"127.0.0.1:{port}\"\n\
                 {tail}"
            ),
        )
        .unwrap();
    }
    a.ok(&["daemon", "start"]);
    b.ok(&["daemon", "start"]);
    (a, b, keys)
}

/// One API request (`Connection: close`) on `home`'s socket: the HTTP status and the JSON body.
pub fn api(home: &Home, method: &str, target: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = UnixStream::connect(home.path().join("pilot.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: pilot\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let json = serde_json::from_str(rest).unwrap_or_else(|e| panic!("not JSON ({e}): {rest}"));
    (status, json)
}
