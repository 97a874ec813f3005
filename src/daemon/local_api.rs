//! The running node as the local API sees it: [`Node`] implements [`Api`], turning each
//! request into a call on the data plane, the node driver, the services or the exposer.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use crate::api::events::Subscription;
use crate::api::service::{Api, ApiResult, TaskAct};
use crate::api::types::*;
use crate::config::Config;
use crate::daemon::mode::ModeChoice;
use crate::daemon::node_driver::{NodeCommand, NodeHandle};
use crate::daemon::node_state::{self, NodeState};
use crate::daemon::peer_resolver::PeerResolver;
use crate::daemon::pubsub_tasks;
use crate::error::{ErrorCode, PilotError};
use crate::identity::{Identity, PublicKey};
use crate::mapping::{Hostname, PeerRef};
use crate::services::message_store::{InboxFilter, MessageType, MAX_DATA};
use crate::services::messages::Outgoing;
use crate::services::{streams, Delivery, Files, Messages};
use crate::state::paths::StatePaths;
use crate::userspace::expose::{ExposeProtocol, Exposer};
use crate::userspace::overlay_net::{OverlayNet, OverlayStream};
use crate::userspace::socks5::Resolver;
use crate::wg::DataPlane;

/// The running node, shared by the API handlers.
pub struct Node {
    /// Our identity.
    pub identity: Arc<Identity>,
    /// The effective config.
    pub config: Config,
    /// The state directory.
    pub paths: StatePaths,
    /// The mode that runs.
    pub mode: ModeChoice,
    /// The hostname we claim (shared with the resolver).
    pub hostname: Arc<Mutex<Option<Hostname>>>,
    /// When the daemon started.
    pub started: Instant,
    /// Set to stop the daemon.
    pub shutdown: watch::Sender<bool>,
    /// The WireGuard data plane.
    pub dataplane: Arc<DataPlane>,
    /// The node driver (registries, trust, paths).
    pub control: NodeHandle,
    /// Overlay ports forwarded to local targets.
    pub exposer: Exposer,
    /// Where the SOCKS5 proxy listens (userspace mode).
    pub socks5: Option<SocketAddr>,
    /// Overlay sockets in the running mode (services, streams).
    pub overlay: OverlayNet,
    /// The message service (port 1001), if it started.
    pub messages: Option<Arc<Messages>>,
    /// Live node events, for the API's event stream.
    pub events: broadcast::Sender<NodeEvent>,
    /// Where events are POSTed (`set-webhook`).
    pub webhook: Arc<crate::daemon::webhook::Webhook>,
    /// The file service (port 1004), if it started.
    pub files: Option<Arc<Files>>,
    /// The resolver for `NAME.pilot`, if it runs.
    pub dns: Option<crate::daemon::dns::DnsRuntime>,
    /// The pub/sub broker (port 1002), if it started.
    pub pubsub: Option<Arc<crate::services::pubsub::Pubsub>>,
    /// The task service (port 1003), if it started.
    pub tasks: Option<Arc<crate::services::tasks::Tasks>>,
}

fn no_files() -> PilotError {
    PilotError::internal("the file service is not running (see the daemon log)")
}

fn no_messages() -> PilotError {
    PilotError::internal("the message service is not running (see the daemon log)")
}

/// A registry's `HOST:PORT` (an optional `#KEY` is ignored), resolved like the config's.
async fn resolve_registry(spec: &str) -> Result<SocketAddr, PilotError> {
    let (hostport, _) = crate::node::registry_client::parse_registry_spec(spec)?;
    let bad = |why: String| {
        PilotError::invalid(
            why,
            "give the registry as HOST:PORT, as configured (see `pilotctl info`)",
        )
    };
    let mut addrs = tokio::net::lookup_host(hostport.as_str())
        .await
        .map_err(|e| bad(format!("cannot resolve registry {hostport}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| bad(format!("registry {hostport} resolves to no address")))
}

impl Node {
    /// The parts discovery needs.
    fn discovery(&self) -> crate::daemon::discovery::Node<'_> {
        crate::daemon::discovery::Node {
            control: &self.control,
            network: self.config.network,
            paths: &self.paths,
            hostname: &self.hostname,
        }
    }

    fn peer_ref(&self, text: &str) -> Result<PeerRef, PilotError> {
        Ok(PeerRef::parse(text, &self.config.network)?)
    }

    /// A trusted peer's key and overlay address from anything that names it.
    pub(crate) async fn resolve_peer(
        &self,
        text: &str,
    ) -> Result<(PublicKey, Ipv6Addr), PilotError> {
        let r = self.peer_ref(text)?;
        let ip = match &r {
            PeerRef::Addr48(a) => self.config.network.ipv6(*a),
            PeerRef::PublicKey(k) => self.config.network.ipv6(k.addr48()),
            PeerRef::Hostname(h) => {
                PeerResolver::new(self.dataplane.clone(), Some(self.control.clone()))
                    .resolve(h)
                    .await
                    .ok_or_else(|| {
                        PilotError::new(
                    ErrorCode::NotFound,
                    format!("no peer or registry knows the hostname `{h}`"),
                    "check the name with `pilotctl find NAME`, or name the peer by address or key",
                )
                    })?
            }
        };
        let peer = self.dataplane.peer_by_ip(&ip).ok_or_else(|| {
            PilotError::new(
                ErrorCode::Unauthorized,
                format!("{r} ({ip}) is not a trusted peer"),
                format!("ask for trust first: `pilotctl handshake {r}`, and wait for approval"),
            )
        })?;
        Ok((peer.public_key, ip))
    }

    /// Checks a message's type and size and parses its payload.
    fn message_payload(
        data: String,
        kind: Option<&str>,
    ) -> Result<(MessageType, serde_json::Value), PilotError> {
        let kind = MessageType::parse(kind.unwrap_or("text")).ok_or_else(|| {
            PilotError::invalid(
                format!("unknown message type `{}`", kind.unwrap_or_default()),
                "use --type text (the default), json or binary",
            )
        })?;
        if data.len() > MAX_DATA {
            return Err(PilotError::invalid(
                format!(
                    "the message is {} bytes; at most {MAX_DATA} are allowed",
                    data.len()
                ),
                "send large data as a stream (`pilotctl connect PEER PORT`)",
            ));
        }
        let value = match kind {
            MessageType::Json => serde_json::from_str(&data).map_err(|e| {
                PilotError::invalid(
                    format!("--data is not valid JSON: {e}"),
                    "quote it for the shell, e.g. --data '{\"status\":\"operational\"}', or use --type text",
                )
            })?,
            MessageType::Text => serde_json::Value::String(data),
            MessageType::Binary => {
                let value = serde_json::Value::String(data);
                if !kind.fits(&value) {
                    return Err(PilotError::invalid(
                        "binary data is not valid base64",
                        "give binary payloads as standard base64 (pilotctl encodes --file and stdin itself)",
                    ));
                }
                value
            }
        };
        Ok((kind, value))
    }

    /// The message service, or the error that says it is not running.
    fn messages(&self) -> Result<&Arc<Messages>, PilotError> {
        self.messages.as_ref().ok_or_else(no_messages)
    }
}

/// The error for a message id nobody sent us.
fn unknown_message(id: &str) -> PilotError {
    PilotError::new(
        ErrorCode::UnknownMessage,
        format!("no message with id `{}` was received", id.escape_debug()),
        "reply to an id from `pilotctl inbox` (ids are 32 hex digits); ids are remembered for \
         [messages] dedupe_days after the message was cleared",
    )
}

/// The API's answer for a queued message.
fn sent_message(id: String, to: PublicKey, ip: Ipv6Addr, outcome: Delivery) -> SentMessage {
    let (status, refused) = match outcome {
        Delivery::Delivered => (DeliveryStatus::Delivered, None),
        Delivery::Queued => (DeliveryStatus::Queued, None),
        Delivery::Refused(why) => (DeliveryStatus::Refused, Some(why)),
    };
    SentMessage {
        id,
        to,
        to_ipv6: ip,
        status,
        refused,
        in_reply_to: None,
        reply: None,
    }
}

/// The longest `wait_ms` taken (10 minutes).
const MAX_WAIT_MS: u64 = 600_000;
/// The longest `wait_ms` of `send-file` taken (a day: large files take long).
const MAX_FILE_WAIT_MS: u64 = 86_400_000;

impl Api for Node {
    type Stream = crate::daemon::connections::Tracked<OverlayStream>;

    async fn info(&self) -> InfoData {
        let registries = self
            .control
            .call(|reply| NodeCommand::RegistryKeys { reply })
            .await
            .unwrap_or_default();
        let addr = self.identity.addr48();
        let hostname = self.hostname.lock().expect("hostname lock").clone();
        InfoData {
            address: addr.to_string(),
            ipv6: self.config.network.ipv6(addr).to_string(),
            hostname: hostname.map(|h| h.to_string()),
            public_key: self.identity.public_key().to_string(),
            mode: self.mode.mode.to_string(),
            mode_reason: self.mode.reason.clone(),
            network: self.config.network.to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            peers: self.dataplane.peer_count(),
            pid: std::process::id(),
            state_dir: self.paths.dir.display().to_string(),
            listen_port: Some(self.dataplane.local_port()),
            socks5: self.socks5.map(|a| a.to_string()),
            socks5_auth: self
                .socks5
                .map(|_| self.config.socks5.auth.as_str().to_string()),
            socks5_credentials: self
                .socks5
                .filter(|_| self.config.socks5.auth == crate::config::Socks5Auth::Password)
                .map(|_| {
                    let f = crate::userspace::socks5::CREDENTIALS_FILE;
                    self.paths.dir.join(f).display().to_string()
                }),
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_plane: Some(self.dataplane.health()),
            registries,
            dns: self.dns.as_ref().and_then(|d| d.answers_at()),
        }
    }

    async fn lookup_node(&self, peer: String) -> ApiResult<NodeView> {
        crate::daemon::discovery::lookup(&self.discovery(), &peer).await
    }

    async fn set_tags(&self, tags: Vec<String>) -> ApiResult<Registration> {
        crate::daemon::discovery::set_tags(&self.discovery(), tags).await
    }

    async fn clear_hostname(&self) -> ApiResult<Registration> {
        crate::daemon::discovery::clear_hostname(&self.discovery()).await
    }

    async fn deregister(&self) -> ApiResult<Registration> {
        crate::daemon::discovery::deregister(&self.discovery()).await
    }

    async fn netcheck(&self) -> ApiResult<NetcheckData> {
        let mode = self.mode.mode.to_string();
        let port = self.dataplane.local_port();
        let diversion = self.dataplane.diversion();
        let tls = if self.config.relay.websocket {
            "wss"
        } else {
            "tls"
        };
        let transport = |r| if diversion.is_diverted(r) { tls } else { "udp" };
        crate::daemon::netcheck::report(&self.control, mode, port, transport).await
    }

    fn connections(&self) -> ConnectionList {
        ConnectionList {
            connections: crate::daemon::connections::list(),
        }
    }

    fn disconnect(&self, id: u64) -> ApiResult<ConnectionView> {
        crate::daemon::connections::disconnect(id)
    }

    async fn health(&self) -> HealthData {
        crate::daemon::health::report(crate::daemon::health::Parts {
            dataplane: &self.dataplane,
            messages: self.messages.as_deref(),
            started: self.started,
            mode: self.mode.mode.to_string(),
            registries: self.config.registries.len(),
        })
    }

    async fn forget_registry_key(
        &self,
        req: ForgetRegistryKeyRequest,
    ) -> ApiResult<RegistryKeyView> {
        let registry = resolve_registry(&req.registry).await?;
        self.control
            .call(|reply| NodeCommand::ForgetRegistryKey { registry, reply })
            .await
    }

    fn peers(&self) -> PeersData {
        PeersData {
            peers: self.dataplane.peers(),
            counters: Some(self.dataplane.counters()),
        }
    }

    async fn set_hostname(&self, name: String) -> ApiResult<HostnameClaim> {
        let h = Hostname::new(&name).map_err(|e| {
            PilotError::invalid(
                e.to_string(),
                "use 1-63 lowercase letters, digits and hyphens, e.g. worker-node",
            )
        })?;
        self.control
            .call(|reply| NodeCommand::SetHostname {
                hostname: h.clone(),
                reply,
            })
            .await?;
        let state = NodeState {
            hostname: Some(h.clone()),
            ..node_state::load(&self.paths).unwrap_or_default()
        };
        node_state::save(&self.paths, &state)?;
        *self.hostname.lock().expect("hostname lock") = Some(h.clone());
        tracing::info!(hostname = %h, "hostname set");
        Ok(HostnameClaim { hostname: h })
    }

    fn shutdown(&self) -> ShutdownData {
        let _ = self.shutdown.send(true);
        ShutdownData { stopping: true }
    }

    async fn handshake(&self, req: HandshakeRequest) -> ApiResult<Option<TrustView>> {
        let peer = self.peer_ref(&req.peer)?;
        let justification = req.justification.unwrap_or_default();
        self.control
            .call(|reply| NodeCommand::Handshake {
                peer,
                justification,
                reply,
            })
            .await
    }

    async fn pending(&self) -> ApiResult<PendingList> {
        self.control
            .call(|reply| NodeCommand::Pending { reply })
            .await
    }

    async fn approve(&self, peer: String) -> ApiResult<Option<TrustView>> {
        let peer = self.peer_ref(&peer)?;
        self.control
            .call(|reply| NodeCommand::Approve { peer, reply })
            .await
    }

    async fn reject(&self, req: RejectRequest) -> ApiResult<Option<TrustView>> {
        let peer = self.peer_ref(&req.peer)?;
        let reason = req.reason.unwrap_or_default();
        self.control
            .call(|reply| NodeCommand::Reject {
                peer,
                reason,
                reply,
            })
            .await
    }

    async fn untrust(&self, peer: String) -> ApiResult<Option<TrustView>> {
        let peer = self.peer_ref(&peer)?;
        self.control
            .call(|reply| NodeCommand::Untrust { peer, reply })
            .await
    }

    async fn trust(&self) -> ApiResult<TrustList> {
        self.control
            .call(|reply| NodeCommand::TrustList { reply })
            .await
    }

    async fn find(&self, hostname: String) -> ApiResult<Option<Lookup>> {
        let name = hostname.strip_suffix(".pilot").unwrap_or(&hostname);
        let hostname = Hostname::new(name).map_err(|e| {
            PilotError::invalid(e.to_string(), "give an exact hostname, e.g. worker-node")
        })?;
        self.control
            .call(|reply| NodeCommand::Find { hostname, reply })
            .await
    }

    async fn ping(&self, req: PingRequest) -> ApiResult<PingReport> {
        let peer = self.peer_ref(&req.peer)?;
        let count = req.count.unwrap_or(4);
        self.control
            .call(|reply| NodeCommand::Ping { peer, count, reply })
            .await
    }

    async fn send_message(&self, req: SendMessageRequest) -> ApiResult<SentMessage> {
        let (kind, data) = Self::message_payload(req.data, req.kind.as_deref())?;
        if req.wait_ms.is_some_and(|w| w > MAX_WAIT_MS) {
            return Err(PilotError::invalid(
                format!("wait_ms may be at most {MAX_WAIT_MS}"),
                "wait at most 600 s; a later reply lands in the inbox",
            ));
        }
        let (key, ip) = self.resolve_peer(&req.peer).await?;
        let m = self.messages()?;
        let out = Outgoing {
            to_key: key.to_string(),
            to_ipv6: ip,
            kind,
            data,
            in_reply_to: None,
        };
        let Some(wait_ms) = req.wait_ms else {
            let (id, outcome) = m.send_outgoing(out, Duration::from_secs(3)).await?;
            return Ok(sent_message(id, key, ip, outcome));
        };
        let a = m.request(out, Duration::from_millis(wait_ms)).await?;
        let mut sent = sent_message(a.id, key, ip, a.delivery);
        sent.reply = Some(a.reply);
        Ok(sent)
    }

    async fn reply(&self, id: String, req: ReplyRequest) -> ApiResult<SentMessage> {
        let (kind, data) = Self::message_payload(req.data, req.kind.as_deref())?;
        let m = self.messages()?;
        let from = m.sender_of(&id).ok_or_else(|| unknown_message(&id))?;
        let (key, ip) = self.resolve_peer(&from).await?;
        let out = Outgoing {
            to_key: key.to_string(),
            to_ipv6: ip,
            kind,
            data,
            in_reply_to: Some(id.clone()),
        };
        let (reply_id, outcome) = m.send_outgoing(out, Duration::from_secs(3)).await?;
        let mut sent = sent_message(reply_id, key, ip, outcome);
        sent.in_reply_to = Some(id);
        Ok(sent)
    }

    fn inbox(&self, q: InboxQuery) -> ApiResult<InboxData> {
        let m = self.messages()?;
        let from = match q.from.as_deref() {
            None => None,
            Some(text) => Some(match self.peer_ref(text)? {
                PeerRef::Addr48(a) => a.to_string(),
                PeerRef::PublicKey(k) => k.to_string(),
                PeerRef::Hostname(h) => h.to_string(),
            }),
        };
        let filter = InboxFilter {
            from,
            since_ms: q.since,
            limit: q.limit,
        };
        let messages = m.inbox_select(&filter, q.clear)?;
        Ok(InboxData {
            messages,
            cleared: q.clear,
        })
    }

    fn inbox_read(&self, id: String) -> ApiResult<InboxEntry> {
        self.messages()?
            .inbox_get(&id)?
            .ok_or_else(|| unknown_message(&id))
    }

    fn webhook(&self) -> WebhookStatus {
        self.webhook.status()
    }

    fn set_webhook(&self, req: WebhookRequest) -> ApiResult<WebhookStatus> {
        self.webhook.set(&req.url)
    }

    fn clear_webhook(&self) -> ApiResult<WebhookStatus> {
        self.webhook.clear()
    }

    fn outbox(&self) -> ApiResult<OutboxData> {
        let m = self.messages.as_ref().ok_or_else(no_messages)?;
        let outbox = m.outbox()?;
        Ok(OutboxData { outbox })
    }

    async fn expose(&self, req: ExposeRequest) -> ApiResult<Exposed> {
        if req.protocol == ExposeProtocol::Udp {
            self.exposer
                .add_udp(req.port, &req.to, req.allow_link_local)
                .await?;
        } else {
            self.exposer
                .add_with(req.port, &req.to, req.allow_link_local)
                .await?;
        }
        Ok(Exposed {
            port: req.port,
            to: req.to,
            protocol: req.protocol,
        })
    }

    fn expose_list(&self) -> ExposeList {
        ExposeList {
            exposed: self.exposer.list(),
        }
    }

    fn expose_remove(&self, port: u16) -> ApiResult<Exposed> {
        Ok(self.exposer.remove(port)?)
    }

    fn expose_remove_udp(&self, port: u16) -> ApiResult<Exposed> {
        Ok(self.exposer.remove_udp(port)?)
    }

    fn dns_status(&self) -> ApiResult<DnsStatus> {
        Ok(crate::daemon::dns::status(
            self.dns.as_ref(),
            &self.config,
            self.mode.mode,
        ))
    }

    async fn connect(&self, q: ConnectQuery) -> ApiResult<(ConnectData, Self::Stream)> {
        let (key, ip) = self.resolve_peer(&q.peer).await?;
        let s = streams::connect(&self.overlay, ip, q.port).await?;
        let s = crate::daemon::connections::Tracked::new(s, "connect", ip, q.port);
        let data = ConnectData {
            peer: key,
            ipv6: ip,
            port: q.port,
        };
        Ok((data, s))
    }

    async fn listen(&self, port: u16) -> ApiResult<(ListenData, Self::Stream)> {
        let (s, remote) = streams::accept_one(&self.overlay, port).await?;
        let from = self.dataplane.peer_by_ip(&remote);
        let data = ListenData {
            port,
            peer_ipv6: remote,
            peer: from.as_ref().map(|p| p.public_key),
            peer_hostname: from.and_then(|p| p.hostname),
        };
        let s = crate::daemon::connections::Tracked::new(s, "listen", remote, port);
        Ok((data, s))
    }

    async fn send_file(&self, req: SendFileRequest) -> ApiResult<Transfer> {
        if req.wait_ms.is_some_and(|w| w > MAX_FILE_WAIT_MS) {
            return Err(PilotError::invalid(
                format!("wait_ms may be at most {MAX_FILE_WAIT_MS}"),
                "wait at most a day; `pilotctl transfers` follows a transfer without waiting",
            ));
        }
        let (key, ip) = self.resolve_peer(&req.peer).await?;
        let f = self.files.as_ref().ok_or_else(no_files)?;
        let path = std::path::Path::new(&req.path);
        let t = f.send(key.to_string(), ip, path, req.name)?;
        match req.wait_ms {
            Some(ms) => Ok(f.wait_final(&t.id, Duration::from_millis(ms)).await?),
            None => Ok(t),
        }
    }

    fn transfers(&self) -> ApiResult<TransfersData> {
        let f = self.files.as_ref().ok_or_else(no_files)?;
        Ok(TransfersData {
            transfers: f.transfers()?,
        })
    }

    fn received(&self, clear: bool) -> ApiResult<ReceivedData> {
        let f = self.files.as_ref().ok_or_else(no_files)?;
        Ok(ReceivedData {
            files: f.received(clear)?,
            cleared: clear,
        })
    }

    fn subscribe(&self) -> Subscription {
        Subscription {
            node: self.events.subscribe(),
            messages: self.messages.as_ref().map(|m| m.subscribe()),
            files: self.files.as_ref().map(|f| f.subscribe()),
            pubsub: self.pubsub.as_ref().map(|p| p.received()),
            tasks: self.tasks.as_ref().map(|t| t.changes()),
        }
    }

    async fn pubsub_publish(&self, req: PublishRequest) -> ApiResult<PublishedData> {
        let to = match &req.peer {
            Some(p) => Some(self.resolve_peer(p).await?),
            None => None,
        };
        let me = self.identity.public_key();
        pubsub_tasks::publish(self.pubsub.as_ref(), me, to, req).await
    }

    async fn pubsub_subscribe(
        &self,
        q: SubscribeQuery,
    ) -> ApiResult<crate::services::pubsub::Subscription> {
        let from = match &q.peer {
            Some(p) => Some(self.resolve_peer(p).await?),
            None => None,
        };
        pubsub_tasks::subscribe(self.pubsub.as_ref(), from, &q.topic).await
    }

    fn pubsub_status(&self) -> ApiResult<PubsubData> {
        let queue = self.config.pubsub.subscriber_queue;
        pubsub_tasks::status(self.pubsub.as_ref(), queue)
    }

    async fn task_submit(&self, req: SubmitTaskRequest) -> ApiResult<TaskView> {
        let (worker, _) = self.resolve_peer(&req.peer).await?;
        pubsub_tasks::task_submit(self.tasks.as_ref(), worker, req, &self.config.tasks).await
    }

    fn task_list(&self, submitted: Option<bool>) -> ApiResult<TaskList> {
        pubsub_tasks::task_list(self.tasks.as_ref(), submitted)
    }

    fn task_get(&self, id: String) -> ApiResult<TaskView> {
        pubsub_tasks::task_get(self.tasks.as_ref(), &id)
    }

    async fn task_act(&self, id: String, act: TaskAct) -> ApiResult<TaskView> {
        pubsub_tasks::task_act(self.tasks.as_ref(), &id, act, &self.config.tasks).await
    }

    async fn task_wait(&self, id: String, timeout_ms: Option<u64>) -> ApiResult<TaskView> {
        pubsub_tasks::task_wait(self.tasks.as_ref(), &id, timeout_ms).await
    }

    async fn dgram_send(&self, req: DgramSendRequest) -> ApiResult<DgramSent> {
        crate::daemon::dgram::check_port(req.port)?;
        let (key, ip) = self.resolve_peer(&req.peer).await?;
        crate::daemon::dgram::send(&self.overlay, key, ip, &req).await
    }

    async fn dgram_listen(&self, q: DgramListenQuery) -> ApiResult<DgramListenData> {
        let timeout = q.timeout_ms.map(Duration::from_millis);
        crate::daemon::dgram::listen(&self.overlay, &self.dataplane, q.port, q.count, timeout).await
    }
}
