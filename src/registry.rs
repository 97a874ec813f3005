//! The registry (rendezvous) as a process: binds hostnames to keys, delivers trust requests by
//! push, passes endpoint requests between peers that trust each other, and relays sealed
//! datagrams.
//!
//! - [`server`]: the registry state machine (sans-IO: bytes and time in, datagrams out).
//! - [`store`]: what the registry persists, behind the [`store::Store`] trait (memory, redb).
//! - [`runner`]: the thin tokio UDP driver that makes `server` a process.
//! - [`metrics`]: what the Prometheus endpoint shows, published by the runner once a second.
//! - [`writer`]: store commits on a thread of their own, batched, off the event loop.
//! - [`tls`]: the TLS transport on TCP for nodes whose network drops UDP (issue 14).
//!
//! The message encoding is [`crate::wire::registry`]; the node's side of the protocol is
//! [`crate::node::registry_client`].

pub mod metrics;
pub mod pg;
pub mod runner;
pub mod server;
pub mod store;
pub mod tls;
pub mod writer;
