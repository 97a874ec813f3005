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
# Knobs: MB, REPS, MODES, NS_A, NS_B, KEEP=1 (keep $T), PILOTCTL=path (no build),
# BEFORE=path: a second build measured in the same run (each mode: its daemons and reps, then
# this build's), with the ratio of the two send-file rates; PERF=dir: `perf record -g` of
# both daemons during each build's send-file runs, into dir/MODE-BUILD-{a,b}.data.
# Also prints the CPU time each way of moving the file costs (CPU seconds per GiB, the least
# of REPS): both daemons, plus curl and the HTTP server for curl. On a shared machine this
# is steadier than the rates, and on 2 cores both ends compete for it.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MB=${MB:-512}
REPS=${REPS:-3}
MODES=${MODES:-"tun userspace"}
NS_A=${NS_A:-pfilesA}
NS_B=${NS_B:-pfilesB}
BYTES=$((MB * 1024 * 1024))
# shellcheck source=bench/lib/veth.sh
source "$HERE/lib/veth.sh"

veth_init files pilot-files

veth_up pfA pfB

for n in a b; do make_identity "$T/$n"; done
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
start() { start_daemon "$T/$1" "$2"; } # NODE NS
now() { date +%s.%N; }
mbps() { awk -v b="$BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }

declare -A CURL CURL_SYNC PILOT CPU_C CPU_P
# cpu PID...: their CPU time (user + system, every thread) so far, in clock ticks.
cpu() { local p t=0 f; for p in "$@"; do f=$(cut -d' ' -f14,15 "/proc/$p/stat"); t=$((t + ${f% *} + ${f#* })); done; echo "$t"; }
# per_gib TICKS: CPU seconds per GiB moved.
per_gib() { awk -v t="$1" -v b="$BYTES" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz / (b / 1073741824) }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }'; }
BUILDS=(this)
declare -A BINS=([this]=$BIN)
if [[ -n ${BEFORE:-} ]]; then BUILDS=(before this); BINS[before]=$BEFORE; fi
PERF_PIDS=()
perf_start() { # TAG
  [[ -n ${PERF:-} ]] || return 0
  mkdir -p "$PERF"
  local n i=0
  for n in a b; do
    perf record -q -g -o "$PERF/$1-$n.data" -p "${PIDS[$i]}" >/dev/null 2>&1 &
    PERF_PIDS+=($!); i=$((i + 1))
  done
  sleep 0.3
}
perf_stop() {
  local p
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PERF_PIDS=()
}
for mode in $MODES; do
 for key in "${BUILDS[@]/#/$mode/}"; do CURL[$key]=0; CURL_SYNC[$key]=0; PILOT[$key]=0; CPU_C[$key]=""; CPU_P[$key]=""; done
 # Repetitions outside, builds inside: each repetition measures every build (fresh daemons),
 # so a change in the machine's load hits both alike.
 for r in $(seq 1 "$REPS"); do
 for build in "${BUILDS[@]}"; do
  BIN=${BINS[$build]}
  key=$mode/$build
  config a "$mode" b "$VETH_B" node-b
  config b "$mode" a "$VETH_A" node-a
  start a "$NS_A"; start b "$NS_B"
  socks=(); url="http://[$B6]:8000/blob.bin"
  if [[ $mode == userspace ]]; then
    socks=(--socks5-hostname 127.0.0.1:1080); url="http://node-b.pilot:8080/blob.bin"
  fi
  wait_path "$NS_A" "${socks[@]}" -r 0-0 "$url" || true
  best_c=${CURL[$key]}; best_cs=${CURL_SYNC[$key]}; best_p=${PILOT[$key]}; cpu_c=${CPU_C[$key]}; cpu_p=${CPU_P[$key]}
  rm -f "$T/a/curl.bin"
  k0=$(cpu "${PIDS[@]}" "$SERVER_PID")
  t0=$(now)
  secs=$(ip netns exec "$NS_A" /usr/bin/time -f '%U %S' -o "$T/curl.cpu" \
    curl -sS --max-time 300 "${socks[@]}" "$url" -o "$T/a/curl.bin" -w '%{time_total}')
  k1=$(cpu "${PIDS[@]}" "$SERVER_PID")
  sync "$T/a/curl.bin"
  ck=$(awk -v k="$((k1 - k0))" -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", k + ($1 + $2) * hz }' "$T/curl.cpu")
  cpu_c=$(min "$cpu_c" "$(per_gib "$ck")")
  c=$(mbps "$secs"); cs=$(mbps "$(awk -v a="$(now)" -v b="$t0" 'BEGIN { print a - b }')")
  log "$key curl: $c MB/s ($cs MB/s with its fsync)"
  (( c > best_c )) && best_c=$c
  (( cs > best_cs )) && best_cs=$cs
  PILOT_HOME=$T/a "$BIN" received --clear >/dev/null
  perf_start "$mode-$build"
  k0=$(cpu "${PIDS[@]}")
  t0=$(now)
  if ! PILOT_HOME=$T/b "$BIN" send-file node-a "$T/www/blob.bin" --wait 300 >/dev/null; then
    log "$mode: send-file did not deliver"; exit 1
  fi
  p=$(mbps "$(awk -v a="$(now)" -v b="$t0" 'BEGIN { print a - b }')")
  cpu_p=$(min "$cpu_p" "$(per_gib $(($(cpu "${PIDS[@]}") - k0)))")
  perf_stop
  [[ $(PILOT_HOME=$T/a "$BIN" --json received | jq '.data.files | length') == 1 ]] || {
    log "$mode: send-file said done but A's received/ does not list the file"; exit 1; }
  log "$key send-file: $p MB/s"
  (( p > best_p )) && best_p=$p
  CURL[$key]=$best_c; CURL_SYNC[$key]=$best_cs; PILOT[$key]=$best_p
  CPU_C[$key]=$cpu_c; CPU_P[$key]=$cpu_p
  stop_pids
 done
 done
done

ratio() { awk -v p="$1" -v c="$2" 'BEGIN { printf "%.2fx", p / c }'; }
printf '\n%s MB file, best of %s (MB/s = MiB/s)\n' "$MB" "$REPS"
printf '%-10s %-7s %8s %12s %10s %8s %16s %14s %14s\n' mode build curl curl+fsync send-file ratio \
  "ratio vs +fsync" "curl CPU s/GiB" "send-file CPU"
for mode in $MODES; do
  for build in "${BUILDS[@]}"; do
    key=$mode/$build
    printf '%-10s %-7s %8s %12s %10s %8s %16s %14s %14s\n' "$mode" "$build" "${CURL[$key]}" "${CURL_SYNC[$key]}" \
      "${PILOT[$key]}" "$(ratio "${PILOT[$key]}" "${CURL[$key]}")" "$(ratio "${PILOT[$key]}" "${CURL_SYNC[$key]}")" \
      "${CPU_C[$key]}" "${CPU_P[$key]}"
  done
  if [[ -n ${BEFORE:-} ]]; then
    printf '%-10s send-file this/before: %s\n' "$mode" "$(ratio "${PILOT[$mode/this]}" "${PILOT[$mode/before]}")"
  fi
done
