//! The broker's state, without I/O: topics and their sequence numbers, subscribers with their
//! patterns and bounded queues, and the fan-out. A publish never waits: each matching
//! subscriber's queue takes the event with `try_send`, and a full queue drops the **newest**
//! event (the one being published) for that subscriber only and counts it. The subscriber
//! sees the gap in the topic's sequence numbers; what it already has queued stays in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::config::PubsubConfig;
use crate::identity::PublicKey;
use crate::services::pubsub::topic::{matches, validate_pattern, validate_topic};
use crate::services::pubsub::wire::{PubsubEvent, WireCode};

/// A subscriber's id at this broker.
pub type SubscriberId = u64;

/// A refusal, with its wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The code.
    pub code: WireCode,
    /// For humans.
    pub message: String,
}

impl Refusal {
    fn new(code: WireCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// The topic's new sequence number.
    pub seq: u64,
    /// Subscribers whose queue took the event.
    pub queued: u32,
    /// Subscribers whose queue was full (the event was dropped for them).
    pub dropped: u32,
}

/// One subscriber as `GET /v1/pubsub` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubscriberView {
    /// Its id at this broker.
    pub id: SubscriberId,
    /// The peer's key, or none for a local subscriber (this node's API).
    pub peer: Option<PublicKey>,
    /// Its patterns.
    pub patterns: Vec<String>,
    /// Events waiting in its queue.
    pub queued: u64,
    /// Events taken from its queue to be written to its connection (or its local client).
    pub delivered: u64,
    /// Events dropped for it because its queue was full.
    pub dropped: u64,
}

/// One topic's last sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicView {
    /// The topic.
    pub topic: String,
    /// Its last sequence number (how many events were published on it).
    pub seq: u64,
}

struct Subscriber {
    peer: Option<PublicKey>,
    patterns: Vec<String>,
    tx: mpsc::Sender<Arc<PubsubEvent>>,
    delivered: Arc<AtomicU64>,
    dropped: u64,
}

/// The broker: topics, subscribers, fan-out.
pub struct Broker {
    topics: HashMap<String, u64>,
    subs: BTreeMap<SubscriberId, Subscriber>,
    next_id: SubscriberId,
    limits: PubsubConfig,
    /// The epoch stamped on each event ([`super::epoch`]).
    epoch: u64,
}

/// The receiving end of a subscriber's queue, and its delivered counter (the writer adds to
/// it for each event it sends on).
pub struct Queue {
    /// The queue.
    pub rx: mpsc::Receiver<Arc<PubsubEvent>>,
    /// Events taken from it.
    pub delivered: Arc<AtomicU64>,
}

impl Broker {
    /// An empty broker with these limits.
    pub fn new(limits: PubsubConfig) -> Self {
        Broker {
            topics: HashMap::new(),
            subs: BTreeMap::new(),
            next_id: 1,
            limits,
            epoch: 0,
        }
    }

    /// The same broker, stamping `epoch` on its events.
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The epoch stamped on this broker's events.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Adds a subscriber with no pattern yet; its queue holds `subscriber_queue` events.
    pub fn add_subscriber(
        &mut self,
        peer: Option<PublicKey>,
    ) -> Result<(SubscriberId, Queue), Refusal> {
        self.subs.retain(|_, s| !s.tx.is_closed());
        if self.subs.len() >= self.limits.max_subscribers {
            return Err(Refusal::new(
                WireCode::TooManySubscribers,
                format!("the broker has {} subscribers, its limit", self.subs.len()),
            ));
        }
        let (tx, rx) = mpsc::channel(self.limits.subscriber_queue);
        let delivered = Arc::new(AtomicU64::new(0));
        let id = self.next_id;
        self.next_id += 1;
        self.subs.insert(
            id,
            Subscriber {
                peer,
                patterns: Vec::new(),
                tx,
                delivered: delivered.clone(),
                dropped: 0,
            },
        );
        Ok((id, Queue { rx, delivered }))
    }

    /// Adds `pattern` to subscriber `id` (a pattern it has already is accepted again).
    pub fn add_pattern(&mut self, id: SubscriberId, pattern: &str) -> Result<(), Refusal> {
        validate_pattern(pattern).map_err(|e| Refusal::new(WireCode::BadTopic, e.to_string()))?;
        let max = self.limits.max_patterns;
        let Some(s) = self.subs.get_mut(&id) else {
            return Err(Refusal::new(WireCode::Malformed, "no such subscriber"));
        };
        if s.patterns.iter().any(|p| p == pattern) {
            return Ok(());
        }
        if s.patterns.len() >= max {
            return Err(Refusal::new(
                WireCode::TooManyPatterns,
                format!("a subscriber holds at most {max} patterns"),
            ));
        }
        s.patterns.push(pattern.to_string());
        Ok(())
    }

    /// Removes subscriber `id`.
    pub fn remove(&mut self, id: SubscriberId) {
        self.subs.remove(&id);
    }

    /// Publishes `data` on `topic` from `publisher` at `now_ms`: the next sequence number of
    /// the topic, and each matching subscriber's queue takes the event or drops it.
    pub fn publish(
        &mut self,
        publisher: PublicKey,
        topic: &str,
        data: String,
        now_ms: u64,
    ) -> Result<Fanout, Refusal> {
        validate_topic(topic).map_err(|e| Refusal::new(WireCode::BadTopic, e.to_string()))?;
        if data.len() > self.limits.max_data_bytes {
            return Err(Refusal::new(
                WireCode::TooLarge,
                format!(
                    "the data is {} bytes; this broker takes at most {}",
                    data.len(),
                    self.limits.max_data_bytes
                ),
            ));
        }
        if !self.topics.contains_key(topic) && self.topics.len() >= self.limits.max_topics {
            return Err(Refusal::new(
                WireCode::TooManyTopics,
                format!("the broker tracks {} topics, its limit", self.topics.len()),
            ));
        }
        let seq = self.topics.entry(topic.to_string()).or_insert(0);
        *seq += 1;
        let event = Arc::new(PubsubEvent {
            publisher,
            topic: topic.to_string(),
            seq: *seq,
            ts_ms: now_ms,
            data,
            epoch: self.epoch,
        });
        let mut out = Fanout {
            seq: *seq,
            queued: 0,
            dropped: 0,
        };
        let mut closed = Vec::new();
        for (id, s) in &mut self.subs {
            if !s.patterns.iter().any(|p| matches(p, topic)) {
                continue;
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => out.queued += 1,
                Err(TrySendError::Full(_)) => {
                    s.dropped += 1;
                    out.dropped += 1;
                }
                Err(TrySendError::Closed(_)) => closed.push(*id),
            }
        }
        for id in closed {
            self.subs.remove(&id);
        }
        Ok(out)
    }

    /// The subscribers with their counters.
    pub fn subscribers(&self) -> Vec<SubscriberView> {
        self.subs
            .iter()
            .filter(|(_, s)| !s.tx.is_closed())
            .map(|(id, s)| SubscriberView {
                id: *id,
                peer: s.peer,
                patterns: s.patterns.clone(),
                queued: (s.tx.max_capacity() - s.tx.capacity()) as u64,
                delivered: s.delivered.load(Ordering::Relaxed),
                dropped: s.dropped,
            })
            .collect()
    }

    /// The topics and their last sequence numbers, by name.
    pub fn topics(&self) -> Vec<TopicView> {
        let mut t: Vec<TopicView> = self
            .topics
            .iter()
            .map(|(topic, seq)| TopicView {
                topic: topic.clone(),
                seq: *seq,
            })
            .collect();
        t.sort_by(|a, b| a.topic.cmp(&b.topic));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        crate::identity::Identity::from_seed([3; 32]).public_key()
    }

    fn broker(queue: usize) -> Broker {
        Broker::new(PubsubConfig {
            subscriber_queue: queue,
            ..PubsubConfig::default()
        })
    }

    #[test]
    fn a_full_queue_drops_the_newest_event_for_that_subscriber_only_and_counts_it() {
        let mut b = broker(2);
        let (slow, _slow_q) = b.add_subscriber(None).unwrap();
        let (fast, mut fast_q) = b.add_subscriber(Some(key())).unwrap();
        b.add_pattern(slow, "t.>").unwrap();
        b.add_pattern(fast, "t.*").unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            let f = b.publish(key(), "t.x", format!("{i}"), 100 + i).unwrap();
            assert_eq!(f.seq, i + 1);
            got.push(fast_q.rx.try_recv().unwrap().seq);
        }
        assert_eq!(
            got,
            vec![1, 2, 3, 4, 5],
            "the reading subscriber got all, in order"
        );
        let views = b.subscribers();
        let s = views.iter().find(|v| v.id == slow).unwrap();
        assert_eq!((s.queued, s.dropped), (2, 3));
        let f = views.iter().find(|v| v.id == fast).unwrap();
        assert_eq!((f.queued, f.dropped), (0, 0));
        assert_eq!(
            b.topics(),
            vec![TopicView {
                topic: "t.x".into(),
                seq: 5
            }]
        );
    }

    #[test]
    fn sequence_numbers_are_per_topic_and_a_non_matching_subscriber_gets_nothing() {
        let mut b = broker(8);
        let (id, mut q) = b.add_subscriber(None).unwrap();
        b.add_pattern(id, "a").unwrap();
        assert_eq!(b.publish(key(), "a", "1".into(), 0).unwrap().seq, 1);
        assert_eq!(b.publish(key(), "b", "1".into(), 0).unwrap().seq, 1);
        let f = b.publish(key(), "a", "2".into(), 0).unwrap();
        assert_eq!((f.seq, f.queued), (2, 1));
        assert_eq!(q.rx.try_recv().unwrap().seq, 1);
        assert_eq!(q.rx.try_recv().unwrap().data, "2");
        assert!(q.rx.try_recv().is_err());
    }

    #[test]
    fn bad_topics_big_data_and_limits_are_refused_with_codes() {
        let mut b = Broker::new(PubsubConfig {
            max_data_bytes: 4,
            max_topics: 1,
            max_patterns: 1,
            max_subscribers: 1,
            ..PubsubConfig::default()
        });
        let code = |r: Result<Fanout, Refusal>| r.unwrap_err().code;
        assert_eq!(
            code(b.publish(key(), "a.*", "".into(), 0)),
            WireCode::BadTopic
        );
        assert_eq!(
            code(b.publish(key(), "a", "12345".into(), 0)),
            WireCode::TooLarge
        );
        b.publish(key(), "a", "1".into(), 0).unwrap();
        assert_eq!(
            code(b.publish(key(), "b", "1".into(), 0)),
            WireCode::TooManyTopics
        );
        let (id, q) = b.add_subscriber(None).unwrap();
        assert_eq!(
            b.add_pattern(id, "a.>.b").unwrap_err().code,
            WireCode::BadTopic
        );
        b.add_pattern(id, "a").unwrap();
        assert_eq!(
            b.add_pattern(id, "b").unwrap_err().code,
            WireCode::TooManyPatterns
        );
        assert!(matches!(
            b.add_subscriber(None),
            Err(Refusal {
                code: WireCode::TooManySubscribers,
                ..
            })
        ));
        drop(q);
        assert!(
            b.add_subscriber(None).is_ok(),
            "a closed subscriber frees its place"
        );
    }
}
