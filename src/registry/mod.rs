//! The registry (rendezvous): binds hostnames to keys, delivers trust requests by push, and
//! passes endpoint requests between peers that trust each other.
//!
//! Layers, each one concept:
//! - [`wire`]: the v1 message encoding (signed requests, registry responses and pushes).
//! - [`server`]: the registry state machine (sans-IO: bytes and time in, datagrams out).
//! - [`store`]: what the registry persists, behind the [`store::Store`] trait (memory, redb).
//! - [`client`]: the daemon-side state machine (register, heartbeat, retries, events).
//! - [`runner`]: the thin tokio UDP driver that makes `server` a process.

pub mod client;
pub mod runner;
pub mod server;
pub mod store;
pub mod wire;
