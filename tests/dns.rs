//! The daemon's resolver for `NAME.pilot`, unprivileged: two userspace daemons and a registry
//! on loopback, each resolver on a loopback port (`[dns] loopback`). A peer's name resolves
//! once it is trusted and stops at once when it is untrusted; strangers' names are NXDOMAIN,
//! names outside `.pilot` are refused, garbage is dropped and counted.

mod support;

use std::net::{Ipv6Addr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use support::home::Home;
use support::net::free_udp_port;
use support::registry::Registry;

/// One query to `server`; the response code and the AAAA addresses.
fn ask(server: &str, name: &str, ty: RecordType) -> (ResponseCode, Vec<Ipv6Addr>) {
    let mut m = Message::new();
    m.set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(&m.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).expect("the resolver answers");
    let r = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(r.id(), 7);
    let ips = r
        .answers()
        .iter()
        .filter_map(|a| match a.data() {
            RData::AAAA(x) => Some(x.0),
            _ => None,
        })
        .collect();
    (r.response_code(), ips)
}

fn start(home: &Home, registry: &str, name: &str) -> String {
    let port = free_udp_port();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "mode = \"userspace\"\n[socks5]\nlisten = \"127.0.0.1:0\"\n[dns]\nloopback = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    home.start(&["--registry", registry, "--hostname", name]);
    format!("127.0.0.1:{port}")
}

fn ipv6(home: &Home) -> Ipv6Addr {
    home.ok(&["info"])["ipv6"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn trusted_names_resolve_strangers_do_not_and_untrust_removes_the_name_at_once() {
    let reg = Registry::loopback();
    let a = Home::new("pilot-dns");
    let b = Home::new("pilot-dns");
    let dns_a = start(&a, &reg.addr, "dns-node-a");
    let _dns_b = start(&b, &reg.addr, "dns-node-b");
    let (ip_a, ip_b) = (ipv6(&a), ipv6(&b));

    let info = a.ok(&["info"]);
    assert_eq!(info["dns"], dns_a.as_str(), "{info}");

    // Our own name, in both spellings; A is NOERROR with no record.
    assert_eq!(
        ask(&dns_a, "dns-node-a.pilot.", RecordType::AAAA),
        (ResponseCode::NoError, vec![ip_a])
    );
    let addr_label = a.ok(&["info"])["address"]
        .as_str()
        .unwrap()
        .replace('.', "-");
    assert_eq!(
        ask(&dns_a, &format!("{addr_label}.pilot."), RecordType::AAAA),
        (ResponseCode::NoError, vec![ip_a])
    );
    assert_eq!(
        ask(&dns_a, "dns-node-a.pilot.", RecordType::A),
        (ResponseCode::NoError, vec![])
    );
    // B is registered but not trusted: no enumeration.
    assert_eq!(
        ask(&dns_a, "dns-node-b.pilot.", RecordType::AAAA).0,
        ResponseCode::NXDomain
    );
    // Not an open resolver.
    assert_eq!(
        ask(&dns_a, "example.com.", RecordType::AAAA).0,
        ResponseCode::Refused
    );

    until(
        "B's name reaches the registry",
        Duration::from_secs(10),
        || a.json(&["handshake", "dns-node-b"]).0 == 0,
    );
    until("B approves", Duration::from_secs(10), || {
        b.json(&["approve", "dns-node-a"]).0 == 0
    });
    until("B's name resolves at A", Duration::from_secs(10), || {
        ask(&dns_a, "dns-node-b.pilot.", RecordType::AAAA) == (ResponseCode::NoError, vec![ip_b])
    });

    a.ok(&["untrust", "dns-node-b"]);
    let untrusted = Instant::now();
    until("B's name stops resolving", Duration::from_secs(5), || {
        ask(&dns_a, "dns-node-b.pilot.", RecordType::AAAA).0 == ResponseCode::NXDomain
    });
    // The daemon answers from the live peer table: no cache to wait out (caches hold an
    // answer at most the TTL, 5 s).
    assert!(untrusted.elapsed() < Duration::from_secs(2));

    // Garbage gets no answer and is counted.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"\xff\x00not dns", &dns_a).unwrap();
    until(
        "the malformed datagram is counted",
        Duration::from_secs(5),
        || a.ok(&["dns", "status"])["malformed"] == 1,
    );
    let st = a.ok(&["dns", "status"]);
    assert_eq!(st["listening"][0], dns_a.as_str(), "{st}");
    assert_eq!(st["ttl_secs"], 5, "{st}");
    assert_eq!(st["resolved"], "off", "{st}");
    assert!(st["nxdomain"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(st["refused"], 1, "{st}");
}

#[test]
fn dns_setup_in_userspace_mode_explains_that_there_is_no_overlay_resolver() {
    let reg = Registry::loopback();
    let a = Home::new("pilot-dns");
    start(&a, &reg.addr, "dns-setup-a");
    let (code, v) = a.json(&["dns", "setup"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"], "invalid_argument", "{v}");
    assert!(v["hint"].as_str().unwrap().contains("SOCKS5"), "{v}");
}
