//! The node's registry client core (sans-IO) driven over a real loopback UDP socket, for tests
//! that talk to in-process registries (`RegistryServer`) without a daemon: registration,
//! lookups, trust messages and endpoint exchanges, step by step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pilot::clock::unix_ms_now;
use pilot::identity::Identity;
use pilot::mapping::Hostname;
use pilot::node::registry_client::{Client, ClientConfig, ClientEvent};
use pilot::node::trust::{TrustEffect, TrustStore};
use tokio::net::UdpSocket;

/// A client core with its own loopback socket and the events it has emitted so far.
pub struct Node {
    /// The sans-IO client.
    pub client: Client,
    socket: UdpSocket,
    /// Every event polled from the client, oldest first.
    pub events: Vec<ClientEvent>,
}

impl Node {
    /// A client with the identity of `seed`, registering as `hostname` at `registry`.
    pub async fn new(seed: u8, registry: SocketAddr, hostname: &str) -> Node {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = ClientConfig::new(vec![registry]);
        cfg.hostname = Some(Hostname::new(hostname).unwrap());
        let id = Arc::new(Identity::from_seed([seed; 32]));
        Node {
            client: Client::new(id, cfg, Instant::now(), unix_ms_now()),
            socket,
            events: Vec::new(),
        }
    }

    /// Sends what is queued, receives what arrived, fires timers, collects events.
    pub async fn step(&mut self) {
        while let Some((to, bytes)) = self.client.poll_transmit() {
            assert!(to.ip().is_loopback(), "tests only talk to loopback");
            self.socket.send_to(&bytes, to).await.unwrap();
        }
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.try_recv_from(&mut buf) {
            self.client.handle_datagram(Instant::now(), from, &buf[..n]);
        }
        let now = Instant::now();
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }

    /// Whether any event so far matches.
    pub fn has(&self, pred: impl Fn(&ClientEvent) -> bool) -> bool {
        self.events.iter().any(pred)
    }

    /// Sends the trust requests and responses that `effects` ask for (the rest are not
    /// messages).
    pub fn send_trust(&mut self, effects: Vec<TrustEffect>) {
        for fx in effects {
            match fx {
                TrustEffect::SendRequest { to, justification } => {
                    self.client
                        .send_trust_request(Instant::now(), to, justification);
                }
                TrustEffect::SendResponse {
                    to,
                    in_reply_to,
                    decision,
                    reason,
                } => {
                    self.client
                        .respond_trust(Instant::now(), to, in_reply_to, decision, reason);
                }
                _ => {}
            }
        }
    }

    /// Hands the trust messages received so far to `store` (taking all events) and returns
    /// the effects it asks for.
    pub fn trust_effects(&mut self, store: &mut TrustStore) -> Vec<TrustEffect> {
        let mut fx = Vec::new();
        for e in std::mem::take(&mut self.events) {
            match e {
                ClientEvent::TrustRequestReceived {
                    from,
                    hostname,
                    justification,
                    nonce,
                    sent_ms,
                } => fx.extend(
                    store
                        .on_request(
                            from,
                            hostname,
                            &justification,
                            nonce,
                            sent_ms,
                            unix_ms_now(),
                        )
                        .unwrap(),
                ),
                ClientEvent::TrustResponseReceived {
                    from,
                    decision,
                    sent_ms,
                    ..
                } => fx.extend(
                    store
                        .on_response(from, decision, sent_ms, unix_ms_now())
                        .unwrap(),
                ),
                _ => {}
            }
        }
        fx
    }
}

/// Steps every node until `done` holds; panics naming `what` after 10 s.
pub async fn drive(
    nodes: &mut [&mut Node],
    what: &str,
    mut done: impl FnMut(&[&mut Node]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(nodes) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for n in nodes.iter_mut() {
            n.step().await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
