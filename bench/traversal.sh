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
PILOTCTL=${PILOTCTL:-$HERE/../target/release/pilotctl}
IPERF_T=${IPERF_T:-10}
RUNS=${RUNS:-3}
[[ $(id -u) == 0 ]] || { echo "needs root" >&2; exit 1; }
[[ -x $PILOTCTL ]] || { echo "build first: cargo build --release" >&2; exit 1; }
P=tv$(( $$ % 100000 ))
WORK=$(mktemp -d /tmp/pilot-traversal-XXXXXX)
NSES=()
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for ns in "${NSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

nsadd() { ip netns add "$1"; NSES+=("$1"); ip -n "$1" link set lo up;
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; }
nsadd "${P}sw"
ip -n "${P}sw" link add br0 type bridge
ip -n "${P}sw" link set br0 up

on_switch() { # ns ip
  ip link add eth0 netns "$1" type veth peer name "p$1" netns "${P}sw"
  ip -n "${P}sw" link set "p$1" master br0
  ip -n "${P}sw" link set "p$1" up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" route add 198.51.100.0/24 dev eth0 2>/dev/null || true
  ip -n "$1" route add 203.0.113.0/24 dev eth0 2>/dev/null || true
}

router() { # name wan lan nat-expr
  local ns=${P}$1
  nsadd "$ns"; on_switch "$ns" "$2"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$ns" link add lanbr type bridge
  ip -n "$ns" addr add "$3.1/24" dev lanbr
  ip -n "$ns" link set lanbr up
  ip netns exec "$ns" nft -f - <<EOF
table ip pilotnat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" $4
  }
}
table ip pilotfw {
  chain forwarding {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lanbr" accept
  }
  chain incoming {
    type filter hook input priority filter; policy accept;
    iifname "eth0" ct state established,related accept
    iifname "eth0" drop
  }
}
EOF
}

agent() { # name router lan
  local ns=${P}$1
  nsadd "$ns"
  ip link add eth0 netns "$ns" type veth peer name "v$1" netns "${P}$2"
  ip -n "${P}$2" link set "v$1" master lanbr
  ip -n "${P}$2" link set "v$1" up
  ip -n "$ns" addr add "$3.2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$3.1"
}

nsadd "${P}reg"; on_switch "${P}reg" 203.0.113.10
router ra 198.51.100.61 10.61.0 masquerade
router rb 198.51.100.62 10.62.0 masquerade
router rc 198.51.100.63 10.63.0 "masquerade fully-random"
router rd 198.51.100.64 10.64.0 "masquerade fully-random"
agent a1 ra 10.61.0; agent b1 rb 10.62.0; agent a2 rc 10.63.0; agent b2 rd 10.64.0

mkdir -p "$WORK/reg"
REG_ARGS=(--listen 203.0.113.10:7946 --state "$WORK/reg")
if [[ -n ${RELAY_BYTES_PER_SEC:-} ]]; then
  printf 'listen = "203.0.113.10:7946"\nstate_dir = "%s"\n[limits]\nrelay_bytes_per_sec = %s\nrelay_byte_burst = %s\nrelay_packets_per_sec = 1000000\nrelay_packet_burst = 100000\n' \
    "$WORK/reg" "$RELAY_BYTES_PER_SEC" "$RELAY_BYTES_PER_SEC" >"$WORK/registry.toml"
  REG_ARGS+=(--config "$WORK/registry.toml")
fi
ip netns exec "${P}reg" "$PILOTCTL" registry run "${REG_ARGS[@]}" 2>"$WORK/reg.log" & PIDS+=($!)
sleep 0.5

pc() { # agent-dir args...
  local d=$1; shift
  PILOT_HOME=$d PILOT_SOCKET=$d/pilot.sock "$PILOTCTL" "$@"
}

# Starts agents $1 (A) and $2 (B) with fresh identities; B allow-lists A. Prints nothing.
start_pair() { # a b run
  local a=$1 b=$2 run=$3
  for n in "$a" "$b"; do
    local d=$WORK/$n-$run
    mkdir -p "$d"
    printf 'mode = "tun"\n[tunnel]\nlisten_port = 51820\n' >"$d/config.toml"
    # A short userspace start creates the identity; read the key.
    PILOT_HOME=$d timeout 20 "$PILOTCTL" daemon start --mode userspace >/dev/null
    pc "$d" info --json | jq -r .data.public_key >"$d/key"
    pc "$d" info --json | jq -r .data.ipv6 >"$d/ipv6"
    PILOT_HOME=$d timeout 20 "$PILOTCTL" daemon stop >/dev/null
  done
  printf '[trust]\nallow = ["%s"]\n' "$(cat "$WORK/$a-$run/key")" >>"$WORK/$b-$run/config.toml"
  for n in "$a" "$b"; do
    local d=$WORK/$n-$run
    ip netns exec "${P}$n" env PILOT_HOME="$d" PILOT_SOCKET="$d/pilot.sock" \
      PILOT_REGISTRY=203.0.113.10:7946 "$PILOTCTL" --json daemon start >"$d/start.json"
    PIDS+=("$(jq -r .data.pid "$d/start.json")")
  done
  # Wait until both are registered.
  for _ in $(seq 1 200); do
    grep -q ' registered' "$WORK/$a-$run/daemon.log" 2>/dev/null \
      && grep -q ' registered' "$WORK/$b-$run/daemon.log" 2>/dev/null && break
    sleep 0.05
  done
}

stop_pair() {
  for n in "$1" "$2"; do pc "$WORK/$n-$3" daemon stop >/dev/null 2>&1 || true; done
}

first_reply() { # a b run -> seconds
  local a=$1 b=$2 run=$3
  local da=$WORK/$a-$run db=$WORK/$b-$run
  pc "$da" handshake "$(cat "$db/key")" >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  ip netns exec "${P}$a" ping -6 -n -q -c 1 -i 0.01 -w 20 "$(cat "$db/ipv6")" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

declare -A FR
for kind in direct relay; do
  if [[ $kind == direct ]]; then A=a1; B=b1; else A=a2; B=b2; fi
  vals=()
  for run in $(seq 1 "$RUNS"); do
    start_pair "$A" "$B" "$run"
    v=$(first_reply "$A" "$B" "$run")
    path=$(pc "$WORK/$A-$run" peers --json | jq -r '.data.peers[0].path')
    printf '%s run %s: first reply after %.3f s (path now %s)\n' "$kind" "$run" "$v" "$path" >&2
    vals+=("$v")
    if [[ $run != "$RUNS" ]]; then stop_pair "$A" "$B" "$run"; fi
  done
  FR[$kind]=$(printf '%s\n' "${vals[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f / %.3f / %.3f", a[1], a[int((NR+1)/2)], a[NR]}')
done

# Throughput over the last pair of each kind (still running).
iperf() { # a b run
  local da=$WORK/$1-$3 db=$WORK/$2-$3
  ip netns exec "${P}$2" iperf3 -s -1 -D -B "$(cat "$db/ipv6")" >/dev/null
  sleep 0.3
  ip netns exec "${P}$1" iperf3 -6 -c "$(cat "$db/ipv6")" -t "$IPERF_T" -J >"$WORK/iperf-$1.json"
  jq '.end.sum_received.bits_per_second / 1e6 | floor' "$WORK/iperf-$1.json"
  local path; path=$(pc "$da" peers --json | jq -r '.data.peers[0].path')
  echo "  ($1 -> $2 path: $path)" >&2
}
TD=$(iperf a1 b1 "$RUNS")
TR=$(iperf a2 b2 "$RUNS")
kill "${PIDS[0]}" 2>/dev/null || true   # the registry logs its counters when it stops
sleep 0.5
RELAYED=$(grep -o 'relayed_packets: [0-9]*, relayed_bytes: [0-9]*' "$WORK/reg.log" | tail -1 || true)

echo
echo "| path | first reply s (min / median / max of $RUNS) | iperf3 TCP ${IPERF_T} s Mbit/s |"
echo "|---|---|---|"
echo "| direct (port-preserving NATs) | ${FR[direct]} | $TD |"
echo "| relay (fully-random NATs) | ${FR[relay]} | $TR |"
if [[ -n $RELAYED ]]; then echo "registry: $RELAYED"; fi
