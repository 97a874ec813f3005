#!/usr/bin/env bash
# The main job on one machine. Today: build pilot, start a daemon in a scratch state directory,
# show its identity and overlay address, and stop it. (The tunnel issues turn this into two
# agents that trust each other and a real curl across the overlay.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
BIN=$PWD/target/release/pilotctl
export PILOT_HOME
PILOT_HOME=$(mktemp -d /tmp/pilot-demo.XXXXXX)
trap '"$BIN" daemon stop >/dev/null 2>&1 || true; rm -rf "$PILOT_HOME"' EXIT
"$BIN" daemon start --hostname orchestrator-node --mode userspace
echo
"$BIN" info
echo
"$BIN" --json info
