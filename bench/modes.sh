#!/usr/bin/env bash
# Userspace vs TUN vs onetun, in one run (root: network namespaces).
#
#   sudo bench/modes.sh                 # MB=500 REPS=3 IDLE_S=10 RUN_ONETUN=auto
#
# Two namespaces $NS_A/$NS_B (default pmodesA/pmodesB) on a veth, 198.51.100.1/24 <->
# 198.51.100.2/24 (documentation range, no route off the box). Real `pilotctl daemon run` on
# both sides, WireGuard on UDP 51820, static peers node-a/node-b. Four pairings, A is always the
# client, B always holds the data:
#   tun-tun  A tun,       B tun:       curl in A straight to http://[B]:8000
#   us-us    A userspace, B userspace: curl in A through A's SOCKS5 to node-b.pilot:8080, which
#                                      B exposes (`[[expose]]`) to its local server 127.0.0.1:8000
#   us-tun   A userspace, B tun:       curl through A's SOCKS5 to node-b.pilot:8000 (B's kernel)
#   tun-us   A tun,       B userspace: curl in A straight to http://[B]:8080 (B's expose)
# Every pairing measures the same way (like with like, no iperf3): download = GET of MB
# megabytes streamed from memory by a small python server in B, upload = POST of MB megabytes
# (curl -T streams a file from page cache) that the server drains; Mbit/s = bytes * 8 / curl time_total.
# Then idle CPU and wakeups/s (context switches, all threads) of userspace daemon A over
# IDLE_S seconds, and, if onetun is installed, /work/shared/bench-peers/run-onetun.sh in the
# same invocation (its own namespaces hostA/hostB; download = curl GET of MB through the
# forward, upload = iperf3 1 stream; IPERF_T=5). Prints one table with the ratios.
# Knobs: MB, REPS (transfers per direction; the table shows the best), IDLE_S, RUN_ONETUN=auto|0,
# NS_A, NS_B, KEEP=1 (keep $T), PILOTCTL=path (use that binary, no build), PAIRINGS (default "tun-tun us-us us-tun tun-us"),
# DIRS (default "down up"), PERF=us-us|us-tun|tun-us|tun-tun (perf record both daemons during
# that pairing's first download).
# Every transfer's time is printed at the end, per pairing and direction, with the median and
# each transfer slower than 1.5 x the median (a stall); STRICT=1 exits 2 if there was one.
# The stall hunt: `PAIRINGS=tun-us DIRS=down MB=100 REPS=50 RUN_ONETUN=0 IDLE_S=1 bench/modes.sh`.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MB=${MB:-500}
REPS=${REPS:-3}
IDLE_S=${IDLE_S:-10}
RUN_ONETUN=${RUN_ONETUN:-auto}
BENCH_PEERS=${BENCH_PEERS:-/work/shared/bench-peers}
NS_A=${NS_A:-pmodesA}
NS_B=${NS_B:-pmodesB}
BYTES=$((MB * 1024 * 1024))
# shellcheck source=bench/lib/veth.sh
source "$HERE/lib/veth.sh"

veth_init modes pilot-modes

veth_up pmA pmB

# Identities: a short userspace start creates each key.
for n in a b; do make_identity "$T/$n"; done
key() { jq -r .data.public_key "$T/$1.info"; }
B6=$(jq -r .data.ipv6 "$T/b.info")

stream_server "$NS_B"
head -c "$BYTES" /dev/zero >"$T/up.bin"

# config NODE MODE PEER PEER_IP PEER_NAME [expose]
config() {
  {
    printf 'mode = "%s"\n[tunnel]\nlisten_port = 51820\nkeepalive_secs = 25\n' "$2"
    printf '[[peer]]\npublic_key = "%s"\nhostname = "%s"\nendpoint = "%s:51820"\n' "$(key "$3")" "$5" "$4"
    if [[ ${6:-} == expose ]]; then printf '[[expose]]\nport = 8080\nto = "127.0.0.1:8000"\n'; fi
  } >"$T/$1/config.toml"
}
start() { # NODE NS
  start_daemon "$T/$1" "$2"
  eval "PID_$1=$DAEMON_PID"
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# drops NS -> "UDP receive-buffer drops, TCP segments retransmitted by the kernel" (cumulative)
drops() {
  ip netns exec "$1" cat /proc/net/snmp | awk '
    /^Udp:/ { if (!u) { for (i = 2; i <= NF; i++) c[$i] = i; u = 1; next } r = $c["RcvbufErrors"] }
    /^Tcp:/ { if (!t) { for (i = 2; i <= NF; i++) d[$i] = i; t = 1; next } x = $d["RetransSegs"] }
    END { print r + 0, x + 0 }'
}
TCK=$(getconf CLK_TCK)
# pct TICKS_A TICKS_B SECONDS -> "a/b", each daemon's CPU in % of one core over the transfer
pct() { awk -v a="$1" -v b="$2" -v s="$3" -v hz="$TCK" 'BEGIN { printf "%.0f/%.0f", a / hz / s * 100, b / hz / s * 100 }'; }

declare -A DOWN UP CPU_D CPU_U TIMES
DIRS=${DIRS:-"down up"}
# pairing MODE_A MODE_B: starts both daemons, measures best-of-REPS download and upload.
pairing() {
  local name=$1 ma=$2 mb=$3 url host socks=() ex="" ua0 ta0 ub0 tb0 ua1 ta1 ub1 tb1
  [[ $mb == userspace ]] && ex=expose
  config a "$ma" b "$VETH_B" node-b
  config b "$mb" a "$VETH_A" node-a "$ex"
  start a "$NS_A"; start b "$NS_B"
  if [[ $ma == userspace ]]; then
    socks=(--socks5-hostname "$(PILOT_HOME=$T/a "$BIN" --json info | jq -r .data.socks5)")
    host=node-b.pilot
  else
    host="[$B6]"
  fi
  if [[ $mb == userspace ]]; then url="http://$host:8080"; else url="http://$host:8000"; fi
  wait_path "$NS_A" "${socks[@]}" "$url/1000" || { log "$name: no path to $url"; cat "$T/a.log" "$T/b.log" >&2; return 1; }
  local best_d=0 best_u=0 r out a0 b0 a1 b1
  for r in $(seq 1 "$REPS"); do
    local perf_pid=""
    if [[ " $DIRS " == *" down "* ]]; then
    if [[ ${PERF:-} == "$name" && $r == 1 ]]; then
      # Both daemons, during the first download of this pairing.
      perf record -g -F 999 -p "$PID_a,$PID_b" -o "/tmp/pilot-modes-perf-$name.data" 2>/dev/null & perf_pid=$!
      sleep 0.5
    fi
    a0=$(cpu "$PID_a"); b0=$(cpu "$PID_b"); read -r ua0 ta0 < <(drops "$NS_A"); read -r ub0 tb0 < <(drops "$NS_B")
    out=$(ip netns exec "$NS_A" curl -sS --max-time 120 "${socks[@]}" "$url/$BYTES" -o /dev/null \
          -w '%{size_download} %{time_total}')
    a1=$(cpu "$PID_a"); b1=$(cpu "$PID_b")
    if [[ -n $perf_pid ]]; then
      kill -INT "$perf_pid"; wait "$perf_pid" || true
      log "perf profile of both daemons: /tmp/pilot-modes-perf-$name.data"
    fi
    read -r size secs <<<"$out"
    [[ $size == "$BYTES" ]] || { log "$name download got $size of $BYTES bytes"; return 1; }
    r=$(awk -v b="$size" -v s="$secs" 'BEGIN { printf "%.0f", b * 8 / s / 1e6 }')
    read -r ua1 ta1 < <(drops "$NS_A"); read -r ub1 tb1 < <(drops "$NS_B")
    log "$name download: $r Mbit/s (daemon CPU ticks A/B $((a1 - a0))/$((b1 - b0)); UDP rcvbuf drops A/B $((ua1 - ua0))/$((ub1 - ub0)), kernel TCP retransmits A/B $((ta1 - ta0))/$((tb1 - tb0)))"
    TIMES[$name down]+="$secs "
    if (( r > best_d )); then best_d=$r; CPU_D[$name]=$(pct "$((a1 - a0))" "$((b1 - b0))" "$secs"); fi
    fi
    [[ " $DIRS " == *" up "* ]] || continue
    a0=$(cpu "$PID_a"); b0=$(cpu "$PID_b"); read -r ua0 ta0 < <(drops "$NS_A"); read -r ub0 tb0 < <(drops "$NS_B")
    out=$(ip netns exec "$NS_A" curl -sS --max-time 120 "${socks[@]}" "$url/up" -X POST -T "$T/up.bin" -H 'Expect:' \
          -H 'Content-Type: application/octet-stream' -w ' %{size_upload} %{time_total}')
    a1=$(cpu "$PID_a"); b1=$(cpu "$PID_b")
    read -r got size secs <<<"$out"
    [[ $got == "$BYTES" ]] || { log "$name upload: server got $got of $BYTES bytes"; return 1; }
    r=$(awk -v b="$size" -v s="$secs" 'BEGIN { printf "%.0f", b * 8 / s / 1e6 }')
    read -r ua1 ta1 < <(drops "$NS_A"); read -r ub1 tb1 < <(drops "$NS_B")
    log "$name upload: $r Mbit/s (daemon CPU ticks A/B $((a1 - a0))/$((b1 - b0)); UDP rcvbuf drops A/B $((ua1 - ua0))/$((ub1 - ub0)), kernel TCP retransmits A/B $((ta1 - ta0))/$((tb1 - tb0)))"
    TIMES[$name up]+="$secs "
    if (( r > best_u )); then best_u=$r; CPU_U[$name]=$(pct "$((a1 - a0))" "$((b1 - b0))" "$secs"); fi
  done
  DOWN[$name]=$best_d; UP[$name]=$best_u
  if [[ $name == us-us ]]; then
    # Idle cost of userspace daemon A: CPU and context switches over IDLE_S seconds.
    sleep 1
    local c0 c1 w0 w1 t0 t1
    ctx() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/{s+=$2} END{print s+0}'; }
    c0=$(cpu "$PID_a"); w0=$(ctx "$PID_a"); t0=$(date +%s%3N)
    sleep "$IDLE_S"
    c1=$(cpu "$PID_a"); w1=$(ctx "$PID_a"); t1=$(date +%s%3N)
    IDLE_CPU=$(awk -v c=$((c1 - c0)) -v hz="$TCK" -v ms=$((t1 - t0)) 'BEGIN { printf "%.2f", c / hz / (ms / 1000) * 100 }')
    IDLE_WAKE=$(awk -v w=$((w1 - w0)) -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", w / (ms / 1000) }')
    IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/"$PID_a"/status)
    log "idle ${IDLE_S} s, userspace daemon A: ${IDLE_CPU} % of a core, ${IDLE_WAKE} wakeups/s, RSS ${IDLE_RSS} KiB"
  fi
  for n in a b; do PILOT_HOME=$T/$n "$BIN" --json peers | jq -c '.data.counters' >"$T/$name-$n.counters" || true; done
  log "$name counters A: $(cat "$T/$name-a.counters") B: $(cat "$T/$name-b.counters")"
  stop_pids
}

PAIRINGS=${PAIRINGS:-"tun-tun us-us us-tun tun-us"}
for p in $PAIRINGS; do
  case $p in
    tun-tun) pairing tun-tun tun tun ;;
    us-us) pairing us-us userspace userspace ;;
    us-tun) pairing us-tun userspace tun ;;
    tun-us) pairing tun-us tun userspace ;;
    *) log "unknown pairing $p"; exit 1 ;;
  esac
done
kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
veth_down

OT_DOWN=""; OT_UP=""; OT_NOTE=""
OT_BIN=$(command -v onetun || echo "$HOME/.cargo/bin/onetun")
if [[ $RUN_ONETUN == 0 ]]; then
  OT_NOTE="onetun skipped (RUN_ONETUN=0)"
elif [[ -x $OT_BIN ]]; then
  log "onetun: $BENCH_PEERS/run-onetun.sh (IPERF_T=5, HTTP_MB=$MB)"
  mkdir -p "$T/onetun"
  if OUT_DIR=$T/onetun IPERF_T=5 IDLE_S=0 HTTP_MB=$MB ONETUN="$OT_BIN" \
      timeout --signal=TERM --kill-after=20 400 "$BENCH_PEERS/run-onetun.sh" >"$T/onetun.log" 2>&1; then
    OT_DOWN=$(jq -r '.http_get.mbps // empty | round' "$T/onetun/onetun.json")
    OT_UP=$(jq -r '.tcp_1.receiver_mbps // empty | round' "$T/onetun/onetun.json")
    OT_REV=$(jq -r '.tcp_1_rev.receiver_mbps // empty | round' "$T/onetun/onetun.json")
    OT_NOTE="onetun $("$OT_BIN" --version | awk '{print $2}') -> boringtun-cli TUN: download = curl GET ${MB} MB (iperf3 -R: ${OT_REV:-?}), upload = iperf3 1 stream ${IPERF_T:-5} s"
  else
    OT_NOTE="onetun run failed; see $T/onetun.log (KEEP=1)"
    tail -20 "$T/onetun.log" >&2
  fi
else
  OT_NOTE="onetun not installed (cargo install onetun --locked --version 0.3.10)"
fi

ratio() { [[ -n $1 && -n $2 && $2 != 0 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "–"; }
echo
echo "pilot $("$BIN" --version | awk '{print $2}'), $(uname -r), $(nproc) CPUs, ${MB} MB per transfer, best of $REPS, $(date -u +%FT%TZ)"
echo
echo "| pairing (A client, B data) | download B→A Mbit/s | upload A→B Mbit/s | ÷ tun-tun down | ÷ tun-tun up | daemon CPU % of a core A/B, down | up |"
echo "|---|---|---|---|---|---|---|"
for p in $PAIRINGS; do
  echo "| $p | ${DOWN[$p]:-} | ${UP[$p]:-} | $(ratio "${DOWN[$p]:-}" "${DOWN[tun-tun]:-}") | $(ratio "${UP[$p]:-}" "${UP[tun-tun]:-}") | ${CPU_D[$p]:-} | ${CPU_U[$p]:-} |"
done
if [[ -n $OT_DOWN ]]; then
  echo "| onetun → boringtun TUN | $OT_DOWN | $OT_UP | $(ratio "$OT_DOWN" "${DOWN[tun-tun]:-}") | $(ratio "$OT_UP" "${UP[tun-tun]:-}") | | |"
fi
echo
echo "targets: userspace ÷ TUN ≥ 0.5 (columns 4-5); pilot userspace ÷ onetun download ≥ 5:"
echo "  us-tun (same shape as onetun: userspace client, kernel TCP server) ÷ onetun download: $(ratio "${DOWN[us-tun]:-}" "$OT_DOWN")"
echo "  us-us ÷ onetun download: $(ratio "${DOWN[us-us]:-}" "$OT_DOWN");  us-tun ÷ onetun upload: $(ratio "${UP[us-tun]:-}" "$OT_UP")"
echo "idle ${IDLE_S} s, userspace daemon: ${IDLE_CPU:-–} % of a core, ${IDLE_WAKE:-–} wakeups/s, RSS ${IDLE_RSS:-–} KiB (us-us pairing)"
echo "$OT_NOTE"
echo
echo "per-transfer time_total in s (slow = above 1.5 x the median of its pairing and direction):"
SLOW_ANY=0
for p in $PAIRINGS; do
  for d in $DIRS; do
    [[ -n ${TIMES[$p $d]:-} ]] || continue
    line=$(tr ' ' '\n' <<<"${TIMES[$p $d]}" | awk 'NF { t[n++] = $1 } END {
      for (i = 0; i < n; i++) s[i] = t[i]
      for (i = 1; i < n; i++) { v = s[i]; for (j = i - 1; j >= 0 && s[j] > v; j--) s[j + 1] = s[j]; s[j + 1] = v }
      m = n % 2 ? s[int(n / 2)] : (s[n / 2 - 1] + s[n / 2]) / 2
      slow = 0; list = ""
      for (i = 0; i < n; i++) { list = list sprintf(" %.3f", t[i]); if (t[i] > 1.5 * m) { slow++; list = list "*" } }
      printf "%d transfers, median %.3f s, max %.3f s, slow (> 1.5 x median): %d |%s", n, m, s[n - 1], slow, list }')
    echo "  $p $d: $line"
    [[ $line == *"slow (> 1.5 x median): 0 "* ]] || SLOW_ANY=1
  done
done
if (( SLOW_ANY )); then echo "SLOW: at least one transfer took more than 1.5 x its median (marked *)"; else echo "no transfer above 1.5 x its median"; fi
[[ ${STRICT:-0} == 1 && $SLOW_ANY == 1 ]] && exit 2
exit 0
