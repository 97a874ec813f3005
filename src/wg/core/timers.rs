//! WireGuard timers: handshake retries, rekeys and keepalives, for the peers that need them.
//!
//! Only peers in the timer set (those with a live `Tunn`: some traffic, a path, a handshake)
//! are visited; a peer that never talked holds no `Tunn` and costs nothing per tick. A peer
//! leaves the set when its `Tunn` expires (no handshake for a while: boringtun's
//! `ConnectionExpired`), and its `Tunn` is dropped with it.

use std::net::SocketAddr;
use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::TunnResult;

use super::outbound::send_on;
use super::Core;
use crate::wg::peer::Peer;

impl Core {
    /// Drives WireGuard timers (handshake retries, rekeys, keepalives) of the peers in the
    /// timer set, and returns how many it visited. Call every ~250 ms; `reset_rate_limit`
    /// once a second. `buf` must hold [`Core::out_room`] bytes.
    pub fn tick(
        &self,
        reset_rate_limit: bool,
        buf: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> usize {
        if reset_rate_limit {
            self.handshakes.reset();
        }
        // A snapshot, so the set's lock is never held while a peer's is taken.
        let peers: Vec<Arc<Peer>> = self.active.lock().values().cloned().collect();
        for peer in &peers {
            let mut st = peer.state.lock();
            let path = st.path;
            let removed = st.removed;
            let expired = match st.tunn.as_mut() {
                _ if removed => true,
                None => true,
                Some(tunn) => match tunn.update_timers(buf) {
                    TunnResult::WriteToNetwork(p) => {
                        send_on(path, peer.addr48, p, send);
                        false
                    }
                    TunnResult::Err(WireGuardError::ConnectionExpired) => true,
                    TunnResult::Err(e) => {
                        tracing::trace!(peer = %peer.addr48, error = ?e, "timer");
                        false
                    }
                    _ => false,
                },
            };
            if expired {
                st.tunn = None;
                self.deactivate(peer, &mut st);
            }
        }
        peers.len()
    }
}
