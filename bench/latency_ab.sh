#!/usr/bin/env bash
# Two pilot builds side by side, pinged in alternating rounds (issue 18): on this shared,
# noisy machine the round trip of one build moves by 0.1 ms between passes minutes apart, so
# comparing two builds needs them up at the same time and measured in turns.
#
#   sudo BEFORE=/tmp/pilotctl-main AFTER=target/release/pilotctl bench/latency_ab.sh
#
# (The script is also its own PILOT_HOOK: AB_STAGE says which stage it runs.)
# Pair "before" in namespaces abA/abB, pair "after" in abC/abD (each via bench/run-pilot.sh,
# TUN mode, direct path); then ROUNDS (default 10) rounds of PING_C (100) pings at PING_I
# (0.01 s) through before, through after, and over after's raw veth. Prints p50/p90/p99 of
# all round trips of each, and the after ÷ before ratios.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
: "${BEFORE:?BEFORE=path to the older pilotctl}"
AFTER=${AFTER:-$HERE/../target/release/pilotctl}
export ROUNDS=${ROUNDS:-10} AB_PING_C=${PING_C:-100} AB_PING_I=${PING_I:-0.01}
export AB_OUT=${AB_OUT:-$(mktemp -d /tmp/pilot-latency-ab.XXXXXX)}
export OUT_DIR=$AB_OUT

if [[ ${AB_STAGE:-} == inner ]]; then
  # Both pairs are up: $AB_BEFORE_* from the outer pair, this pair's from run-pilot.sh.
  ping_into() { # ns ip file
    ip netns exec "$1" ping -n -c "$AB_PING_C" -i "$AB_PING_I" "$2" |
      sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' >>"$3"
  }
  for r in $(seq 1 "$ROUNDS"); do
    ping_into "$AB_BEFORE_NS_A" "$AB_BEFORE_B_IP" "$AB_OUT/before.txt"
    ping_into "$NS_A" "$B_IP" "$AB_OUT/after.txt"
    ping_into "$NS_A" "$VETH_B" "$AB_OUT/veth.txt"
    echo "round $r of $ROUNDS done" >&2
  done
  exit
fi

if [[ ${AB_STAGE:-} == middle ]]; then
  # The "before" pair is up: remember it, then bring up "after" with the pings as its hook.
  export AB_BEFORE_NS_A=$NS_A AB_BEFORE_B_IP=$B_IP
  AB_STAGE=inner NS_A=abC NS_B=abD PILOTCTL=$AFTER PILOT_HOOK="$HERE/latency_ab.sh" \
    "$HERE/run-pilot.sh"
  exit
fi

AB_STAGE=middle NS_A=abA NS_B=abB PILOTCTL=$BEFORE PILOT_HOOK="$HERE/latency_ab.sh" \
  timeout --kill-after=20 $((60 + ROUNDS * 3 * AB_PING_C / 50)) "$HERE/run-pilot.sh" \
  >"$AB_OUT/run.log" 2>&1 || { tail -20 "$AB_OUT/run.log" >&2; exit 1; }
python3 - "$AB_OUT" <<'PY'
import statistics, sys
d = sys.argv[1]
def load(n):
    return sorted(float(x) for x in open(f"{d}/{n}.txt") if x.strip())
def pct(v, q):
    return v[min(len(v) - 1, int(q * len(v)))]
rows = {n: load(n) for n in ("before", "after", "veth")}
veth = pct(rows["veth"], 0.5)
print("| build | pings | p50 ms | p90 | p99 | added p50 over veth |")
print("|---|---|---|---|---|---|")
for n, v in rows.items():
    print(f"| {n} | {len(v)} | {pct(v,.5):.3f} | {pct(v,.9):.3f} | {pct(v,.99):.3f} | "
          + ("–" if n == "veth" else f"{pct(v,.5) - veth:.3f}") + " |")
b, a = rows["before"], rows["after"]
print(f"\nafter ÷ before: p50 {pct(a,.5)/pct(b,.5):.2f}, p90 {pct(a,.9)/pct(b,.9):.2f}, "
      f"p99 {pct(a,.99)/pct(b,.99):.2f}; added p50 {pct(a,.5)-veth:.3f} vs {pct(b,.5)-veth:.3f} ms")
PY
echo "raw round trips: $AB_OUT" >&2
