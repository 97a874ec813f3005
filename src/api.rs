//! The local API (v1): HTTP/1.1 on a Unix socket that only the owner can open, in the manner
//! of Docker's Engine API and Tailscale's LocalAPI.
//!
//! - [`types`]: every request and response, typed, shared by the daemon, the CLI and SDKs.
//! - [`service`]: the [`service::Api`] trait the daemon implements.
//! - [`http`]: envelopes as responses, bounded bodies, the HTTP Upgrade of streams.
//! - [`handlers`]: one handler per path, annotated for the OpenAPI document.
//! - [`events`]: the live events of `GET /v1/events` (server-sent events).
//! - [`server`]: the router and the hyper server on the Unix socket; limits on time.
//! - [`openapi`]: the OpenAPI 3 document, served at `GET /v1/openapi.json`.
//! - [`client`]: the blocking client the CLI uses; [`stream`] its side of stream upgrades.
//!
//! docs/PROTOCOL.md ("Local API (v1, HTTP)") describes the paths and the envelope.

pub mod client;
pub mod events;
pub mod handlers;
pub mod http;
pub mod openapi;
pub mod server;
pub mod service;
pub mod stream;
pub mod types;

pub use client::Client;
pub use types::*;
