//! The WebSocket wrapping of the TLS transport (v1, issue 14): the HTTP/1.1 upgrade (RFC 6455
//! §4) a node sends after the TLS handshake, and the registry's strict, bounded check of it.
//! See `docs/PROTOCOL.md`, "WebSocket wrapping".
//!
//! ```text
//! GET /pilot/relay/v1 HTTP/1.1            HTTP/1.1 101 Switching Protocols
//! Host: pilot-registry                    Upgrade: websocket
//! Upgrade: websocket                      Connection: Upgrade
//! Connection: Upgrade                     Sec-WebSocket-Accept: base64(SHA-1(key | GUID))
//! Sec-WebSocket-Key: base64(16 bytes)     Sec-WebSocket-Protocol: pilot-relay.v1
//! Sec-WebSocket-Version: 13
//! Sec-WebSocket-Protocol: pilot-relay.v1
//! ```
//!
//! After the upgrade each binary WebSocket message carries one or more whole stream frames
//! ([`super::stream::message_frames`]). Everything here is sans-IO: the transport reads the
//! header block (at most [`MAX_HEAD`] bytes) and hands it over.

use base64::Engine as _;

/// The only path the registry upgrades.
pub const PATH: &str = "/pilot/relay/v1";
/// The WebSocket subprotocol of the transport; a future version gets a new name.
pub const SUBPROTOCOL: &str = "pilot-relay.v1";
/// The ALPN name a WebSocket client offers: what HTTP-aware middleboxes expect.
pub const ALPN_HTTP: &[u8] = b"http/1.1";
/// The longest header block accepted, either way.
pub const MAX_HEAD: usize = 8 * 1024;
/// The largest WebSocket message (and frame) accepted; a larger one closes the connection.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// RFC 6455 §1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Most header lines parsed.
const MAX_HEADERS: usize = 32;

/// Why an upgrade was refused (by the registry, or by the node reading the answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// Not HTTP/1.1, or a header is malformed.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    /// The header block is longer than [`MAX_HEAD`].
    #[error("the HTTP header block is longer than {MAX_HEAD} bytes")]
    TooLong,
    /// Another method than `GET`.
    #[error("method {0} is not allowed")]
    Method(String),
    /// Another path than [`PATH`].
    #[error("no such path: {0}")]
    Path(String),
    /// A plain HTTP request, or one missing a WebSocket header.
    #[error("not a WebSocket upgrade: {0}")]
    NotUpgrade(&'static str),
    /// The client does not offer [`SUBPROTOCOL`], or the server did not choose it.
    #[error("the WebSocket subprotocol {SUBPROTOCOL} was not agreed")]
    Subprotocol,
    /// The server answered with another status than 101.
    #[error("the server refused the upgrade: {code} {reason}")]
    Refused {
        /// The status code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The server's `Sec-WebSocket-Accept` does not match our key, or it named an extension
    /// we did not offer.
    #[error("the server's upgrade answer is invalid: {0}")]
    BadAnswer(&'static str),
}

impl UpgradeError {
    /// The status the registry answers a refused request with.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            UpgradeError::Method(_) => (405, "Method Not Allowed"),
            UpgradeError::Path(_) => (404, "Not Found"),
            UpgradeError::TooLong => (431, "Request Header Fields Too Large"),
            UpgradeError::NotUpgrade(_) => (426, "Upgrade Required"),
            _ => (400, "Bad Request"),
        }
    }
}

/// A fresh `Sec-WebSocket-Key` from 16 random bytes.
pub fn new_key(random: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(random)
}

/// The `Sec-WebSocket-Accept` that answers `key`.
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// The node's upgrade request, naming `host` and carrying `key`.
pub fn request(host: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pilot\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    )
    .into_bytes()
}

/// The registry's answer accepting an upgrade with `key`.
pub fn accept_response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
}

/// The registry's answer refusing a request (the connection is closed after it).
pub fn error_response(e: &UpgradeError) -> Vec<u8> {
    let (code, reason) = e.status();
    let body = format!("{e}\n");
    let upgrade = if code == 426 {
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\n{upgrade}Content-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The values of every header named `name`, as one comma-separated list of trimmed tokens.
fn tokens<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    tokens(headers, name)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(token))
}

/// The single value of header `name`, if it is there exactly once.
fn single<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a str> {
    let mut it = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let v = it.next()?;
    if it.next().is_some() {
        return None;
    }
    std::str::from_utf8(v.value).ok().map(str::trim)
}

/// The length of a header block from httparse's verdict on `buffered` bytes: `Some(n)` when
/// complete, `None` when more is needed, an error when malformed or longer than [`MAX_HEAD`].
fn head_len(
    parsed: httparse::Result<usize>,
    buffered: usize,
) -> Result<Option<usize>, UpgradeError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => Ok(Some(n)),
        Ok(httparse::Status::Complete(_)) => Err(UpgradeError::TooLong),
        Ok(httparse::Status::Partial) if buffered >= MAX_HEAD => Err(UpgradeError::TooLong),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(UpgradeError::Malformed(e.to_string())),
    }
}

/// Checks the node's upgrade request read so far: `Ok(Some((n, key)))` when its header block
/// (the first `n` bytes) is complete and valid, `Ok(None)` when more is needed, an error (to
/// answer with [`error_response`]) otherwise.
pub fn parse_request(buf: &[u8]) -> Result<Option<(usize, String)>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let Some(n) = head_len(r.parse(buf), buf.len())? else {
        return Ok(None);
    };
    let method = r.method.unwrap_or_default();
    if method != "GET" {
        return Err(UpgradeError::Method(method.chars().take(16).collect()));
    }
    let path = r.path.unwrap_or_default();
    if path != PATH {
        return Err(UpgradeError::Path(path.chars().take(64).collect()));
    }
    if r.version != Some(1) {
        return Err(UpgradeError::Malformed("HTTP/1.1 is required".into()));
    }
    let h = &*r.headers;
    if !has_token(h, "upgrade", "websocket") || !has_token(h, "connection", "upgrade") {
        return Err(UpgradeError::NotUpgrade("no Upgrade: websocket"));
    }
    if single(h, "sec-websocket-version") != Some("13") {
        return Err(UpgradeError::NotUpgrade("Sec-WebSocket-Version must be 13"));
    }
    let key = single(h, "sec-websocket-key").unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map_or(true, |k| k.len() != 16) {
        return Err(UpgradeError::NotUpgrade("no valid Sec-WebSocket-Key"));
    }
    if !tokens(h, "sec-websocket-protocol").contains(&SUBPROTOCOL) {
        return Err(UpgradeError::Subprotocol);
    }
    Ok(Some((n, key.to_string())))
}

/// Checks the registry's answer to our request with `key`: `Ok(Some(n))` when its header
/// block (the first `n` bytes) is complete and accepts the upgrade (bytes after it are already
/// WebSocket frames), `Ok(None)` when more is needed, an error otherwise.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let Some(n) = head_len(r.parse(buf), buf.len())? else {
        return Ok(None);
    };
    match r.code {
        Some(101) => {}
        Some(code) => {
            return Err(UpgradeError::Refused {
                code,
                reason: r.reason.unwrap_or("").chars().take(100).collect(),
            })
        }
        None => return Err(UpgradeError::Malformed("no status".into())),
    }
    let h = &*r.headers;
    if !has_token(h, "upgrade", "websocket") || !has_token(h, "connection", "upgrade") {
        return Err(UpgradeError::BadAnswer("no Upgrade: websocket"));
    }
    if single(h, "sec-websocket-accept") != Some(accept_key(key).as_str()) {
        return Err(UpgradeError::BadAnswer("wrong Sec-WebSocket-Accept"));
    }
    if !tokens(h, "sec-websocket-extensions").is_empty() {
        return Err(UpgradeError::BadAnswer("an extension we did not offer"));
    }
    if single(h, "sec-websocket-protocol") != Some(SUBPROTOCOL) {
        return Err(UpgradeError::Subprotocol);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(new_key(*b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn our_request_is_accepted_and_our_answer_checks_out() {
        let key = new_key([7; 16]);
        let req = [request("pilot-registry", &key), b"\x82\x00".to_vec()].concat();
        let (n, got) = parse_request(&req).unwrap().unwrap();
        assert_eq!((n, got.as_str()), (req.len() - 2, key.as_str()));
        let resp = accept_response(&key);
        assert_eq!(parse_response(&resp, &key), Ok(Some(resp.len())));
        assert_eq!(
            parse_response(&resp, &new_key([8; 16])),
            Err(UpgradeError::BadAnswer("wrong Sec-WebSocket-Accept"))
        );
        assert_eq!(parse_request(&req[..20]), Ok(None));
        assert_eq!(parse_response(&resp[..20], &key), Ok(None));
    }

    #[test]
    fn anything_but_our_upgrade_is_refused_with_an_http_status() {
        let key = new_key([1; 16]);
        let ok = String::from_utf8(request("h", &key)).unwrap();
        let status = |req: &str| parse_request(req.as_bytes()).unwrap_err().status().0;
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
        assert_eq!(
            status("GET /pilot/relay/v1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            426
        );
        assert_eq!(status(&ok.replacen("GET", "POST", 1)), 405);
        assert_eq!(status(&ok.replace(SUBPROTOCOL, "chat")), 400);
        assert_eq!(status(&ok.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(status(&ok.replace(&key, "c2hvcnQ=")), 426);
        assert_eq!(status("\x16\x03\x01 garbage\r\n\r\n"), 400);
        let endless = format!("GET {PATH} HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(status(&endless), 431);
        let offered = ok.replace(SUBPROTOCOL, &format!("chat, {SUBPROTOCOL}"));
        assert!(parse_request(offered.as_bytes()).unwrap().is_some());
        let e = UpgradeError::Path("/".into());
        let answer = String::from_utf8(error_response(&e)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        assert!(answer.ends_with("no such path: /\n"), "{answer}");
    }

    #[test]
    fn a_refusing_or_foreign_server_is_an_error() {
        let key = new_key([2; 16]);
        assert!(matches!(
            parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n", &key),
            Err(UpgradeError::Refused { code: 403, .. })
        ));
        let resp = String::from_utf8(accept_response(&key)).unwrap();
        let other = resp.replace(SUBPROTOCOL, "chat");
        assert_eq!(
            parse_response(other.as_bytes(), &key),
            Err(UpgradeError::Subprotocol)
        );
        let ext = resp.replacen("\r\n\r\n", "\r\nSec-WebSocket-Extensions: x\r\n\r\n", 1);
        assert!(parse_response(ext.as_bytes(), &key).is_err());
    }
}
