//! The client side of a stream request (`connect`, `listen`): the HTTP Upgrade done by hand on
//! a blocking socket, reading the answer's head byte by byte so that not one byte of the stream
//! that follows it is consumed. The caller then holds the daemon's socket itself: what it
//! writes reaches the daemon even if the process exits right after.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::api::http::{STREAM_HEADER, STREAM_PROTOCOL};
use crate::api::types::{Envelope, Request, MAX_BODY};
use crate::error::{ErrorCode, PilotError};

fn lost(e: impl std::fmt::Display) -> PilotError {
    PilotError::new(
        ErrorCode::ConnectionFailed,
        format!("lost the connection to the daemon: {e}"),
        "see $PILOT_HOME/daemon.log",
    )
}

/// The request head of a stream request.
pub fn request_head(req: &Request) -> String {
    let route = req.route();
    format!(
        "{} {} HTTP/1.1\r\nHost: pilot\r\nConnection: Upgrade\r\nUpgrade: {STREAM_PROTOCOL}\r\nContent-Length: 0\r\n\r\n",
        route.method, route.target
    )
}

/// Reads a response head (up to and including the empty line), one byte at a time.
fn read_head(s: &mut UnixStream) -> Result<Vec<u8>, PilotError> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_BODY {
            return Err(PilotError::internal("the daemon's answer head is too long"));
        }
        match s.read(&mut byte) {
            Ok(0) => {
                return Err(lost("the daemon closed the connection without answering"));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(lost(e)),
        }
    }
    Ok(head)
}

/// A parsed answer head: status, the first-reply header, the body length.
struct Head {
    status: u16,
    first: Option<Vec<u8>>,
    length: usize,
}

fn parse_head(bytes: &[u8]) -> Result<Head, PilotError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(PilotError::internal(
                "unreadable answer head from the daemon",
            ))
        }
    }
    let find = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.to_vec())
    };
    let length = find("content-length")
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
        .unwrap_or(0);
    Ok(Head {
        status: resp.code.unwrap_or(0),
        first: find(STREAM_HEADER),
        length,
    })
}

fn envelope(status: u16, body: &[u8]) -> Result<serde_json::Value, PilotError> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        PilotError::internal(format!(
            "unreadable reply from the daemon (HTTP {status}): {e}"
        ))
    })?;
    env.into_result()
}

/// Sends the stream request `req` on `s` and waits for its answer (no time limit: `listen`
/// waits for a peer). On `101` returns the first reply's data and leaves `s` at the first byte
/// of the stream; otherwise returns the daemon's error.
pub fn open(s: &mut UnixStream, req: &Request) -> Result<serde_json::Value, PilotError> {
    s.write_all(request_head(req).as_bytes()).map_err(lost)?;
    let head = parse_head(&read_head(s)?)?;
    if head.status == 101 {
        let first = head.first.ok_or_else(|| {
            PilotError::internal("the daemon's 101 lacks the Pilot-Stream header")
        })?;
        return envelope(101, &first);
    }
    if head.length > MAX_BODY {
        return Err(PilotError::internal("the daemon's answer is too long"));
    }
    let mut body = vec![0u8; head.length];
    s.read_exact(&mut body).map_err(lost)?;
    envelope(head.status, &body)?;
    Err(PilotError::internal(format!(
        "the daemon answered a stream request with HTTP {}",
        head.status
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_101_leaves_the_stream_bytes_unread() {
        let (mut client, mut daemon) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let n = daemon.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            // The answer head and the first stream bytes in one write.
            daemon
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: pilot-stream\r\n\
                      pilot-stream: {\"status\":\"ok\",\"data\":{\"port\":7}}\r\n\r\nstream bytes",
                )
                .unwrap();
            req
        });
        let data = open(&mut client, &Request::Listen { port: 7 }).unwrap();
        assert_eq!(data["port"], 7);
        let mut rest = [0u8; 12];
        client.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"stream bytes");
        let req = t.join().unwrap();
        assert!(
            req.starts_with("POST /v1/listen?port=7 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("Upgrade: pilot-stream\r\n"), "{req}");
    }

    #[test]
    fn an_error_answer_is_the_daemons_error() {
        let (mut client, mut daemon) = UnixStream::pair().unwrap();
        let body = br#"{"status":"error","code":"unauthorized","message":"m","hint":"h"}"#;
        let mut answer = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        daemon.write_all(&answer).unwrap();
        let e = open(
            &mut client,
            &Request::Connect {
                peer: "p".into(),
                port: 1,
            },
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert_eq!(e.message, "m");
    }
}
