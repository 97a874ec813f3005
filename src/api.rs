//! The local API (v1): HTTP/1.1 on a Unix socket that only the owner can open, in the manner
//! of Docker's Engine API and Tailscale's LocalAPI.
//!
//! - [`types`]: every request and response, typed, shared by the daemon, the CLI and SDKs.
//! - [`server`]: the hyper server, generic over the [`server::Api`] trait the daemon
//!   implements; limits on size and time.
//! - [`handlers`]: one handler per path, annotated for the OpenAPI document.
//! - [`events`]: `GET /v1/events`, live events as server-sent events.
//! - [`openapi`]: the OpenAPI 3 document, served at `GET /v1/openapi.json`.
//! - [`client`]: the blocking client the CLI uses.
//!
//! docs/PROTOCOL.md ("Local API (v1, HTTP)") describes the paths and the envelope.

pub mod client;
pub mod events;
pub mod handlers;
pub mod openapi;
pub mod server;
pub mod types;

pub use client::Client;
pub use types::*;
