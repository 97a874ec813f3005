#!/usr/bin/env bash
# UDP throughput, userspace <-> TUN vs TUN <-> TUN, in one run (root: network namespaces).
#
#   sudo bench/udp.sh             # N=20000 SIZE=1200 WINDOW=64 PILOTCTL=target/release/pilotctl
#
# Namespaces pudpA/pudpB on a veth (198.51.100.1 <-> .2, documentation range). B runs the real
# daemon in TUN mode and a UDP echo server on [::]:7007. A runs, in turn:
#   tun-tun  A tun:       the client in A sends straight to [B]:7007 (the kernel routes the overlay)
#   us-tun   A userspace: the client in A goes through A's SOCKS5 UDP ASSOCIATE to node-b.pilot:7007
# The same python client (bench/udp_rr.py) in both: N requests of SIZE bytes, WINDOW in flight;
# Mbit/s counts both directions' payload. The client is python in both pairings, so it caps
# both; the ratio is what this measures. Figures on a shared, busy machine are noisy.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${PILOTCTL:-$ROOT/target/release/pilotctl}
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release --quiet --bin pilotctl)
N=${N:-20000}; SIZE=${SIZE:-1200}; WINDOW=${WINDOW:-64}
NS_A=pudpA; NS_B=pudpB
T=$(mktemp -d /tmp/pilot-udp.XXXXXX)
PIDS=()
stop_pids() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  stop_pids
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
ip netns del "$NS_A" 2>/dev/null || true
ip netns del "$NS_B" 2>/dev/null || true
ip netns add "$NS_A"; ip netns add "$NS_B"
ip link add puA netns "$NS_A" type veth peer name puB netns "$NS_B"
for ns in "$NS_A" "$NS_B"; do
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n "$ns" link set lo up
done
ip -n "$NS_A" addr add 198.51.100.1/24 dev puA; ip -n "$NS_A" link set puA up
ip -n "$NS_B" addr add 198.51.100.2/24 dev puB; ip -n "$NS_B" link set puB up
for n in a b; do
  mkdir -p "$T/$n"
  PILOT_HOME=$T/$n timeout 20 "$BIN" daemon start --mode userspace >/dev/null
  PILOT_HOME=$T/$n "$BIN" --json info >"$T/$n.info"
  PILOT_HOME=$T/$n timeout 20 "$BIN" daemon stop >/dev/null
done
key() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["data"][sys.argv[2]])' "$T/$1.info" "$2"; }
B6=$(key b ipv6)
config() { # NODE MODE PEER PEER_IP PEER_NAME
  printf 'mode = "%s"\nlog_level = "warn"\n[tunnel]\nlisten_port = 51820\n[dns]\nresolved = false\n[socks5]\nlisten = "127.0.0.1:1080"\n[[peer]]\npublic_key = "%s"\nhostname = "%s"\nendpoint = "%s:51820"\n' \
    "$2" "$(key "$3" public_key)" "$5" "$4" >"$T/$1/config.toml"
}
start() { # NODE NS
  ip netns exec "$2" env PILOT_HOME="$T/$1" "$BIN" daemon run >>"$T/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do PILOT_HOME=$T/$1 "$BIN" info >/dev/null 2>&1 && return; sleep 0.1; done
  echo "daemon $1 did not start"; cat "$T/$1.log"; exit 1
}
cat >"$T/echo.py" <<'PY'
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("::", 7007))
while True:
    d, a = s.recvfrom(65536)
    s.sendto(d, a)
PY
ip netns exec "$NS_B" python3 "$T/echo.py" & ECHO=$!
trap 'kill $ECHO 2>/dev/null || true; cleanup' EXIT
echo "# UDP request/response, $N x $SIZE bytes, $WINDOW in flight (measured on a shared, busy machine)"
for pairing in tun-tun us-tun; do
  stop_pids
  mode_a=tun; [[ $pairing == us-tun ]] && mode_a=userspace
  config a "$mode_a" b 198.51.100.2 node-b
  config b tun a 198.51.100.1 node-a
  start b "$NS_B"; start a "$NS_A"
  if [[ $pairing == tun-tun ]]; then
    r=$(ip netns exec "$NS_A" python3 "$HERE/udp_rr.py" direct "$B6" 7007 "$N" "$SIZE" "$WINDOW")
  else
    r=$(ip netns exec "$NS_A" python3 "$HERE/udp_rr.py" socks 127.0.0.1:1080 node-b.pilot 7007 "$N" "$SIZE" "$WINDOW")
  fi
  printf '%-8s %s\n' "$pairing" "$r"
  echo "$r" >"$T/$pairing.json"
done
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
a, b = (json.load(open(f"{t}/{p}.json")) for p in ("tun-tun", "us-tun"))
print(f"us-tun / tun-tun: {b['mbit_s'] / a['mbit_s']:.2f} (requests/s {b['rps']} vs {a['rps']})")
PY
