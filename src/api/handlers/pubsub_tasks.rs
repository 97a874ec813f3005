//! Handlers of the pub/sub (`/v1/pubsub/…`) and task (`/v1/tasks/…`) routes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};

use crate::api::events::{sse_event, KEEP_ALIVE};
use crate::api::http::{ApiError, JsonBody, QueryArgs, Reply};
use crate::api::service::Api;
use crate::api::types::*;

type ApiState<A> = State<Arc<A>>;

/// Publish an event on a peer's broker, or on ours (`peer` absent: to every trusted
/// subscriber of this node).
#[utoipa::path(post, path = "/v1/pubsub/publish", tag = "pubsub", request_body = PublishRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<PublishedData>),
        (status = 400, body = ErrorBody, description = "a bad topic, or data over the broker's limit"),
        (status = 403, body = ErrorBody, description = "the peer is not trusted"),
        (status = 502, body = ErrorBody, description = "the peer's broker cannot be reached or refused")))]
pub async fn pubsub_publish<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<PublishRequest>,
) -> Reply<PublishedData> {
    Reply(api.pubsub_publish(req).await)
}

/// Subscribe to a pattern on a peer's broker, or ours: each event is a server-sent event of
/// type `pubsub_event` whose data is a PubsubReceived (inside an ApiEvent). A refusal comes
/// as an error envelope before the stream starts.
#[utoipa::path(get, path = "/v1/pubsub/subscribe", tag = "pubsub", params(SubscribeQuery),
    responses((status = 200, content_type = "text/event-stream",
        description = "server-sent events; each `data:` is an ApiEvent of type `pubsub_event`",
        body = ApiEvent),
        (status = 400, body = ErrorBody, description = "a bad pattern"),
        (status = 403, body = ErrorBody, description = "the peer is not trusted"),
        (status = 502, body = ErrorBody, description = "the peer's broker cannot be reached or refused")))]
pub async fn pubsub_subscribe<A: Api>(
    State(api): ApiState<A>,
    QueryArgs(q): QueryArgs<SubscribeQuery>,
) -> Response {
    let sub = match api.pubsub_subscribe(q).await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let hello =
        stream::once(async { Ok::<_, Infallible>(Event::default().comment("pilot pubsub v1")) });
    let events = stream::unfold(sub, |mut s| async move {
        let r = s.next().await?;
        let e = ApiEvent::Api(StreamEvent::PubsubEvent(PubsubReceived {
            broker: r.broker,
            event: (*r.event).clone(),
        }));
        Some((Ok::<_, Infallible>(sse_event(&e)), s))
    });
    Sse::new(hello.chain(events))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Our broker: topics with their last sequence numbers, subscribers with their patterns and
/// queued, delivered and dropped counters.
#[utoipa::path(get, path = "/v1/pubsub", tag = "pubsub",
    responses((status = 200, description = "the ok envelope", body = OkBody<PubsubData>)))]
pub async fn pubsub_status<A: Api>(State(api): ApiState<A>) -> Reply<PubsubData> {
    Reply(api.pubsub_status())
}
