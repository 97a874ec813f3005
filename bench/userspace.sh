#!/usr/bin/env bash
# Userspace mode end to end on loopback, no root: two release daemons in userspace mode with
# static peers (WireGuard over 127.0.0.1), node B exposes overlay port 8080 to a local HTTP
# server, and curl on A goes through A's SOCKS5 proxy: download and upload of MB megabytes.
# Then the idle CPU of both daemons. Also runs the in-memory netstack benchmark.
#
#   bench/userspace.sh            # MB=200 IDLE_S=5
#
# Only loopback traffic. Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${MB:-200}
IDLE_S=${IDLE_S:-5}
cargo build --release --quiet --bin pilotctl --example netstack_bench
BIN=$PWD/target/release/pilotctl
T=$(mktemp -d /tmp/pilot-us-bench.XXXXXX)
PIDS=()
cleanup() {
    for h in "$T/a" "$T/b"; do PILOT_HOME=$h "$BIN" daemon stop --timeout 3 >/dev/null 2>&1 || true; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }

mkdir -p "$T/a" "$T/b"
for n in a b; do
    PILOT_HOME=$T/$n "$BIN" daemon start --mode userspace >/dev/null
    PILOT_HOME=$T/$n "$BIN" --json info | json public_key > "$T/$n.key"
    PILOT_HOME=$T/$n "$BIN" daemon stop >/dev/null
done
PA=$(free_port); PB=$(free_port); HTTP=$(free_port)

# A small HTTP server: GET /N sends N bytes from memory; POST drains the body and answers its size.
python3 bench/lib/stream_server.py 127.0.0.1 "$HTTP" & PIDS+=($!)

# config NODE PORT PEER_KEY PEER_NAME PEER_PORT [EXTRA]: NODE's config, the other one its peer.
config() {
    cat > "$T/$1/config.toml" <<CFG
mode = "userspace"
[tunnel]
listen_port = $2
[socks5]
listen = "127.0.0.1:0"
[[peer]]
public_key = "$3"
hostname = "$4"
endpoint = "127.0.0.1:$5"
${6:-}
CFG
}
config a "$PA" "$(cat "$T/b.key")" node-b "$PB"
config b "$PB" "$(cat "$T/a.key")" node-a "$PA" "$(printf '[[expose]]\nport = 8080\nto = "127.0.0.1:%s"' "$HTTP")"
PILOT_HOME=$T/a "$BIN" daemon start >/dev/null
PILOT_HOME=$T/b "$BIN" daemon start >/dev/null
PROXY=$(PILOT_HOME=$T/a "$BIN" --json info | json socks5)
PID_A=$(PILOT_HOME=$T/a "$BIN" --json info | json pid)
PID_B=$(PILOT_HOME=$T/b "$BIN" --json info | json pid)
BYTES=$((MB * 1024 * 1024))
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

curl -s --socks5-hostname "$PROXY" "http://node-b.pilot:8080/1000" -o /dev/null   # handshake
echo "== userspace daemons on loopback (WireGuard + netstack on both ends, SOCKS5 on A, expose on B)"
a0=$(cpu "$PID_A"); b0=$(cpu "$PID_B")
bps=$(curl -s --socks5-hostname "$PROXY" "http://node-b.pilot:8080/$BYTES" -o /dev/null -w '%{speed_download}')
a1=$(cpu "$PID_A"); b1=$(cpu "$PID_B")
awk -v b="$bps" -v mb="$MB" 'BEGIN { printf "download %d MB: %.0f Mbit/s\n", mb, b * 8 / 1e6 }'
echo "  daemon CPU ticks A/B: $((a1 - a0))/$((b1 - b0)) (CLK_TCK $TCK)"
head -c "$BYTES" /dev/zero > "$T/up.bin"
a0=$(cpu "$PID_A"); b0=$(cpu "$PID_B")
out=$(curl -s --socks5-hostname "$PROXY" "http://node-b.pilot:8080/up" --data-binary @"$T/up.bin" -H 'Content-Type: application/octet-stream' -w ' %{speed_upload}')
a1=$(cpu "$PID_A"); b1=$(cpu "$PID_B")
echo "$out" | awk -v mb="$MB" '{ printf "upload %d MB: %.0f Mbit/s (server got %s bytes)\n", mb, $2 * 8 / 1e6, $1 }'
echo "  daemon CPU ticks A/B: $((a1 - a0))/$((b1 - b0))"
a0=$(cpu "$PID_A"); b0=$(cpu "$PID_B")
sleep "$IDLE_S"
a1=$(cpu "$PID_A"); b1=$(cpu "$PID_B")
echo "idle ${IDLE_S} s: daemon CPU ticks A/B: $((a1 - a0))/$((b1 - b0))"
echo "RSS KiB A/B: $(awk '/VmRSS/ {print $2}' /proc/"$PID_A"/status)/$(awk '/VmRSS/ {print $2}' /proc/"$PID_B"/status)"
echo
echo "== in-memory netstacks (examples/netstack_bench.rs)"
target/release/examples/netstack_bench "$MB"
