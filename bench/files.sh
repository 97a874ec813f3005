#!/usr/bin/env bash
# File transfer throughput: `pilotctl send-file` vs `curl` downloading the same file over the
# same overlay, in TUN and userspace mode, in one run (root: network namespaces).
#
#   sudo bench/files.sh            # MB=512 REPS=3 MODES="tun userspace"
#
# Two namespaces $NS_A/$NS_B (default pfilesA/pfilesB) on a veth, 198.51.100.1/24 <->
# 198.51.100.2/24 (documentation range, no route off the box), real `pilotctl daemon run` on
# both sides, static peers node-a/node-b. B holds an MB-megabyte random file and serves it with
# `python3 -m http.server`; in both measurements the bytes go from B to A and land in a file
# in A's state directory's file system:
#   curl   A downloads http://[B]:8000/FILE (TUN: straight to B's overlay address; userspace:
#          through A's SOCKS5 proxy to node-b.pilot:8080, which B exposes to its server) to a file
#   pilot  B runs `send-file node-a FILE --wait`, which returns when A's `done` came (the file
#          verified, fsynced and in A's received/; checked after each run). This includes
#          what curl does not do: the sender's SHA-256 pass over the file before its offer,
#          the receiver's SHA-256 and fsyncs, and the rename into received/.
# Prints MB/s of each (best of REPS) and the same-run ratio pilot/curl per mode; also curl
# followed by `sync FILE` (curl's bytes made durable, as send-file's are before it says done).
# Knobs: MB, REPS, MODES, NS_A, NS_B, KEEP=1 (keep $T), PILOTCTL=path (no build).
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MB=${MB:-512}
REPS=${REPS:-3}
MODES=${MODES:-"tun userspace"}
NS_A=${NS_A:-pfilesA}
NS_B=${NS_B:-pfilesB}
VETH_A=198.51.100.1
VETH_B=198.51.100.2
BYTES=$((MB * 1024 * 1024))

if [[ -n ${PILOTCTL:-} ]]; then
  BIN=$PILOTCTL
else
  (cd "$ROOT" && cargo build --release --quiet --bin pilotctl)
  BIN=$ROOT/target/release/pilotctl
fi
T=$(mktemp -d /tmp/pilot-files.XXXXXX)
PIDS=()
SERVER_PID=""
log() { printf '[%s files] %s\n' "$(date +%T)" "$*" >&2; }
stop_pids() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  stop_pids
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  [[ ${KEEP:-0} == 1 ]] && log "kept $T" || rm -rf "$T"
}
trap cleanup EXIT

ip netns del "$NS_A" 2>/dev/null || true
ip netns del "$NS_B" 2>/dev/null || true
ip netns add "$NS_A"; ip netns add "$NS_B"
ip link add pfA netns "$NS_A" type veth peer name pfB netns "$NS_B"
for ns in "$NS_A" "$NS_B"; do
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n "$ns" link set lo up
done
ip -n "$NS_A" addr add "$VETH_A/24" dev pfA
ip -n "$NS_B" addr add "$VETH_B/24" dev pfB
ip -n "$NS_A" link set pfA up
ip -n "$NS_B" link set pfB up

for n in a b; do
  mkdir -p "$T/$n"
  PILOT_HOME=$T/$n timeout 20 "$BIN" daemon start --mode userspace >/dev/null
  PILOT_HOME=$T/$n "$BIN" --json info >"$T/$n.info"
  PILOT_HOME=$T/$n timeout 20 "$BIN" daemon stop >/dev/null
done
key() { jq -r .data.public_key "$T/$1.info"; }
B6=$(jq -r .data.ipv6 "$T/b.info")

mkdir -p "$T/www"
head -c "$BYTES" /dev/urandom >"$T/www/blob.bin"
ip netns exec "$NS_B" python3 -m http.server 8000 --bind :: --directory "$T/www" >/dev/null 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do ip netns exec "$NS_B" ss -ltn | grep -q ':8000 ' && break; sleep 0.05; done

# config NODE MODE PEER PEER_IP PEER_NAME
config() {
  {
    printf 'mode = "%s"\n[tunnel]\nlisten_port = 51820\n[socks5]\nlisten = "127.0.0.1:1080"\n' "$2"
    printf '[files]\nmin_free_disk = 0\n'
    printf '[[peer]]\npublic_key = "%s"\nhostname = "%s"\nendpoint = "%s:51820"\n' "$(key "$3")" "$5" "$4"
    if [[ $2 == userspace && $1 == b ]]; then printf '[[expose]]\nport = 8080\nto = "127.0.0.1:8000"\n'; fi
  } >"$T/$1/config.toml"
}
start() { # NODE NS
  ip netns exec "$2" env PILOT_HOME="$T/$1" PILOT_LOG=warn "$BIN" daemon run >>"$T/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do PILOT_HOME=$T/$1 "$BIN" info >/dev/null 2>&1 && return 0; sleep 0.05; done
  log "daemon $1 did not start"; cat "$T/$1.log" >&2; return 1
}
now() { date +%s.%N; }
mbps() { awk -v b="$BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }

declare -A CURL CURL_SYNC PILOT
for mode in $MODES; do
  config a "$mode" b "$VETH_B" node-b
  config b "$mode" a "$VETH_A" node-a
  start a "$NS_A"; start b "$NS_B"
  socks=(); url="http://[$B6]:8000/blob.bin"
  if [[ $mode == userspace ]]; then
    socks=(--socks5-hostname 127.0.0.1:1080); url="http://node-b.pilot:8080/blob.bin"
  fi
  for _ in $(seq 1 100); do
    ip netns exec "$NS_A" curl -s --max-time 2 "${socks[@]}" -r 0-0 "$url" -o /dev/null && break
    sleep 0.1
  done
  best_c=0; best_cs=0; best_p=0
  for r in $(seq 1 "$REPS"); do
    rm -f "$T/a/curl.bin"
    t0=$(now)
    secs=$(ip netns exec "$NS_A" curl -sS --max-time 300 "${socks[@]}" "$url" -o "$T/a/curl.bin" -w '%{time_total}')
    sync "$T/a/curl.bin"
    c=$(mbps "$secs"); cs=$(mbps "$(awk -v a="$(now)" -v b="$t0" 'BEGIN { print a - b }')")
    log "$mode curl: $c MB/s ($cs MB/s with its fsync)"
    (( c > best_c )) && best_c=$c
    (( cs > best_cs )) && best_cs=$cs
    PILOT_HOME=$T/a "$BIN" received --clear >/dev/null
    t0=$(now)
    if ! PILOT_HOME=$T/b "$BIN" send-file node-a "$T/www/blob.bin" --wait 300 >/dev/null; then
      log "$mode: send-file did not deliver"; exit 1
    fi
    p=$(mbps "$(awk -v a="$(now)" -v b="$t0" 'BEGIN { print a - b }')")
    [[ $(PILOT_HOME=$T/a "$BIN" --json received | jq '.data.files | length') == 1 ]] || {
      log "$mode: send-file said done but A's received/ does not list the file"; exit 1; }
    log "$mode send-file: $p MB/s"
    (( p > best_p )) && best_p=$p
  done
  CURL[$mode]=$best_c; CURL_SYNC[$mode]=$best_cs; PILOT[$mode]=$best_p
  stop_pids
done

printf '\n%s MB file, best of %s (MB/s = MiB/s)\n' "$MB" "$REPS"
printf '%-10s %8s %12s %10s %8s %16s\n' mode curl curl+fsync send-file ratio "ratio vs +fsync"
for mode in $MODES; do
  printf '%-10s %8s %12s %10s %8s %16s\n' "$mode" "${CURL[$mode]}" "${CURL_SYNC[$mode]}" "${PILOT[$mode]}" \
    "$(awk -v p="${PILOT[$mode]}" -v c="${CURL[$mode]}" 'BEGIN { printf "%.2fx", p / c }')" \
    "$(awk -v p="${PILOT[$mode]}" -v c="${CURL_SYNC[$mode]}" 'BEGIN { printf "%.2fx", p / c }')"
done
