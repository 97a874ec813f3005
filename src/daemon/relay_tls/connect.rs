//! Opening the TLS transport to a registry: TCP directly or through an HTTP proxy
//! (`CONNECT`), then the TLS handshake that must prove the registry's key, then (with
//! `[relay] websocket = true`) the WebSocket upgrade.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::identity::PublicKey;
use crate::registry::tls::{
    pin::{self, TlsError},
    ws,
};
use crate::wire::{http_connect, stream, websocket};

/// TCP connect, proxy exchange, TLS handshake and WebSocket upgrade together must finish
/// within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS stream to a registry.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// An open transport to a registry, in one of its two wrappings.
pub enum Stream {
    /// Frames on the TLS stream.
    Tls(Box<TlsStream>),
    /// Frames in binary WebSocket messages over the TLS stream.
    WebSocket(Box<tokio_tungstenite::WebSocketStream<TlsStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({})", self.name())
    }
}

impl Stream {
    /// `tls` or `wss`, as the local API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Stream::Tls(_) => "tls",
            Stream::WebSocket(_) => "wss",
        }
    }
}

/// The proxy in force: `[relay] proxy`, else `https_proxy`, else `HTTPS_PROXY`. Accepts
/// `http://HOST:PORT` (a trailing `/` allowed) or a bare `HOST:PORT`.
pub fn proxy_from(configured: Option<&str>) -> Result<Option<String>, TlsError> {
    let raw = match configured {
        Some(p) => Some(p.to_string()),
        None => std::env::var("https_proxy")
            .or_else(|_| std::env::var("HTTPS_PROXY"))
            .ok(),
    };
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    let bad = |why: &str| TlsError::Connect {
        what: format!("use the HTTP proxy {raw:?}"),
        reason: why.into(),
    };
    let rest = raw.trim().strip_prefix("http://").unwrap_or(raw.trim());
    if rest.contains("://") {
        return Err(bad("only http:// proxies are supported"));
    }
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') || hostport.contains('@') || !hostport.contains(':') {
        return Err(bad("give it as http://HOST:PORT"));
    }
    Ok(Some(hostport.to_string()))
}

/// A TCP stream to `target`, through `proxy` if given.
pub async fn tcp(target: SocketAddr, proxy: Option<&str>) -> Result<TcpStream, TlsError> {
    let fail = |what: String, e: &dyn std::fmt::Display| TlsError::Connect {
        what,
        reason: e.to_string(),
    };
    let Some(proxy) = proxy else {
        let s = TcpStream::connect(target)
            .await
            .map_err(|e| fail(format!("connect to {target}"), &e))?;
        let _ = s.set_nodelay(true);
        return Ok(s);
    };
    let what = || format!("reach {target} through the proxy {proxy}");
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| fail(what(), &e))?;
    let _ = s.set_nodelay(true);
    s.write_all(&http_connect::request(target))
        .await
        .map_err(|e| fail(what(), &e))?;
    // Read byte by byte past the header block: nothing of the tunnel is consumed.
    let mut answer = Vec::with_capacity(256);
    loop {
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await.map_err(|e| fail(what(), &e))?;
        if n == 0 {
            return Err(fail(what(), &"the proxy closed the connection"));
        }
        answer.push(b[0]);
        if !answer.ends_with(b"\r\n\r\n") && answer.len() < http_connect::MAX_ANSWER {
            continue;
        }
        match http_connect::parse_answer(&answer) {
            Ok(Some(_)) => return Ok(s),
            Ok(None) => continue,
            Err(e) => return Err(fail(what(), &e)),
        }
    }
}

/// A transport to the registry's TLS port at `target` that proved `expected` (any key on
/// first contact), wrapped in WebSocket if `websocket`, and the key it proved.
pub async fn open(
    target: SocketAddr,
    proxy: Option<&str>,
    expected: Option<PublicKey>,
    websocket: bool,
) -> Result<(Stream, PublicKey), TlsError> {
    let attempt = async {
        let tcp = tcp(target, proxy).await?;
        let name = target.to_string();
        if !websocket {
            let (s, key) = pin::connect_alpn(tcp, expected, &name, stream::ALPN).await?;
            return Ok((Stream::Tls(Box::new(s)), key));
        }
        let (s, key) = pin::connect_alpn(tcp, expected, &name, websocket::ALPN_HTTP).await?;
        match ws::connect(s, pin::SERVER_NAME).await {
            Ok(s) => Ok((Stream::WebSocket(Box::new(s)), key)),
            Err(e) => Err(TlsError::Connect {
                what: format!("upgrade to WebSocket at {target}{}", websocket::PATH),
                reason: e.to_string(),
            }),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(TlsError::Connect {
            what: format!("connect over TLS to {target}"),
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_http_host_port() {
        assert_eq!(
            proxy_from(Some("http://10.0.0.1:3128/")).unwrap(),
            Some("10.0.0.1:3128".into())
        );
        assert_eq!(
            proxy_from(Some("proxy:8080")).unwrap(),
            Some("proxy:8080".into())
        );
        assert!(proxy_from(Some("https://p:1")).is_err());
        assert!(proxy_from(Some("http://user:pw@p:1")).is_err());
        assert!(proxy_from(Some("http://p")).is_err());
    }

    /// A CONNECT proxy in a few lines: answers 200, then splices both ways.
    async fn proxy(answer: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let mut n = 0;
            while !buf[..n].ends_with(b"\r\n\r\n") {
                n += c.read(&mut buf[n..]).await.unwrap();
            }
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let target = head.split(' ').nth(1).unwrap().to_string();
            c.write_all(answer).await.unwrap();
            if answer.starts_with(b"HTTP/1.1 200") {
                let mut up = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            }
        });
        at
    }

    #[tokio::test]
    async fn tls_goes_through_a_connect_proxy_and_a_refusal_is_an_error() {
        let registry = crate::identity::Identity::from_seed([9; 32]);
        let acceptor = tokio_rustls::TlsAcceptor::from(pin::server_config(&registry).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (c, _) = l.accept().await.unwrap();
            let mut s = acceptor.accept(c).await.unwrap();
            s.write_all(b"hi").await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let p = proxy(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        let (s, key) = open(
            target,
            Some(&p.to_string()),
            Some(registry.public_key()),
            false,
        )
        .await
        .unwrap();
        assert_eq!(key, registry.public_key());
        let Stream::Tls(mut s) = s else {
            panic!("a plain TLS stream")
        };
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hi");
        let refusing = proxy(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let e = open(target, Some(&refusing.to_string()), None, false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("403"), "{e}");
    }
}
