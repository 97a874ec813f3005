#!/usr/bin/env bash
# Fuzzes pilot's parsers with cargo-fuzz (libFuzzer): scripts/fuzz.sh TARGET|all [SECONDS]
#
#   scripts/fuzz.sh all 20          # every target for 20 s each (CI: 6 s, from scripts/test.sh)
#   scripts/fuzz.sh registry_request 600
#   scripts/fuzz.sh list            # the targets
#   FUZZ_RUNS=10000000 scripts/fuzz.sh probe   # stop after that many executions instead
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh all      # build, do not run (CI builds ahead of time)
#
# Prints, per target: executions, seconds, crashes and corpus size; exits 1 when any target
# crashed (a panic, a failed assertion, a timeout of FUZZ_TIMEOUT s on one input, or running
# out of FUZZ_RSS_MB of memory). A crashing input is kept in fuzz/artifacts/TARGET/; replay it
# with `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE`.
#
# Seeds are read from fuzz/corpus/TARGET (committed, small); what the fuzzer finds goes to
# fuzz/work/TARGET (not committed), so runs build on each other on one machine.
#
# Build (FUZZ_BUILD): `full` (the default) is cargo-fuzz's own release build: opt-level 3 and
# one codegen unit per crate, the fastest fuzzing, slow to build (about 7.5 min for all targets
# on the 2-core CI machine). `quick` (what CI uses, docs/CI.md) is opt-level 1 with 16 codegen
# units: several times cheaper to build, fewer executions per second, the same coverage
# instrumentation, debug assertions and overflow checks; right for a short smoke run of every
# target, not for long hunts. Both write the same binaries, so switching rebuilds.
#
# FUZZ_JOBS (default 1) targets run at once, each on one core (CI: the number of cores).
#
# Toolchain: built with the stable toolchain and `-s none` (no sanitizer: safe Rust needs
# none, and sanitizers need nightly). cargo-fuzz passes flags only nightly accepts for some
# options; if stable refuses them, set FUZZ_BOOTSTRAP=1 (RUSTC_BOOTSTRAP=1, below). Built in
# release mode with debug assertions and overflow checks on (`-a`), so an arithmetic overflow
# in a parser is a crash.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../fuzz"

target=${1:-}
seconds=${2:-20}
timeout_s=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
max_len=${FUZZ_MAX_LEN:-4096}

if [ -z "$target" ] || [ "$target" = -h ] || [ "$target" = --help ]; then
  sed -n '2,/^set -euo/p' "$self" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi

mapfile -t all < <(cargo fuzz list)
if [ "$target" = list ]; then
  printf '%s\n' "${all[@]}"
  exit 0
fi
if [ "$target" = all ]; then
  targets=("${all[@]}")
else
  if ! printf '%s\n' "${all[@]}" | grep -qx -- "$target"; then
    echo "no fuzz target '$target'; targets: ${all[*]}" >&2
    exit 2
  fi
  targets=("$target")
fi

if [ "${FUZZ_BOOTSTRAP:-0}" = 1 ]; then
  # Lets the stable compiler accept the -Z flags cargo-fuzz may pass; only for this build.
  export RUSTC_BOOTSTRAP=1
fi
build=(cargo fuzz build --sanitizer none --release --debug-assertions)
case "${FUZZ_BUILD:-full}" in
  full) ;;
  quick)
    build+=(--codegen-units 16)
    export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
    ;;
  *)
    echo "FUZZ_BUILD is full or quick, not '$FUZZ_BUILD'" >&2
    exit 2
    ;;
esac
echo "== building ${#targets[@]} fuzz target(s) (${FUZZ_BUILD:-full}): ${build[*]}"
start=$SECONDS
if [ "$target" = all ]; then
  "${build[@]}"
else
  "${build[@]}" "$target"
fi
echo "== built in $((SECONDS - start)) s"
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then
  exit 0
fi

bin_dir=target/x86_64-unknown-linux-gnu/release
limit=(-max_total_time="$seconds")
if [ -n "${FUZZ_RUNS:-}" ]; then
  limit=(-runs="$FUZZ_RUNS")
fi

jobs=${FUZZ_JOBS:-1}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

# Runs one target; writes its summary line to $results/TARGET.line and, when it crashed,
# the end of its log to $results/TARGET.crash.
fuzz_one() {
  local t=$1 log before t0 t1 status secs execs after crashes corpus line
  mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  before=$(find "artifacts/$t" -type f ! -name '*.log' | wc -l)
  t0=$(date +%s.%N)
  set +e
  "$bin_dir/$t" "work/$t" "corpus/$t" "${limit[@]}" \
    -timeout="$timeout_s" -rss_limit_mb="$rss_mb" -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  status=$?
  set -e
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
  execs=$(awk -F': *' '/^stat::number_of_executed_units/ { n = $2 } END { print n + 0 }' "$log")
  if [ "$execs" = 0 ]; then
    # A crash ends the run before the final stats: take the last status line's count.
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    execs=${execs:-0}
  fi
  after=$(find "artifacts/$t" -type f ! -name '*.log' | wc -l)
  crashes=$((after - before))
  if [ "$status" != 0 ] && [ "$crashes" = 0 ]; then
    crashes=1
  fi
  corpus=$(find "work/$t" "corpus/$t" -type f | wc -l)
  line=$(printf '%-18s %12s execs %6s s %3s crashes %6s corpus' "$t" "$execs" "$secs" "$crashes" "$corpus")
  echo "$line"
  echo "$line" >"$results/$t.line"
  if [ "$crashes" = 0 ] && [ "$execs" = 0 ]; then
    # Not one input executed: the target did not run, which must not pass as fuzzed.
    echo "---- $t executed no input (exit $status); see $log" >"$results/$t.crash"
  fi
  if [ "$crashes" != 0 ]; then
    {
      echo "---- $t crashed (exit $status); the end of its log ($log):"
      grep -v '^#[0-9]' "$log" | tail -40
      echo "---- inputs kept in fuzz/artifacts/$t/"
    } >"$results/$t.crash"
  fi
}

echo "== running ${#targets[@]} target(s), $jobs at a time"
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait || true

failed=0
summary=()
for t in "${targets[@]}"; do
  summary+=("$(cat "$results/$t.line" 2>/dev/null || echo "$t: no result")")
  [ -f "$results/$t.line" ] || failed=1
  if [ -f "$results/$t.crash" ]; then
    failed=1
    cat "$results/$t.crash" >&2
  fi
done

echo
echo "== fuzz summary (${seconds} s per target${FUZZ_RUNS:+, or $FUZZ_RUNS runs}, $jobs at a time)"
printf '%s\n' "${summary[@]}"
if [ "$failed" != 0 ]; then
  echo "FUZZING FAILED: a crash, or a target that executed no input (above)" >&2
  exit 1
fi
