//! Renderings of pub/sub and task answers.

use super::{table, untrusted};
use crate::api::{PublishedData, PubsubData, PubsubReceived};

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
