#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, one shared release build, the layer check, the
# function-length check, then all tests (unit, property, integration, and the network-namespace tests),
# then, under CI (or when FUZZ_SECONDS is set), every fuzz target for FUZZ_SECONDS (default 12) s
# each (scripts/fuzz.sh; needs cargo-fuzz, which .ci/run installs): a crash fails the run.
#
# Tests that need root (network namespaces, TUN) are #[ignore]d, so a plain `cargo test` never
# reports them as passed without running them. As root this script runs them too
# (`--include-ignored`); otherwise it runs the rest, says loudly how many it did NOT run, and
# fails when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# One release build shared by the netns tests (they run target/release/pilotctl).
cargo build --release --locked

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The layer check runs here, once: tests/layers.rs is left out of the `cargo test` below.
bash scripts/check-layers.sh 2>&1 | tee "$log"
# No production function over 80 lines (issue 9): the list is empty or this fails.
bash scripts/long-functions.sh

targets=(--lib --bins)
for t in tests/*.rs; do
  name=$(basename "$t" .rs)
  [ "$name" = layers ] || targets+=(--test "$name")
done
for t in tests/*/main.rs; do
  targets+=(--test "$(basename "$(dirname "$t")")")
done

harness=(--test-threads=2)
root=false
if [ "$(id -u)" = 0 ]; then
  root=true
  harness+=(--include-ignored)
fi

set +e
cargo test --locked "${targets[@]}" -- "${harness[@]}" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
set -e

# The Python SDK and `pilotctl mcp`, with pytest against real daemons (scripts/sdk-test.sh,
# on the release build above); a failure fails the run.
set +e
bash scripts/sdk-test.sh
sdk_status=$?
set -e
[ "$sdk_status" = 0 ] || status=1

count() {
  awk -v word="$1" '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ "^" word) n += $i } END { print n + 0 }' "$log"
}
passed=$(count passed)
failed=$(count failed)
ignored=$(count ignored)
echo
if [ "$ignored" -gt 0 ]; then
  echo "************************************************************************"
  echo "*** NOT RUN: $ignored ignored test(s); the root-only ones (network"
  echo "*** namespaces, TUN) run only when scripts/test.sh runs as root."
  echo "*** They did not pass: they did not run."
  echo "************************************************************************"
fi
if ! $root; then
  case "${CI:-}" in
    "" | false | 0) ;;
    *)
      echo "CI=$CI but not root: the root-only tests did not run; failing." >&2
      [ "$status" != 0 ] || status=1
      ;;
  esac
fi
echo "total: $passed passed, $failed failed"

fuzz=false
case "${CI:-}" in
  "" | false | 0) ;;
  *) fuzz=true ;;
esac
[ -z "${FUZZ_SECONDS:-}" ] || fuzz=true
if $fuzz; then
  echo
  if ! bash scripts/fuzz.sh all "${FUZZ_SECONDS:-12}"; then
    echo "fuzzing failed: see the crash above (inputs in fuzz/artifacts/)" >&2
    [ "$status" != 0 ] || status=1
  fi
fi
exit "$status"
