#!/usr/bin/env bash
# Where a small packet's round trip goes inside pilot (issue 18): brings pilot up between two
# namespaces (bench/run-pilot.sh, TUN mode, direct path), sends PING_C pings at 10 ms, and
# records every data-plane thread's syscalls and scheduler events with perf:
#
#   sudo bench/latency_breakdown.sh            # PILOTCTL=... to trace another binary
#
# Prints, per hop of the round trip, the median time from one event to the next (the ping's
# own send and receive, TUN read, UDP send, UDP receive, TUN write, on A and B), and for each
# pilot thread the scheduler's wake-up delay (perf sched timehist). Raw perf data stays in
# $BREAKDOWN_OUT (default /tmp/pilot-latency-breakdown). Bounded: perf runs for the pings only.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces, perf)" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
export BREAKDOWN_OUT=${BREAKDOWN_OUT:-/tmp/pilot-latency-breakdown}
export PING_N=${PING_N:-200}
mkdir -p "$BREAKDOWN_OUT"
export IDLE_S=0 DOWNLOAD_TESTS=0 OUT_DIR=$BREAKDOWN_OUT
PILOT_HOOK=$HERE/latency_breakdown_hook.sh "$HERE/run-pilot.sh"
python3 "$HERE/latency_breakdown.py" "$BREAKDOWN_OUT"
