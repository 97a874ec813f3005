#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, one shared release build, then all tests
# (unit, property, integration, and the network-namespace tests, which need root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# One release build shared by the netns tests (they run target/release/pilotctl).
cargo build --release --locked
cargo test --locked -- --test-threads=2
