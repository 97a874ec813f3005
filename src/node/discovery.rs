//! Discovery commands (v1.3 of the registry protocol): look a node up by key, address or
//! hostname (key, address, IPv6, hostname, tags; never an endpoint), set or clear our tags,
//! release our hostname, and deregister. What the node answers and what the API returns.

use std::time::Instant;

use crate::error::{ErrorCode, PilotError};

use crate::node::commands::{DiscoveryCommand, DiscoveryWait, Waiting};
use crate::node::core::Node;
use crate::node::registry_client::{NodeInfo, OpId};
use crate::node::views::{NodeView, Registration};

/// What the client holds for us now.
fn registration(client: &crate::node::registry_client::Client, registered: bool) -> Registration {
    Registration {
        registered,
        hostname: client.hostname(),
        tags: client.tags().to_vec(),
    }
}

fn no_registry() -> PilotError {
    PilotError::new(
        ErrorCode::ConnectionFailed,
        "no registry is configured",
        "start the daemon with --registry HOST:PORT (or PILOT_REGISTRY, or `registries` in config)",
    )
}

impl Node {
    /// Starts a discovery command.
    pub(crate) fn on_discovery(&mut self, now: Instant, cmd: DiscoveryCommand) {
        let has_registry = self.config.has_registry;
        let client = self.plane.client();
        let (op, wait) = match cmd {
            DiscoveryCommand::Lookup { reply, .. } if !has_registry => {
                let _ = reply.send(Err(no_registry()));
                return;
            }
            DiscoveryCommand::Lookup { peer, reply } => {
                (client.lookup_node(now, peer), DiscoveryWait::Lookup(reply))
            }
            DiscoveryCommand::SetTags { tags, reply } => {
                let op = client.set_tags(now, tags);
                (op, DiscoveryWait::Change(registration(client, true), reply))
            }
            DiscoveryCommand::ClearHostname { reply } => {
                let op = client.release_hostname(now);
                (op, DiscoveryWait::Change(registration(client, true), reply))
            }
            DiscoveryCommand::Deregister { reply } => {
                let op = client.deregister(now);
                (
                    op,
                    DiscoveryWait::Change(registration(client, false), reply),
                )
            }
        };
        match wait {
            // Without registries the change is only remembered (for when one is configured).
            DiscoveryWait::Change(after, reply) if !has_registry => {
                let _ = reply.send(Ok(after));
            }
            wait => {
                self.waiting.insert(op, Waiting::Discovery(wait));
            }
        }
    }

    /// The registry operation of a discovery call ended without a `NodeInfo`.
    pub(crate) fn discovery_done(&mut self, wait: DiscoveryWait, result: Result<(), PilotError>) {
        match wait {
            DiscoveryWait::Lookup(reply) => {
                let _ = reply.send(result.and_then(|_| {
                    Err(PilotError::internal(
                        "the registry answered a lookup without a node",
                    ))
                }));
            }
            DiscoveryWait::Change(after, reply) => {
                let _ = reply.send(result.map(|_| after));
            }
        }
    }

    /// A registry described the node a lookup asked for.
    pub(crate) fn on_node_info(&mut self, op: OpId, info: NodeInfo) {
        if let Some(Waiting::Discovery(DiscoveryWait::Lookup(reply))) = self.waiting.remove(&op) {
            let _ = reply.send(Ok(NodeView {
                public_key: info.key,
                address: info.key.addr48(),
                ipv6: self.config.network.ipv6(info.key.addr48()),
                hostname: info.hostname,
                tags: info.tags,
            }));
        }
    }
}
