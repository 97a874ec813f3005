//! The local API's typed request bodies and queries, parsed as the server parses them
//! (`serde_json::from_slice` for bodies, the urlencoded query parser for queries). The first
//! byte picks the type; the rest is the body or query. A value that parses is written back and
//! must parse to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::api::types::{
    ConnectQuery, ExposeRequest, HandshakeRequest, InboxQuery, ListenQuery, PeerRequest,
    PingRequest, RejectRequest, ReplyRequest, SendMessageRequest, SetHostnameRequest,
    WebhookRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn body<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let again = serde_json::to_vec(&v).expect("a parsed body serializes");
    let back: T = serde_json::from_slice(&again).expect("a written body parses");
    assert_eq!(back, v);
}

fn query<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let uri = format!("/v1/x?{text}");
    let Ok(uri) = uri.parse::<axum::http::Uri>() else {
        return;
    };
    let Ok(axum::extract::Query(v)) = axum::extract::Query::<T>::try_from_uri(&uri) else {
        return;
    };
    let again = serde_urlencoded::to_string(&v).expect("a parsed query serializes");
    let back: T = serde_urlencoded::from_str(&again).expect("a written query parses");
    assert_eq!(back, v);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => body::<SetHostnameRequest>(rest),
        1 => body::<HandshakeRequest>(rest),
        2 => body::<PeerRequest>(rest),
        3 => body::<RejectRequest>(rest),
        4 => body::<PingRequest>(rest),
        5 => body::<SendMessageRequest>(rest),
        6 => body::<ExposeRequest>(rest),
        7 => query::<InboxQuery>(rest),
        8 => query::<ConnectQuery>(rest),
        9 => body::<ReplyRequest>(rest),
        10 => body::<WebhookRequest>(rest),
        _ => query::<ListenQuery>(rest),
    }
});
