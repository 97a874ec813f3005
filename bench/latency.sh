#!/usr/bin/env bash
# Round-trip latency (issue 18): pilot vs the raw veth vs reference WireGuards, in one run.
#
#   sudo bench/latency.sh
#   sudo PILOT_BIN_BEFORE=/tmp/pilotctl-before RUNS=3 bench/latency.sh
#
# Per pass (RUNS, default 2), systems interleaved: pilot-before (only with PILOT_BIN_BEFORE, an
# older pilotctl), pilot (this tree's target/release/pilotctl: TUN mode, namespaces
# pilotA/pilotB, direct path, via bench/run-pilot.sh), then gotatun, boringtun and wireguard-go
# from /work/shared/bench-peers/run-*.sh (namespaces hostA/hostB). A reference that is not
# installed is skipped with a loud note (its install.sh installs all three).
#
# Each system: 200 pings at 10 ms through its tunnel, then 200 over the raw veth between the
# same namespaces right after (the "added" column is tunnel − veth of the same system in the
# same pass), and single-stream TCP (iperf3 -t 5) through the tunnel so a throughput regression
# shows next to the latency. Prints one table; raw JSON in $LAT_OUT/<stamp>/run-N/ (default
# /tmp/pilot-latency). Knobs: RUNS, PING_C (200), PING_I (0.01), IPERF_T (5), REFS
# ("gotatun boringtun wireguard-go"), PILOT_BIN (this tree's release build), PILOT_BIN_BEFORE,
# BUILD=1 (cargo build --release first).
#
# Every daemon is started by lib.sh's start_bg and killed by PID on exit; every system's script
# deletes its own namespaces; each one is bounded by `timeout`.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_PEERS=${BENCH_PEERS:-/work/shared/bench-peers}
RUNS=${RUNS:-2}
REFS=${REFS-"gotatun boringtun wireguard-go"}  # REFS="" : pilot only
# lib.sh knobs: latency first, a short single-stream TCP, nothing else.
export PING_C=${PING_C:-200} PING_I=${PING_I:-0.01} IPERF_T=${IPERF_T:-5}
export IDLE_S=0 DOWNLOAD_TESTS=0 BENCH_PEERS
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${LAT_OUT:-/tmp/pilot-latency}/$STAMP
mkdir -p "$OUT"

if [[ ${BUILD:-0} == 1 ]]; then (cd "$ROOT" && cargo build --release --bin pilotctl); fi
PILOT_BIN=${PILOT_BIN:-$ROOT/target/release/pilotctl}
[[ -x $PILOT_BIN ]] || { echo "no $PILOT_BIN: cargo build --release --bin pilotctl (or BUILD=1)" >&2; exit 1; }

have() {
  command -v wg >/dev/null || return 1
  case $1 in
    wireguard-go) command -v wireguard-go >/dev/null ;;
    boringtun) command -v boringtun-cli >/dev/null || [[ -x $HOME/.cargo/bin/boringtun-cli ]] ;;
    gotatun) command -v gotatun >/dev/null || [[ -x $HOME/.cargo/bin/gotatun ]] ;;
    *) return 1 ;;
  esac
}

missing=()
for ref in $REFS; do have "$ref" || missing+=("$ref"); done
if (( ${#missing[@]} > 0 )); then
  printf '\n!!! NOT INSTALLED, NOT MEASURED: %s (run %s/install.sh as root)\n\n' \
    "${missing[*]}" "$BENCH_PEERS" >&2
fi

# run_one DIR SYSTEM CMD...: one system's script, bounded; a failure is reported, not fatal.
run_one() {
  local d=$1 sys=$2; shift 2
  echo "=== $(date +%T) $sys" >&2
  OUT_DIR=$d SYSTEM=$sys timeout --signal=TERM --kill-after=20 300 "$@" 2>"$d/$sys.log" ||
    { echo "!!! $sys run failed (log: $d/$sys.log)" >&2; tail -n 5 "$d/$sys.log" >&2; }
}

for run in $(seq 1 "$RUNS"); do
  d=$OUT/run-$run; mkdir -p "$d"
  if [[ -n ${PILOT_BIN_BEFORE:-} ]]; then
    PILOTCTL=$PILOT_BIN_BEFORE run_one "$d" pilot-before "$HERE/run-pilot.sh"
  fi
  PILOTCTL=$PILOT_BIN run_one "$d" pilot "$HERE/run-pilot.sh"
  for ref in $REFS; do
    have "$ref" && run_one "$d" "$ref" "$BENCH_PEERS/run-$ref.sh"
  done
done
python3 "$HERE/latency_table.py" "$OUT" | tee "$OUT/table.md"
if (( ${#missing[@]} > 0 )); then
  printf '\n!!! NOT INSTALLED, NOT MEASURED: %s\n' "${missing[*]}" | tee -a "$OUT/table.md"
fi
