//! The data plane as the control plane sees it ([`Tunnels`]).

use std::net::SocketAddr;

use crate::daemon::node_driver::Tunnels;
use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::wg::DataPlane;

impl Tunnels for DataPlane {
    fn send_control(&self, dst: SocketAddr, bytes: &[u8]) {
        if let Err(e) = DataPlane::send_control(self, dst, bytes) {
            tracing::debug!(%dst, error = %e, "control datagram not sent");
        }
    }

    fn add_peer(&self, key: PublicKey, hostname: Option<&Hostname>) {
        if let Err(e) = DataPlane::add_peer(self, key, None) {
            tracing::warn!(peer = %key, error = %e, "cannot add peer");
            return;
        }
        if let Some(h) = hostname {
            let _ = DataPlane::set_hostname(self, &key, Some(h.to_string()));
        }
    }

    fn add_peers(&self, peers: &[(PublicKey, Option<Hostname>)]) {
        let keys: Vec<(PublicKey, Option<SocketAddr>)> =
            peers.iter().map(|(k, _)| (*k, None)).collect();
        for ((key, hostname), result) in peers.iter().zip(DataPlane::add_peers(self, &keys)) {
            if let Err(e) = result {
                tracing::warn!(peer = %key, error = %e, "cannot add peer");
                continue;
            }
            if let Some(h) = hostname {
                let _ = DataPlane::set_hostname(self, key, Some(h.to_string()));
            }
        }
    }

    fn remove_peer(&self, key: &PublicKey) {
        let _ = DataPlane::remove_peer(self, key);
    }

    fn set_endpoint(&self, key: &PublicKey, endpoint: SocketAddr) {
        let _ = DataPlane::set_endpoint(self, key, Some(endpoint));
    }

    fn set_path(&self, key: &PublicKey, path: crate::node::traversal::Path) {
        let _ = DataPlane::set_path(self, key, path);
    }

    fn path(&self, key: &PublicKey) -> Option<crate::node::traversal::Path> {
        DataPlane::path(self, key)
    }

    fn set_rtt(&self, key: &PublicKey, rtt: Option<std::time::Duration>) {
        DataPlane::set_rtt(self, key, rtt)
    }

    fn set_relays(&self, relays: Vec<SocketAddr>) {
        DataPlane::set_relays(self, relays)
    }

    fn take_events(&self) -> Option<crate::wg::EventReceiver> {
        DataPlane::take_event_receiver(self)
    }
}
