#!/usr/bin/env bash
# 10,000 peers (issues 15 and 18): one daemon holding N (default 10,000) trusted peers that
# never send a packet, measured against a daemon holding 1, in the same run. Prints one table:
#   - RSS per idle peer ((RSS of the N-peer daemon - RSS of the 1-peer daemon) / N);
#   - idle CPU of each daemon over SECS seconds (timers, keepalives, path checks, trust store,
#     registry client: none may cost work per tick proportional to N);
#   - start-up: `daemon start` until its API answers;
#   - adding a peer through the real path: a newcomer's trust request, then `pilotctl approve`
#     (trust store written with N+2 entries, data plane told), timed on each daemon;
#   - the round trip to the one active peer: `pilotctl ping` (signed probes over the path) and
#     an echo over the tunnel (`pilotctl connect PEER 7 --message`, TCP through WireGuard);
#   - the data-plane core alone (examples/peers_bench.rs core N): add, lookups by addr48,
#     receiver index and key, and a timer tick with 1 and N peers.
# How the peers get in: examples/peers_bench.rs gen writes trust.json (the file the daemon
# itself writes after approving peers) before the daemon starts, so they load through the
# daemon's real start-up path (trust store -> node core -> data plane), exactly as after a
# restart of a daemon that approved N agents over time. All daemons run in userspace mode on
# loopback with a real registry (no root needed). Figures on a busy machine are noisy: compare
# the two columns of one run, not runs.
#
# Usage: bench/peers.sh        (N=2000 SECS=10 bench/peers.sh for a short run;
#                               PILOTCTL=path/to/pilotctl to measure another build,
#                               PEERS_BENCH=path/to/peers_bench to skip building the helper)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10000}"
SECS="${SECS:-30}"
SETTLE="${SETTLE:-10}"
PINGS="${PINGS:-20}"
if [ -z "${PILOTCTL:-}" ]; then
  cargo build --release --bin pilotctl >/dev/null 2>&1 || cargo build --release --bin pilotctl
fi
if [ -z "${PEERS_BENCH:-}" ]; then
  cargo build --release --example peers_bench >/dev/null 2>&1 ||
    cargo build --release --example peers_bench
fi
BIN="${PILOTCTL:-$PWD/target/release/pilotctl}"
GEN="${PEERS_BENCH:-$PWD/target/release/examples/peers_bench}"
WORK="$(mktemp -d)"
REG_PID=""
cleanup() {
  for h in many one b c; do
    [ -d "$WORK/$h" ] && PILOT_HOME="$WORK/$h" timeout 10 "$BIN" daemon stop >/dev/null 2>&1 || true
  done
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now_ns() { date +%s%N; }
ms_since() { echo "scale=1; ($(now_ns) - $1) / 1000000" | bc; }

# The registry, on a port the kernel picks.
mkdir -p "$WORK/reg"
PILOT_HOME="$WORK/reg" PILOT_LOG=info "$BIN" registry run --listen 127.0.0.1:0 \
  --state "$WORK/reg/state" 2>"$WORK/reg/log" >/dev/null &
REG_PID=$!
REG=""
for _ in $(seq 1 200); do
  REG=$(grep -o 'listen=[0-9.:]*' "$WORK/reg/log" 2>/dev/null | head -1 | cut -d= -f2 || true)
  [ -n "$REG" ] && break
  sleep 0.1
done
[ -n "$REG" ] || { echo "registry did not start"; cat "$WORK/reg/log"; exit 1; }

pc() { local h=$1; shift; PILOT_HOME="$WORK/$h" "$BIN" "$@"; }
key_of() { pc "$1" --json info | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["public_key"])'; }
pid_of() { pc "$1" --json info | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["pid"])'; }

# Identities (a short start and stop), then each home's config.
declare -A KEY
for h in many one b c; do
  mkdir -p "$WORK/$h"
  printf '[socks5]\nenabled = false\n' >"$WORK/$h/id.toml"
  pc "$h" daemon start --mode userspace --config "$WORK/$h/id.toml" >/dev/null
  KEY[$h]=$(key_of "$h")
  pc "$h" daemon stop >/dev/null
  cat >"$WORK/$h/config.toml" <<EOF
mode = "userspace"
hostname = "peers-$h"
registries = ["$REG"]
[tunnel]
listen_port = 0
[socks5]
enabled = false
[dns]
enabled = false
EOF
done
"$GEN" gen "$N" "$WORK/many/trust.json" "${KEY[b]}"
"$GEN" gen 0 "$WORK/one/trust.json" "${KEY[b]}"
"$GEN" gen 0 "$WORK/b/trust.json" "${KEY[many]}" "${KEY[one]}"

declare -A START PID
for h in b one many c; do
  t=$(now_ns)
  pc "$h" daemon start >/dev/null
  START[$h]=$(ms_since "$t")
  PID[$h]=$(pid_of "$h")
done
sleep "$SETTLE"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
c0_many=$(ticks "${PID[many]}"); c0_one=$(ticks "${PID[one]}")
sleep "$SECS"
c1_many=$(ticks "${PID[many]}"); c1_one=$(ticks "${PID[one]}")
cpu() { echo "scale=2; 100 * ($2 - $1) / $HZ / $SECS" | bc; }
CPU_MANY=$(cpu "$c0_many" "$c1_many"); CPU_ONE=$(cpu "$c0_one" "$c1_one")
RSS_MANY=$(rss_kib "${PID[many]}"); RSS_ONE=$(rss_kib "${PID[one]}")
PER_PEER=$(echo "scale=2; ($RSS_MANY - $RSS_ONE) / $N" | bc)

# Adding a peer: the newcomer asks both; each approves it (timed).
pc c handshake "${KEY[many]}" >/dev/null
pc c handshake "${KEY[one]}" >/dev/null
for h in many one; do
  for _ in $(seq 1 100); do
    pc "$h" --json pending | grep -q "${KEY[c]}" && break
    sleep 0.1
  done
done
declare -A APPROVE
for h in one many; do
  t=$(now_ns)
  pc "$h" approve "${KEY[c]}" >/dev/null
  APPROVE[$h]=$(ms_since "$t")
done

# The round trip to the one active peer.
ping_avg() {
  # A peer loaded at start gets its path on first need: the first ping starts it.
  for _ in $(seq 1 50); do
    pc "$1" ping "${KEY[b]}" -c 1 >/dev/null 2>&1 && break
    sleep 0.2
  done
  pc "$1" --json ping "${KEY[b]}" -c "$PINGS" |
    python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; r=sorted(x for x in d["rtt_ms"] if x is not None); print("%.3f" % r[len(r)//2])'
}
echo_ms() {
  local h=$1 best=""
  pc "$h" connect "${KEY[b]}" 7 --message warm --timeout 10 >/dev/null
  local all=()
  for _ in $(seq 1 "$PINGS"); do
    t=$(now_ns)
    pc "$h" connect "${KEY[b]}" 7 --message x --timeout 10 >/dev/null
    all+=("$(ms_since "$t")")
  done
  printf '%s\n' "${all[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
PING_MANY=$(ping_avg many); PING_ONE=$(ping_avg one)
ECHO_MANY=$(echo_ms many); ECHO_ONE=$(echo_ms one)

ratio() { echo "scale=2; $1 / $2" | bc 2>/dev/null || echo "-"; }
echo
echo "10,000 peers: one daemon with $N idle trusted peers vs one with 1 (same run, busy machine)"
printf '%-52s %14s %14s %8s\n' "measure" "1 peer" "$N peers" "ratio"
row() { printf '%-52s %14s %14s %8s\n' "$1" "$2" "$3" "$(ratio "$3" "$2")"; }
row "RSS (KiB)" "$RSS_ONE" "$RSS_MANY"
printf '%-52s %14s %14s\n' "RSS per idle peer (KiB, target <= 20)" "-" "$PER_PEER"
row "idle CPU over ${SECS}s (% of a core, target <= 2)" "$CPU_ONE" "$CPU_MANY"
row "daemon start until the API answers (ms)" "${START[one]}" "${START[many]}"
row "approve one more peer (ms, CLI round trip)" "${APPROVE[one]}" "${APPROVE[many]}"
row "ping the active peer, median of $PINGS (ms)" "$PING_ONE" "$PING_MANY"
row "echo over the tunnel, median (ms, incl. CLI start)" "$ECHO_ONE" "$ECHO_MANY"
echo
echo "data-plane core alone (in one process):"
"$GEN" core "$N" | column -t -s $'\t'
