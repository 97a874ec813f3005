//! The WebSocket wrapping of the TLS transport (issue 14): the upgrade on both sides (the
//! handshake bytes are [`crate::wire::websocket`]'s, checked by us; tokio-tungstenite only
//! frames messages afterwards), and frames carried in binary messages, read and written as
//! [`super::framed`] does on a plain stream: many frames per message, keepalive frames, an idle
//! deadline, a bounded message size.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::framed::{next_batch, StreamEnd};
use crate::wire::stream::{self, message_frames, MAX_FRAME};
use crate::wire::websocket::{self as upgrade, UpgradeError, MAX_HEAD, MAX_MESSAGE};

/// Coalesce queued frames up to this many bytes per message: with one more frame a message
/// stays within [`MAX_MESSAGE`].
const MESSAGE_BATCH: usize = MAX_MESSAGE - MAX_FRAME - stream::LEN_BYTES;

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeFailed {
    /// The request or the answer was refused.
    #[error(transparent)]
    Refused(#[from] UpgradeError),
    /// The stream failed.
    #[error("stream error during the WebSocket upgrade: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream before the header block ended.
    #[error("the peer closed the connection during the WebSocket upgrade")]
    Closed,
}

/// The WebSocket settings of both sides: messages and frames at most [`MAX_MESSAGE`] bytes
/// (larger ones end the connection), a read buffer of the size a plain stream reads with.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(MAX_MESSAGE)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Reads an HTTP header block (after `prefix`, already read) until `parse` takes it. Byte by
/// byte: nothing after the header block is consumed.
async fn read_head<R, T>(
    r: &mut R,
    prefix: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, UpgradeError>,
) -> Result<T, UpgradeFailed>
where
    R: AsyncRead + Unpin,
{
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(prefix);
    loop {
        if head.ends_with(b"\r\n\r\n") || head.len() >= MAX_HEAD {
            if let Some(v) = parse(&head)? {
                return Ok(v);
            }
        }
        let mut b = [0u8; 1];
        if r.read(&mut b).await? == 0 {
            return Err(UpgradeFailed::Closed);
        }
        head.push(b[0]);
    }
}

/// The registry's side: reads the node's upgrade request (its first bytes `prefix` already
/// read), answers 101 and returns the WebSocket, or answers an HTTP error, closes and fails.
pub async fn accept<S>(mut io: S, prefix: &[u8]) -> Result<WebSocketStream<S>, UpgradeFailed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let parse = |head: &[u8]| upgrade::parse_request(head).map(|o| o.map(|(_, key)| key));
    match read_head(&mut io, prefix, parse).await {
        Ok(key) => {
            io.write_all(&upgrade::accept_response(&key)).await?;
            io.flush().await?;
            Ok(WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await)
        }
        Err(UpgradeFailed::Refused(e)) => {
            let _ = io.write_all(&upgrade::error_response(&e)).await;
            let _ = io.shutdown().await;
            Err(UpgradeFailed::Refused(e))
        }
        Err(e) => Err(e),
    }
}

/// The node's side: asks for the upgrade (naming `host`) and returns the WebSocket once the
/// registry accepted it with our subprotocol.
pub async fn connect<S>(mut io: S, host: &str) -> Result<WebSocketStream<S>, UpgradeFailed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut random = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    let key = upgrade::new_key(random);
    io.write_all(&upgrade::request(host, &key)).await?;
    io.flush().await?;
    read_head(&mut io, &[], |head| upgrade::parse_response(head, &key)).await?;
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, Some(config())).await)
}

fn end_of(e: WsError) -> StreamEnd {
    match e {
        WsError::Io(e) => StreamEnd::Io(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => StreamEnd::Closed,
        other => StreamEnd::WebSocket(other.to_string()),
    }
}

/// Reads binary messages from `r` and sends each non-empty datagram of their frames, made
/// into a `T` by `wrap`, on `deliver`, as [`super::framed::read_frames`] does: until the
/// stream ends or breaks a rule (a text message, a message over [`MAX_MESSAGE`], a frame over
/// `max_frame` or cut by the message's end), no whole frame arrives for `idle`, or the
/// receiver is gone. Pings are answered by the WebSocket layer.
pub async fn read_messages<R, T, F>(
    mut r: R,
    max_frame: usize,
    idle: Duration,
    deliver: &mpsc::Sender<T>,
    wrap: F,
) -> StreamEnd
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
    F: Fn(&[u8]) -> T,
{
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let msg = match tokio::time::timeout_at(deadline, r.next()).await {
            Err(_) => return StreamEnd::Idle(idle),
            Ok(None) => return StreamEnd::Closed,
            Ok(Some(Err(e))) => return end_of(e),
            Ok(Some(Ok(m))) => m,
        };
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => return StreamEnd::Closed,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(_) | Message::Frame(_) => {
                return StreamEnd::WebSocket("a text message (frames ride in binary ones)".into())
            }
        };
        for f in message_frames(&bytes, max_frame) {
            match f {
                Err(e) => return StreamEnd::Frame(e),
                Ok(f) => {
                    deadline = tokio::time::Instant::now() + idle;
                    if !f.is_empty() && deliver.send(wrap(f)).await.is_err() {
                        return StreamEnd::Stopped;
                    }
                }
            }
        }
    }
}

/// Writes the datagrams queued on `rx` to `w` as frames in binary messages, many frames per
/// message (at most [`MAX_MESSAGE`] bytes); a message holding a keepalive frame when nothing
/// was written for `keepalive` (if set). Ends (with a WebSocket close) when the queue closes,
/// or when a send fails.
pub async fn write_messages<W>(
    mut w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    keepalive: Option<Duration>,
) -> Result<(), WsError>
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let mut buf = Vec::with_capacity(MAX_MESSAGE);
    while next_batch(&mut rx, keepalive, &mut buf, MESSAGE_BATCH).await {
        w.send(Message::Binary(buf.as_slice().to_vec().into()))
            .await?;
    }
    let _ = w.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node and a registry on an in-memory stream: the upgrade, datagrams both ways in
    /// coalesced messages, and an oversized message that ends the connection.
    #[tokio::test]
    async fn frames_ride_in_binary_messages_both_ways() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move { accept(b, &[]).await });
        let client = connect(a, "pilot-registry").await.unwrap();
        let server = server.await.unwrap().unwrap();
        let (cw, cr) = client.split();
        let (sw, sr) = server.split();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(write_messages(cw, rx, None));
        for i in 0..200u16 {
            tx.send(vec![i as u8; 1000 + usize::from(i)]).await.unwrap();
        }
        let (out, mut got) = mpsc::channel(512);
        let reader = tokio::spawn(async move {
            read_messages(sr, MAX_FRAME, Duration::from_secs(5), &out, |f| f.to_vec()).await
        });
        for i in 0..200u16 {
            let d = tokio::time::timeout(Duration::from_secs(5), got.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((d.len(), d[0]), (1000 + usize::from(i), i as u8));
        }
        // Back: a keepalive holds the stream, then one datagram.
        let (tx2, rx2) = mpsc::channel(4);
        tokio::spawn(write_messages(sw, rx2, Some(Duration::from_millis(50))));
        let (out2, mut got2) = mpsc::channel(4);
        let back = tokio::spawn(async move {
            read_messages(cr, MAX_FRAME, Duration::from_millis(200), &out2, |f| {
                f.to_vec()
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        tx2.send(b"answer".to_vec()).await.unwrap();
        assert_eq!(got2.recv().await.unwrap(), b"answer");
        assert!(!back.is_finished(), "keepalive frames hold the stream open");
        drop(tx);
        let end = reader.await.unwrap();
        assert!(
            matches!(end, StreamEnd::Closed),
            "a closed queue closes the WebSocket: {end}"
        );
    }

    #[tokio::test]
    async fn a_wrong_path_gets_an_http_error_and_an_oversized_message_ends_the_stream() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move { accept(b, b"GE").await.map(|_| ()) });
        a.write_all(b"T / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        a.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 Not Found"), "{answer}");
        assert!(matches!(
            server.await.unwrap(),
            Err(UpgradeFailed::Refused(UpgradeError::Path(_)))
        ));

        let (a, b) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move { accept(b, &[]).await });
        let mut client = connect(a, "pilot-registry").await.unwrap();
        let server = server.await.unwrap().unwrap();
        let (out, _keep) = mpsc::channel::<Vec<u8>>(4);
        let reader = tokio::spawn(async move {
            read_messages(server, MAX_FRAME, Duration::from_secs(5), &out, |f| {
                f.to_vec()
            })
            .await
        });
        let big = vec![0u8; MAX_MESSAGE + 1];
        let _ = client.send(Message::Binary(big.into())).await;
        let end = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, StreamEnd::WebSocket(_)), "{end}");
    }
}
