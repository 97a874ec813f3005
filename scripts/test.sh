#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, one shared release build, then all tests
# (unit, property, integration, and the network-namespace tests, which need root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# One release build shared by the netns tests (they run target/release/pilotctl).
cargo build --release --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { printf "%d passed, %d failed", p, f }' "$log")
echo
echo "total: $summary"
exit "$status"
