//! Handlers of the pub/sub (`/v1/pubsub/…`) and task (`/v1/tasks/…`) routes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};

use crate::api::events::{sse_event, KEEP_ALIVE};
use crate::api::http::{ApiError, JsonBody, PathArg, QueryArgs, Reply};
use crate::api::service::{Api, TaskAct};
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

/// Submit a task to a trusted peer: stored here, then delivered with retries until the
/// worker acks; `data` is the task (state `NEW`).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = SubmitTaskRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<TaskView>),
        (status = 400, body = ErrorBody, description = "a file that cannot be read, or too large a task"),
        (status = 403, body = ErrorBody, description = "the peer is not trusted")))]
pub async fn task_submit<A: Api>(
    State(api): ApiState<A>,
    JsonBody(req): JsonBody<SubmitTaskRequest>,
) -> Reply<TaskView> {
    Reply(api.task_submit(req).await)
}

/// Tasks on this node, newest first: `submitted=true` those we submitted, `false` those we
/// were asked to do.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskListQuery),
    responses((status = 200, description = "the ok envelope", body = OkBody<TaskList>)))]
pub async fn task_list<A: Api>(
    State(api): ApiState<A>,
    QueryArgs(q): QueryArgs<TaskListQuery>,
) -> Reply<TaskList> {
    Reply(api.task_list(q.submitted))
}

/// One task, with every signed state change.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "the task id")),
    responses((status = 200, description = "the ok envelope", body = OkBody<TaskView>),
        (status = 404, body = ErrorBody, description = "no such task")))]
pub async fn task_get<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<String>,
) -> Reply<TaskView> {
    Reply(api.task_get(id))
}

/// Accept a task we were asked to do (state `ACCEPTED`, signed by us).
#[utoipa::path(post, path = "/v1/tasks/{id}/accept", tag = "tasks",
    params(("id" = String, Path, description = "the task id")),
    responses((status = 200, description = "the ok envelope", body = OkBody<TaskView>),
        (status = 404, body = ErrorBody, description = "no such task"),
        (status = 409, body = ErrorBody, description = "not in a state that can be accepted, or expired")))]
pub async fn task_accept<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<String>,
) -> Reply<TaskView> {
    Reply(api.task_act(id, TaskAct::Accept).await)
}

/// Decline a task we were asked to do (state `DECLINED`, signed by us).
#[utoipa::path(post, path = "/v1/tasks/{id}/decline", tag = "tasks",
    params(("id" = String, Path, description = "the task id")), request_body = DeclineTaskRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<TaskView>),
        (status = 404, body = ErrorBody, description = "no such task"),
        (status = 409, body = ErrorBody, description = "not in a state that can be declined, or expired")))]
pub async fn task_decline<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<String>,
    JsonBody(req): JsonBody<DeclineTaskRequest>,
) -> Reply<TaskView> {
    Reply(api.task_act(id, TaskAct::Decline(req.reason)).await)
}

/// Report the result of an accepted task: `DONE`, or `FAILED` with `failed` (signed by us).
#[utoipa::path(post, path = "/v1/tasks/{id}/result", tag = "tasks",
    params(("id" = String, Path, description = "the task id")), request_body = TaskResultRequest,
    responses((status = 200, description = "the ok envelope", body = OkBody<TaskView>),
        (status = 404, body = ErrorBody, description = "no such task"),
        (status = 409, body = ErrorBody, description = "not accepted, or expired")))]
pub async fn task_result<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<String>,
    JsonBody(req): JsonBody<TaskResultRequest>,
) -> Reply<TaskView> {
    Reply(api.task_act(id, TaskAct::Result(req)).await)
}

/// Wait until a task is in a final state (`DECLINED`, `DONE`, `FAILED`, `EXPIRED`).
#[utoipa::path(get, path = "/v1/tasks/{id}/wait", tag = "tasks",
    params(("id" = String, Path, description = "the task id"), TaskWaitQuery),
    responses((status = 200, description = "the ok envelope", body = OkBody<TaskView>),
        (status = 404, body = ErrorBody, description = "no such task"),
        (status = 504, body = ErrorBody, description = "not final within the timeout")))]
pub async fn task_wait<A: Api>(
    State(api): ApiState<A>,
    PathArg(id): PathArg<String>,
    QueryArgs(q): QueryArgs<TaskWaitQuery>,
) -> Reply<TaskView> {
    Reply(api.task_wait(id, q.timeout_ms).await)
}
