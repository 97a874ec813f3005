#!/usr/bin/env bash
# NAT traversal benchmark (root): time to first reply for a new peer over a direct (punched)
# path and over the registry relay, and iperf3 throughput over both, in one run.
#
# Topology (namespaces tv<pid>*, all torn down on exit):
#   switch bridge  --  registry 203.0.113.10:7946
#                  --  router ra 198.51.100.61 (masquerade, port-preserving)  -- agent a1 10.61.0.2
#                  --  router rb 198.51.100.62 (masquerade, port-preserving)  -- agent b1 10.62.0.2
#                  --  router rc 198.51.100.63 (masquerade fully-random)      -- agent a2 10.63.0.2
#                  --  router rd 198.51.100.64 (masquerade fully-random)      -- agent b2 10.64.0.2
# Routers drop unsolicited inbound on their WAN side. a1/b1 end up direct, a2/b2 relayed.
#
# "First reply": daemons up and registered, B allow-lists A; t0 = `pilotctl handshake B` on A
# returns (trust is mutual from then on), and A at once pings B's overlay address every 10 ms
# (`ping -c 1 -i 0.01`) until the first echo reply. That covers the endpoint exchange, the
# punch (or the relay fallback after 3 s) and the WireGuard handshake.
#
# Env: PILOTCTL (default target/release/pilotctl), IPERF_T (seconds, default 10), RUNS (first
# reply measurements per path, default 3; each uses fresh identities), RELAY_BYTES_PER_SEC
# (the registry's per-node relay budget; default: the registry default, 25 MB/s).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib/natlab.sh
source "$HERE/lib/natlab.sh"
natlab_init tv pilot-traversal

natlab_up 6

mkdir -p "$WORK/reg"
REG_ARGS=(--listen 203.0.113.10:7946 --state "$WORK/reg")
if [[ -n ${RELAY_BYTES_PER_SEC:-} ]]; then
  printf 'listen = "203.0.113.10:7946"\nstate_dir = "%s"\n[limits]\nrelay_bytes_per_sec = %s\nrelay_byte_burst = %s\nrelay_packets_per_sec = 1000000\nrelay_packet_burst = 100000\n' \
    "$WORK/reg" "$RELAY_BYTES_PER_SEC" "$RELAY_BYTES_PER_SEC" >"$WORK/registry.toml"
  REG_ARGS+=(--config "$WORK/registry.toml")
fi
ip netns exec "${P}reg" "$PILOTCTL" registry run "${REG_ARGS[@]}" 2>"$WORK/reg.log" & PIDS+=($!)
sleep 0.5

first_replies direct a1 b1
first_replies relay a2 b2

# Throughput over the last pair of each kind (still running).
TD=$(iperf_tcp a1 b1 "$RUNS")
TR=$(iperf_tcp a2 b2 "$RUNS")
kill "${PIDS[0]}" 2>/dev/null || true   # the registry logs its counters when it stops
sleep 0.5
RELAYED=$(grep -o 'relayed_packets: [0-9]*, relayed_bytes: [0-9]*' "$WORK/reg.log" | tail -1 || true)

echo
echo "| path | first reply s (min / median / max of $RUNS) | iperf3 TCP ${IPERF_T} s Mbit/s |"
echo "|---|---|---|"
echo "| direct (port-preserving NATs) | ${FR[direct]} | $TD |"
echo "| relay (fully-random NATs) | ${FR[relay]} | $TR |"
if [[ -n $RELAYED ]]; then echo "registry: $RELAYED"; fi
