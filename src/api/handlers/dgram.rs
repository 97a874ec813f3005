//! Handlers of the datagram routes (`/v1/dgram/…`).

use std::sync::Arc;

use axum::extract::State;

use crate::api::http::{JsonBody, QueryArgs, Reply};
use crate::api::service::Api;
use crate::api::types::*;

type ApiState<A> = State<Arc<A>>;

/// Send one UDP datagram to a trusted peer's overlay port (fire and forget: no answer is
/// awaited; UDP on the overlay needs no new wire format).
#[utoipa::path(post, path = "/v1/dgram/send", tag = "dgram", request_body = DgramSendRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<DgramSent>),
        (status = 400, body = ErrorBody, description = "a bad port, bad base64, or a payload over the MTU"),
        (status = 403, body = ErrorBody, description = "the peer is not trusted"),
        (status = 404, body = ErrorBody, description = "no peer has that name")))]
pub async fn dgram_send<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<DgramSendRequest>,
) -> Reply<DgramSent> {
    Reply(api.dgram_send(req).await)
}

/// Bind our overlay UDP port and answer with the datagrams trusted peers send to it, once
/// `count` arrived or `timeout_ms` passed (others are dropped and counted).
#[utoipa::path(get, path = "/v1/dgram/listen", tag = "dgram", params(DgramListenQuery),
    responses((status = 200, description = "the ok envelope", body = OkBody<DgramListenData>),
        (status = 400, body = ErrorBody, description = "a bad port or count"),
        (status = 409, body = ErrorBody, description = "the port is in use")))]
pub async fn dgram_listen<A: Api>(
    State(api): ApiState<A>,
    QueryArgs(q): QueryArgs<DgramListenQuery>,
) -> Reply<DgramListenData> {
    Reply(api.dgram_listen(q).await)
}
