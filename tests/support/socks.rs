//! Local byte servers and SOCKS5 CONNECT by name, for the tests that reach an exposed port
//! through a userspace daemon's proxy.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Byte `i` of what [`byte_server`] sends.
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(131) >> 3) as u8
}

/// A local server that sends `len` pattern bytes to each of its first `clients` clients, then
/// closes each; its port.
pub fn byte_server(len: usize, clients: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(clients) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..len).map(pattern).collect();
                let _ = s.write_all(&data);
            });
        }
    });
    port
}

/// SOCKS5 CONNECT (no authentication) to `host:port` by name through `proxy`: the reply code,
/// and the stream (ready for data when the code is 0).
pub fn socks_connect(proxy: &str, host: &str, port: u16) -> (u8, TcpStream) {
    let mut target = vec![3, host.len() as u8];
    target.extend_from_slice(host.as_bytes());
    socks_request(proxy, &target, port)
}

/// SOCKS5 CONNECT (no authentication) to `[ip]:port` through `proxy`; panics unless the proxy
/// connected.
pub fn socks_connect_ip(proxy: &str, ip: std::net::Ipv6Addr, port: u16) -> TcpStream {
    let mut target = vec![4];
    target.extend_from_slice(&ip.octets());
    let (code, s) = socks_request(proxy, &target, port);
    assert_eq!(code, 0, "SOCKS5 CONNECT failed");
    s
}

/// A CONNECT to `target` (address type and address, as the request carries them) and `port`.
fn socks_request(proxy: &str, target: &[u8], port: u16) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, 1, 0];
    req.extend_from_slice(target);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let mut bound = vec![0u8; if head[3] == 4 { 18 } else { 6 }];
    s.read_exact(&mut bound).unwrap();
    (head[1], s)
}
