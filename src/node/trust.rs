//! Trust: which peers may build a tunnel with us, how that changes, and where it is kept.
//!
//! # States (per peer key)
//! - `Pending`: they asked us; we have not decided. Their request's nonce is kept to answer it.
//! - `Requested`: we asked them; no answer yet.
//! - `Trusted`: mutual trust. Only trusted peers get a tunnel.
//! - `Rejected`: we refused them, or they refused us.
//! - no entry: nothing between us (also the state after a revocation).
//!
//! # Rules
//! - Their request + our approval = mutual trust; our request + their approval likewise.
//! - A request towards a peer that already asked us completes trust at once (we send the
//!   approval); a request from a peer we already asked completes it the same way.
//! - Either side can untrust: the entry is removed, the other side is sent a revocation, and the
//!   daemon tears the tunnel down ([`TrustEffect::Untrusted`]).
//! - An allow-list (keys, or hostnames as bound by the registry) approves requests at once.
//!   Hostname entries trust the registry's binding of the name; key entries trust nothing else.
//! - A trust message from a peer is applied only if its timestamp is newer than the last one
//!   applied from that peer (the *watermark*), so a replayed old message (say a revocation from
//!   before the peers made up) changes nothing.
//! - An unsolicited approval (we did not ask) creates no trust.
//!
//! Trust messages themselves are the signed `TrustRequest` / `TrustResponse` requests of
//! [`crate::wire::registry`]: the same bytes travel through a registry (held and pushed) or
//! directly to a peer that is reachable; [`verify_trust_message`] checks them on arrival.
//!
//! - A rejected key may not ask again for a cooldown (`[trust] reject_cooldown_secs`, a day by
//!   default); its requests meanwhile are dropped and counted.
//! - Strangers cannot grow our memory: pending requests are capped (`[trust] max_pending`, the
//!   oldest evicted), trust messages are rate-limited per key, and direct ones are taken only
//!   from trusted peers (see `limits`).
//!
//! # File
//! `trust.json` in the state directory, mode 0600, written atomically
//! ([`crate::state::paths::write_private_atomic`]: temporary file, fsync, rename). A file that
//! group or others can access is refused at load, as the key file is.
//!
//! The store itself does no I/O after loading: a change marks it dirty, and
//! [`TrustStore::take_save`] hands out one snapshot for any number of changes. The control
//! plane asks for it at once after a user's decision and at most every
//! [`crate::node::control::TRUST_SAVE_DELAY`] after changes made by peers' messages; the
//! daemon writes it on a thread of its own, never on the async runtime, and a stopping daemon
//! writes what is still waiting for its delay before it exits. Changes are applied in
//! memory whatever becomes of the write: an untrust always tears the tunnel down, and a failed
//! write is logged with the file and counted.
//!
//! # Modules
//! - `store`: the per-peer states and the rules that change them.
//! - `allow`: the allow-list of peers approved without asking.
//! - `file`: loading and saving `trust.json`.
//! - `message`: checking a signed trust message on arrival (cheap checks before the signature).
//! - `limits`: the caps, cooldown and rate limits, and their counters.

mod allow;
mod error;
mod file;
mod limits;
mod message;
mod store;

pub use self::allow::{AllowList, AllowListError};
pub use self::error::TrustError;
pub use self::file::TrustSave;
pub use self::limits::{
    source_bucket, RateLimiter, TrustCounters, TrustLimits, DEFAULT_MAX_PENDING,
    DEFAULT_MESSAGES_PER_KEY_PER_MINUTE, DEFAULT_REJECT_COOLDOWN_MS, DIRECT_PER_SOURCE_PER_SECOND,
    RATE_LIMITER_KEYS,
};
pub use self::message::{
    precheck_trust_message, verify_trust_message, TrustMessage, TrustMessageError,
    MAX_TRUST_MESSAGE_AGE_MS, MAX_TRUST_MESSAGE_SKEW_MS,
};
pub use self::store::{PeerTrust, TrustEffect, TrustState, TrustStore};

/// The trust file's name inside the state directory.
pub const TRUST_FILE: &str = "trust.json";

#[cfg(test)]
mod test_util {
    use crate::identity::{Identity, PublicKey};

    /// The key of test node `n`.
    pub(super) fn key(n: u8) -> PublicKey {
        Identity::from_seed([n; 32]).public_key()
    }

    /// A fixed "now" (unix ms).
    pub(super) const NOW: u64 = 1_750_000_000_000;
}
