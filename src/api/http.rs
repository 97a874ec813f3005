//! HTTP plumbing shared by the handlers: errors and replies as envelopes with matching
//! statuses, bounded JSON bodies, queries and path parameters with envelope errors, and the
//! HTTP Upgrade that turns a request into a byte stream.

use std::future::Future;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::api::service::ApiResult;
use crate::api::types::*;
use crate::error::{ErrorCode, PilotError};

/// How long a client may take to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Upgrade` protocol name of stream requests.
pub const STREAM_PROTOCOL: &str = "pilot-stream";
/// The 101 response header that carries a stream's first reply (an ok envelope, JSON).
pub const STREAM_HEADER: &str = "pilot-stream";

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
