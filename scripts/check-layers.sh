#!/usr/bin/env bash
# Fails when a module of src/ uses a module of a higher layer, or when modules form an import
# cycle. The rules and the layer list live in tests/layers.rs; docs/ARCHITECTURE.md draws them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --test layers -- --test-threads=1
