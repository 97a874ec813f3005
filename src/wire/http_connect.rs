//! HTTP `CONNECT` (RFC 9110 §9.3.6) as a node speaks it to an HTTP proxy on its way to a
//! registry's TLS transport (issue 14): the request, and a strict, bounded parser of the
//! proxy's answer.

use std::net::SocketAddr;

/// The longest answer header block accepted from a proxy.
pub const MAX_ANSWER: usize = 8 * 1024;

/// Why a proxy's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The proxy answered with another status than 200.
    #[error("the proxy refused CONNECT: {code} {reason}")]
    Refused {
        /// The status code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The answer is not HTTP/1.x.
    #[error("the proxy's answer is not HTTP: {0}")]
    Malformed(String),
    /// The header block is longer than [`MAX_ANSWER`].
    #[error("the proxy's answer is longer than {MAX_ANSWER} bytes")]
    TooLong,
}

/// The request asking the proxy for a tunnel to `target`.
pub fn request(target: SocketAddr) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: pilot\r\n\r\n").into_bytes()
}

/// Parses the answer read so far: `Ok(Some(n))` when the header block (its first `n` bytes)
/// is complete with status 200 (bytes after it already belong to the tunnel), `Ok(None)` when
/// more is needed, an error otherwise.
pub fn parse_answer(buf: &[u8]) -> Result<Option<usize>, ConnectError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => match r.code {
            Some(200) => Ok(Some(n)),
            Some(code) => Err(ConnectError::Refused {
                code,
                reason: r.reason.unwrap_or("").chars().take(100).collect(),
            }),
            None => Err(ConnectError::Malformed("no status".into())),
        },
        Ok(httparse::Status::Partial) if buf.len() >= MAX_ANSWER => Err(ConnectError::TooLong),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(ConnectError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_200_answer_opens_the_tunnel_and_others_are_refused() {
        let ok = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n\x16\x03";
        assert_eq!(parse_answer(ok), Ok(Some(ok.len() - 2)));
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert!(matches!(
            parse_answer(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Err(ConnectError::Refused { code: 403, .. })
        ));
        assert!(matches!(
            parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ConnectError::Malformed(_))
        ));
        let endless = [b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'a'; MAX_ANSWER]].concat();
        assert!(parse_answer(&endless).is_err());
        let target: SocketAddr = "198.51.100.1:443".parse().unwrap();
        assert!(String::from_utf8(request(target))
            .unwrap()
            .starts_with("CONNECT 198.51.100.1:443 HTTP/1.1\r\n"));
    }
}
