#!/usr/bin/env bash
# Relay throughput benchmark (root): iperf3 TCP over a direct (punched) path and over the
# registry's UDP relay, in one run, with the relay budgets lifted; prints Mbit/s and the ratio
# relayed / direct. With REGISTRY_BEFORE=/path/to/older/pilotctl the relayed measurement is
# repeated with that binary as the registry (same topology, same run): before/after ratios.
#
# Topology (namespaces rl<pid>*, torn down on exit):
#   switch bridge  --  registry 203.0.113.10:7946
#                  --  router ra 198.51.100.71 (masquerade, port-preserving)  -- agent a1 10.71.0.2
#                  --  router rb 198.51.100.72 (masquerade, port-preserving)  -- agent b1 10.72.0.2
#                  --  router rc 198.51.100.73 (masquerade fully-random)      -- agent a2 10.73.0.2
#                  --  router rd 198.51.100.74 (masquerade fully-random)      -- agent b2 10.74.0.2
# Routers drop unsolicited inbound on their WAN side: a1/b1 end up direct, a2/b2 relayed.
#
# Env: PILOTCTL (default target/release/pilotctl), REGISTRY_BEFORE (optional baseline
# registry binary), IPERF_T (seconds, default 8), RUNS (iperf3 runs per path, median, default 1).
# The machine is shared: compare the ratios of one run, not absolute figures across runs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PILOTCTL=${PILOTCTL:-$HERE/../target/release/pilotctl}
IPERF_T=${IPERF_T:-8}
RUNS=${RUNS:-1}
[[ $(id -u) == 0 ]] || { echo "needs root" >&2; exit 1; }
[[ -x $PILOTCTL ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "needs iperf3" >&2; exit 1; }
P=rl$(( $$ % 100000 ))
WORK=$(mktemp -d /tmp/pilot-relay-XXXXXX)
NSES=()
PIDS=()
REG_PID=

cleanup() {
  for pid in "${PIDS[@]}" $REG_PID; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}" $REG_PID; do kill -9 "$pid" 2>/dev/null || true; done
  for ns in "${NSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

source "$HERE/lib/natlab.sh"
natlab_up 7

# Budgets lifted: per node and (where the binary knows them) global.
LIFTED='relay_bytes_per_sec = 4000000000
relay_byte_burst = 4000000000
relay_packets_per_sec = 4000000000
relay_packet_burst = 4000000000'
GLOBAL='relay_total_bytes_per_sec = 4000000000
relay_total_byte_burst = 4000000000
relay_total_packets_per_sec = 4000000000
relay_total_packet_burst = 4000000000'

# Starts the registry binary $1 on 203.0.113.10:7946 (fresh state); stops the previous one.
start_registry() { # binary label
  if [[ -n $REG_PID ]]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  local d=$WORK/reg-$2
  mkdir -p "$d"
  printf 'listen = "203.0.113.10:7946"\nstate_dir = "%s"\n[limits]\n%s\n%s\n' "$d" "$LIFTED" "$GLOBAL" >"$d/full.toml"
  printf 'listen = "203.0.113.10:7946"\nstate_dir = "%s"\n[limits]\n%s\n' "$d" "$LIFTED" >"$d/old.toml"
  for cfg in full old; do
    ip netns exec "${P}reg" "$1" registry run --config "$d/$cfg.toml" 2>"$d/log" & REG_PID=$!
    sleep 0.5
    if kill -0 "$REG_PID" 2>/dev/null; then return; fi
  done
  echo "registry $1 did not start: $(cat "$d/log")" >&2; exit 1
}

# Median iperf3 TCP throughput A -> B in Mbit/s; checks the path.
iperf() { # a b tag want-path
  local db=$WORK/$2-$3 vals=()
  local path; path=$(pc "$WORK/$1-$3" peers --json | jq -r '.data.peers[0].path')
  [[ $path == "$4" ]] || echo "warning: $1 -> $2 path is $path, expected $4" >&2
  for _ in $(seq 1 "$RUNS"); do
    ip netns exec "${P}$2" iperf3 -s -1 -D -B "$(cat "$db/ipv6")" >/dev/null
    sleep 0.3
    ip netns exec "${P}$1" iperf3 -6 -c "$(cat "$db/ipv6")" -t "$IPERF_T" -J >"$WORK/iperf.json"
    vals+=("$(jq '.end.sum_received.bits_per_second / 1e6 | floor' "$WORK/iperf.json")")
  done
  printf '%s\n' "${vals[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

start_registry "$PILOTCTL" after
start_pair a1 b1 direct; first_reply a1 b1 direct >/dev/null
TD=$(iperf a1 b1 direct direct)
stop_pair a1 b1 direct
start_pair a2 b2 after; first_reply a2 b2 after >/dev/null
TA=$(iperf a2 b2 after relay)
stop_pair a2 b2 after
if [[ -n ${REGISTRY_BEFORE:-} ]]; then
  start_registry "$REGISTRY_BEFORE" before
  start_pair a2 b2 before; first_reply a2 b2 before >/dev/null
  TB=$(iperf a2 b2 before relay)
  stop_pair a2 b2 before
fi

ratio() { echo "scale=2; $1 / $2" | bc -l; }
echo
echo "| path (iperf3 TCP, ${IPERF_T} s, median of $RUNS) | Mbit/s | / direct |"
echo "|---|---|---|"
echo "| direct (port-preserving NATs) | $TD | 1.00 |"
echo "| UDP relay, this registry | $TA | $(ratio "$TA" "$TD") |"
if [[ -n ${TB:-} ]]; then
  echo "| UDP relay, REGISTRY_BEFORE | $TB | $(ratio "$TB" "$TD") |"
  echo "relay after / before: $(ratio "$TA" "$TB")"
fi
