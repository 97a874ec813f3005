//! The local API's HTTP/1.1 server on the daemon's Unix socket.
//!
//! The server knows nothing of the daemon: it serves any [`Api`], the trait the daemon
//! implements. Each connection is hyper's HTTP/1.1 with keep-alive and upgrades; a request
//! head must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_BODY`] bytes, a body must
//! arrive within [`BODY_TIMEOUT`] and fit in [`MAX_BODY`] bytes. Garbage gets hyper's `400`
//! and closes that connection only; unknown paths get a `404` envelope.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};

use crate::api::events::{self, Subscription};
use crate::api::types::*;
use crate::error::{ErrorCode, PilotError};

/// How long a client may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 128;
/// The `Upgrade` protocol name of stream requests.
pub const STREAM_PROTOCOL: &str = "pilot-stream";
/// The 101 response header that carries a stream's first reply (an ok envelope, JSON).
pub const STREAM_HEADER: &str = "pilot-stream";

/// What a request answers: typed data or a user-facing error.
pub type ApiResult<T> = Result<T, PilotError>;

/// The node as the API sees it; the daemon implements it.
pub trait Api: Send + Sync + 'static {
    /// A byte stream to a peer (`connect`, `listen`).
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// `GET /v1/info`.
    fn info(&self) -> InfoData;
    /// `GET /v1/peers`.
    fn peers(&self) -> PeersData;
    /// `PUT /v1/hostname`.
    fn set_hostname(
        &self,
        hostname: String,
    ) -> impl Future<Output = ApiResult<HostnameClaim>> + Send;
    /// `POST /v1/shutdown`: asks the daemon to stop after answering.
    fn shutdown(&self) -> ShutdownData;
    /// `POST /v1/trust/handshake`.
    fn handshake(
        &self,
        req: HandshakeRequest,
    ) -> impl Future<Output = ApiResult<Option<TrustView>>> + Send;
    /// `GET /v1/trust/pending`.
    fn pending(&self) -> impl Future<Output = ApiResult<PendingList>> + Send;
    /// `POST /v1/trust/approve`.
    fn approve(&self, peer: String) -> impl Future<Output = ApiResult<Option<TrustView>>> + Send;
    /// `POST /v1/trust/reject`.
    fn reject(
        &self,
        req: RejectRequest,
    ) -> impl Future<Output = ApiResult<Option<TrustView>>> + Send;
    /// `POST /v1/trust/untrust`.
    fn untrust(&self, peer: String) -> impl Future<Output = ApiResult<Option<TrustView>>> + Send;
    /// `GET /v1/trust`.
    fn trust(&self) -> impl Future<Output = ApiResult<TrustList>> + Send;
    /// `GET /v1/find/{hostname}`.
    fn find(&self, hostname: String) -> impl Future<Output = ApiResult<Option<Lookup>>> + Send;
    /// `POST /v1/ping`.
    fn ping(&self, req: PingRequest) -> impl Future<Output = ApiResult<PingReport>> + Send;
    /// `POST /v1/messages`.
    fn send_message(
        &self,
        req: SendMessageRequest,
    ) -> impl Future<Output = ApiResult<SentMessage>> + Send;
    /// `GET /v1/messages/inbox`.
    fn inbox(&self, clear: bool) -> ApiResult<InboxData>;
    /// `GET /v1/messages/outbox`.
    fn outbox(&self) -> ApiResult<OutboxData>;
    /// `POST /v1/expose`.
    fn expose(&self, req: ExposeRequest) -> impl Future<Output = ApiResult<Exposed>> + Send;
    /// `GET /v1/expose`.
    fn expose_list(&self) -> ExposeList;
    /// `DELETE /v1/expose/{port}`.
    fn expose_remove(&self, port: u16) -> ApiResult<Exposed>;
    /// `POST /v1/connect`: opens the overlay side of a stream.
    fn connect(
        &self,
        q: ConnectQuery,
    ) -> impl Future<Output = ApiResult<(ConnectData, Self::Stream)>> + Send;
    /// `POST /v1/listen`: waits for one peer to connect to our overlay port.
    fn listen(
        &self,
        port: u16,
    ) -> impl Future<Output = ApiResult<(ListenData, Self::Stream)>> + Send;
    /// `GET /v1/events`: a new subscription to the live events.
    fn subscribe(&self) -> Subscription;
}

/// An error as an HTTP response: the status that matches its code, the error envelope.
#[derive(Debug)]
pub struct ApiError {
    /// The error.
    pub error: PilotError,
    /// A more precise status than the code's (413, 405), if any.
    pub status: Option<StatusCode>,
}

impl From<PilotError> for ApiError {
    fn from(error: PilotError) -> Self {
        ApiError {
            error,
            status: None,
        }
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(http_status(self.error.code))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        json_response(status, &ErrorBody::from(self.error))
    }
}

/// A handler's answer: `200` and the ok envelope, or the error's status and envelope.
pub struct Reply<T>(pub ApiResult<T>);

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(data) => json_response(StatusCode::OK, &OkBody::new(data)),
            Err(e) => ApiError::from(e).into_response(),
        }
    }
}

/// A JSON request body, read within [`BODY_TIMEOUT`] and at most [`MAX_BODY`] bytes.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, ApiError> {
        let too_big = || ApiError {
            error: PilotError::invalid(
                format!("the request body is larger than {MAX_BODY} bytes"),
                "send a smaller request",
            ),
            status: Some(StatusCode::PAYLOAD_TOO_LARGE),
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_big());
        }
        let read = axum::body::to_bytes(req.into_body(), MAX_BODY);
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Err(_) => {
                return Err(ApiError {
                    error: PilotError::new(
                        ErrorCode::Timeout,
                        format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
                        "send the whole request at once",
                    ),
                    status: Some(StatusCode::REQUEST_TIMEOUT),
                })
            }
            Ok(Err(e)) => {
                let inner = e.into_inner();
                if inner.is::<http_body_util::LengthLimitError>() {
                    return Err(too_big());
                }
                return Err(PilotError::invalid(
                    format!("cannot read the request body: {inner}"),
                    "send a complete request",
                )
                .into());
            }
            Ok(Ok(b)) => b,
        };
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            PilotError::invalid(
                format!("bad request body: {e}"),
                "send a JSON object as GET /v1/openapi.json describes it",
            )
            .into()
        })
    }
}

/// A query string, with errors as envelopes.
pub struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| QueryArgs(q))
            .map_err(|e| {
                PilotError::invalid(
                    format!("bad query: {}", e.body_text()),
                    "see GET /v1/openapi.json for this path's parameters",
                )
                .into()
            })
    }
}

/// A path parameter, with errors as envelopes.
pub struct PathArg<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArg<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathArg(p))
            .map_err(|e| {
                PilotError::invalid(
                    format!("bad path: {}", e.body_text()),
                    "see GET /v1/openapi.json for this path's parameters",
                )
                .into()
            })
    }
}

/// The router of every `/v1/` path over `api`.
pub fn router<A: Api>(api: Arc<A>) -> Router {
    use crate::api::handlers as h;
    Router::new()
        .route("/v1/info", get(h::info::<A>))
        .route("/v1/peers", get(h::peers::<A>))
        .route("/v1/hostname", put(h::set_hostname::<A>))
        .route("/v1/shutdown", post(h::shutdown::<A>))
        .route("/v1/trust", get(h::trust::<A>))
        .route("/v1/trust/handshake", post(h::handshake::<A>))
        .route("/v1/trust/pending", get(h::pending::<A>))
        .route("/v1/trust/approve", post(h::approve::<A>))
        .route("/v1/trust/reject", post(h::reject::<A>))
        .route("/v1/trust/untrust", post(h::untrust::<A>))
        .route("/v1/find/{hostname}", get(h::find::<A>))
        .route("/v1/ping", post(h::ping::<A>))
        .route("/v1/messages", post(h::send_message::<A>))
        .route("/v1/messages/inbox", get(h::inbox::<A>))
        .route("/v1/messages/outbox", get(h::outbox::<A>))
        .route("/v1/expose", post(h::expose::<A>).get(h::expose_list::<A>))
        .route("/v1/expose/{port}", delete(h::expose_remove::<A>))
        .route("/v1/connect", post(h::connect::<A>))
        .route("/v1/listen", post(h::listen::<A>))
        .route("/v1/events", get(events::handler::<A>))
        .route("/v1/openapi.json", get(h::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    PilotError::new(
        ErrorCode::NotFound,
        format!("no such API path: {}", uri.path()),
        "paths start with /v1/; GET /v1/openapi.json lists them",
    )
    .into()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        error: PilotError::invalid(
            format!("{method} is not allowed on {}", uri.path()),
            "GET /v1/openapi.json lists each path's methods",
        ),
        status: Some(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// Answers a stream request: checks it asks for our upgrade, runs `open`, and on success
/// answers `101 Switching Protocols` (the first reply in the [`STREAM_HEADER`] header) and
/// splices the upgraded connection to the stream until both sides end.
pub async fn upgrade<D, S, F>(mut req: axum::extract::Request, open: F) -> Response
where
    D: Serialize,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = ApiResult<(D, S)>>,
{
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(STREAM_PROTOCOL));
    if !wants {
        return ApiError::from(PilotError::invalid(
            "a stream request needs `Connection: Upgrade` and `Upgrade: pilot-stream`",
            "see docs/PROTOCOL.md (Local API, streams)",
        ))
        .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (data, mut stream) = match open.await {
        Ok(x) => x,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let first = match serde_json::to_string(&OkBody::new(data))
        .ok()
        .and_then(|s| HeaderValue::from_str(&s).ok())
    {
        Some(v) => v,
        None => {
            return ApiError::from(PilotError::internal("cannot encode the reply")).into_response()
        }
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => {
                let mut io = TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut io, &mut stream).await;
            }
            Err(e) => tracing::debug!(error = %e, "stream upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(STREAM_PROTOCOL));
    h.insert(STREAM_HEADER, first);
    resp
}

/// Serves `api` on `listener` until `shutdown` completes. Connections in flight (streams, event
/// subscriptions) end with the runtime.
pub async fn serve<A: Api>(
    api: Arc<A>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) {
    let app = router(api);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = &mut shutdown => return,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let app = app.clone();
                    tokio::spawn(async move {
                        serve_connection(app, stream).await;
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!(error = %e, "API accept failed"),
            },
            _ = &mut shutdown => return,
        }
    }
}

async fn serve_connection(app: Router, stream: UnixStream) {
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BODY)
        .max_header_size(MAX_BODY);
    if let Err(e) = b
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "API connection ended");
    }
}
