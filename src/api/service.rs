//! The node as the local API sees it: the [`Api`] trait the daemon implements, so the API
//! does not depend on the daemon.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::api::events::Subscription;
use crate::api::types::*;
use crate::error::PilotError;

/// What a request answers: typed data or a user-facing error.
pub type ApiResult<T> = Result<T, PilotError>;

/// The node as the API sees it; the daemon implements it.
pub trait Api: Send + Sync + 'static {
    /// A byte stream to a peer (`connect`, `listen`).
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// `GET /v1/info`.
    fn info(&self) -> impl Future<Output = InfoData> + Send;
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
    fn inbox(&self, q: InboxQuery) -> ApiResult<InboxData>;
    /// `GET /v1/messages/inbox/{id}`.
    fn inbox_read(&self, id: String) -> ApiResult<InboxEntry>;
    /// `POST /v1/messages/{id}/reply`.
    fn reply(
        &self,
        id: String,
        req: ReplyRequest,
    ) -> impl Future<Output = ApiResult<SentMessage>> + Send;
    /// `GET /v1/webhook`.
    fn webhook(&self) -> WebhookStatus;
    /// `PUT /v1/webhook`.
    fn set_webhook(&self, req: WebhookRequest) -> ApiResult<WebhookStatus>;
    /// `DELETE /v1/webhook`.
    fn clear_webhook(&self) -> ApiResult<WebhookStatus>;
    /// `GET /v1/messages/outbox`.
    fn outbox(&self) -> ApiResult<OutboxData>;
    /// `POST /v1/registry/forget-key`.
    fn forget_registry_key(
        &self,
        req: ForgetRegistryKeyRequest,
    ) -> impl Future<Output = ApiResult<RegistryKeyView>> + Send;
    /// `POST /v1/expose`.
    fn expose(&self, req: ExposeRequest) -> impl Future<Output = ApiResult<Exposed>> + Send;
    /// `GET /v1/expose`.
    fn expose_list(&self) -> ExposeList;
    /// `DELETE /v1/expose/{port}`.
    fn expose_remove(&self, port: u16) -> ApiResult<Exposed>;
    /// `DELETE /v1/expose/udp/{port}`.
    fn expose_remove_udp(&self, port: u16) -> ApiResult<Exposed> {
        Err(PilotError::new(
            crate::error::ErrorCode::NotFound,
            format!("overlay UDP port {port} is not exposed"),
            "see the exposed ports with `pilotctl expose --list`",
        ))
    }
    /// `GET /v1/dns`.
    fn dns_status(&self) -> ApiResult<DnsStatus> {
        Err(PilotError::internal("this node has no resolver"))
    }
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
    /// `POST /v1/files`.
    fn send_file(&self, req: SendFileRequest) -> impl Future<Output = ApiResult<Transfer>> + Send;
    /// `GET /v1/files/transfers`.
    fn transfers(&self) -> ApiResult<TransfersData>;
    /// `GET /v1/files/received`; with `clear` (`DELETE`), the listed files are deleted.
    fn received(&self, clear: bool) -> ApiResult<ReceivedData>;
    /// `GET /v1/events`: a new subscription to the live events.
    fn subscribe(&self) -> Subscription;
    /// `GET /v1/health`.
    fn health(&self) -> impl Future<Output = HealthData> + Send;
    /// `GET /v1/lookup/{peer}`.
    fn lookup_node(&self, peer: String) -> impl Future<Output = ApiResult<NodeView>> + Send;
    /// `PUT /v1/tags`.
    fn set_tags(&self, tags: Vec<String>) -> impl Future<Output = ApiResult<Registration>> + Send;
    /// `DELETE /v1/hostname`.
    fn clear_hostname(&self) -> impl Future<Output = ApiResult<Registration>> + Send;
    /// `POST /v1/deregister`.
    fn deregister(&self) -> impl Future<Output = ApiResult<Registration>> + Send;
    /// `GET /v1/netcheck`.
    fn netcheck(&self) -> impl Future<Output = ApiResult<NetcheckData>> + Send;
    /// `GET /v1/connections`.
    fn connections(&self) -> ConnectionList;
    /// `DELETE /v1/connections/{id}`.
    fn disconnect(&self, id: u64) -> ApiResult<ConnectionView>;
    /// `POST /v1/pubsub/publish`.
    fn pubsub_publish(
        &self,
        _req: PublishRequest,
    ) -> impl Future<Output = ApiResult<PublishedData>> + Send {
        async { Err(no_service("pub/sub")) }
    }
    /// `GET /v1/pubsub/subscribe`: events in order until the client goes away.
    fn pubsub_subscribe(
        &self,
        _q: SubscribeQuery,
    ) -> impl Future<Output = ApiResult<crate::services::pubsub::Subscription>> + Send {
        async { Err(no_service("pub/sub")) }
    }
    /// `GET /v1/pubsub`.
    fn pubsub_status(&self) -> ApiResult<PubsubData> {
        Err(no_service("pub/sub"))
    }
    /// `POST /v1/tasks`.
    fn task_submit(
        &self,
        _req: SubmitTaskRequest,
    ) -> impl Future<Output = ApiResult<TaskView>> + Send {
        async { Err(no_service("task")) }
    }
    /// `GET /v1/tasks`.
    fn task_list(&self, _submitted: Option<bool>) -> ApiResult<TaskList> {
        Err(no_service("task"))
    }
    /// `GET /v1/tasks/{id}`.
    fn task_get(&self, _id: String) -> ApiResult<TaskView> {
        Err(no_service("task"))
    }
    /// `POST /v1/tasks/{id}/accept`, `…/decline` (with a reason) and `…/result`.
    fn task_act(
        &self,
        _id: String,
        _act: TaskAct,
    ) -> impl Future<Output = ApiResult<TaskView>> + Send {
        async { Err(no_service("task")) }
    }
    /// `GET /v1/tasks/{id}/wait`.
    fn task_wait(
        &self,
        _id: String,
        _timeout_ms: Option<u64>,
    ) -> impl Future<Output = ApiResult<TaskView>> + Send {
        async { Err(no_service("task")) }
    }
    /// `POST /v1/dgram/send`.
    fn dgram_send(
        &self,
        _req: DgramSendRequest,
    ) -> impl Future<Output = ApiResult<DgramSent>> + Send {
        async { Err(no_service("datagram")) }
    }
    /// `GET /v1/dgram/listen`.
    fn dgram_listen(
        &self,
        _q: DgramListenQuery,
    ) -> impl Future<Output = ApiResult<DgramListenData>> + Send {
        async { Err(no_service("datagram")) }
    }
}

/// What the worker does with a task, as the API asks it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskAct {
    /// `POST /v1/tasks/{id}/accept`.
    Accept,
    /// `POST /v1/tasks/{id}/decline`.
    Decline(String),
    /// `POST /v1/tasks/{id}/result`.
    Result(TaskResultRequest),
}

/// The error of a service this node does not run.
pub fn no_service(name: &str) -> PilotError {
    PilotError::new(
        crate::error::ErrorCode::NotRunning,
        format!("the {name} service is not running"),
        "see the daemon log for why it did not start",
    )
}
