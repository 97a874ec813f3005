//! The home relay (v1.4, issue 14): the first configured registry, in configuration order,
//! where we are registered and that answers. Peers that must relay to us send through it (we
//! tell them in every endpoint request and answer), as DERP clients do with their home DERP.
//!
//! "Answers": a registry that leaves a request unanswered for [`ClientConfig::home_timeout`]
//! (the oldest request sent since its latest answer) stops answering; its next authentic
//! answer makes it answer again. A registry that misses heartbeats is also lost altogether
//! (no longer registered) after three unanswered sends. When the home stops answering the
//! home moves to the next registry that answers, and [`ClientEvent::HomeChanged`] says so;
//! when a registry earlier in the order answers again it becomes the home again.
//!
//! [`ClientConfig::home_timeout`]: super::ClientConfig::home_timeout

use std::net::SocketAddr;
use std::time::Instant;

use super::{Client, ClientEvent};

impl Client {
    /// Our home relay: the first registry (in configuration order) where we are registered
    /// and that answers; `None` while no registry does.
    pub fn home(&self) -> Option<SocketAddr> {
        self.home
    }

    /// Whether `registry` is one of ours, has us registered and answers (so we can send relay
    /// frames through it: it knows our address).
    pub fn is_answering(&self, registry: SocketAddr) -> bool {
        self.registries
            .iter()
            .any(|r| r.addr == registry && r.registered && r.answering)
    }

    /// A request to `reg` went out at `now`: if it was answering, the wait starts here.
    pub(super) fn note_sent(&mut self, reg: usize, now: Instant) {
        let r = &mut self.registries[reg];
        r.unanswered_since.get_or_insert(now);
    }

    /// An authentic datagram came from `reg`: it answers.
    pub(super) fn note_answer(&mut self, reg: usize) {
        let r = &mut self.registries[reg];
        r.unanswered_since = None;
        r.answering = true;
    }

    /// When a registry's wait for an answer runs out next (a home candidate stops answering).
    pub(super) fn home_deadline(&self) -> Option<Instant> {
        self.registries
            .iter()
            .filter(|r| r.registered && r.answering)
            .filter_map(|r| r.unanswered_since)
            .map(|t| t + self.config.home_timeout)
            .min()
    }

    /// Marks registries silent past the timeout as not answering, chooses the home again and
    /// reports a change.
    pub(super) fn refresh_home(&mut self, now: Instant) {
        let timeout = self.config.home_timeout;
        for r in &mut self.registries {
            if r.answering
                && r.unanswered_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            {
                r.answering = false;
                tracing::info!(registry = %r.addr, "registry leaves requests unanswered");
            }
        }
        for r in &mut self.registries {
            let usable = r.registered && r.answering;
            if usable != r.usable {
                r.usable = usable;
                self.events.push_back(ClientEvent::RelayUsable {
                    registry: r.addr,
                    usable,
                });
            }
        }
        let home = self
            .registries
            .iter()
            .find(|r| r.registered && r.answering)
            .map(|r| r.addr);
        if home != self.home {
            let previous = std::mem::replace(&mut self.home, home);
            self.events
                .push_back(ClientEvent::HomeChanged { home, previous });
        }
    }
}
