//! Renderings of pub/sub and task answers.

use super::{table, untrusted};
use crate::api::{PublishedData, PubsubData, PubsubReceived, TaskList, TaskRole, TaskView};

/// One received event: `TOPIC #SEQ from ADDRESS: DATA`.
pub fn pubsub_event(r: &PubsubReceived) -> String {
    let e = &r.event;
    format!(
        "{} #{} from {}: {}",
        e.topic,
        e.seq,
        e.publisher.addr48(),
        untrusted(&e.data)
    )
}

/// `publish`'s answer.
pub fn published(p: &PublishedData) -> String {
    let mut s = format!(
        "published {} #{} to {} subscriber(s)",
        p.topic, p.seq, p.subscribers
    );
    if p.dropped > 0 {
        s.push_str(&format!(
            " ({} with a full queue: dropped for them)",
            p.dropped
        ));
    }
    s
}

/// `pubsub`'s answer: topics, then subscribers with their counters.
pub fn pubsub_status(d: &PubsubData) -> String {
    let mut rows = vec![["TOPIC".to_string(), "SEQ".to_string()]];
    rows.extend(
        d.topics
            .iter()
            .map(|t| [t.topic.clone(), t.seq.to_string()]),
    );
    let mut subs = vec![[
        "ID".to_string(),
        "PEER".to_string(),
        "PATTERNS".to_string(),
        "QUEUED".to_string(),
        "DELIVERED".to_string(),
        "DROPPED".to_string(),
    ]];
    subs.extend(d.subscribers.iter().map(|s| {
        [
            s.id.to_string(),
            s.peer
                .map_or_else(|| "local".into(), |k| k.addr48().to_string()),
            s.patterns.join(","),
            s.queued.to_string(),
            s.delivered.to_string(),
            s.dropped.to_string(),
        ]
    }));
    format!(
        "{}\n\n{}\n\nqueue {} events per subscriber; when full: {}",
        table(&rows),
        table(&subs),
        d.subscriber_queue,
        d.drop_policy
    )
}

/// One task: id, state, sides, the task, and its answer.
pub fn task_view(t: &TaskView) -> String {
    let mut lines = vec![
        format!("task {}  {}", t.id, t.state.as_str()),
        format!(
            "{} (we are the {})",
            match t.role {
                TaskRole::Submitter => format!("to {}", t.worker.addr48()),
                TaskRole::Worker => format!("from {}", t.submitter.addr48()),
            },
            match t.role {
                TaskRole::Submitter => "submitter",
                TaskRole::Worker => "worker",
            }
        ),
        format!("task: {}", untrusted(&t.task.to_string())),
    ];
    if let Some(f) = &t.file {
        lines.push(format!(
            "file: {} ({} bytes){}",
            untrusted(&f.name),
            f.size,
            f.path
                .as_ref()
                .map_or(String::new(), |p| format!(" at {p}"))
        ));
    }
    if let Some(r) = &t.reason {
        lines.push(format!("reason: {}", untrusted(r)));
    }
    if let Some(r) = &t.result {
        if let Some(d) = &r.data {
            lines.push(format!("result: {}", untrusted(d)));
        }
        if let Some(f) = &r.file {
            lines.push(format!(
                "result file: {} ({} bytes){}",
                untrusted(&f.name),
                f.size,
                f.path
                    .as_ref()
                    .map_or(String::new(), |p| format!(" at {p}"))
            ));
        }
    }
    if t.undelivered > 0 {
        lines.push(format!(
            "{} change(s) not yet delivered (retried)",
            t.undelivered
        ));
    }
    if let Some(r) = &t.refused {
        lines.push(format!("refused by the peer: {}", untrusted(r)));
    }
    lines.push(format!("{} signed change(s)", t.records.len()));
    lines.join("\n")
}

/// `task list`.
pub fn task_list(l: &TaskList) -> String {
    if l.tasks.is_empty() {
        return "no tasks".into();
    }
    let mut rows = vec![[
        "ID".to_string(),
        "STATE".into(),
        "PEER".into(),
        "TASK".into(),
    ]];
    rows.extend(l.tasks.iter().map(|t| {
        let mut task = t.task.to_string();
        if task.len() > 40 {
            task = format!("{}…", task.chars().take(39).collect::<String>());
        }
        [
            t.id.clone(),
            t.state.as_str().into(),
            t.peer.addr48().to_string(),
            untrusted(&task).into_owned(),
        ]
    }));
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PubsubEvent;

    #[test]
    fn an_event_line_shows_topic_seq_publisher_and_escaped_data() {
        let key = crate::identity::Identity::from_seed([5; 32]).public_key();
        let r = PubsubReceived {
            broker: key,
            event: PubsubEvent {
                publisher: key,
                topic: "a.b".into(),
                seq: 3,
                ts_ms: 1,
                data: "hi\u{1b}[2J".into(),
                epoch: 2,
            },
        };
        let line = pubsub_event(&r);
        assert!(
            line.starts_with(&format!("a.b #3 from {}: hi", key.addr48())),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "{line}");
    }
}
