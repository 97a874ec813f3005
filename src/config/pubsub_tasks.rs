//! `[pubsub]` and `[tasks]`: the limits of the pub/sub broker (port 1002) and the task service
//! (port 1003). Every field has a documented default (config/pilot.toml).

use serde::{Deserialize, Serialize};

/// `[pubsub]`: what the broker holds for its subscribers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// Events queued per subscriber; when full, a new event is dropped for that subscriber
    /// only (drop newest) and counted.
    pub subscriber_queue: usize,
    /// The largest event payload, bytes.
    pub max_data_bytes: usize,
    /// Subscribers (connections with a subscription, and local ones) at once.
    pub max_subscribers: usize,
    /// Patterns one subscriber may hold.
    pub max_patterns: usize,
    /// Topics whose sequence numbers the broker tracks; a publish to a new topic beyond it is
    /// refused.
    pub max_topics: usize,
    /// Connections open to port 1002 from one peer.
    pub max_connections_per_peer: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            subscriber_queue: 1024,
            max_data_bytes: 64 * 1024,
            max_subscribers: 256,
            max_patterns: 32,
            max_topics: 10_000,
            max_connections_per_peer: 16,
        }
    }
}

/// `[tasks]`: what the task service takes from trusted peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// The largest task (its JSON plus an attached file), bytes.
    pub max_task_bytes: usize,
    /// The largest result (data or file), bytes.
    pub max_result_bytes: usize,
    /// Tasks kept on this node (submitted and received together); a new one beyond it is
    /// refused.
    pub max_tasks: usize,
    /// Deadline of a task submitted without `--deadline`, seconds.
    pub default_deadline_secs: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            max_task_bytes: 256 * 1024,
            max_result_bytes: 1024 * 1024,
            max_tasks: 10_000,
            default_deadline_secs: 3600,
        }
    }
}

/// Refuses zero limits (a service that refuses everything).
pub(crate) fn validate(p: &PubsubConfig, t: &TasksConfig) -> Result<(), String> {
    let fields = [
        ("pubsub.subscriber_queue", p.subscriber_queue as u64),
        ("pubsub.max_data_bytes", p.max_data_bytes as u64),
        ("pubsub.max_subscribers", p.max_subscribers as u64),
        ("pubsub.max_patterns", p.max_patterns as u64),
        ("pubsub.max_topics", p.max_topics as u64),
        (
            "pubsub.max_connections_per_peer",
            p.max_connections_per_peer as u64,
        ),
        ("tasks.max_task_bytes", t.max_task_bytes as u64),
        ("tasks.max_result_bytes", t.max_result_bytes as u64),
        ("tasks.max_tasks", t.max_tasks as u64),
        ("tasks.default_deadline_secs", t.default_deadline_secs),
    ];
    if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{name} must be at least 1"));
    }
    if p.max_data_bytes > 16 << 20 || t.max_task_bytes > 64 << 20 || t.max_result_bytes > 64 << 20 {
        return Err(
            "pubsub.max_data_bytes is at most 16 MiB; tasks.max_task_bytes and \
             tasks.max_result_bytes at most 64 MiB (send larger data as a file)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_with_the_key_named() {
        let p = PubsubConfig {
            subscriber_queue: 0,
            ..PubsubConfig::default()
        };
        let e = validate(&p, &TasksConfig::default()).unwrap_err();
        assert!(e.contains("pubsub.subscriber_queue"), "{e}");
        assert!(validate(&PubsubConfig::default(), &TasksConfig::default()).is_ok());
    }
}
