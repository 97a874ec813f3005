//! WireGuard timers: handshake retries, rekeys and keepalives for every peer.

use std::net::SocketAddr;

use boringtun::noise::TunnResult;

use super::outbound::send_on;
use super::Core;

impl Core {
    /// Drives WireGuard timers (handshake retries, rekeys, keepalives). Call every ~250 ms;
    /// `reset_rate_limit` once a second. `buf` must hold [`Core::out_room`] bytes.
    pub fn tick(
        &self,
        reset_rate_limit: bool,
        buf: &mut [u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        if reset_rate_limit {
            self.handshakes.reset();
        }
        let table = self.table.load();
        for peer in table.by_addr.values() {
            let mut st = peer.state.lock();
            if st.removed {
                continue;
            }
            let path = st.path;
            match st.tunn.update_timers(buf) {
                TunnResult::WriteToNetwork(p) => send_on(path, peer.addr48, p, send),
                TunnResult::Err(e) => {
                    tracing::trace!(peer = %peer.addr48, error = ?e, "timer");
                }
                _ => {}
            }
        }
    }
}
