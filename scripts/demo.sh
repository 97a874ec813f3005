#!/usr/bin/env bash
# The main job, end to end on one machine: a registry and two agents (orchestrator-node and
# worker-node) that find each other by name, establish mutual trust, and then a real `curl`
# from the orchestrator reaches an HTTP server on the worker across the encrypted overlay.
#
# As root: each process in its own network namespace on simulated public addresses
# (registry 203.0.113.1, agents 198.51.100.1/.2), TUN mode, curl to the worker's overlay IPv6.
# As an ordinary user (or PILOT_DEMO_MODE=userspace): both agents in userspace mode on
# loopback; the worker exposes an overlay port and curl goes through the SOCKS5 proxy to
# http://worker-node.pilot:8080/.
#
# Everything it starts is stopped by PID and everything it creates is removed on exit.
# PILOT_BIN=path uses an existing pilotctl instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${PILOT_BIN:-}" ]; then
  BIN=$PILOT_BIN
else
  echo "building pilot (release)..."
  cargo build --release --locked -q
  BIN=$PWD/target/release/pilotctl
fi
MODE=${PILOT_DEMO_MODE:-auto}
if [ "$MODE" = auto ]; then
  if [ "$(id -u)" = 0 ]; then MODE=netns; else MODE=userspace; fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pilot-demo.XXXXXX")
PIDS=()
NAMESPACES=()
cleanup() {
  set +e
  for home in "$WORK"/a "$WORK"/b; do
    [ -d "$home" ] && PILOT_HOME=$home PILOT_SOCKET=$home/pilot.sock "$BIN" daemon stop --timeout 5 >/dev/null 2>&1
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '    $ %s\n' "$*"; }

# Runs pilotctl as agent $1 (a or b); inside its namespace in netns mode.
agent() {
  local who=$1; shift
  local home=$WORK/$who
  if [ "$MODE" = netns ]; then
    ip netns exec "$PREFIX$who" env PILOT_HOME="$home" PILOT_SOCKET="$home/pilot.sock" "$BIN" "$@"
  else
    PILOT_HOME=$home PILOT_SOCKET=$home/pilot.sock "$BIN" "$@"
  fi
}

free_port() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

wait_for() { # wait_for SECONDS CMD... : retries CMD every 0.2 s
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

mkdir -p "$WORK/a" "$WORK/b" "$WORK/www" "$WORK/registry"
chmod 700 "$WORK/a" "$WORK/b"
echo "hello from worker-node, across the pilot overlay" > "$WORK/www/index.html"

if [ "$MODE" = netns ]; then
  PREFIX="pd$$"
  step "network: a registry on 203.0.113.1 and two agents on 198.51.100.1/.2 (namespaces ${PREFIX}*)"
  ip netns add "${PREFIX}sw"; NAMESPACES+=("${PREFIX}sw")
  ip netns exec "${PREFIX}sw" ip link add br0 type bridge
  ip netns exec "${PREFIX}sw" ip link set br0 up
  for spec in reg:203.0.113.1 a:198.51.100.1 b:198.51.100.2; do
    n=${spec%%:*}; ip=${spec#*:}
    ip netns add "$PREFIX$n"; NAMESPACES+=("$PREFIX$n")
    ip link add eth0 netns "$PREFIX$n" type veth peer name "v$$$n" netns "${PREFIX}sw"
    ip netns exec "${PREFIX}sw" ip link set "v$$$n" master br0 up
    ip netns exec "$PREFIX$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip netns exec "$PREFIX$n" ip link set lo up
    ip netns exec "$PREFIX$n" ip addr add "$ip/24" dev eth0
    ip netns exec "$PREFIX$n" ip link set eth0 up
    ip netns exec "$PREFIX$n" ip route add 198.51.100.0/24 dev eth0 2>/dev/null || true
    ip netns exec "$PREFIX$n" ip route add 203.0.113.0/24 dev eth0 2>/dev/null || true
  done
  REGISTRY=203.0.113.1:7946
  step "registry: pilotctl registry run --listen $REGISTRY"
  ip netns exec "${PREFIX}reg" "$BIN" registry run --listen "$REGISTRY" --state "$WORK/registry" \
    2>"$WORK/registry.log" &
  PIDS+=($!)
  wait_for 10 ip netns exec "${PREFIX}reg" sh -c "ss -lun | grep -q '203.0.113.1:7946 '"
  printf 'mode = "tun"\n' > "$WORK/a/config.toml"
  printf 'mode = "tun"\n' > "$WORK/b/config.toml"
else
  PREFIX=""
  RPORT=$(free_port SOCK_DGRAM)
  SOCKS_A=$(free_port SOCK_STREAM)
  SOCKS_B=$(free_port SOCK_STREAM)
  HTTP_PORT=$(free_port SOCK_STREAM)
  REGISTRY=127.0.0.1:$RPORT
  step "registry on loopback: pilotctl registry run --listen $REGISTRY (userspace mode, no root)"
  "$BIN" registry run --listen "$REGISTRY" --state "$WORK/registry" 2>"$WORK/registry.log" &
  PIDS+=($!)
  sleep 0.5
  printf 'mode = "userspace"\n[socks5]\nlisten = "127.0.0.1:%s"\n' "$SOCKS_A" > "$WORK/a/config.toml"
  printf 'mode = "userspace"\n[socks5]\nlisten = "127.0.0.1:%s"\n' "$SOCKS_B" > "$WORK/b/config.toml"
fi
export PILOT_REGISTRY=$REGISTRY

step "agents"
show "pilotctl daemon start --hostname orchestrator-node"
agent a daemon start --hostname orchestrator-node
show "pilotctl daemon start --hostname worker-node"
agent b daemon start --hostname worker-node
if ! wait_for 15 agent a find worker-node; then
  echo "the agents did not register; registry log:" >&2; cat "$WORK/registry.log" >&2; exit 1
fi

step "the worker serves HTTP"
if [ "$MODE" = netns ]; then
  ip netns exec "${PREFIX}b" python3 -m http.server 8080 --bind :: --directory "$WORK/www" \
    >/dev/null 2>&1 &
  PIDS+=($!)
  wait_for 10 ip netns exec "${PREFIX}b" sh -c "ss -ltn | grep -q ':8080 '"
else
  python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_for 10 python3 -c "import socket; socket.create_connection(('127.0.0.1', $HTTP_PORT), 1)"
  show "pilotctl expose 8080 --to 127.0.0.1:$HTTP_PORT"
  agent b expose 8080 --to "127.0.0.1:$HTTP_PORT"
fi

step "mutual trust"
show "pilotctl handshake worker-node \"demo: fetch the index\"   (on orchestrator-node)"
agent a handshake worker-node "demo: fetch the index"
wait_for 5 sh -c "PILOT_HOME=$WORK/b PILOT_SOCKET=$WORK/b/pilot.sock '$BIN' --json pending | grep -q orchestrator-node" || true
show "pilotctl pending   (on worker-node)"
agent b pending
show "pilotctl approve orchestrator-node   (on worker-node)"
agent b approve orchestrator-node

WORKER_IP=$(agent b --json info | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["ipv6"])')
step "curl across the overlay"
if [ "$MODE" = netns ]; then
  URL="http://[$WORKER_IP]:8080/"
  show "curl $URL   (on orchestrator-node)"
  wait_for 15 ip netns exec "${PREFIX}a" ping -6 -c1 -W1 "$WORKER_IP" || true
  ip netns exec "${PREFIX}a" curl -sS --max-time 10 --retry 5 --retry-all-errors --retry-delay 1 "$URL"
else
  URL="http://worker-node.pilot:8080/"
  show "curl --socks5-hostname 127.0.0.1:$SOCKS_A $URL"
  curl -sS --max-time 10 --retry 10 --retry-all-errors --retry-delay 1 \
    --socks5-hostname "127.0.0.1:$SOCKS_A" "$URL"
fi
step "peers as the orchestrator sees them"
agent a peers
echo
echo "demo done: cleaning up"
