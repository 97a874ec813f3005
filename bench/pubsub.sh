#!/usr/bin/env bash
# Pub/sub benchmark on loopback, no root: two userspace-mode daemons (static peers over
# 127.0.0.1), a broker B and a subscriber node A. One publisher (a keep-alive client of B's
# local API, POST /v1/pubsub/publish on B's own broker) and SUBS `pilotctl subscribe` processes
# on A, each its own overlay connection to B's port 1002.
#
#   bench/pubsub.sh                  # release build (cargo build --release first)
#   EVENTS=5000 SIZE=256 bench/pubsub.sh
#
# Three runs, same daemons, same invocation:
#   1. throughput, 10 subscribers: publish EVENTS as fast as the API answers; events/s is
#      EVENTS / (first publish → the last subscriber got the last event);
#   2. throughput, 1 subscriber: the same, for the fan-out ratio (run 1 / run 2);
#   3. latency, 10 subscribers, paced at RATE events/s: p50/p99 of (subscriber reads the event
#      − broker's ts_ms stamp).
# The subscriber queues are raised (subscriber_queue = 65536) so throughput runs measure
# delivery, not drops; drops and sequence gaps are printed (both should be 0).
# Env: PILOTCTL (default target/release/pilotctl), SUBS (10), EVENTS (20000), SIZE (64 bytes),
#      RATE (500), LAT_EVENTS (2000).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PILOTCTL=${PILOTCTL:-$HERE/../target/release/pilotctl}
SUBS=${SUBS:-10} EVENTS=${EVENTS:-20000} SIZE=${SIZE:-64} RATE=${RATE:-500}
LAT_EVENTS=${LAT_EVENTS:-2000}
[[ -x $PILOTCTL ]] || { echo "no $PILOTCTL; cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d /tmp/pilot-bench-pubsub.XXXXXX)
cleanup() {
  for n in a b; do PILOT_HOME=$WORK/$n "$PILOTCTL" daemon stop --timeout 5 >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for n in a b; do
  mkdir -p "$WORK/$n"
  printf '[socks5]\nenabled = false\n' >"$WORK/$n/id.toml"
  PILOT_HOME=$WORK/$n "$PILOTCTL" daemon start --mode userspace --config "$WORK/$n/id.toml" >/dev/null
  PILOT_HOME=$WORK/$n "$PILOTCTL" --json info | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["public_key"])' >"$WORK/$n.key"
  PILOT_HOME=$WORK/$n "$PILOTCTL" daemon stop --timeout 5 >/dev/null
done
PA=$(free_port) PB=$(free_port)
cfg() { # own-port peer peer-port peer-name
  printf 'mode = "userspace"\n[socks5]\nenabled = false\n[pubsub]\nsubscriber_queue = 65536\n[tunnel]\nlisten_port = %s\n[[peer]]\npublic_key = "%s"\nhostname = "%s"\nendpoint = "127.0.0.1:%s"\n' \
    "$1" "$(cat "$WORK/$2.key")" "$4" "$3"
}
cfg "$PA" b "$PB" node-b >"$WORK/a/config.toml"
cfg "$PB" a "$PA" node-a >"$WORK/b/config.toml"
for n in a b; do PILOT_HOME=$WORK/$n "$PILOTCTL" daemon start >/dev/null; done

run() { python3 "$HERE/pubsub.py" "$PILOTCTL" "$WORK/b" "$WORK/a" node-b "$@"; }
echo "pilot pub/sub, userspace mode on loopback, $(nproc) cores; $("$PILOTCTL" --version)"
t10=$(run "$SUBS" "$EVENTS" 0 "$SIZE"); echo "throughput, $SUBS subscribers: $t10"
t1=$(run 1 "$EVENTS" 0 "$SIZE"); echo "throughput, 1 subscriber:  $t1"
lat=$(run "$SUBS" "$LAT_EVENTS" "$RATE" "$SIZE"); echo "latency at $RATE events/s, $SUBS subscribers: $lat"
python3 - "$t10" "$t1" "$lat" "$SUBS" <<'PY'
import json, sys
t10, t1, lat = (json.loads(a) for a in sys.argv[1:4])
subs = sys.argv[4]
print()
print(f"| run | events/s | deliveries/s | dropped | gaps | latency p50 ms | p99 ms |")
print(f"|---|---|---|---|---|---|---|")
for name, r in ((f"{subs} subscribers, flat out", t10), ("1 subscriber, flat out", t1),
                (f"{subs} subscribers, {lat['rate']:.0f} events/s", lat)):
    print(f"| {name} | {r['events_per_s']} | {r['deliveries_per_s']} | {r['dropped']} | {r['gaps']} "
          f"| {r['latency_ms']['p50']} | {r['latency_ms']['p99']} |")
print()
print(f"fan-out ratio (same run): events/s with {subs} subscribers / with 1 = "
      f"{t10['events_per_s'] / t1['events_per_s']:.2f}x; deliveries/s {t10['deliveries_per_s'] / t1['deliveries_per_s']:.2f}x")
PY
