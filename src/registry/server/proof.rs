//! Return routability: the registry never sends more bytes to an address than it received from
//! it until that address has proved it receives what we send there.
//!
//! An address is *proven* for a key when it is that key's presence address. Presence moves only
//! on a `Register` that echoes a cookie: 16 bytes of SHA-256 over a secret, a time epoch, the
//! sender key and the source address. The cookie reaches only the real holder of the address
//! (in a `Challenge`, smaller than any request), so a spoofed source can neither move presence
//! nor receive held pushes. It is stateless: nothing is stored per challenge.
//!
//! Screening (v1.2) applies this before any signature work: a `Register` from an unproven
//! address without a valid cookie is challenged unverified (the `Challenge` is unsigned), so a
//! flood of forged registrations costs a MAC each, not an Ed25519 verification.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use super::{Ctx, Registry, Transmits};
use crate::identity::{Identity, PublicKey};
use crate::wire::registry::{Cookie, Peek, Request, Response};

/// Domain of the cookie secret derived from the registry's key.
const SECRET_DOMAIN: &[u8] = b"pilot/registry/cookie-secret/v1\0";

/// The secret cookies are made with: derived from the registry's signing key (a signature over
/// a fixed domain, never sent), so it survives restarts and instances sharing a key agree.
pub(super) fn cookie_secret(identity: &Identity) -> [u8; 32] {
    let sig = identity.sign(SECRET_DOMAIN);
    let mut h = Sha256::new();
    h.update(SECRET_DOMAIN);
    h.update(sig);
    h.finalize().into()
}

/// The cookie for `key` at `addr` in time epoch `epoch`.
pub(super) fn cookie(secret: &[u8; 32], epoch: u64, key: &[u8; 32], addr: SocketAddr) -> Cookie {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(epoch.to_be_bytes());
    h.update(key);
    match addr.ip() {
        IpAddr::V4(ip) => h.update(ip.octets()),
        IpAddr::V6(ip) => h.update(ip.octets()),
    }
    h.update(addr.port().to_be_bytes());
    let d = h.finalize();
    let mut c = [0u8; 16];
    c.copy_from_slice(&d[..16]);
    c
}

impl Registry {
    fn epoch(&self, now_ms: u64) -> u64 {
        now_ms / self.limits.cookie_lifetime_ms.max(1)
    }

    /// The cookie we hand `key` at `addr` now.
    pub(super) fn current_cookie(&self, now_ms: u64, key: &[u8; 32], addr: SocketAddr) -> Cookie {
        cookie(&self.cookie_secret, self.epoch(now_ms), key, addr)
    }

    /// Whether `c` is a cookie we handed `key` at `addr` in this epoch or the previous one.
    fn cookie_valid_at(&self, now_ms: u64, key: &[u8; 32], addr: SocketAddr, c: &Cookie) -> bool {
        let e = self.epoch(now_ms);
        [e, e.saturating_sub(1)]
            .iter()
            .any(|&e| cookie(&self.cookie_secret, e, key, addr) == *c)
    }

    /// Whether `c` is a valid cookie for the request in `cx`.
    pub(super) fn cookie_valid(&self, cx: &Ctx, c: &Cookie) -> bool {
        self.cookie_valid_at(cx.now_ms, cx.sender.as_bytes(), cx.from, c)
    }

    /// Whether `from` is the presence address of the key whose raw bytes are `key`: one hash
    /// lookup by address, no curve arithmetic.
    fn proven_raw(&self, key: &[u8; 32], from: SocketAddr) -> bool {
        self.by_addr
            .get(&from)
            .is_some_and(|k| k.as_bytes() == key && self.proven(k, from))
    }

    /// Screens a datagram before any signature work, on its header alone (see the module
    /// documentation of `server`). `Ok` lets it on to the signature check; `Err` carries what
    /// to send instead (an unsigned `Challenge`, or nothing), counted.
    pub(super) fn screen(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Transmits> {
        let Ok(p) = Request::peek(bytes) else {
            self.counters.garbage += 1;
            return Err(Vec::new());
        };
        // Only verified requests put their nonce in the cache: a datagram bearing one is a
        // replay or a forgery, dropped before any signature work or bucket token.
        if self.nonces.contains(&p.nonce) {
            self.counters.replayed += 1;
            return Err(Vec::new());
        }
        let l = &self.limits;
        let admitted = if self.proven_raw(&p.sender, from)
            || p.cookie
                .is_some_and(|c| self.cookie_valid_at(now_ms, &p.sender, from, &c))
        {
            true
        } else if p.is_register() {
            return Err(self.cheap_challenge(now_ms, from, &p, bytes.len()));
        } else {
            self.unproven_bucket
                .take(l.unproven_burst, l.unproven_per_sec, now_ms)
        };
        let l = &self.limits;
        if admitted
            && self
                .global_bucket
                .take(l.global_burst, l.global_per_sec, now_ms)
        {
            return Ok(());
        }
        self.counters.rate_limited += 1;
        Err(Vec::new())
    }

    /// An unsigned `Challenge` to a `Register` from an unproven address, made without looking
    /// at its signature: a MAC and 35 bytes, within the challenge budget.
    fn cheap_challenge(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        p: &Peek,
        len: usize,
    ) -> Transmits {
        let l = &self.limits;
        if !self
            .challenge_bucket
            .take(l.challenge_burst, l.challenge_per_sec, now_ms)
        {
            self.counters.challenge_limited += 1;
            return Vec::new();
        }
        self.counters.challenged += 1;
        let cookie = self.current_cookie(now_ms, &p.sender, from);
        let mut out = vec![(from, Response::challenge(&p.nonce, &cookie))];
        self.cap_to_budget(from, Some(len), &mut out);
        out
    }

    /// Whether `from` is `key`'s presence address (it proved it answers there).
    pub(super) fn proven(&self, key: &PublicKey, from: SocketAddr) -> bool {
        self.presence.get(key).is_some_and(|p| p.addr == from)
    }

    /// A `Challenge` to the request in `cx`: prove the source address with this cookie.
    pub(super) fn challenge(&mut self, cx: &Ctx) -> Transmits {
        self.counters.challenged += 1;
        let cookie = self.current_cookie(cx.now_ms, cx.sender.as_bytes(), cx.from);
        vec![(cx.from, Response::challenge(&cx.nonce, &cookie))]
    }

    /// Enforces the amplification bound on what goes back to an unproven source: at most
    /// `budget` bytes in total; the rest is dropped and counted (our answers are built to fit,
    /// so this is a guard, not a path).
    pub(super) fn cap_to_budget(
        &mut self,
        from: SocketAddr,
        budget: Option<usize>,
        out: &mut Transmits,
    ) {
        let Some(mut left) = budget else {
            return;
        };
        let before = out.len();
        out.retain(|(to, b)| {
            if *to != from {
                return true;
            }
            if b.len() <= left {
                left -= b.len();
                true
            } else {
                false
            }
        });
        self.counters.amplification_dropped += (before - out.len()) as u64;
    }
}
