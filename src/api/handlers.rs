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
mod dgram;
pub use dgram::*;

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

/// Queue a message for a peer's inbox; delivered with retries until the peer acks. With
/// `wait_ms`, also wait that long for the peer's reply (`reply` in the answer).
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendMessageRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<SentMessage>),
        (status = 400, body = ErrorBody, description = "bad type, invalid JSON or base64, too large"),
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
    Reply(api.inbox(q))
}

/// One message of our inbox, by id.
#[utoipa::path(get, path = "/v1/messages/inbox/{id}", tag = "messages",
    params(("id" = String, Path, description = "the message id (32 hex digits)")),
    responses((status = 200, description = "the ok envelope", body = OkBody<InboxEntry>),
        (status = 404, body = ErrorBody, description = "`unknown_message`: the inbox holds no such message")))]
pub async fn inbox_read<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<String>,
) -> Reply<InboxEntry> {
    Reply(api.inbox_read(id))
}

/// Answer a message we received: the reply is a message to its sender carrying
/// `in_reply_to`, delivered like any message (kept and retried until acked).
#[utoipa::path(post, path = "/v1/messages/{id}/reply", tag = "messages",
    params(("id" = String, Path, description = "the id of the received message")),
    request_body = ReplyRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<SentMessage>),
        (status = 404, body = ErrorBody, description = "`unknown_message`: no message with that id was received"),
        (status = 403, body = ErrorBody, description = "its sender is no longer trusted")))]
pub async fn reply<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<String>,
    JsonBody(req): JsonBody<ReplyRequest>,
) -> Reply<SentMessage> {
    Reply(api.reply(id, req).await)
}

/// Where events are POSTed, and the webhook's counters.
#[utoipa::path(get, path = "/v1/webhook", tag = "events",
    responses((status = 200, description = "the ok envelope", body = OkBody<WebhookStatus>)))]
pub async fn webhook<A: Api>(State(api): ApiState<A>) -> Reply<WebhookStatus> {
    Reply(Ok(api.webhook()))
}

/// POST every live event to `url` as JSON (kept in the state directory across restarts).
#[utoipa::path(put, path = "/v1/webhook", tag = "events", request_body = WebhookRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<WebhookStatus>),
        (status = 400, body = ErrorBody, description = "not an http:// URL")))]
pub async fn set_webhook<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<WebhookRequest>,
) -> Reply<WebhookStatus> {
    Reply(api.set_webhook(req))
}

/// Stop POSTing events; events still queued are dropped.
#[utoipa::path(delete, path = "/v1/webhook", tag = "events",
    responses((status = 200, description = "the ok envelope", body = OkBody<WebhookStatus>)))]
pub async fn clear_webhook<A: Api>(State(api): ApiState<A>) -> Reply<WebhookStatus> {
    Reply(api.clear_webhook())
}

/// Messages not yet acked by their recipients.
#[utoipa::path(get, path = "/v1/messages/outbox", tag = "messages",
    responses((status = 200, description = "the ok envelope", body = OkBody<OutboxData>)))]
pub async fn outbox<A: Api>(State(api): ApiState<A>) -> Reply<OutboxData> {
    Reply(api.outbox())
}

/// Queue a file for a peer's `received/`; sent with retries and resumed until the peer has
/// verified its SHA-256.
#[utoipa::path(post, path = "/v1/files", tag = "files", request_body = SendFileRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<Transfer>),
        (status = 400, body = ErrorBody, description = "not a readable regular file, or a bad name"),
        (status = 403, body = ErrorBody, description = "the peer is not trusted")))]
pub async fn send_file<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<SendFileRequest>,
) -> Reply<Transfer> {
    Reply(api.send_file(req).await)
}

/// Outgoing and incoming file transfers with their progress.
#[utoipa::path(get, path = "/v1/files/transfers", tag = "files",
    responses((status = 200, description = "the ok envelope", body = OkBody<TransfersData>)))]
pub async fn transfers<A: Api>(State(api): ApiState<A>) -> Reply<TransfersData> {
    Reply(api.transfers())
}

/// The complete, verified files in `received/`, oldest first.
#[utoipa::path(get, path = "/v1/files/received", tag = "files",
    responses((status = 200, description = "the ok envelope", body = OkBody<ReceivedData>)))]
pub async fn received<A: Api>(State(api): ApiState<A>) -> Reply<ReceivedData> {
    Reply(api.received(false))
}

/// Lists the files in `received/` and deletes exactly those.
#[utoipa::path(delete, path = "/v1/files/received", tag = "files",
    responses((status = 200, description = "the ok envelope", body = OkBody<ReceivedData>)))]
pub async fn clear_received<A: Api>(State(api): ApiState<A>) -> Reply<ReceivedData> {
    Reply(api.received(true))
}

/// Forward an overlay TCP port to a local `HOST:PORT`.
/// Forward an overlay TCP port (or, with `"protocol": "udp"`, a UDP port) to a local
/// `HOST:PORT`.
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

/// Stop forwarding an overlay UDP port; `data` is the removed entry.
#[utoipa::path(delete, path = "/v1/expose/udp/{port}", tag = "expose",
    params(("port" = u16, Path, description = "the overlay UDP port")),
    responses((status = 200, description = "the ok envelope", body = OkBody<Exposed>),
        (status = 404, body = ErrorBody, description = "the port was not exposed")))]
pub async fn expose_remove_udp<A: Api>(
    State(api): ApiState<A>,
    PathArg(port): PathArg<u16>,
) -> Reply<Exposed> {
    Reply(api.expose_remove_udp(port))
}

/// The resolver for `NAME.pilot`: where it listens, its systemd-resolved wiring, counters.
#[utoipa::path(get, path = "/v1/dns", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<DnsStatus>)))]
pub async fn dns_status<A: Api>(State(api): ApiState<A>) -> Reply<DnsStatus> {
    Reply(api.dns_status())
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

/// A short status: uptime, peers up, message queues, the last warnings and errors.
#[utoipa::path(get, path = "/v1/health", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<HealthData>)))]
pub async fn health<A: Api>(State(api): ApiState<A>) -> Reply<HealthData> {
    Reply(Ok(api.health().await))
}

/// Describe a node at the registries by hostname, address, IPv6 or key: key, address, IPv6,
/// hostname and tags (never an endpoint). An address finds only a node online at a registry.
#[utoipa::path(get, path = "/v1/lookup/{peer}", tag = "trust",
    params(("peer" = String, Path, description = "hostname, address, overlay IPv6 or public key (percent-encoded)")),
    responses((status = 200, description = "the ok envelope", body = OkBody<NodeView>),
        (status = 400, body = ErrorBody, description = "not a peer reference"),
        (status = 404, body = ErrorBody, description = "no registry knows the node"),
        (status = 502, body = ErrorBody, description = "no registry is configured")))]
pub async fn lookup_node<A: Api>(
    State(api): ApiState<A>,
    PathArg(peer): PathArg<String>,
) -> Reply<NodeView> {
    Reply(api.lookup_node(peer).await)
}

/// Replace our tags at every registry (an empty list clears them); they are kept for later
/// registrations.
#[utoipa::path(put, path = "/v1/tags", tag = "node", request_body = SetTagsRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<Registration>),
        (status = 400, body = ErrorBody, description = "a tag is not 1-24 lowercase letters, digits and hyphens, or more than 8")))]
pub async fn set_tags<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<SetTagsRequest>,
) -> Reply<Registration> {
    Reply(api.set_tags(req.tags).await)
}

/// Give up our hostname at every registry.
#[utoipa::path(delete, path = "/v1/hostname", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<Registration>)))]
pub async fn clear_hostname<A: Api>(State(api): ApiState<A>) -> Reply<Registration> {
    Reply(api.clear_hostname().await)
}

/// Ask every registry to forget us (signed): hostname, tags and registration. The daemon stops
/// registering until it restarts.
#[utoipa::path(post, path = "/v1/deregister", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<Registration>)))]
pub async fn deregister<A: Api>(State(api): ApiState<A>) -> Reply<Registration> {
    Reply(api.deregister().await)
}

/// What the network lets this node do: each registry's reachability, our reflexive
/// addresses, whether our NAT maps endpoint-independently, clock skew, TUN availability.
#[utoipa::path(get, path = "/v1/netcheck", tag = "node",
    responses((status = 200, description = "the ok envelope", body = OkBody<NetcheckData>)))]
pub async fn netcheck<A: Api>(State(api): ApiState<A>) -> Reply<NetcheckData> {
    Reply(api.netcheck().await)
}

/// The streams the daemon holds for API clients (`connect`, `listen`): id, service, peer,
/// port, bytes each way, age.
#[utoipa::path(get, path = "/v1/connections", tag = "streams",
    responses((status = 200, description = "the ok envelope", body = OkBody<ConnectionList>)))]
pub async fn connections<A: Api>(State(api): ApiState<A>) -> Reply<ConnectionList> {
    Reply(Ok(api.connections()))
}

/// Abort a stream: both its overlay connection and its API connection close.
#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "streams",
    params(("id" = u64, Path, description = "the connection's id")),
    responses((status = 200, description = "the ok envelope: the connection as it was", body = OkBody<ConnectionView>),
        (status = 404, body = ErrorBody, description = "no such connection")))]
pub async fn disconnect<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<u64>,
) -> Reply<ConnectionView> {
    Reply(api.disconnect(id))
}
