//! The OpenAPI 3 document of the local API, generated from the typed requests and responses
//! ([`crate::api::types`]) and the handlers' annotations. The daemon serves it at
//! `GET /v1/openapi.json`; the same text is committed as `docs/api/openapi.json`
//! (`UPDATE_OPENAPI=1 cargo test --test api_http` rewrites it).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::api::handlers;
use crate::api::types::*;
use crate::error::{ErrorCode, PilotError};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pilot local API",
        version = "1.0.0",
        description = "HTTP/1.1 on the daemon's owner-only Unix socket ($PILOT_SOCKET, else \
$PILOT_HOME/pilot.sock), e.g. `curl --unix-socket ~/.pilot/pilot.sock http://pilot/v1/info`. \
Every JSON answer is an envelope: `{\"status\":\"ok\",\"data\":…}` or \
`{\"status\":\"error\",\"code\":…,\"message\":…,\"hint\":…}`, with an HTTP status that matches \
the code (400 invalid_argument, 403 unauthorized, 404 not_found, 409 already_exists, \
500 internal, 502 connection_failed, 503 not_running, 504 timeout; 413 for a body over \
64 KiB, 405 for a wrong method). See docs/PROTOCOL.md.",
        license(name = "Apache-2.0")
    ),
    servers((url = "http://pilot", description = "any host name; the transport is the Unix socket")),
    paths(
        handlers::info,
        handlers::peers,
        handlers::set_hostname,
        handlers::shutdown,
        handlers::handshake,
        handlers::pending,
        handlers::approve,
        handlers::reject,
        handlers::untrust,
        handlers::trust,
        handlers::find,
        handlers::ping,
        handlers::send_message,
        handlers::inbox,
        handlers::outbox,
        handlers::inbox_read,
        handlers::reply,
        handlers::webhook,
        handlers::set_webhook,
        handlers::clear_webhook,
        handlers::expose,
        handlers::expose_list,
        handlers::expose_remove,
        handlers::dns_status,
        handlers::expose_remove_udp,
        handlers::connect,
        handlers::listen,
        handlers::events,
        handlers::forget_registry_key,
        handlers::send_file,
        handlers::transfers,
        handlers::received,
        handlers::clear_received,
        handlers::health,
        handlers::lookup_node,
        handlers::set_tags,
        handlers::clear_hostname,
        handlers::deregister,
        handlers::netcheck,
        handlers::connections,
        handlers::disconnect,
        handlers::pubsub_publish,
        handlers::pubsub_subscribe,
        handlers::pubsub_status,
        handlers::task_submit,
        handlers::task_list,
        handlers::task_get,
        handlers::task_accept,
        handlers::task_decline,
        handlers::task_result,
        handlers::task_wait,
        handlers::dgram_send,
        handlers::dgram_listen,
        serve,
    ),
    components(schemas(
        ErrorBody,
        ErrorCode,
        PilotError,
        ApiEvent,
        NodeEvent,
        StreamEvent,
        MessageReceived,
        ConnectData,
        ListenData,
        TrustStanding,
        DeliveryStatus,
        RegistryKeySource,
        FileReceived,
        Direction,
        TransferState,
        TransferError,
        RefuseCode,
        PubsubReceived,
        PubsubEvent,
        TaskChanged,
        TaskState,
        TaskRole,
        StateRecord,
        FileInfo,
        ResultView,
    )),
    tags(
        (name = "node", description = "this node: identity, peers, hostname, ping, shutdown"),
        (name = "trust", description = "trust requests and decisions, registry look-ups"),
        (name = "messages", description = "the message service (overlay port 1001)"),
        (name = "files", description = "the file service (overlay port 1004)"),
        (name = "expose", description = "overlay ports forwarded to local addresses"),
        (name = "streams", description = "byte streams to peers over HTTP Upgrade"),
        (name = "events", description = "live events (server-sent events)"),
        (name = "pubsub", description = "publish/subscribe (overlay port 1002)"),
        (name = "tasks", description = "task delegation with signed state changes (overlay port 1003)"),
        (name = "dgram", description = "UDP datagrams on overlay ports"),
        (name = "meta", description = "this document"),
    )
)]
struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "the OpenAPI 3 document of this API", content_type = "application/json")))]
pub async fn serve() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a final newline: exactly the committed file's text.
pub fn document_json() -> String {
    let mut s = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_command_has_a_documented_route() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let s = String::new;
        for req in [
            Request::Info {},
            Request::SetHostname { hostname: s() },
            Request::Shutdown {},
            Request::Peers {},
            Request::Handshake {
                peer: s(),
                justification: None,
            },
            Request::Pending {},
            Request::Approve { peer: s() },
            Request::Reject {
                peer: s(),
                reason: None,
            },
            Request::Untrust { peer: s() },
            Request::Trust {},
            Request::Connect { peer: s(), port: 1 },
            Request::Listen { port: 1 },
            Request::SendMessage {
                peer: s(),
                data: s(),
                kind: None,
                wait_ms: Some(5),
            },
            Request::Reply {
                id: s(),
                data: s(),
                kind: None,
            },
            Request::Inbox {
                clear: true,
                from: Some(s()),
                since: Some(1),
                limit: Some(2),
            },
            Request::InboxRead { id: s() },
            Request::SetWebhook { url: s() },
            Request::ClearWebhook {},
            Request::Webhook {},
            Request::Outbox {},
            Request::Find {
                hostname: "x".into(),
            },
            Request::Ping {
                peer: s(),
                count: None,
            },
            Request::Expose {
                port: 1,
                to: s(),
                allow_link_local: false,
            },
            Request::ExposeList {},
            Request::ExposeRemove { port: 1 },
            Request::ForgetRegistryKey { registry: s() },
            Request::SendFile {
                peer: s(),
                path: s(),
                name: None,
                wait_ms: None,
            },
            Request::Transfers {},
            Request::Received { clear: false },
            Request::Received { clear: true },
            Request::Health {},
            Request::LookupNode { peer: s() },
            Request::SetTags { tags: vec![] },
            Request::ClearHostname {},
            Request::Deregister {},
            Request::Netcheck {},
            Request::Connections {},
            Request::Disconnect { id: 1 },
            Request::DnsStatus {},
            Request::ExposeUdp {
                port: 1,
                to: s(),
                allow_link_local: false,
            },
            Request::ExposeRemoveUdp { port: 1 },
            Request::Publish {
                peer: None,
                topic: s(),
                data: s(),
            },
            Request::Subscribe {
                peer: Some(s()),
                topic: s(),
            },
            Request::PubsubStatus {},
            Request::TaskSubmit(SubmitTaskRequest {
                peer: s(),
                task: serde_json::Value::Null,
                file: None,
                deadline_s: None,
            }),
            Request::TaskList { submitted: None },
            Request::TaskStatus { id: "x".into() },
            Request::TaskAccept { id: "x".into() },
            Request::TaskDecline {
                id: "x".into(),
                reason: s(),
            },
            Request::TaskResult {
                id: "x".into(),
                result: TaskResultRequest::default(),
            },
            Request::TaskWait {
                id: "x".into(),
                timeout_ms: None,
            },
            Request::DgramSend(DgramSendRequest {
                peer: s(),
                port: 1,
                data: s(),
                base64: false,
            }),
            Request::DgramListen(DgramListenQuery {
                port: 1,
                count: None,
                timeout_ms: None,
            }),
        ] {
            let r = req.route();
            let path = r.target.split('?').next().unwrap();
            // Documented paths name their parameters: /v1/find/{hostname}, /v1/expose/{port}.
            let documented = doc["paths"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(p, _)| {
                    let (ps, qs): (Vec<_>, Vec<_>) =
                        (p.split('/').collect(), path.split('/').collect());
                    ps.len() == qs.len()
                        && ps
                            .iter()
                            .zip(&qs)
                            .all(|(a, b)| a.starts_with('{') || a == b)
                })
                .unwrap_or_else(|| panic!("{req:?}: {path} is not documented"));
            let op = &documented.1[r.method.to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{req:?}: {} {path} is not documented",
                r.method
            );
            let has_body = op["requestBody"].is_object();
            assert_eq!(r.body.is_some(), has_body, "{req:?}: body");
        }
    }

    #[test]
    fn the_document_names_every_path_and_the_envelope() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for p in [
            "/v1/info",
            "/v1/peers",
            "/v1/trust/handshake",
            "/v1/find/{hostname}",
            "/v1/messages/inbox",
            "/v1/expose/{port}",
            "/v1/connect",
            "/v1/events",
            "/v1/openapi.json",
        ] {
            assert!(doc["paths"][p].is_object(), "{p} missing");
        }
        let schemas = &doc["components"]["schemas"];
        for s in [
            "InfoData",
            "PeerStatus",
            "TrustView",
            "ErrorBody",
            "PublicKey",
            "NodeEvent",
        ] {
            assert!(schemas[s].is_object(), "{s} missing");
        }
    }
}
