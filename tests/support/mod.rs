//! The shared test kit of the integration tests: daemon homes (a temporary PILOT_HOME
//! and the real `pilotctl`), loopback registries, free ports, process handling by PID, and the
//! network-namespace lab of tests/netns.
//!
//! An integration test under tests/ says `mod support;` (tests/layers.rs, a static check of
//! src/, needs none of it); tests/netns/main.rs says
//! `#[path = "../support/mod.rs"] mod support;`. Each crate uses only a part, hence the
//! `dead_code` allowance.

#![allow(dead_code)]

pub mod home;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod netstack;
pub mod pair;
pub mod pg;
pub mod process;
pub mod registry;
pub mod registry_client;
pub mod socks;

use std::time::Duration;

/// Awaits every task, panicking if one panicked or if they are not all done within `timeout`.
pub async fn join_all_within(timeout: Duration, tasks: Vec<tokio::task::JoinHandle<()>>) {
    tokio::time::timeout(timeout, async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .unwrap();
}
