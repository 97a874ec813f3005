#!/usr/bin/env bash
# Throughput/latency benchmark: pilot vs the raw veth vs reference overlays, in one run.
#
#   sudo bench/throughput.sh
#
# Builds the release binary once, then per pass (RUNS, default 1): bench/run-pilot.sh (real
# `pilotctl daemon run` in namespaces pilotA/pilotB on 198.51.100.0/24), then each reference in
# REFS (default "wireguard-go boringtun") that is installed, via /work/shared/bench-peers/run-*.sh
# (their own namespaces hostA/hostB). All use lib.sh's measure: iperf3 TCP 1 stream and -P 4
# A->B, -R 1 stream, HTTP GET, ping avg/p99, daemon RSS and CPU. Prints one table; raw JSON in
# $BENCH_OUT/<stamp>/run-N/ (default /tmp/pilot-bench). Knobs: IPERF_T, IDLE_S, HTTP_MB, RUNS.
# BASELINE=/path/to/an/older/pilotctl also runs that binary in each pass (as "pilot-baseline",
# right before this build), so a change is judged by a same-run before/after ratio.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_PEERS=${BENCH_PEERS:-/work/shared/bench-peers}
RUNS=${RUNS:-1}
REFS=${REFS:-"wireguard-go boringtun"}
export IPERF_T=${IPERF_T:-10} IDLE_S=${IDLE_S:-5} HTTP_MB=${HTTP_MB:-200} BENCH_PEERS
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-/tmp/pilot-bench}/$STAMP
mkdir -p "$OUT"

(cd "$ROOT" && cargo build --release --bin pilotctl)
export PILOTCTL=$ROOT/target/release/pilotctl

have() {
  case $1 in
    wireguard-go) command -v wireguard-go >/dev/null && command -v wg >/dev/null ;;
    boringtun) { command -v boringtun-cli >/dev/null || [[ -x $HOME/.cargo/bin/boringtun-cli ]]; } && command -v wg >/dev/null ;;
    nebula) command -v nebula >/dev/null ;;
    *) return 1 ;;
  esac
}

for run in $(seq 1 "$RUNS"); do
  d=$OUT/run-$run; mkdir -p "$d"
  echo "=== run $run: pilot" >&2
  if [[ -n ${BASELINE:-} ]]; then
    echo "=== run $run: pilot-baseline ($BASELINE)" >&2
    OUT_DIR=$d SYSTEM=pilot-baseline PILOTCTL=$BASELINE timeout --signal=TERM --kill-after=20 400 \
      "$HERE/run-pilot.sh" || echo "pilot-baseline run failed" >&2
  fi
  OUT_DIR=$d timeout --signal=TERM --kill-after=20 400 "$HERE/run-pilot.sh" || echo "pilot run failed" >&2
  for ref in $REFS; do
    if have "$ref"; then
      echo "=== run $run: $ref" >&2
      OUT_DIR=$d timeout --signal=TERM --kill-after=20 400 "$BENCH_PEERS/run-$ref.sh" || echo "$ref run failed" >&2
    else
      echo "=== $ref not installed; skipped (see $BENCH_PEERS/install.sh)" >&2
    fi
  done
done
python3 "$HERE/table.py" "$OUT" | tee "$OUT/table.md"
