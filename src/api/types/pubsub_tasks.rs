//! Requests and answers of the pub/sub (`/v1/pubsub/…`) and task (`/v1/tasks/…`) routes.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::identity::PublicKey;
pub use crate::services::pubsub::broker::{SubscriberView, TopicView};
pub use crate::services::pubsub::wire::PubsubEvent;

/// `POST /v1/pubsub/publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The broker: a peer (hostname, address, overlay IPv6 or public key), or absent for
    /// our own broker (to every trusted subscriber of this node).
    #[serde(default)]
    pub peer: Option<String>,
    /// The exact topic (dotted, no wildcard).
    pub topic: String,
    /// The payload (text).
    pub data: String,
}

/// `GET /v1/pubsub/subscribe`'s query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubscribeQuery {
    /// The broker: a peer, or absent for our own.
    #[serde(default)]
    pub peer: Option<String>,
    /// The pattern: `*` is one segment, a final `>` (or `**`) the rest.
    pub topic: String,
}

/// `POST /v1/pubsub/publish`: what the broker did with the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublishedData {
    /// The broker's key.
    pub broker: PublicKey,
    /// The topic.
    pub topic: String,
    /// The event's sequence number on the topic.
    pub seq: u64,
    /// Subscribers whose pattern matched.
    pub subscribers: u32,
    /// Of those, how many had a full queue (the event was dropped for them).
    pub dropped: u32,
}

/// `GET /v1/pubsub`: our broker's topics and subscribers with their counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PubsubData {
    /// What a full subscriber queue does: `drop_newest` (the event being published is
    /// dropped for that subscriber and counted; its queue keeps the older ones).
    pub drop_policy: String,
    /// Events queued per subscriber at most.
    pub subscriber_queue: usize,
    /// Topics and their last sequence numbers.
    pub topics: Vec<TopicView>,
    /// Subscribers and their counters.
    pub subscribers: Vec<SubscriberView>,
}

/// A pub/sub event received by one of our subscriptions (an event of `GET /v1/events`, and
/// each event of `GET /v1/pubsub/subscribe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PubsubReceived {
    /// The broker it came from (our key for a local subscription).
    pub broker: PublicKey,
    /// The event.
    pub event: PubsubEvent,
}

pub use crate::services::tasks::machine::Role as TaskRole;
pub use crate::services::tasks::record::{StateRecord, TaskState};
pub use crate::services::tasks::{FileInfo, ResultView, TaskView};

/// `POST /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskRequest {
    /// The worker: hostname, address, overlay IPv6 or public key of a trusted peer.
    pub peer: String,
    /// The task, any JSON value.
    pub task: serde_json::Value,
    /// A file to attach: an absolute path the daemon reads (as the same user).
    #[serde(default)]
    pub file: Option<String>,
    /// Seconds until the task expires (default `[tasks] default_deadline_secs`).
    #[serde(default)]
    pub deadline_s: Option<u64>,
}

/// `GET /v1/tasks`'s query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskListQuery {
    /// `true`: the tasks we submitted; `false`: those we were asked to do; absent: all.
    #[serde(default)]
    pub submitted: Option<bool>,
}

/// `POST /v1/tasks/{id}/decline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclineTaskRequest {
    /// Why, shown to the submitter.
    pub reason: String,
}

/// `POST /v1/tasks/{id}/result`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskResultRequest {
    /// The result as text.
    #[serde(default)]
    pub data: Option<String>,
    /// A result file: an absolute path the daemon reads.
    #[serde(default)]
    pub file: Option<String>,
    /// Report FAILED instead of DONE (`data` says why).
    #[serde(default)]
    pub failed: bool,
}

/// `GET /v1/tasks/{id}/wait`'s query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskWaitQuery {
    /// How long to wait for a final state, ms (default 30000, at most 3600000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `GET /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    /// The tasks, newest first.
    pub tasks: Vec<TaskView>,
}

/// A task changed state (an event of `GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskChanged {
    /// The task after the change.
    pub task: Box<TaskView>,
}
