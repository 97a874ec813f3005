#!/usr/bin/env bash
# TLS relay benchmark (root, issue 14): iperf3 throughput over a direct (punched) path, the UDP
# relay, the TLS relay and the TLS relay wrapped in WebSocket in one run, and the time from the
# first packet to the first reply for each, including agents behind firewalls that drop all UDP.
#
# Topology (namespaces tl<pid>*, all torn down on exit):
#   switch bridge  --  registry 203.0.113.10:7946 (UDP) and :443 (TLS transport)
#                  --  router ra 198.51.100.71 (port-preserving)          -- agent a1 10.71.0.2
#                  --  router rb 198.51.100.72 (port-preserving)          -- agent b1 10.72.0.2
#                  --  router rc 198.51.100.73 (fully-random)             -- agent a2 10.73.0.2
#                  --  router rd 198.51.100.74 (fully-random)             -- agent b2 10.74.0.2
#                  --  router re 198.51.100.75 (drops ALL forwarded UDP)  -- agent a3 10.75.0.2
#                  --  router rf 198.51.100.76 (fully-random)             -- agent b3 10.76.0.2
#                  --  router rg 198.51.100.77 (drops ALL forwarded UDP)  -- agent a4 10.77.0.2
#                  --  router rh 198.51.100.78 (fully-random)             -- agent b4 10.78.0.2
# a1/b1 end up direct, a2/b2 on the UDP relay, a3/b3 on the TLS relay (a3 falls back to TLS
# by itself: [relay] tls = "auto", udp_timeout_ms = 2000), a4/b4 likewise with
# [relay] websocket = true (the TLS relay wrapped in WebSocket).
#
# "First reply": daemons up and registered, B allow-lists A; t0 = `pilotctl handshake B` on A
# returns, and A at once pings B's overlay address every 10 ms until the first echo reply.
#
# Env: PILOTCTL (default target/release/pilotctl), IPERF_T (seconds, default 10), RUNS (first
# reply measurements per path, default 3). The registry's relay budget is lifted (1 GB/s) so
# the relay paths show the transport, not the budget.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib/natlab.sh
source "$HERE/lib/natlab.sh"
natlab_init tl pilot-tlsbench

NATLAB_AGENT_CONFIG='[relay]\ntls_port = 443\nudp_timeout_ms = 2000\n'
natlab_up 7
router re 198.51.100.75 10.75.0 masquerade
router rf 198.51.100.76 10.76.0 "masquerade fully-random"
ip netns exec "${P}re" nft insert rule ip pilotfw forwarding meta l4proto udp drop
agent a3 re 10.75.0; agent b3 rf 10.76.0
router rg 198.51.100.77 10.77.0 masquerade
router rh 198.51.100.78 10.78.0 "masquerade fully-random"
ip netns exec "${P}rg" nft insert rule ip pilotfw forwarding meta l4proto udp drop
agent a4 rg 10.77.0; agent b4 rh 10.78.0

mkdir -p "$WORK/reg"
printf 'listen = "203.0.113.10:7946"\nstate_dir = "%s"\ntls_listen = "203.0.113.10:443"\n[limits]\nrelay_bytes_per_sec = 1000000000\nrelay_byte_burst = 1000000000\nrelay_packets_per_sec = 1000000\nrelay_packet_burst = 100000\n' \
  "$WORK/reg" >"$WORK/registry.toml"
ip netns exec "${P}reg" "$PILOTCTL" registry run --listen 203.0.113.10:7946 --state "$WORK/reg" \
  --config "$WORK/registry.toml" 2>"$WORK/reg.log" & PIDS+=($!)
sleep 0.5

declare -A FR
PLAIN_CONFIG=$NATLAB_AGENT_CONFIG
first_replies direct a1 b1
first_replies relay a2 b2
first_replies tls a3 b3
# The same firewalled agent, its TLS wrapped in WebSocket.
NATLAB_AGENT_CONFIG="${PLAIN_CONFIG}websocket = true\n"
first_replies wss a4 b4
NATLAB_AGENT_CONFIG=$PLAIN_CONFIG

# Throughput over the last pair of each kind (still running).
TD=$(iperf_tcp a1 b1 "$RUNS")
TR=$(iperf_tcp a2 b2 "$RUNS")
TT=$(iperf_tcp a3 b3 "$RUNS")
TW=$(iperf_tcp a4 b4 "$RUNS")
for n in a3 a4; do
  echo "  ($n reaches the registry over: $(pc "$WORK/$n-$RUNS" netcheck --json | jq -r '.data.registries[0].transport'))" >&2
done
kill "${PIDS[0]}" 2>/dev/null || true   # the registry logs its counters when it stops
sleep 0.5

echo
echo "| path | first reply s (min / median / max of $RUNS) | iperf3 TCP ${IPERF_T} s Mbit/s | vs direct |"
echo "|---|---|---|---|"
echo "| direct (port-preserving NATs) | ${FR[direct]} | $TD | 1.00 |"
echo "| UDP relay (fully-random NATs) | ${FR[relay]} | $TR | $(echo "scale=2; $TR / $TD" | bc -l) |"
echo "| TLS relay (UDP blocked) | ${FR[tls]} | $TT | $(echo "scale=2; $TT / $TD" | bc -l) |"
echo "| TLS relay in WebSocket (UDP blocked) | ${FR[wss]} | $TW | $(echo "scale=2; $TW / $TD" | bc -l) |"
echo "WebSocket vs plain TLS relay throughput: $(echo "scale=2; $TW / $TT" | bc -l)"
echo "(same run; on a busy machine only the ratios mean anything)"
