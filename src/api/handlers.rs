//! One handler per path of the local API, each annotated with its OpenAPI description.
//! Every JSON answer is an envelope: `{"status":"ok","data":…}` with `200`, or
//! `{"status":"error",…}` with the status that matches the error code.

use std::sync::Arc;

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};

use crate::api::events::{sse_event, KEEP_ALIVE};
use crate::api::http::{upgrade, JsonBody, PathArg, QueryArgs, Reply};
use crate::api::service::Api;
use crate::api::types::*;

mod pubsub_tasks;
pub use pubsub_tasks::*;

/// The state every handler gets: the node behind the API.
type ApiState<A> = State<Arc<A>>;

/// Identity, address, mode, uptime.
#[utoipa::path(get, path = "/v1/info", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<InfoData>)))]
pub async fn info<A: Api>(State(api): ApiState<A>) -> Reply<InfoData> {
    Reply(Ok(api.info().await))
}

/// The peer table with per-peer traffic and drop counters.
#[utoipa::path(get, path = "/v1/peers", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<PeersData>)))]
pub async fn peers<A: Api>(State(api): ApiState<A>) -> Reply<PeersData> {
    Reply(Ok(api.peers()))
}

/// Change the hostname this node claims at its registries.
#[utoipa::path(put, path = "/v1/hostname", tag = "node", request_body = SetHostnameRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<HostnameClaim>),
        (status = 400, body = ErrorBody, description = "not a valid hostname"),
        (status = 409, body = ErrorBody, description = "another key holds the name")))]
pub async fn set_hostname<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<SetHostnameRequest>,
) -> Reply<HostnameClaim> {
    Reply(api.set_hostname(req.hostname).await)
}

/// Stop the daemon gracefully (it answers first).
#[utoipa::path(post, path = "/v1/shutdown", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<ShutdownData>)))]
pub async fn shutdown<A: Api>(State(api): ApiState<A>) -> Reply<ShutdownData> {
    Reply(Ok(api.shutdown()))
}

/// Ask a peer for trust; `data` is the peer's trust record.
#[utoipa::path(post, path = "/v1/trust/handshake", tag = "trust",
    request_body = HandshakeRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<Option<TrustView>>),
        (status = 404, body = ErrorBody, description = "no registry knows the peer")))]
pub async fn handshake<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<HandshakeRequest>,
) -> Reply<Option<TrustView>> {
    Reply(api.handshake(req).await)
}

/// Trust requests waiting for our decision.
#[utoipa::path(get, path = "/v1/trust/pending", tag = "trust",
    responses((status = 200, description = "the ok envelope", body = OkBody<PendingList>)))]
pub async fn pending<A: Api>(State(api): ApiState<A>) -> Reply<PendingList> {
    Reply(api.pending().await)
}

/// Approve a pending trust request.
#[utoipa::path(post, path = "/v1/trust/approve", tag = "trust", request_body = PeerRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<Option<TrustView>>),
        (status = 404, body = ErrorBody, description = "no pending request from that peer")))]
pub async fn approve<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<PeerRequest>,
) -> Reply<Option<TrustView>> {
    Reply(api.approve(req.peer).await)
}

/// Reject a pending trust request.
#[utoipa::path(post, path = "/v1/trust/reject", tag = "trust", request_body = RejectRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<Option<TrustView>>),
        (status = 404, body = ErrorBody, description = "no pending request from that peer")))]
pub async fn reject<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<RejectRequest>,
) -> Reply<Option<TrustView>> {
    Reply(api.reject(req).await)
}

/// Withdraw trust; the tunnel goes down on both sides.
#[utoipa::path(post, path = "/v1/trust/untrust", tag = "trust", request_body = PeerRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<Option<TrustView>>)))]
pub async fn untrust<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<PeerRequest>,
) -> Reply<Option<TrustView>> {
    Reply(api.untrust(req.peer).await)
}

/// Every trust record, then the static peers.
#[utoipa::path(get, path = "/v1/trust", tag = "trust",
    responses((status = 200, description = "the ok envelope", body = OkBody<TrustList>)))]
pub async fn trust<A: Api>(State(api): ApiState<A>) -> Reply<TrustList> {
    Reply(api.trust().await)
}

/// Look an exact hostname up at the registries: key and address, never an endpoint.
#[utoipa::path(get, path = "/v1/find/{hostname}", tag = "trust",
    params(("hostname" = String, Path, description = "the hostname (`.pilot` suffix allowed)")),
    responses((status = 200, description = "the ok envelope", body = OkBody<Option<Lookup>>),
        (status = 404, body = ErrorBody, description = "no registry knows the name")))]
pub async fn find<A: Api>(
    State(api): ApiState<A>,
    PathArg(hostname): PathArg<String>,
) -> Reply<Option<Lookup>> {
    Reply(api.find(hostname).await)
}

/// Probe a trusted peer over its current path: round-trip times and the path.
#[utoipa::path(post, path = "/v1/ping", tag = "node", request_body = PingRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<PingReport>),
        (status = 502, body = ErrorBody, description = "the peer has no path yet")))]
pub async fn ping<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<PingRequest>,
) -> Reply<PingReport> {
    Reply(api.ping(req).await)
}

/// Queue a message for a peer's inbox; delivered with retries until the peer acks.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendMessageRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<SentMessage>),
        (status = 403, body = ErrorBody, description = "the peer is not trusted")))]
pub async fn send_message<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<SendMessageRequest>,
) -> Reply<SentMessage> {
    Reply(api.send_message(req).await)
}

/// The messages in our inbox, oldest first.
#[utoipa::path(get, path = "/v1/messages/inbox", tag = "messages", params(InboxQuery),
    responses((status = 200, description = "the ok envelope", body = OkBody<InboxData>)))]
pub async fn inbox<A: Api>(
    State(api): ApiState<A>,
    QueryArgs(q): QueryArgs<InboxQuery>,
) -> Reply<InboxData> {
    Reply(api.inbox(q.clear))
}

/// Messages not yet acked by their recipients.
#[utoipa::path(get, path = "/v1/messages/outbox", tag = "messages",
    responses((status = 200, description = "the ok envelope", body = OkBody<OutboxData>)))]
pub async fn outbox<A: Api>(State(api): ApiState<A>) -> Reply<OutboxData> {
    Reply(api.outbox())
}

/// Forward an overlay TCP port to a local `HOST:PORT`.
#[utoipa::path(post, path = "/v1/expose", tag = "expose", request_body = ExposeRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<Exposed>),
        (status = 409, body = ErrorBody, description = "the port is taken")))]
pub async fn expose<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<ExposeRequest>,
) -> Reply<Exposed> {
    Reply(api.expose(req).await)
}

/// The exposed ports, by port.
#[utoipa::path(get, path = "/v1/expose", tag = "expose",
    responses((status = 200, description = "the ok envelope", body = OkBody<ExposeList>)))]
pub async fn expose_list<A: Api>(State(api): ApiState<A>) -> Reply<ExposeList> {
    Reply(Ok(api.expose_list()))
}

/// Stop forwarding an overlay port; `data` is the removed entry.
#[utoipa::path(delete, path = "/v1/expose/{port}", tag = "expose",
    params(("port" = u16, Path, description = "the overlay port")),
    responses((status = 200, description = "the ok envelope", body = OkBody<Exposed>),
        (status = 404, body = ErrorBody, description = "the port was not exposed")))]
pub async fn expose_remove<A: Api>(
    State(api): ApiState<A>,
    PathArg(port): PathArg<u16>,
) -> Reply<Exposed> {
    Reply(api.expose_remove(port))
}

/// Open a byte stream to a peer's overlay port. Send `Connection: Upgrade` and
/// `Upgrade: pilot-stream`; on success the answer is `101 Switching Protocols` whose
/// `Pilot-Stream` header holds `{"status":"ok","data":ConnectData}`, then the connection
/// carries the stream's bytes both ways (half-close passes through).
#[utoipa::path(post, path = "/v1/connect", tag = "streams", params(ConnectQuery),
    responses((status = 101, description = "switched to the stream; `Pilot-Stream` header: OkBody<ConnectData>",
            headers(("pilot-stream" = String, description = "the ok envelope with ConnectData, JSON"))),
        (status = 403, body = ErrorBody, description = "the peer is not trusted"),
        (status = 502, body = ErrorBody, description = "nothing listens on the peer's port"),
        (status = 504, body = ErrorBody, description = "no answer from the peer")))]
pub async fn connect<A: Api>(
    State(api): ApiState<A>,
    QueryArgs(q): QueryArgs<ConnectQuery>,
    req: axum::extract::Request,
) -> Response {
    upgrade(req, api.connect(q)).await
}

/// Wait for one trusted peer to connect to our overlay port, then carry its stream. The same
/// upgrade as `/v1/connect`; the 101 comes once a peer connected, with ListenData.
#[utoipa::path(post, path = "/v1/listen", tag = "streams", params(ListenQuery),
    responses((status = 101, description = "a peer connected; `Pilot-Stream` header: OkBody<ListenData>",
            headers(("pilot-stream" = String, description = "the ok envelope with ListenData, JSON"))),
        (status = 409, body = ErrorBody, description = "the port is taken")))]
pub async fn listen<A: Api>(
    State(api): ApiState<A>,
    QueryArgs(q): QueryArgs<ListenQuery>,
    req: axum::extract::Request,
) -> Response {
    upgrade(req, api.listen(q.port)).await
}

/// Live events: trust requests and decisions, peers trusted and untrusted, path changes,
/// messages received; `lagged` when this client missed some.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    responses((status = 200, content_type = "text/event-stream",
        description = "server-sent events; each `data:` is an ApiEvent, each `event:` its `type`",
        body = ApiEvent)))]
pub async fn events<A: Api>(State(api): ApiState<A>) -> impl IntoResponse {
    let hello =
        stream::once(async { Ok::<_, Infallible>(Event::default().comment("pilot events v1")) });
    let events = api
        .subscribe()
        .into_stream()
        .map(|e| Ok::<_, Infallible>(sse_event(&e)));
    Sse::new(hello.chain(events)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Forget the key learned on first use for a configured registry: the node registers with
/// it again and learns its key anew. A key pinned in the config is refused.
#[utoipa::path(post, path = "/v1/registry/forget-key", tag = "node",
    request_body = ForgetRegistryKeyRequest,
    responses((status = 200, description = "the ok envelope: the registry after forgetting", body = OkBody<RegistryKeyView>),
        (status = 400, body = ErrorBody, description = "not HOST:PORT, or the key is pinned in the config"),
        (status = 404, body = ErrorBody, description = "not a configured registry")))]
pub async fn forget_registry_key<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<ForgetRegistryKeyRequest>,
) -> Reply<RegistryKeyView> {
    Reply(api.forget_registry_key(req).await)
}
