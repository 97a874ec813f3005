//! The local API's HTTP path in process: raw bytes from a local client go through hyper's
//! HTTP/1.1 server (configured as `api::server` configures it) into the axum router of every
//! `/v1/` path, over a stub node that refuses every action with an error naming what it got.
//! Whatever the bytes, the server answers or closes; nothing panics and nothing hangs.
#![no_main]

use std::sync::{Arc, OnceLock};

use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use pilot::api::events::Subscription;
use pilot::api::server::{router, HEADER_TIMEOUT};
use pilot::api::service::{Api, ApiResult};
use pilot::api::types::*;
use pilot::error::PilotError;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A node that knows nothing: reads answer empty data, actions fail naming their input.
struct Stub;

fn no<T>(what: impl std::fmt::Debug) -> ApiResult<T> {
    Err(PilotError::invalid(format!("stub: {what:?}"), "fuzzing"))
}

impl Api for Stub {
    type Stream = DuplexStream;
    async fn info(&self) -> InfoData {
        serde_json::from_value(serde_json::json!({
            "address": "0000.0000.0001", "ipv6": "fdc5:7a3e:91b4::1", "hostname": null,
            "public_key": "", "mode": "userspace", "mode_reason": "", "network": "",
            "uptime_secs": 0, "peers": 0, "pid": 1, "state_dir": "", "listen_port": null,
            "version": "fuzz"
        }))
        .expect("the stub's info parses (update it when InfoData changes)")
    }
    fn peers(&self) -> PeersData {
        PeersData {
            peers: Vec::new(),
            counters: None,
        }
    }
    async fn set_hostname(&self, hostname: String) -> ApiResult<HostnameClaim> {
        no(hostname)
    }
    fn shutdown(&self) -> ShutdownData {
        ShutdownData { stopping: true }
    }
    async fn handshake(&self, req: HandshakeRequest) -> ApiResult<Option<TrustView>> {
        no(req)
    }
    async fn pending(&self) -> ApiResult<PendingList> {
        no("pending")
    }
    async fn approve(&self, peer: String) -> ApiResult<Option<TrustView>> {
        no(peer)
    }
    async fn reject(&self, req: RejectRequest) -> ApiResult<Option<TrustView>> {
        no(req)
    }
    async fn untrust(&self, peer: String) -> ApiResult<Option<TrustView>> {
        no(peer)
    }
    async fn trust(&self) -> ApiResult<TrustList> {
        no("trust")
    }
    async fn find(&self, hostname: String) -> ApiResult<Option<Lookup>> {
        no(hostname)
    }
    async fn ping(&self, req: PingRequest) -> ApiResult<PingReport> {
        no(req)
    }
    async fn send_message(&self, req: SendMessageRequest) -> ApiResult<SentMessage> {
        no(req)
    }
    fn inbox(&self, q: InboxQuery) -> ApiResult<InboxData> {
        no(q)
    }
    fn inbox_read(&self, id: String) -> ApiResult<InboxEntry> {
        no(id)
    }
    async fn reply(&self, id: String, req: ReplyRequest) -> ApiResult<SentMessage> {
        no((id, req))
    }
    fn webhook(&self) -> WebhookStatus {
        WebhookStatus {
            url: None,
            delivered: 0,
            failed: 0,
            dropped: 0,
            queued: 0,
            queue_capacity: 0,
        }
    }
    fn set_webhook(&self, req: WebhookRequest) -> ApiResult<WebhookStatus> {
        no(req)
    }
    fn clear_webhook(&self) -> ApiResult<WebhookStatus> {
        no("clear-webhook")
    }
    async fn forget_registry_key(
        &self,
        req: ForgetRegistryKeyRequest,
    ) -> ApiResult<RegistryKeyView> {
        no(req)
    }
    fn outbox(&self) -> ApiResult<OutboxData> {
        no("outbox")
    }
    async fn expose(&self, req: ExposeRequest) -> ApiResult<Exposed> {
        no(req)
    }
    fn expose_list(&self) -> ExposeList {
        ExposeList {
            exposed: Vec::new(),
        }
    }
    fn expose_remove(&self, port: u16) -> ApiResult<Exposed> {
        no(port)
    }
    async fn connect(&self, q: ConnectQuery) -> ApiResult<(ConnectData, DuplexStream)> {
        no(q)
    }
    async fn listen(&self, port: u16) -> ApiResult<(ListenData, DuplexStream)> {
        no(port)
    }
    fn subscribe(&self) -> Subscription {
        // The sender is dropped: the event stream ends at once instead of waiting forever.
        let (_tx, node) = tokio::sync::broadcast::channel(1);
        Subscription {
            node,
            messages: None,
            files: None,
            pubsub: None,
            tasks: None,
        }
    }
    async fn send_file(&self, req: SendFileRequest) -> ApiResult<Transfer> {
        no(req)
    }
    fn transfers(&self) -> ApiResult<TransfersData> {
        no("transfers")
    }
    fn received(&self, clear: bool) -> ApiResult<ReceivedData> {
        no(clear)
    }
    async fn health(&self) -> HealthData {
        HealthData {
            status: "ok".into(),
            version: "fuzz".into(),
            uptime_secs: 0,
            mode: "userspace".into(),
            peers: 0,
            peers_up: 0,
            registries: 0,
            inbox: None,
            outbox: None,
            data_plane_alive: true,
            last_errors: Vec::new(),
        }
    }
    async fn lookup_node(&self, peer: String) -> ApiResult<NodeView> {
        no(peer)
    }
    async fn set_tags(&self, tags: Vec<String>) -> ApiResult<Registration> {
        no(tags)
    }
    async fn clear_hostname(&self) -> ApiResult<Registration> {
        no("clear-hostname")
    }
    async fn deregister(&self) -> ApiResult<Registration> {
        no("deregister")
    }
    async fn netcheck(&self) -> ApiResult<NetcheckData> {
        no("netcheck")
    }
    fn connections(&self) -> ConnectionList {
        ConnectionList {
            connections: Vec::new(),
        }
    }
    fn disconnect(&self, id: u64) -> ApiResult<ConnectionView> {
        no(id)
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Time is paused: a request that would wait for a timeout ends at once, never hangs.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}

fn app() -> axum::Router {
    static APP: OnceLock<axum::Router> = OnceLock::new();
    APP.get_or_init(|| router(Arc::new(Stub))).clone()
}

async fn exchange(data: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let svc = hyper_util::service::TowerToHyperService::new(app());
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BODY)
        .max_header_size(MAX_BODY);
    let conn = b
        .serve_connection(TokioIo::new(server), svc)
        .with_upgrades();
    let talk = async {
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        out
    };
    let (_, out) = tokio::join!(conn, talk);
    out
}

fuzz_target!(|data: &[u8]| {
    let out = runtime().block_on(exchange(data));
    if !out.is_empty() {
        // HTTP/1.1, or HTTP/1.0 to a 1.0 request.
        assert!(
            out.starts_with(b"HTTP/1."),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
});
