//! SOCKS5 (RFC 1928) as the proxy parses what a local client sends: the greeting, the RFC 1929
//! username/password request (re-encoded it is the bytes it took), then the request, each from the bytes read so far. A parsed message never claims more bytes than it
//! had, every prefix of it is `Incomplete`, and the request re-encoded is the bytes it took.
//! Every parsed target is classified against the default overlay network.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use pilot::mapping::DEFAULT_NETWORK;
use pilot::userspace::socks5::{
    classify, encode_auth_status, encode_reply, parse_auth, parse_greeting, parse_request, Command,
    Parsed, Reply, Request, Target,
};

fn encode(req: &Request) -> Vec<u8> {
    let cmd = match req.command {
        Command::Connect => 1,
        Command::Bind => 2,
        Command::UdpAssociate => 3,
        Command::Other(c) => c,
    };
    let mut v = vec![5, cmd, 0];
    match &req.target {
        Target::Ip(SocketAddr::V4(a)) => {
            v.push(1);
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.port().to_be_bytes());
        }
        Target::Ip(SocketAddr::V6(a)) => {
            v.push(4);
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.port().to_be_bytes());
        }
        Target::Domain(name, port) => {
            v.push(3);
            v.push(name.len() as u8);
            v.extend_from_slice(name.as_bytes());
            v.extend_from_slice(&port.to_be_bytes());
        }
    }
    v
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Done { value, len }) = parse_greeting(data) {
        assert!(len <= data.len());
        assert_eq!(value.methods, data[2..len]);
        let _ = value.offers_no_auth();
        for cut in 0..len {
            assert_eq!(parse_greeting(&data[..cut]), Ok(Parsed::Incomplete));
        }
    }
    if let Ok(Parsed::Done { value, len }) = parse_auth(data) {
        assert!(len <= data.len());
        let mut again = vec![1, value.username.len() as u8];
        again.extend_from_slice(&value.username);
        again.push(value.password.len() as u8);
        again.extend_from_slice(&value.password);
        assert_eq!(again, data[..len]);
        for cut in 0..len {
            assert_eq!(parse_auth(&data[..cut]), Ok(Parsed::Incomplete));
        }
        assert_eq!(encode_auth_status(true)[0], 1);
    }
    match parse_request(data) {
        Ok(Parsed::Done { value, len }) => {
            assert!(len <= data.len());
            assert_eq!(encode(&value), data[..len], "{value:?}");
            for cut in 0..len {
                assert_eq!(parse_request(&data[..cut]), Ok(Parsed::Incomplete));
            }
            let _ = encode_reply(Reply::Succeeded, None);
            if let Ok(pilot::userspace::socks5::Destination::Addr(a)) =
                classify(&value.target, &DEFAULT_NETWORK)
            {
                assert!(DEFAULT_NETWORK.addr48_of(*a.ip()).is_some());
                let r = encode_reply(Reply::Succeeded, Some(SocketAddr::V6(a)));
                assert_eq!(parse_reply_len(&r), r.len());
            }
        }
        Ok(Parsed::Incomplete) => {}
        Err(e) => {
            let _ = e.reply();
        }
    }
});

/// Length of a reply as a client reads it (atyp 4: 22 bytes).
fn parse_reply_len(r: &[u8]) -> usize {
    match r.get(3) {
        Some(1) => 10,
        Some(4) => 22,
        _ => 0,
    }
}
