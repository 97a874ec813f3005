//! Names and policy for the SOCKS5 proxy and the API: names from the peer table first, then
//! the registries; connections only to peers in the peer table (the trusted ones). A name
//! the registry binds to one key never resolves to another key's tunnel that shares its
//! address (addr48 is a routing handle, not an identity).

use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::daemon::node_driver::{NodeCommand, NodeHandle};
use crate::mapping::Hostname;
use crate::userspace::socks5::{BoxFuture, Resolver};
use crate::wg::DataPlane;

/// Resolves names from the peer table, then the registries.
pub struct PeerResolver {
    plane: Arc<DataPlane>,
    control: Option<NodeHandle>,
}

impl PeerResolver {
    /// A resolver over the running data plane and, if registries are configured, the control
    /// plane.
    pub fn new(plane: Arc<DataPlane>, control: Option<NodeHandle>) -> Self {
        PeerResolver { plane, control }
    }
}

impl Resolver for PeerResolver {
    fn resolve<'a>(&'a self, name: &'a Hostname) -> BoxFuture<'a, Option<Ipv6Addr>> {
        Box::pin(async move {
            if let Some(p) = self.plane.peer_by_hostname(name.as_str()) {
                return Some(p.ipv6);
            }
            let control = self.control.as_ref()?;
            let found = control
                .call(|reply| NodeCommand::Find {
                    hostname: name.clone(),
                    reply,
                })
                .await
                .ok()??;
            match self.plane.peer_by_ip(&found.ipv6) {
                Some(p) if p.public_key != found.public_key => {
                    tracing::warn!(
                        hostname = %name,
                        registry_key = %found.public_key,
                        peer = %p.public_key,
                        "a registry names a key whose address a trusted peer holds: not resolved"
                    );
                    None
                }
                _ => Some(found.ipv6),
            }
        })
    }

    fn permits(&self, ip: Ipv6Addr) -> bool {
        self.plane.peer_by_ip(&ip).is_some()
    }
}
