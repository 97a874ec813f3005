//! Every request and response of the local API, typed: the daemon serialises these, the CLI
//! and the SDKs read them back, and the OpenAPI document is generated from them.
//!
//! Records that lower layers own (the peer table's [`PeerStatus`], the node's trust views, the
//! message store's entries, exposed ports) are re-exported here rather than copied.

use std::borrow::Cow;
use std::net::{Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::mapping::{Addr48, Hostname};

pub use crate::node::views::{
    HostnameClaim, Lookup, NodeEvent, PendingList, PendingView, PingReport, RegistryKeySource,
    RegistryKeyView, TrustList, TrustStanding, TrustView,
};
pub use crate::node::views::{NodeView, Registration};
pub use crate::services::files::{
    Direction, ReceivedFile, RefuseCode, Transfer, TransferError, TransferState,
};
pub use crate::services::message_store::{InboxEntry, MessageType, OutboxEntry, WireMessage};
pub use crate::userspace::expose::Exposed;
pub use crate::wg::{CountersSnapshot, PeerStatus};

mod pubsub_tasks;
pub use pubsub_tasks::*;
mod dgram;
pub use dgram::*;

/// The largest request body the daemon reads (and the largest request head).
pub const MAX_BODY: usize = 64 * 1024;

fn string_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .into()
}

impl PartialSchema for PublicKey {
    fn schema() -> RefOr<Schema> {
        string_schema("An Ed25519 public key, standard base64 (44 characters).")
    }
}
impl ToSchema for PublicKey {
    fn name() -> Cow<'static, str> {
        "PublicKey".into()
    }
}

impl PartialSchema for Addr48 {
    fn schema() -> RefOr<Schema> {
        string_schema("A 48-bit overlay address in canonical text, `xxxx.xxxx.xxxx` (hex).")
    }
}
impl ToSchema for Addr48 {
    fn name() -> Cow<'static, str> {
        "Addr48".into()
    }
}

impl PartialSchema for Hostname {
    fn schema() -> RefOr<Schema> {
        string_schema("A hostname: 1-63 lowercase letters, digits and hyphens.")
    }
}
impl ToSchema for Hostname {
    fn name() -> Cow<'static, str> {
        "Hostname".into()
    }
}

/// The `status` of a success envelope: always `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OkStatus {
    /// Success.
    Ok,
}

/// The `status` of an error envelope: always `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    /// Failure.
    Error,
}

/// A success reply: `{"status":"ok","data":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OkBody<T> {
    /// Always `ok`.
    pub status: OkStatus,
    /// The result.
    pub data: T,
}

impl<T> OkBody<T> {
    /// Wraps a result.
    pub fn new(data: T) -> Self {
        OkBody {
            status: OkStatus::Ok,
            data,
        }
    }
}

/// An error reply: `{"status":"error","code":…,"message":…,"hint":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Always `error`.
    pub status: ErrorStatus,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// What failed, for people.
    pub message: String,
    /// What to do about it, for people.
    pub hint: String,
}

impl From<PilotError> for ErrorBody {
    fn from(e: PilotError) -> Self {
        ErrorBody {
            status: ErrorStatus::Error,
            code: e.code,
            message: e.message,
            hint: e.hint,
        }
    }
}

/// A reply whose data is not known statically (what `pilotctl --json` prints):
/// `{"status":"ok","data":…}` or `{"status":"error","code":…,"message":…,"hint":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Envelope {
    /// Success with its data.
    Ok {
        /// The command's result.
        data: serde_json::Value,
    },
    /// Failure.
    Error(PilotError),
}

impl Envelope {
    /// A success envelope around any serialisable data.
    pub fn ok<T: Serialize>(data: &T) -> Self {
        match serde_json::to_value(data) {
            Ok(data) => Envelope::Ok { data },
            Err(e) => Envelope::Error(PilotError::internal(format!("cannot encode reply: {e}"))),
        }
    }

    /// Turns the envelope into a result.
    pub fn into_result(self) -> Result<serde_json::Value, PilotError> {
        match self {
            Envelope::Ok { data } => Ok(data),
            Envelope::Error(e) => Err(e),
        }
    }
}

/// The HTTP status that goes with an error code.
pub fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::InvalidArgument => 400,
        ErrorCode::Unauthorized => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::UnknownMessage => 404,
        ErrorCode::AlreadyExists => 409,
        ErrorCode::Internal => 500,
        ErrorCode::ConnectionFailed => 502,
        ErrorCode::NotRunning => 503,
        ErrorCode::Timeout => 504,
    }
}

// ---- Request bodies and queries ----

/// `PUT /v1/hostname`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHostnameRequest {
    /// The new name.
    pub hostname: String,
}

/// `POST /v1/trust/handshake`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandshakeRequest {
    /// Hostname, address, overlay IPv6 or public key.
    pub peer: String,
    /// Why, shown to the peer (at most 256 bytes).
    #[serde(default)]
    pub justification: Option<String>,
}

/// `POST /v1/trust/approve` and `POST /v1/trust/untrust`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    /// Hostname, address, overlay IPv6 or public key.
    pub peer: String,
}

/// `POST /v1/trust/reject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Whose request.
    pub peer: String,
    /// Why, shown to the peer.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PingRequest {
    /// Hostname, address, overlay IPv6 or public key.
    pub peer: String,
    /// How many probes (1-100, default 4), 250 ms apart.
    #[serde(default)]
    pub count: Option<u32>,
}

/// `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// Hostname, address, overlay IPv6 or public key.
    pub peer: String,
    /// The payload: text, JSON text (`json`), or base64 (`binary`).
    pub data: String,
    /// `text` (default), `json` (validated) or `binary` (`data` is base64); `kind` is
    /// accepted as another name of this field.
    #[serde(default, rename = "type", alias = "kind")]
    pub kind: Option<String>,
    /// Wait up to this many ms for the peer's reply (a message whose `in_reply_to` is this
    /// message's id); the answer then carries `reply` (null if none came in time; a later
    /// reply lands in the inbox). At most 600 000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// `POST /v1/messages/{id}/reply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    /// The payload, as in `POST /v1/messages`.
    pub data: String,
    /// `text` (default), `json` or `binary`; `kind` is accepted as another name.
    #[serde(default, rename = "type", alias = "kind")]
    pub kind: Option<String>,
}

/// `PUT /v1/webhook`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where each event is POSTed as JSON: `http://HOST[:PORT][/PATH]`.
    pub url: String,
}

/// `POST /v1/files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendFileRequest {
    /// Hostname, address, overlay IPv6 or public key.
    pub peer: String,
    /// Absolute path of the file on the daemon's host (read when it is sent; it must not
    /// change until it is delivered).
    pub path: String,
    /// The name to offer (default: the file's own name).
    #[serde(default)]
    pub name: Option<String>,
    /// Wait up to this many ms until the transfer is final: `done` (the peer has the file,
    /// verified, in its `received/`) or `failed`; the answer is then the transfer as it stands
    /// (still `queued` or `sending` when the time ran out: the transfer goes on). At most
    /// 86 400 000 (a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// `POST /v1/registry/forget-key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRegistryKeyRequest {
    /// The registry, `HOST:PORT` as configured.
    pub registry: String,
}

/// `GET /v1/messages/inbox`'s query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Delete the messages after listing them (only those listed).
    #[serde(default)]
    pub clear: bool,
    /// Only from this sender: hostname, address, overlay IPv6 or public key.
    #[serde(default)]
    pub from: Option<String>,
    /// Only those received at or after this time (unix ms).
    #[serde(default)]
    pub since: Option<u64>,
    /// At most this many, the oldest first.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `POST /v1/expose`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposeRequest {
    /// The overlay port.
    pub port: u16,
    /// The local target, `HOST:PORT`.
    pub to: String,
    /// Allow a link-local or cloud-metadata target (refused with `unauthorized` otherwise).
    #[serde(default)]
    pub allow_link_local: bool,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: crate::userspace::expose::ExposeProtocol,
}

/// `POST /v1/connect`'s query (an HTTP Upgrade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConnectQuery {
    /// Hostname, address, overlay IPv6 or public key.
    pub peer: String,
    /// The peer's overlay TCP port.
    pub port: u16,
}

/// `POST /v1/listen`'s query (an HTTP Upgrade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListenQuery {
    /// Our overlay TCP port.
    pub port: u16,
}

// ---- Response data ----

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InfoData {
    /// addr48 in canonical text.
    pub address: String,
    /// Full overlay IPv6 address.
    pub ipv6: String,
    /// Claimed hostname, if any.
    pub hostname: Option<String>,
    /// Ed25519 public key, base64.
    pub public_key: String,
    /// `tun` or `userspace` (what runs, not what was asked).
    pub mode: String,
    /// Why this mode was chosen (e.g. why auto fell back to userspace).
    pub mode_reason: String,
    /// The overlay network /48.
    pub network: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Number of peers in the peer table.
    pub peers: usize,
    /// The daemon's process id.
    pub pid: u32,
    /// The state directory.
    pub state_dir: String,
    /// UDP port of the tunnel socket, once the data plane runs.
    pub listen_port: Option<u16>,
    /// Where the SOCKS5 proxy listens (userspace mode).
    #[serde(default)]
    pub socks5: Option<String>,
    /// How SOCKS5 clients authenticate when the proxy runs: `none` or `password` (RFC 1929).
    #[serde(default)]
    pub socks5_auth: Option<String>,
    /// With `password`: the owner-only file holding `USERNAME:PASSWORD` (never the password
    /// itself here).
    #[serde(default)]
    pub socks5_credentials: Option<String>,
    /// pilot version.
    pub version: String,
    /// Liveness of the data plane's threads (a dead one also ends the daemon, status 70).
    #[serde(default)]
    pub data_plane: Option<crate::wg::DataPlaneHealth>,
    /// Each configured registry and its key: pinned in the config, learned on first use and
    /// remembered, or unknown (empty without registries, or from an older daemon).
    #[serde(default)]
    pub registries: Vec<RegistryKeyView>,
    /// Where the resolver for `NAME.pilot` answers (its overlay address in TUN mode, else its
    /// loopback listener), if it runs.
    #[serde(default)]
    pub dns: Option<String>,
}

/// `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeersData {
    /// One entry per peer, sorted by address.
    pub peers: Vec<PeerStatus>,
    /// Drops that belong to no known peer (`null` when no data plane runs).
    pub counters: Option<CountersSnapshot>,
}

/// `POST /v1/shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShutdownData {
    /// Always true: the daemon stops after answering.
    pub stopping: bool,
}

/// Whether a message reached the peer's inbox yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// The peer acked it (it is in the peer's inbox).
    Delivered,
    /// Stored in our outbox; retried until the peer acks.
    Queued,
    /// The peer refused it at once (its inbox quota for us, or in total, is reached; see
    /// `refused`). Not final: it stays in our outbox and is retried until the peer makes room
    /// and acks, so sending it again would only duplicate it.
    Refused,
}

/// `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SentMessage {
    /// The message id (the receiver dedupes by sender and id).
    pub id: String,
    /// The recipient's public key.
    pub to: PublicKey,
    /// The recipient's overlay IPv6.
    #[schema(value_type = String)]
    pub to_ipv6: Ipv6Addr,
    /// Delivered now, queued for retries, or refused by the peer (and queued for retries).
    pub status: DeliveryStatus,
    /// Why the peer refused it (with `status` `refused`; the peer's text: escape it before
    /// showing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// For a reply: the id of the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// With `wait_ms`: the peer's reply, or `null` when none came in time (a later one lands
    /// in the inbox). Absent without `wait_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Option<InboxEntry>>,
}

/// `GET /v1/webhook` (and the answer to `PUT` and `DELETE`): where events go and how that
/// went since the daemon started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookStatus {
    /// The URL events are POSTed to, if one is set.
    pub url: Option<String>,
    /// Events the webhook answered with a 2xx status.
    pub delivered: u64,
    /// Events given up on after every attempt failed.
    pub failed: u64,
    /// Events dropped because the queue was full (a slow or dead webhook).
    pub dropped: u64,
    /// Events waiting in the queue now.
    pub queued: usize,
    /// The queue's capacity (`[webhook] queue`).
    pub queue_capacity: usize,
}

/// `GET /v1/messages/inbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InboxData {
    /// The messages, oldest first.
    pub messages: Vec<InboxEntry>,
    /// Whether they were deleted after listing.
    pub cleared: bool,
}

/// `GET /v1/messages/outbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutboxData {
    /// Messages not yet acked by their recipients.
    pub outbox: Vec<OutboxEntry>,
}

/// `GET /v1/files/transfers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransfersData {
    /// Outgoing transfers (queued, running and finished, oldest first), then incoming ones
    /// (partial files, arriving or waiting for their sender).
    pub transfers: Vec<Transfer>,
}

/// `GET /v1/files/received` and `DELETE /v1/files/received`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReceivedData {
    /// Complete, verified files in `received/`, oldest first.
    pub files: Vec<ReceivedFile>,
    /// Whether they were deleted after listing.
    pub cleared: bool,
}

/// `GET /v1/expose`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExposeList {
    /// The exposed ports.
    pub exposed: Vec<Exposed>,
}

/// `GET /v1/dns`: the resolver for `NAME.pilot` (see docs/PROTOCOL.md, "Names").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DnsStatus {
    /// Where it listens (`[fdc5:7a3e:91b4::53]:53` in TUN mode, plus `[dns] loopback`);
    /// empty when it does not run.
    pub listening: Vec<String>,
    /// Its overlay address on the TUN device (TUN mode), for resolv.conf or a resolver's
    /// `pilot` zone.
    pub address: Option<String>,
    /// The interface it serves (TUN mode).
    pub link: Option<String>,
    /// TTL of every answer (seconds): a revoked peer stops resolving in caches within it.
    pub ttl_secs: u32,
    /// systemd-resolved wiring of the link: `configured`, `absent`, `off` or `error: …`.
    pub resolved: String,
    /// Answers with an address.
    pub answered: u64,
    /// NOERROR answers with no record (A queries, other types).
    pub nodata: u64,
    /// NXDOMAIN answers (unknown and untrusted names).
    pub nxdomain: u64,
    /// REFUSED answers (names outside `.pilot`).
    pub refused: u64,
    /// FORMERR and NOTIMP answers.
    pub errors: u64,
    /// Datagrams dropped as malformed (not a DNS query).
    pub malformed: u64,
    /// Datagrams dropped because they came from a peer, not from this host.
    pub not_local: u64,
}

/// The first reply of a `connect` stream (in the 101 response's `Pilot-Stream` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectData {
    /// The peer's public key.
    pub peer: PublicKey,
    /// Its overlay IPv6.
    #[schema(value_type = String)]
    pub ipv6: Ipv6Addr,
    /// Its port.
    pub port: u16,
}

/// The first reply of a `listen` stream, once a peer connected (in the 101 response's
/// `Pilot-Stream` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListenData {
    /// Our overlay port.
    pub port: u16,
    /// The connecting peer's overlay IPv6.
    #[schema(value_type = String)]
    pub peer_ipv6: Ipv6Addr,
    /// Its public key, if it is in the peer table.
    pub peer: Option<PublicKey>,
    /// Its hostname, if known.
    pub peer_hostname: Option<String>,
}

/// A stream the daemon holds for an API client (`GET /v1/connections`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    /// Its id (for `DELETE /v1/connections/{id}`).
    pub id: u64,
    /// `connect` or `listen`.
    pub service: String,
    /// The peer's overlay IPv6.
    #[schema(value_type = String)]
    pub peer_ipv6: Ipv6Addr,
    /// The overlay port (the peer's for `connect`, ours for `listen`).
    pub port: u16,
    /// Bytes from the peer.
    pub rx_bytes: u64,
    /// Bytes to the peer.
    pub tx_bytes: u64,
    /// Seconds since it opened.
    pub age_secs: u64,
}

/// `GET /v1/connections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionList {
    /// The streams held, by id.
    pub connections: Vec<ConnectionView>,
}

/// `GET /v1/netcheck`: what the network lets this node do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NetcheckData {
    /// The mode that runs (`tun` or `userspace`).
    pub mode: String,
    /// Whether a TUN device could be made here now.
    pub tun_available: bool,
    /// Why not, when it could not.
    pub tun_unavailable_reason: Option<String>,
    /// The UDP port of our tunnel socket.
    pub local_port: u16,
    /// Each configured registry.
    pub registries: Vec<crate::node::registry_client::RegistryStatus>,
    /// Our reflexive addresses, as the registries see us (distinct).
    #[schema(value_type = Vec<String>)]
    pub reflexive: Vec<SocketAddr>,
    /// `endpoint-independent` (every registry sees the same public address and port: hole
    /// punching works), `endpoint-dependent` (the port differs per destination: direct paths
    /// may need the relay), `no-nat` (the reflexive address is our own port on a local
    /// address), or `unknown` (fewer than two registries answered).
    pub nat: String,
    /// The largest clock correction a registry reported, ms (registries refuse requests
    /// skewed by more than their window).
    pub clock_skew_ms: i64,
}

/// `PUT /v1/tags`'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTagsRequest {
    /// At most 8 tags of 1-24 lowercase letters, digits and hyphens; empty clears them.
    pub tags: Vec<String>,
}

/// `GET /v1/health`: a short status for scripts and operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthData {
    /// `ok` when the data plane runs and nothing was logged at warn or error level in the last
    /// minute; else `degraded`.
    pub status: String,
    /// pilot version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// `tun` or `userspace`.
    pub mode: String,
    /// Peers in the peer table.
    pub peers: usize,
    /// Peers whose last WireGuard handshake is under 180 s old (a session is up).
    pub peers_up: usize,
    /// Configured registries.
    pub registries: usize,
    /// Messages in our inbox (`null` without the message service).
    pub inbox: Option<usize>,
    /// Sent messages not yet acked (`null` without the message service).
    pub outbox: Option<usize>,
    /// Whether every data-plane thread runs.
    pub data_plane_alive: bool,
    /// The last warnings and errors the daemon logged (at most 10), oldest first.
    pub last_errors: Vec<LoggedProblem>,
}

/// One warning or error from the daemon's log (`GET /v1/health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoggedProblem {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields, as the log shows them.
    pub message: String,
}

// ---- Events ----

/// A message arrived in our inbox (an event of `GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageReceived {
    /// The stored message, as `GET /v1/messages/inbox` lists it.
    pub message: InboxEntry,
}

/// A file arrived complete and verified in `received/` (an event of `GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileReceived {
    /// The file, as `GET /v1/files/received` lists it.
    pub file: ReceivedFile,
}

/// One item of the live event stream `GET /v1/events`. On the wire each is a server-sent
/// event whose `event:` is the `type` and whose `data:` is this object as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ApiEvent {
    /// Trust, peers and paths (`trust_request`, `trust_rejected`, `peer_trusted`,
    /// `peer_untrusted`, `path_changed`).
    Node(NodeEvent),
    /// `message_received`, `lagged`.
    Api(StreamEvent),
}

/// Events of the stream itself and of the services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A message arrived in our inbox.
    MessageReceived(MessageReceived),
    /// A file arrived complete and verified in `received/`.
    FileReceived(FileReceived),
    /// A pub/sub event arrived on one of our subscriptions.
    PubsubEvent(PubsubReceived),
    /// A task we submitted or work on changed state.
    TaskChanged(TaskChanged),
    /// This client read too slowly and missed `missed` events (they are not replayed).
    Lagged {
        /// How many events were dropped for this client.
        missed: u64,
    },
}

impl ApiEvent {
    /// The event's `type`, also its SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiEvent::Node(NodeEvent::TrustRequest { .. }) => "trust_request",
            ApiEvent::Node(NodeEvent::TrustRejected { .. }) => "trust_rejected",
            ApiEvent::Node(NodeEvent::PeerTrusted { .. }) => "peer_trusted",
            ApiEvent::Node(NodeEvent::PeerUntrusted { .. }) => "peer_untrusted",
            ApiEvent::Node(NodeEvent::PathChanged { .. }) => "path_changed",
            ApiEvent::Node(NodeEvent::PeerUp { .. }) => "peer_up",
            ApiEvent::Node(NodeEvent::PeerDown { .. }) => "peer_down",
            ApiEvent::Api(StreamEvent::MessageReceived(_)) => "message_received",
            ApiEvent::Api(StreamEvent::FileReceived(_)) => "file_received",
            ApiEvent::Api(StreamEvent::Lagged { .. }) => "lagged",
            ApiEvent::Api(StreamEvent::PubsubEvent(_)) => "pubsub_event",
            ApiEvent::Api(StreamEvent::TaskChanged(_)) => "task_changed",
        }
    }
}

// ---- The client's commands ----

/// A command for the daemon, as the CLI names it; [`Request::route`] says which HTTP request
/// carries it (this enum is not itself a wire format).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Identity, address, mode, uptime.
    Info {},
    /// Change the hostname this node claims.
    SetHostname {
        /// The new name.
        hostname: String,
    },
    /// Graceful shutdown.
    Shutdown {},
    /// The peer table with per-peer traffic and drop counters.
    Peers {},
    /// Ask a peer for trust.
    Handshake {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// Why, shown to the peer (at most 256 bytes).
        justification: Option<String>,
    },
    /// Trust requests waiting for our decision.
    Pending {},
    /// Approve a pending request.
    Approve {
        /// Whose.
        peer: String,
    },
    /// Reject a pending request.
    Reject {
        /// Whose.
        peer: String,
        /// Why, shown to the peer.
        reason: Option<String>,
    },
    /// Withdraw trust (tears the tunnel down on both sides).
    Untrust {
        /// From whom.
        peer: String,
    },
    /// Every trust record.
    Trust {},
    /// Open a byte stream to a peer's overlay port (an HTTP Upgrade).
    Connect {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// The peer's overlay TCP port.
        port: u16,
    },
    /// Wait for one peer to connect to our overlay port (an HTTP Upgrade).
    Listen {
        /// Our overlay TCP port.
        port: u16,
    },
    /// Queue a message for a peer's inbox (delivered with retries until acked).
    SendMessage {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// The payload (for `json`, JSON text; for `binary`, base64).
        data: String,
        /// `text` (default), `json` or `binary`.
        kind: Option<String>,
        /// Wait this many ms for the peer's reply.
        wait_ms: Option<u64>,
    },
    /// Answer a message we received.
    Reply {
        /// The id of the message answered.
        id: String,
        /// The payload.
        data: String,
        /// `text` (default), `json` or `binary`.
        kind: Option<String>,
    },
    /// The messages in our inbox.
    Inbox {
        /// Delete them after listing.
        clear: bool,
        /// Only from this peer.
        from: Option<String>,
        /// Only those received at or after this time (unix ms).
        since: Option<u64>,
        /// At most this many.
        limit: Option<usize>,
    },
    /// One message of our inbox.
    InboxRead {
        /// Its id.
        id: String,
    },
    /// POST every event to this URL.
    SetWebhook {
        /// `http://HOST[:PORT][/PATH]`.
        url: String,
    },
    /// Stop POSTing events.
    ClearWebhook {},
    /// The webhook and its counters.
    Webhook {},
    /// Messages not yet acked by their recipients.
    Outbox {},
    /// Look up an exact hostname at the registries.
    Find {
        /// The hostname.
        hostname: String,
    },
    /// Probe a trusted peer over its current path: round-trip times and the path.
    Ping {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// How many probes (1-100, default 4), 250 ms apart.
        count: Option<u32>,
    },
    /// Forward an overlay TCP port to a local `HOST:PORT`.
    Expose {
        /// The overlay port.
        port: u16,
        /// The local target.
        to: String,
        /// Allow a link-local or cloud-metadata target.
        allow_link_local: bool,
    },
    /// Forget the key learned on first use for a registry; it is learned again.
    ForgetRegistryKey {
        /// The registry, `HOST:PORT`.
        registry: String,
    },
    /// The exposed ports.
    ExposeList {},
    /// The resolver for `NAME.pilot`: where it listens, its wiring and counters.
    DnsStatus {},
    /// Forward an overlay UDP port to a local `HOST:PORT`.
    ExposeUdp {
        /// The overlay port.
        port: u16,
        /// The local target.
        to: String,
        /// Allow a link-local or cloud-metadata target.
        allow_link_local: bool,
    },
    /// Stop forwarding an overlay UDP port.
    ExposeRemoveUdp {
        /// The overlay port.
        port: u16,
    },
    /// Stop forwarding an overlay port.
    ExposeRemove {
        /// The overlay port.
        port: u16,
    },
    /// Queue a file for a peer's `received/` (sent with retries and resumed until verified).
    SendFile {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// Absolute path of the file.
        path: String,
        /// The name to offer.
        name: Option<String>,
        /// Wait up to this many ms until the transfer is done or failed.
        wait_ms: Option<u64>,
    },
    /// Outgoing and incoming file transfers.
    Transfers {},
    /// The files in our `received/`.
    Received {
        /// Delete them after listing.
        clear: bool,
    },
    /// A short status: uptime, peers up, queues, last errors.
    Health {},
    /// Describe a node at the registries (key, address, IPv6, hostname, tags).
    LookupNode {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
    },
    /// Replace our tags at the registries (empty clears them).
    SetTags {
        /// The tags.
        tags: Vec<String>,
    },
    /// Give up our hostname at the registries.
    ClearHostname {},
    /// Ask every registry to forget us.
    Deregister {},
    /// What the network lets this node do.
    Netcheck {},
    /// The streams the daemon holds for API clients.
    Connections {},
    /// Abort one of them.
    Disconnect {
        /// Its id.
        id: u64,
    },
    /// Publish an event on a peer's broker, or ours (`peer` absent).
    Publish {
        /// The broker, or none for ours.
        peer: Option<String>,
        /// The exact topic.
        topic: String,
        /// The payload.
        data: String,
    },
    /// Subscribe to a pattern on a peer's broker, or ours (server-sent events).
    Subscribe {
        /// The broker, or none for ours.
        peer: Option<String>,
        /// The pattern.
        topic: String,
    },
    /// Our broker's topics and subscribers with their drop counters.
    PubsubStatus {},
    /// Submit a task to a trusted peer.
    TaskSubmit(SubmitTaskRequest),
    /// Tasks we submitted (`Some(true)`), work on (`Some(false)`), or all.
    TaskList {
        /// Which.
        submitted: Option<bool>,
    },
    /// One task.
    TaskStatus {
        /// Its id.
        id: String,
    },
    /// Accept a task (worker).
    TaskAccept {
        /// Its id.
        id: String,
    },
    /// Decline a task (worker).
    TaskDecline {
        /// Its id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Report a task's result (worker).
    TaskResult {
        /// Its id.
        id: String,
        /// The result.
        result: TaskResultRequest,
    },
    /// Wait until a task is final.
    TaskWait {
        /// Its id.
        id: String,
        /// At most this long, ms.
        timeout_ms: Option<u64>,
    },
    /// Send one UDP datagram to a peer's overlay port.
    DgramSend(DgramSendRequest),
    /// Receive UDP datagrams from trusted peers on our overlay port.
    DgramListen(DgramListenQuery),
}

/// The HTTP request that carries a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// Path and query, percent-encoded.
    pub target: String,
    /// The JSON body, if any.
    pub body: Option<serde_json::Value>,
}

/// Percent-encodes `s` for a path segment or a query value (everything but RFC 3986's
/// unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn json<T: Serialize>(v: T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// A request without a body.
fn bare(method: &'static str, target: impl Into<String>) -> Route {
    Route {
        method,
        target: target.into(),
        body: None,
    }
}

/// A request with a JSON body.
fn with_body<T: Serialize>(method: &'static str, target: &str, body: T) -> Route {
    Route {
        method,
        target: target.into(),
        body: json(body),
    }
}

/// `POST /v1/messages` for [`Request::SendMessage`].
fn send_message_route(r: &Request) -> Route {
    let Request::SendMessage {
        peer,
        data,
        kind,
        wait_ms,
    } = r.clone()
    else {
        return bare("POST", "/v1/messages");
    };
    let body = SendMessageRequest {
        peer,
        data,
        kind,
        wait_ms,
    };
    with_body("POST", "/v1/messages", body)
}

/// `GET /v1/messages/inbox` with [`Request::Inbox`]'s filters as query parameters.
fn inbox_target(r: &Request) -> String {
    let Request::Inbox {
        clear,
        from,
        since,
        limit,
    } = r.clone()
    else {
        return "/v1/messages/inbox".into();
    };
    let mut t = format!("/v1/messages/inbox?clear={clear}");
    if let Some(f) = from {
        t.push_str(&format!("&from={}", percent_encode(&f)));
    }
    if let Some(s) = since {
        t.push_str(&format!("&since={s}"));
    }
    if let Some(n) = limit {
        t.push_str(&format!("&limit={n}"));
    }
    t
}

impl Request {
    /// The method, path and body of this command's HTTP request.
    pub fn route(&self) -> Route {
        if let Some(r) = self.service_route() {
            return r;
        }
        use Request as R;
        match self.clone() {
            R::Info {} => bare("GET", "/v1/info"),
            R::Peers {} => bare("GET", "/v1/peers"),
            R::SetHostname { hostname } => {
                with_body("PUT", "/v1/hostname", SetHostnameRequest { hostname })
            }
            R::Shutdown {} => bare("POST", "/v1/shutdown"),
            R::Handshake {
                peer,
                justification,
            } => with_body(
                "POST",
                "/v1/trust/handshake",
                HandshakeRequest {
                    peer,
                    justification,
                },
            ),
            R::Pending {} => bare("GET", "/v1/trust/pending"),
            R::Approve { peer } => with_body("POST", "/v1/trust/approve", PeerRequest { peer }),
            R::Reject { peer, reason } => {
                with_body("POST", "/v1/trust/reject", RejectRequest { peer, reason })
            }
            R::Untrust { peer } => with_body("POST", "/v1/trust/untrust", PeerRequest { peer }),
            R::Trust {} => bare("GET", "/v1/trust"),
            R::Find { hostname } => bare("GET", format!("/v1/find/{}", percent_encode(&hostname))),
            R::Ping { peer, count } => with_body("POST", "/v1/ping", PingRequest { peer, count }),
            R::SendMessage { .. } => send_message_route(self),
            R::Reply { id, data, kind } => with_body(
                "POST",
                &format!("/v1/messages/{}/reply", percent_encode(&id)),
                ReplyRequest { data, kind },
            ),
            R::Inbox { .. } => bare("GET", inbox_target(self)),
            R::InboxRead { id } => {
                bare("GET", format!("/v1/messages/inbox/{}", percent_encode(&id)))
            }
            R::SetWebhook { url } => with_body("PUT", "/v1/webhook", WebhookRequest { url }),
            R::ClearWebhook {} => bare("DELETE", "/v1/webhook"),
            R::Webhook {} => bare("GET", "/v1/webhook"),
            R::Outbox {} => bare("GET", "/v1/messages/outbox"),
            R::Expose {
                port,
                to,
                allow_link_local,
            } => with_body(
                "POST",
                "/v1/expose",
                ExposeRequest {
                    port,
                    to,
                    allow_link_local,
                    protocol: Default::default(),
                },
            ),
            R::ForgetRegistryKey { registry } => with_body(
                "POST",
                "/v1/registry/forget-key",
                ForgetRegistryKeyRequest { registry },
            ),
            R::ExposeList {} => bare("GET", "/v1/expose"),
            R::ExposeRemove { port } => bare("DELETE", format!("/v1/expose/{port}")),
            R::Connect { peer, port } => bare(
                "POST",
                format!("/v1/connect?peer={}&port={port}", percent_encode(&peer)),
            ),
            R::Listen { port } => bare("POST", format!("/v1/listen?port={port}")),
            _ => unreachable!("the agent services' requests are routed by service_route"),
        }
    }

    /// The route of an agent-service request (files, discovery, diagnostics, names, UDP ports,
    /// pub/sub, tasks, datagrams); `None` for the node's own requests, which [`Request::route`] routes.
    fn service_route(&self) -> Option<Route> {
        use Request as R;
        Some(match self.clone() {
            R::SendFile {
                peer,
                path,
                name,
                wait_ms,
            } => with_body(
                "POST",
                "/v1/files",
                SendFileRequest {
                    peer,
                    path,
                    name,
                    wait_ms,
                },
            ),
            R::Transfers {} => bare("GET", "/v1/files/transfers"),
            R::Received { clear: false } => bare("GET", "/v1/files/received"),
            R::Received { clear: true } => bare("DELETE", "/v1/files/received"),
            R::Health {} => bare("GET", "/v1/health"),
            R::LookupNode { peer } => bare("GET", format!("/v1/lookup/{}", percent_encode(&peer))),
            R::SetTags { tags } => with_body("PUT", "/v1/tags", SetTagsRequest { tags }),
            R::ClearHostname {} => bare("DELETE", "/v1/hostname"),
            R::Deregister {} => bare("POST", "/v1/deregister"),
            R::Netcheck {} => bare("GET", "/v1/netcheck"),
            R::Connections {} => bare("GET", "/v1/connections"),
            R::Disconnect { id } => bare("DELETE", format!("/v1/connections/{id}")),
            R::Publish { peer, topic, data } => with_body(
                "POST",
                "/v1/pubsub/publish",
                PublishRequest { peer, topic, data },
            ),
            R::Subscribe { peer, topic } => bare("GET", subscribe_target(peer.as_deref(), &topic)),
            R::PubsubStatus {} => bare("GET", "/v1/pubsub"),
            R::TaskSubmit(req) => with_body("POST", "/v1/tasks", req),
            R::TaskList { submitted } => bare("GET", task_list_target(submitted)),
            R::TaskStatus { id } => bare("GET", format!("/v1/tasks/{}", percent_encode(&id))),
            R::TaskAccept { id } => task_post(&id, "accept", None),
            R::TaskDecline { id, reason } => {
                task_post(&id, "decline", json(DeclineTaskRequest { reason }))
            }
            R::TaskResult { id, result } => task_post(&id, "result", json(result)),
            R::TaskWait { id, timeout_ms } => bare("GET", task_wait_target(&id, timeout_ms)),
            R::DgramSend(req) => with_body("POST", "/v1/dgram/send", req),
            R::DgramListen(q) => bare("GET", dgram_listen_target(&q)),
            R::DnsStatus {} => bare("GET", "/v1/dns"),
            R::ExposeUdp {
                port,
                to,
                allow_link_local,
            } => with_body(
                "POST",
                "/v1/expose",
                ExposeRequest {
                    port,
                    to,
                    allow_link_local,
                    protocol: crate::userspace::expose::ExposeProtocol::Udp,
                },
            ),
            R::ExposeRemoveUdp { port } => bare("DELETE", format!("/v1/expose/udp/{port}")),
            _ => return None,
        })
    }

    /// Whether this command opens a byte stream (an HTTP Upgrade).
    pub fn is_stream(&self) -> bool {
        matches!(self, Request::Connect { .. } | Request::Listen { .. })
    }
}

/// `GET /v1/tasks`, with `?submitted=` when given.
fn task_list_target(submitted: Option<bool>) -> String {
    match submitted {
        Some(s) => format!("/v1/tasks?submitted={s}"),
        None => "/v1/tasks".into(),
    }
}

/// `POST /v1/tasks/{id}/{verb}`.
fn task_post(id: &str, verb: &str, body: Option<serde_json::Value>) -> Route {
    Route {
        method: "POST",
        target: format!("/v1/tasks/{}/{verb}", percent_encode(id)),
        body,
    }
}

/// `GET /v1/tasks/{id}/wait`, with `?timeout_ms=` when given.
fn task_wait_target(id: &str, timeout_ms: Option<u64>) -> String {
    let base = format!("/v1/tasks/{}/wait", percent_encode(id));
    match timeout_ms {
        Some(t) => format!("{base}?timeout_ms={t}"),
        None => base,
    }
}

/// `GET /v1/dgram/listen?port=…`, with `count` and `timeout_ms` when given.
fn dgram_listen_target(q: &DgramListenQuery) -> String {
    let mut t = format!("/v1/dgram/listen?port={}", q.port);
    if let Some(c) = q.count {
        t.push_str(&format!("&count={c}"));
    }
    if let Some(ms) = q.timeout_ms {
        t.push_str(&format!("&timeout_ms={ms}"));
    }
    t
}

/// `GET /v1/pubsub/subscribe?peer=…&topic=…` (no `peer` for our own broker).
pub fn subscribe_target(peer: Option<&str>, topic: &str) -> String {
    match peer {
        Some(p) => format!(
            "/v1/pubsub/subscribe?peer={}&topic={}",
            percent_encode(p),
            percent_encode(topic)
        ),
        None => format!("/v1/pubsub/subscribe?topic={}", percent_encode(topic)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ok_envelope_has_status_and_data() {
        let v = serde_json::to_value(Envelope::ok(&serde_json::json!({"a": 1}))).unwrap();
        assert_eq!(v, serde_json::json!({"status": "ok", "data": {"a": 1}}));
        let typed = serde_json::to_value(OkBody::new(ShutdownData { stopping: true })).unwrap();
        assert_eq!(
            typed,
            serde_json::json!({"status": "ok", "data": {"stopping": true}})
        );
    }

    #[test]
    fn error_envelope_has_code_message_hint() {
        let e = Envelope::Error(PilotError::new(ErrorCode::NotFound, "m", "h"));
        let v = serde_json::to_value(&e).unwrap();
        let expected = serde_json::json!({"status": "error", "code": "not_found", "message": "m", "hint": "h"});
        assert_eq!(v, expected);
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let body = ErrorBody::from(PilotError::new(ErrorCode::NotFound, "m", "h"));
        assert_eq!(serde_json::to_value(body).unwrap(), expected);
    }

    #[test]
    fn error_codes_map_to_http_statuses() {
        assert_eq!(http_status(ErrorCode::InvalidArgument), 400);
        assert_eq!(http_status(ErrorCode::NotFound), 404);
        assert_eq!(http_status(ErrorCode::AlreadyExists), 409);
        assert_eq!(http_status(ErrorCode::Timeout), 504);
        assert_eq!(http_status(ErrorCode::ConnectionFailed), 502);
        assert_eq!(http_status(ErrorCode::Internal), 500);
    }

    #[test]
    fn commands_route_to_versioned_paths() {
        let r = Request::Find {
            hostname: "a b/c".into(),
        }
        .route();
        assert_eq!((r.method, r.target.as_str()), ("GET", "/v1/find/a%20b%2Fc"));
        let r = Request::Connect {
            peer: "abc+/=".into(),
            port: 1000,
        }
        .route();
        assert_eq!(r.target, "/v1/connect?peer=abc%2B%2F%3D&port=1000");
        let r = Request::Reject {
            peer: "p".into(),
            reason: None,
        }
        .route();
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.body,
            Some(serde_json::json!({"peer": "p", "reason": null}))
        );
    }

    #[test]
    fn message_commands_route_with_their_filters_and_ids_encoded() {
        let r = Request::Inbox {
            clear: false,
            from: Some("node a".into()),
            since: Some(5),
            limit: Some(2),
        }
        .route();
        assert_eq!(
            r.target,
            "/v1/messages/inbox?clear=false&from=node%20a&since=5&limit=2"
        );
        let r = Request::Reply {
            id: "a/b".into(),
            data: "x".into(),
            kind: None,
        }
        .route();
        assert_eq!(
            (r.method, r.target.as_str()),
            ("POST", "/v1/messages/a%2Fb/reply")
        );
        let r = Request::SendMessage {
            peer: "p".into(),
            data: "d".into(),
            kind: Some("text".into()),
            wait_ms: Some(7),
        }
        .route();
        assert_eq!(
            r.body,
            Some(serde_json::json!({"peer": "p", "data": "d", "type": "text", "wait_ms": 7}))
        );
        let body: SendMessageRequest =
            serde_json::from_value(serde_json::json!({"peer": "p", "data": "d", "kind": "json"}))
                .unwrap();
        assert_eq!(
            body.kind.as_deref(),
            Some("json"),
            "`kind` names the type too"
        );
    }

    #[test]
    fn events_carry_their_type() {
        let e = ApiEvent::Api(StreamEvent::Lagged { missed: 3 });
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type": "lagged", "missed": 3})
        );
        assert_eq!(e.kind(), "lagged");
    }

    proptest! {
        #[test]
        fn envelopes_round_trip(msg in ".{0,40}", hint in ".{0,40}", n in any::<i64>()) {
            for e in [
                Envelope::ok(&serde_json::json!({"n": n, "s": msg.clone()})),
                Envelope::Error(PilotError::new(ErrorCode::Timeout, msg.clone(), hint.clone())),
            ] {
                let text = serde_json::to_string(&e).unwrap();
                let back: Envelope = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(back, e);
            }
        }
    }
}
