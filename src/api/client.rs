//! A blocking client of the local API (the CLI is one): hyper's HTTP/1.1 client on a
//! current-thread runtime, over the daemon's Unix socket.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::api::types::{ApiEvent, Envelope, InfoData, PeersData, Request, Route};
use crate::error::{ErrorCode, PilotError};

/// How long a call waits for the daemon's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the daemon's API.
pub struct Client {
    rt: tokio::runtime::Runtime,
    /// The socket until the first HTTP request (a stream request takes it as it is).
    fresh: Option<UnixStream>,
    /// hyper's side of the connection once a request was sent.
    sender: Option<SendRequest<Full<Bytes>>>,
}

fn connect_error(path: &Path, e: std::io::Error) -> PilotError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            PilotError::not_running(format!("no daemon is listening on {}", path.display()))
        }
        std::io::ErrorKind::PermissionDenied => PilotError::new(
            ErrorCode::Unauthorized,
            format!("permission denied on {}", path.display()),
            "the daemon's socket is owner-only: run pilotctl as the user that started the daemon",
        ),
        _ => PilotError::new(
            ErrorCode::ConnectionFailed,
            format!("cannot connect to {}: {e}", path.display()),
            "check $PILOT_SOCKET / $PILOT_HOME, or restart the daemon",
        ),
    }
}

fn lost(e: impl std::fmt::Display) -> PilotError {
    PilotError::new(
        ErrorCode::ConnectionFailed,
        format!("lost the connection to the daemon: {e}"),
        "see $PILOT_HOME/daemon.log",
    )
}

fn no_answer(timeout: Duration) -> PilotError {
    PilotError::new(
        ErrorCode::Timeout,
        format!("the daemon did not answer within {} s", timeout.as_secs()),
        "see $PILOT_HOME/daemon.log; restart it with `pilotctl daemon stop && pilotctl daemon start`",
    )
}

fn internal(e: impl std::fmt::Display) -> PilotError {
    PilotError::internal(e.to_string())
}

impl Client {
    /// Connects to the daemon's socket. A missing socket or a refused connection means the
    /// daemon is not running; a permission error means it belongs to someone else.
    pub fn connect(path: &Path) -> Result<Self, PilotError> {
        let stream = UnixStream::connect(path).map_err(|e| connect_error(path, e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(internal)?;
        Ok(Client {
            rt,
            fresh: Some(stream),
            sender: None,
        })
    }

    /// hyper's sender on this connection, set up on first use.
    fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, PilotError> {
        if let Some(stream) = self.fresh.take() {
            stream.set_nonblocking(true).map_err(internal)?;
            let sender = self.rt.block_on(async {
                let io = TokioIo::new(tokio::net::UnixStream::from_std(stream).map_err(internal)?);
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(lost)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                });
                Ok::<_, PilotError>(sender)
            })?;
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| PilotError::internal("the API connection is gone"))
    }

    /// Connects to the socket named by `PILOT_SOCKET`, else `$PILOT_HOME/pilot.sock`, else
    /// the default state directory's.
    pub fn connect_default() -> Result<Self, PilotError> {
        let paths = crate::state::paths::StatePaths::from_env()?;
        Self::connect(&paths.socket)
    }

    /// Sends a request and decodes its `data` as `T`.
    pub fn get<T: DeserializeOwned>(&mut self, req: &Request) -> Result<T, PilotError> {
        let data = self.call(req)?;
        serde_json::from_value(data)
            .map_err(|e| PilotError::internal(format!("unexpected reply from the daemon: {e}")))
    }

    /// `GET /v1/info`.
    pub fn info(&mut self) -> Result<InfoData, PilotError> {
        self.get(&Request::Info {})
    }

    /// `GET /v1/peers`.
    pub fn peers(&mut self) -> Result<PeersData, PilotError> {
        self.get(&Request::Peers {})
    }

    /// Subscribes to `GET /v1/events`; the iterator blocks for each event and ends when the
    /// daemon stops.
    pub fn events(self) -> Result<Events, PilotError> {
        self.sse("/v1/events")
    }

    /// Opens a server-sent event stream at `target` (`/v1/events`, `/v1/pubsub/subscribe?…`);
    /// an error envelope before the stream is the error.
    pub fn sse(mut self, target: &str) -> Result<Events, PilotError> {
        let req = hyper::Request::get(target)
            .header(hyper::header::HOST, "pilot")
            .body(Full::new(Bytes::new()))
            .map_err(internal)?;
        self.sender()?;
        let sender = self.sender.as_mut().expect("sender set up");
        let resp = self.rt.block_on(async {
            sender.ready().await.map_err(lost)?;
            let resp = sender.send_request(req).await.map_err(lost)?;
            if resp.status() != hyper::StatusCode::OK {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map_err(lost)?.to_bytes();
                parse_envelope(status, &body)?.into_result()?;
                return Err(PilotError::internal(format!(
                    "events answered HTTP {status}"
                )));
            }
            Ok(resp)
        })?;
        Ok(Events {
            rt: self.rt,
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    fn http_request(route: Route) -> Result<hyper::Request<Full<Bytes>>, PilotError> {
        let mut b = hyper::Request::builder()
            .method(route.method)
            .uri(route.target)
            .header(hyper::header::HOST, "pilot");
        let body = match route.body {
            Some(v) => {
                b = b.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&v).map_err(internal)?)
            }
            None => Bytes::new(),
        };
        b.body(Full::new(body)).map_err(internal)
    }

    /// Sends a request and waits for its reply's `data`.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value, PilotError> {
        self.call_within(req, CALL_TIMEOUT)
    }

    /// Sends a request and waits up to `timeout` for its reply's `data` (a request that waits
    /// for a peer, such as `send-message --wait`, needs longer than [`CALL_TIMEOUT`]).
    pub fn call_within(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> Result<serde_json::Value, PilotError> {
        if req.is_stream() {
            return Err(PilotError::internal(
                "a stream request needs Client::open_stream",
            ));
        }
        self.call_route(req.route(), timeout)
    }

    /// Sends a request given as its HTTP route (for a path no [`Request`] names, such as a
    /// service's) and waits up to `timeout` for its reply's `data`.
    pub fn call_route(
        &mut self,
        route: Route,
        timeout: Duration,
    ) -> Result<serde_json::Value, PilotError> {
        let http = Self::http_request(route)?;
        self.sender()?;
        let sender = self.sender.as_mut().expect("sender set up");
        let (status, body) = self.rt.block_on(async {
            let exchange = async {
                sender.ready().await.map_err(lost)?;
                let resp = sender.send_request(http).await.map_err(lost)?;
                let status = resp.status();
                let body = resp.into_body().collect().await.map_err(lost)?.to_bytes();
                Ok::<_, PilotError>((status, body))
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| no_answer(timeout))?
        })?;
        parse_envelope(status.as_u16(), &body)?.into_result()
    }

    /// Sends a stream request (`connect`, `listen`) as the first request on this connection
    /// and waits for its reply (no time limit: `listen` waits for a peer); on success the
    /// returned reader and writer are the daemon's socket carrying the stream, and shutting down
    /// the writer's write side passes the half-close on to the peer.
    pub fn open_stream(
        mut self,
        req: &Request,
    ) -> Result<(serde_json::Value, BufReader<UnixStream>, UnixStream), PilotError> {
        if !req.is_stream() {
            return Err(PilotError::internal("not a stream request"));
        }
        let mut stream = self.fresh.take().ok_or_else(|| {
            PilotError::internal("a stream request must be the first on its connection")
        })?;
        let data = crate::api::stream::open(&mut stream, req)?;
        let writer = stream.try_clone().map_err(internal)?;
        Ok((data, BufReader::new(stream), writer))
    }

    /// [`open_stream`](Self::open_stream), giving up with a `timeout` error when the daemon
    /// has not answered within `within` (it resolves the peer and connects first); the
    /// stream itself then has no time limit.
    pub fn open_stream_within(
        self,
        req: &Request,
        within: Duration,
    ) -> Result<(serde_json::Value, BufReader<UnixStream>, UnixStream), PilotError> {
        if let Some(s) = &self.fresh {
            s.set_read_timeout(Some(within)).map_err(internal)?;
        }
        let started = std::time::Instant::now();
        match self.open_stream(req) {
            Ok((data, reader, writer)) => {
                reader.get_ref().set_read_timeout(None).map_err(internal)?;
                Ok((data, reader, writer))
            }
            Err(e) if started.elapsed() >= within => Err(PilotError::new(
                crate::error::ErrorCode::Timeout,
                format!(
                    "no connection within {} s ({})",
                    within.as_secs(),
                    e.message
                ),
                "check that the peer is up (pilotctl ping PEER), or give a longer --timeout",
            )),
            Err(e) => Err(e),
        }
    }
}

/// Reads an envelope from a reply body.
fn parse_envelope(status: u16, body: &[u8]) -> Result<Envelope, PilotError> {
    serde_json::from_slice(body).map_err(|e| {
        PilotError::internal(format!(
            "unreadable reply from the daemon (HTTP {status}): {e}"
        ))
    })
}

/// The live events of `GET /v1/events`, one server-sent event at a time.
pub struct Events {
    rt: tokio::runtime::Runtime,
    body: Incoming,
    buf: Vec<u8>,
}

impl Events {
    /// The next complete SSE block (`…\n\n`) in the buffer, removed from it.
    fn take_block(&mut self) -> Option<String> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..end + 2).collect();
        Some(String::from_utf8_lossy(&block).into_owned())
    }
}

impl Events {
    /// The next event, waiting until `deadline` at most (then a `timeout` error); `None`
    /// when the stream ends.
    pub fn next_until(
        &mut self,
        deadline: Option<std::time::Instant>,
    ) -> Option<Result<ApiEvent, PilotError>> {
        let Some(deadline) = deadline else {
            return self.next();
        };
        loop {
            if let Some(block) = self.take_block() {
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(&data).map_err(|e| {
                    PilotError::internal(format!("unreadable event from the daemon: {e}"))
                }));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let frame = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.body.frame()).await });
            match frame {
                Err(_) => {
                    return Some(Err(PilotError::new(
                        ErrorCode::Timeout,
                        "no more events before the timeout",
                        "wait longer (--timeout) or check that someone publishes",
                    )))
                }
                Ok(None) => return None,
                Ok(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
                Ok(Some(Err(e))) => return Some(Err(lost(e))),
            }
        }
    }
}

impl Iterator for Events {
    type Item = Result<ApiEvent, PilotError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while let Some(block) = self.take_block() {
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return Some(serde_json::from_str(&data).map_err(|e| {
                        PilotError::internal(format!("unreadable event from the daemon: {e}"))
                    }));
                }
            }
            let frame = self.rt.block_on(self.body.frame())?;
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
                Err(e) => return Some(Err(lost(e))),
            }
        }
    }
}
