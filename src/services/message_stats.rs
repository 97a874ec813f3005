//! Counters of the message service's sender side, for the metrics endpoint: messages
//! delivered (acked by their recipient) and delivery attempts that failed and were scheduled
//! again. Relaxed atomics, bumped once per message outcome.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters (one per [`crate::services::messages::Messages`]).
#[derive(Debug, Default)]
pub struct MessageStats {
    delivered: AtomicU64,
    retried: AtomicU64,
}

/// A snapshot of [`MessageStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageStatsSnapshot {
    /// Messages acked by their recipient and removed from the outbox.
    pub delivered: u64,
    /// Failed delivery attempts (unreachable, refused, no ack) scheduled for a retry.
    pub retried: u64,
}

impl MessageStats {
    /// One message delivered.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt failed; the message waits for its retry.
    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> MessageStatsSnapshot {
        MessageStatsSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }
}
