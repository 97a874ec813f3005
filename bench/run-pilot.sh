#!/usr/bin/env bash
# pilot between two namespaces, measured with the shared bench-peers methodology (lib.sh), so
# its JSON is comparable with the reference systems' run-*.sh in the same invocation.
#
# Namespaces $NS_A/$NS_B (default pilotA/pilotB) joined by a veth:
#   pbA 198.51.100.1/24  <->  pbB 198.51.100.2/24   (documentation range, accept_dad=0)
# Each side runs the real `pilotctl daemon run` (TUN mode, listen port 51820, the other as a
# static [[peer]]); traffic goes to B's overlay IPv6. Also measures iperf3 over the raw veth
# (veth.json) and keeps B's `pilotctl peers --json` (pilot-peers.json).
# Env: OUT_DIR (where JSON goes), PILOTCTL (binary), BENCH_PEERS (shared bench-peers dir),
#      plus lib.sh's knobs (IPERF_T, IDLE_S, DOWNLOAD_TESTS, HTTP_MB, ...); PILOT_HOOK (below).
SYSTEM=${SYSTEM:-pilot}
BENCH_PEERS=${BENCH_PEERS:-/work/shared/bench-peers}
export NS_A=${NS_A:-pilotA} NS_B=${NS_B:-pilotB}
# shellcheck source=/dev/null
source "$BENCH_PEERS/lib.sh"
# lib.sh's cleanup calls netns-pair.sh down, which deletes exactly $NS_A/$NS_B (ours).
VETH_A=198.51.100.1
VETH_B=198.51.100.2
HERE=$(cd "$(dirname "$0")" && pwd)
PILOTCTL=${PILOTCTL:-$HERE/../target/release/pilotctl}
[[ -x $PILOTCTL ]] || { log "no $PILOTCTL; build with cargo build --release"; exit 1; }

ns_up() {
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  ip netns add "$NS_A"; ip netns add "$NS_B"
  ip link add pbA netns "$NS_A" type veth peer name pbB netns "$NS_B"
  for ns in "$NS_A" "$NS_B"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "$ns" link set lo up
  done
  ip -n "$NS_A" addr add "$VETH_A/24" dev pbA
  ip -n "$NS_B" addr add "$VETH_B/24" dev pbB
  ip -n "$NS_A" link set pbA up
  ip -n "$NS_B" link set pbB up
  for _ in $(seq 1 100); do
    ip netns exec "$NS_A" ping -n -q -c1 -W1 "$VETH_B" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "veth not reachable"; return 1
}
ns_up

# Identities: a short userspace-mode start creates each node's key; read its public key.
for n in a b; do
  mkdir -p "$WORK/$n"
  PILOT_HOME=$WORK/$n timeout 20 "$PILOTCTL" daemon start --mode userspace >/dev/null
  PILOT_HOME=$WORK/$n "$PILOTCTL" info --json >"$WORK/$n.info"
  PILOT_HOME=$WORK/$n timeout 20 "$PILOTCTL" daemon stop >/dev/null
done
peer_cfg() { # own-listen peer-info peer-endpoint
  printf 'mode = "tun"\n[tunnel]\nlisten_port = %s\n[[peer]]\npublic_key = "%s"\nendpoint = "%s"\n' \
    "$1" "$(jq -r .data.public_key "$2")" "$3"
}
peer_cfg 51820 "$WORK/b.info" "$VETH_B:51820" >"$WORK/a/config.toml"
peer_cfg 51820 "$WORK/a.info" "$VETH_A:51820" >"$WORK/b/config.toml"
B_IP=$(jq -r .data.ipv6 "$WORK/b.info")
VERSION=$("$PILOTCTL" --version | awk '{print $2}')

t0=$(now_ms)
start_bg pilotA "$NS_A" env PILOT_HOME="$WORK/a" PILOT_LOG=warn "$PILOTCTL" daemon run
start_bg pilotB "$NS_B" env PILOT_HOME="$WORK/b" PILOT_LOG=warn "$PILOTCTL" daemon run
setup_ms=$(first_ping_ms "$NS_A" "$B_IP" "$t0")
log "first ping after ${setup_ms} ms"

DAEMON_PIDS=("$PID_pilotA" "$PID_pilotB"); DAEMON_NAMES=(pilotA pilotB)
# PILOT_HOOK=cmd: run cmd instead of the measurements, with both daemons up (their PIDs,
# namespaces and B's overlay address in its environment), then clean up as usual.
if [[ -n ${PILOT_HOOK:-} ]]; then
  PID_A=$PID_pilotA PID_B=$PID_pilotB B_IP=$B_IP VETH_B=$VETH_B NS_A=$NS_A NS_B=$NS_B \
    WORK=$WORK PILOTCTL=$PILOTCTL "$PILOT_HOOK"
  exit
fi
measure "$SYSTEM" "$VERSION" "$B_IP" "$setup_ms" 1420 "pilot daemon, TUN offload + UDP GSO/GRO"

# The raw veth between the same namespaces, same iperf3 server.
log "raw veth: iperf3 1 stream and -P 4 to $VETH_B"
v1=$(iperf_run veth1 "$VETH_B")
v4=$(iperf_run veth4 "$VETH_B" -P 4)
jq -n --argjson v1 "$v1" --argjson v4 "$v4" '{system:"veth", tcp_1:$v1, tcp_4:$v4}' >"$OUT_DIR/veth.json"
ip netns exec "$NS_B" env PILOT_HOME="$WORK/b" "$PILOTCTL" peers --json >"$OUT_DIR/pilot-peers.json" || true
log "wrote $OUT_DIR/veth.json and pilot-peers.json"
