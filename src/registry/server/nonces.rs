//! The replay guard: nonces seen within the time window, bounded. When full, the nonce that
//! would expire first is evicted and the window's floor rises to its expiry, so a request whose
//! nonce might have been forgotten is refused instead of every new request (fail open for fresh
//! requests, closed for possible replays).

use std::collections::{BTreeSet, HashMap};

use crate::wire::registry::Nonce;

/// What became of a nonce offered to [`Nonces::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// New: remembered until its expiry.
    Fresh,
    /// Seen before (or possibly seen: its expiry is at or below the floor).
    Replay,
}

/// Nonces with their expiry (unix ms).
#[derive(Debug, Default)]
pub(super) struct Nonces {
    by_nonce: HashMap<Nonce, u64>,
    by_expiry: BTreeSet<(u64, Nonce)>,
    /// Requests expiring at or before this may have had their nonce evicted.
    floor: u64,
}

impl Nonces {
    /// Remembers `nonce` until `expires_ms`, keeping at most `max` (evicting the earliest
    /// expiry; `evicted` counts them).
    pub(super) fn insert(
        &mut self,
        nonce: Nonce,
        expires_ms: u64,
        max: usize,
        evicted: &mut u64,
    ) -> Seen {
        if expires_ms <= self.floor || self.by_nonce.contains_key(&nonce) {
            return Seen::Replay;
        }
        while self.by_nonce.len() >= max.max(1) {
            let Some(first) = self.by_expiry.pop_first() else {
                break;
            };
            self.by_nonce.remove(&first.1);
            self.floor = self.floor.max(first.0);
            *evicted += 1;
        }
        if expires_ms <= self.floor {
            return Seen::Replay;
        }
        self.by_nonce.insert(nonce, expires_ms);
        self.by_expiry.insert((expires_ms, nonce));
        Seen::Fresh
    }

    /// Forgets nonces that expired before `now_ms`.
    pub(super) fn expire(&mut self, now_ms: u64) {
        while let Some(&(exp, n)) = self.by_expiry.first() {
            if exp >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.by_nonce.remove(&n);
        }
    }

    /// Whether `nonce` is remembered (a verified request carried it within the window).
    pub(super) fn contains(&self, nonce: &Nonce) -> bool {
        self.by_nonce.contains_key(nonce)
    }

    /// How many are remembered.
    pub(super) fn len(&self) -> usize {
        self.by_nonce.len()
    }
}
