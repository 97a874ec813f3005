//! The local API's HTTP/1.1 server on the daemon's Unix socket.
//!
//! The server knows nothing of the daemon: it serves any [`Api`], the trait the daemon
//! implements. Each connection is hyper's HTTP/1.1 with keep-alive and upgrades; a request
//! head must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_BODY`] bytes; bodies are bounded
//! by [`crate::api::http::JsonBody`]. Garbage gets hyper's `400` and closes that connection
//! only; unknown paths get a `404` envelope.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};

use crate::api::handlers as h;
use crate::api::http::ApiError;
use crate::api::service::Api;
use crate::api::types::MAX_BODY;
use crate::error::{ErrorCode, PilotError};

/// How long a client may take to send a request head (an idle keep-alive connection is
/// closed after as long).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 128;

/// The router of every `/v1/` path over `api`.
pub fn router<A: Api>(api: Arc<A>) -> Router {
    Router::new()
        .route("/v1/info", get(h::info::<A>))
        .route("/v1/peers", get(h::peers::<A>))
        .route(
            "/v1/hostname",
            put(h::set_hostname::<A>).delete(h::clear_hostname::<A>),
        )
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
        .route("/v1/messages/inbox/{id}", get(h::inbox_read::<A>))
        .route("/v1/messages/{id}/reply", post(h::reply::<A>))
        .route(
            "/v1/webhook",
            get(h::webhook::<A>)
                .put(h::set_webhook::<A>)
                .delete(h::clear_webhook::<A>),
        )
        .route("/v1/expose", post(h::expose::<A>).get(h::expose_list::<A>))
        .route("/v1/expose/{port}", delete(h::expose_remove::<A>))
        .route("/v1/dns", get(h::dns_status::<A>))
        .route("/v1/expose/udp/{port}", delete(h::expose_remove_udp::<A>))
        .route("/v1/connect", post(h::connect::<A>))
        .route("/v1/listen", post(h::listen::<A>))
        .route("/v1/registry/forget-key", post(h::forget_registry_key::<A>))
        .route("/v1/files", post(h::send_file::<A>))
        .route("/v1/files/transfers", get(h::transfers::<A>))
        .route(
            "/v1/files/received",
            get(h::received::<A>).delete(h::clear_received::<A>),
        )
        .route("/v1/events", get(h::events::<A>))
        .route("/v1/health", get(h::health::<A>))
        .route("/v1/lookup/{peer}", get(h::lookup_node::<A>))
        .route("/v1/tags", put(h::set_tags::<A>))
        .route("/v1/deregister", post(h::deregister::<A>))
        .route("/v1/netcheck", get(h::netcheck::<A>))
        .route("/v1/connections", get(h::connections::<A>))
        .route("/v1/connections/{id}", delete(h::disconnect::<A>))
        .route("/v1/pubsub", get(h::pubsub_status::<A>))
        .route("/v1/pubsub/publish", post(h::pubsub_publish::<A>))
        .route("/v1/pubsub/subscribe", get(h::pubsub_subscribe::<A>))
        .route(
            "/v1/tasks",
            post(h::task_submit::<A>).get(h::task_list::<A>),
        )
        .route("/v1/tasks/{id}", get(h::task_get::<A>))
        .route("/v1/tasks/{id}/accept", post(h::task_accept::<A>))
        .route("/v1/tasks/{id}/decline", post(h::task_decline::<A>))
        .route("/v1/tasks/{id}/result", post(h::task_result::<A>))
        .route("/v1/tasks/{id}/wait", get(h::task_wait::<A>))
        .route("/v1/dgram/send", post(h::dgram_send::<A>))
        .route("/v1/dgram/listen", get(h::dgram_listen::<A>))
        .route("/v1/openapi.json", get(crate::api::openapi::serve))
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
