//! How the node answers the local API's commands: at once from its own state, or when the
//! registry operation a command started completes.

use std::net::SocketAddr;
use std::time::Instant;

use crate::error::{ErrorCode, PilotError};
use crate::identity::PublicKey;
use crate::mapping::PeerRef;
use crate::node::commands::{NodeCommand, Reply, Waiting};
use crate::node::control::{ControlPlane, TrustTarget};
use crate::node::core::{Naming, Node};
use crate::node::registry_client::OpId;
use crate::node::traversal::Path;
use crate::node::trust::{TrustError, TrustState};
use crate::node::views::{
    HostnameClaim, PendingList, PendingView, PingReport, RegistryKeySource, RegistryKeyView,
    TrustList, TrustView,
};

fn not_found(peer: &PeerRef) -> PilotError {
    PilotError::new(
        ErrorCode::NotFound,
        format!("no known peer matches `{peer}`"),
        "name the peer by hostname (with a registry configured), by address of a peer you know, or by public key",
    )
}

fn no_registry() -> PilotError {
    PilotError::new(
        ErrorCode::ConnectionFailed,
        "no registry is configured",
        "start the daemon with --registry HOST:PORT (or PILOT_REGISTRY, or `registries` in config)",
    )
}

impl Node {
    /// A command from the local API. Answers at once, or when its registry operation ends.
    pub fn handle_command(&mut self, now: Instant, cmd: NodeCommand) {
        match cmd {
            NodeCommand::Handshake {
                peer,
                justification,
                reply,
            } => self.handshake(now, peer, &justification, reply),
            NodeCommand::Pending { reply } => {
                let _ = reply.send(Ok(self.pending()));
            }
            NodeCommand::Approve { peer, reply } => {
                self.decide(now, &peer, reply, |p, now, k| p.approve(now, k))
            }
            NodeCommand::Reject {
                peer,
                reason,
                reply,
            } => self.decide(now, &peer, reply, |p, now, k| p.reject(now, k, &reason)),
            NodeCommand::Untrust { peer, reply } => {
                self.decide(now, &peer, reply, |p, now, k| p.untrust(now, k))
            }
            NodeCommand::TrustList { reply } => {
                let _ = reply.send(Ok(self.trust_list()));
            }
            NodeCommand::Find { hostname, reply } => {
                if !self.config.has_registry {
                    let _ = reply.send(Err(no_registry()));
                    return;
                }
                let op = self.plane.client().lookup(now, hostname);
                self.waiting.insert(op, Waiting::Find(reply));
            }
            NodeCommand::SetHostname { hostname, reply } => {
                if !self.config.has_registry {
                    let _ = reply.send(Ok(HostnameClaim { hostname }));
                    return;
                }
                let op = self.plane.client().set_hostname(now, hostname.clone());
                self.waiting.insert(op, Waiting::Hostname(hostname, reply));
            }
            NodeCommand::Ping { peer, count, reply } => self.ping(now, &peer, count, reply),
            NodeCommand::RegistryKeys { reply } => {
                let _ = reply.send(Ok(self.plane.client().registry_keys()));
            }
            NodeCommand::ForgetRegistryKey { registry, reply } => {
                let _ = reply.send(self.forget_registry_key(now, registry));
            }
            NodeCommand::SetAllowList { allow, reply } => {
                self.plane.set_allow_list(allow);
                let _ = reply.send(Ok(()));
            }
            NodeCommand::Discovery(cmd) => self.on_discovery(now, cmd),
            NodeCommand::RegistryStatus { reply } => {
                let _ = reply.send(Ok(self.plane.client().registry_status()));
            }
        }
        self.pump(now);
    }

    /// A peer reference to a key without asking the registries, among the records `naming`
    /// allows; answers `reply` with the error and gives `None` when it names nothing or too
    /// much.
    fn resolve_or_answer<T>(
        &self,
        peer: &PeerRef,
        naming: Naming,
        reply: Reply<T>,
    ) -> Option<(PublicKey, Reply<T>)> {
        match self.resolve_known(peer, naming) {
            Ok(Some(k)) => Some((k, reply)),
            Ok(None) => {
                let _ = reply.send(Err(not_found(peer)));
                None
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        }
    }

    /// Forgets a learned registry key; an unknown registry or a pinned key is an error.
    fn forget_registry_key(
        &mut self,
        now: Instant,
        registry: SocketAddr,
    ) -> Result<RegistryKeyView, PilotError> {
        let client = self.plane.client();
        let find = |c: &mut crate::node::registry_client::Client| {
            c.registry_keys()
                .into_iter()
                .find(|r| r.registry == registry)
        };
        let Some(before) = find(client) else {
            return Err(PilotError::new(
                ErrorCode::NotFound,
                format!("{registry} is not a configured registry"),
                "`pilotctl info` lists the configured registries and their keys",
            ));
        };
        if before.source == RegistryKeySource::Pinned {
            return Err(PilotError::invalid(
                format!("the key of registry {registry} is pinned in the config"),
                "change or remove its `#KEY` in `registries` and restart the daemon",
            ));
        }
        client.forget_registry_key(now, registry)?;
        tracing::warn!(%registry, "registry key forgotten by the operator; it is learned again on first use");
        Ok(find(client).unwrap_or(before))
    }

    fn trust_list(&self) -> TrustList {
        let peers = self
            .plane
            .trust()
            .peers()
            .map(|p| self.view(&p.key))
            .chain(self.config.static_peers.iter().map(|k| self.view(k)))
            .collect();
        TrustList { peers }
    }

    /// Asks `peer` for trust: by name through the registries when one is configured, else by
    /// a key we know.
    fn handshake(
        &mut self,
        now: Instant,
        peer: PeerRef,
        justification: &str,
        reply: Reply<Option<TrustView>>,
    ) {
        // By name with a registry: the registry's binding. Otherwise only a key, or a peer we
        // trust or asked ourselves: a stranger's pending request is answered with `approve`.
        let (target, reply) = match &peer {
            PeerRef::Hostname(h) if self.config.has_registry => {
                (TrustTarget::Name(h.clone()), reply)
            }
            _ => match self.resolve_or_answer(&peer, Naming::Established, reply) {
                Some((k, reply)) => (TrustTarget::Key(k), reply),
                None => return,
            },
        };
        let who = match &target {
            TrustTarget::Key(k) => Ok(*k),
            TrustTarget::Name(h) => Err(h.clone()),
        };
        if let Ok(k) = who {
            if self.config.static_peers.contains(&k) {
                let _ = reply.send(Ok(Some(self.view(&k))));
                return;
            }
        }
        match self.plane.request_trust(now, target, justification) {
            Ok(op) => {
                self.waiting.insert(op, Waiting::Op { peer: who, reply });
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Trust requests waiting for our decision.
    fn pending(&self) -> PendingList {
        let pending = self
            .plane
            .trust()
            .peers()
            .filter_map(|p| match &p.state {
                TrustState::Pending {
                    justification,
                    since_ms,
                    ..
                } => Some(PendingView {
                    peer: self.view(&p.key),
                    justification: justification.clone(),
                    since_ms: *since_ms,
                }),
                _ => None,
            })
            .collect();
        PendingList { pending }
    }

    /// Approve, reject or untrust: resolve the peer, change the store, answer when the peer has
    /// been told (or at once when no message is needed).
    fn decide(
        &mut self,
        now: Instant,
        peer: &PeerRef,
        reply: Reply<Option<TrustView>>,
        f: impl FnOnce(&mut ControlPlane, Instant, &PublicKey) -> Result<OpId, TrustError>,
    ) {
        let Some((key, reply)) = self.resolve_or_answer(peer, Naming::Unique, reply) else {
            return;
        };
        match f(&mut self.plane, now, &key) {
            Ok(op) => {
                let peer = Ok(key);
                self.waiting.insert(op, Waiting::Op { peer, reply });
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Starts a ping session to a trusted peer over its current path; without a path, starts
    /// one and waits for it up to `PATH_WAIT`, then answers `connection_failed`.
    fn ping(&mut self, now: Instant, peer: &PeerRef, count: u32, reply: Reply<PingReport>) {
        let Some((key, reply)) = self.resolve_or_answer(peer, Naming::Established, reply) else {
            return;
        };
        if !self.is_allowed(&key) {
            let _ = reply.send(Err(not_found(peer)));
            return;
        }
        let path = self.path(&key);
        if path == Path::None {
            self.connect(now, key);
            self.pings.wait_for_path(now, key, count, reply);
            return;
        }
        self.pings.start(now, key, path, count, reply);
        self.run_pings(now);
    }
}
