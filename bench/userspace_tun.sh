#!/usr/bin/env bash
# Userspace mode vs TUN mode, and this build vs an earlier one, in one run (issue 18; root).
#
#   sudo bench/userspace_tun.sh         # MB=200 REPS=3 FB_N=200 BEFORE=/tmp/pilotctl-before-user
#
# Two namespaces $NS_A/$NS_B (default puserA/puserB) on a veth, 198.51.100.1/24 <->
# 198.51.100.2/24 (documentation range, no route off the box). Three pairs of real
# `pilotctl daemon run` share them and run at the same time, each with its own identities and
# WireGuard port, so their transfers interleave and see the same machine load:
#   tun      this build, TUN mode on both sides (UDP 51820): curl in A straight to B's kernel
#            TCP server, http://[B]:8000
#   us       this build, userspace mode on both sides (UDP 51821): curl in A through A's
#            SOCKS5 proxy (127.0.0.1:1081) to node-b.pilot:8080, which B exposes (`[[expose]]`)
#            to the same server on 127.0.0.1:8000
#   us-before  the binary $BEFORE (skipped if absent), userspace like `us` (UDP 51822, SOCKS5
#            127.0.0.1:1082): the same path before this branch's changes
# Transfers: download = GET of MB megabytes that a small python server in B streams from
# memory, upload = POST of MB megabytes (curl -T from page cache) that it drains; Mbit/s =
# bytes * 8 / curl time_total. Each repetition runs every pair in turn (down, then up), REPS
# times; the table shows the median and best per pair, and the ratios us ÷ tun from the
# medians (target ≥ 0.9) and us ÷ us-before.
# First byte: FB_N rounds, each opening one new connection per pair (curl GET of 100 bytes,
# interleaved across the pairs); time_starttransfer includes the SOCKS5 handshake and the
# overlay TCP handshake. p50/p99 per pair and their difference to tun (target ≤ 1 ms).
# Knobs: MB, REPS, DIRS (default "down up"; "" for first bytes only), FB_N, BEFORE (binary; "" to skip), PILOTCTL (this build; default: cargo build
# --release), PERF=us|tun|us-before (perf record -g both daemons of that pair during its first
# transfer in PERF_DIR (down, the default, or up), to /tmp/pilot-user-perf-PAIR.data), NS_A, NS_B, KEEP=1 (keep $T).
# The machine is shared: read the same-run ratios, not the absolute figures.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MB=${MB:-200}
REPS=${REPS:-3}
FB_N=${FB_N:-200}
BEFORE=${BEFORE-/tmp/pilotctl-before-user}
NS_A=${NS_A:-puserA}
NS_B=${NS_B:-puserB}
BYTES=$((MB * 1024 * 1024))
# shellcheck source=bench/lib/veth.sh
source "$HERE/lib/veth.sh"

veth_init userspace_tun pilot-user
PAIRS=(tun us)
declare -A PBIN=([tun]=$BIN [us]=$BIN) PMODE=([tun]=tun [us]=userspace) PPORT=([tun]=51820 [us]=51821)
declare -A PSOCKS=([us]=127.0.0.1:1081)
if [[ -n $BEFORE && -x $BEFORE ]]; then
  PAIRS+=(us-before)
  PBIN[us-before]=$BEFORE; PMODE[us-before]=userspace; PPORT[us-before]=51822
  PSOCKS[us-before]=127.0.0.1:1082
fi

veth_up puA puB

# Identities: a short userspace start creates each key (state dirs PAIR-a, PAIR-b).
for p in "${PAIRS[@]}"; do
  for n in a b; do
    h=$T/$p-$n; mkdir -p "$h"
    printf '[socks5]\nlisten = "127.0.0.1:0"\n[dns]\nenabled = false\n' >"$h/config.toml"
    make_identity "$h" "${PBIN[$p]}"
  done
done
key() { jq -r .data.public_key "$T/$1.info"; }

stream_server "$NS_B"
head -c "$BYTES" /dev/zero >"$T/up.bin"

# config PAIR NODE PEER PEER_IP PEER_NAME
config() {
  local p=$1 port=${PPORT[$1]}
  {
    printf 'mode = "%s"\n[tunnel]\nlisten_port = %s\nkeepalive_secs = 25\n' "${PMODE[$p]}" "$port"
    printf '[dns]\nenabled = false\n'
    if [[ -n ${PSOCKS[$p]:-} ]]; then printf '[socks5]\nlisten = "%s"\n' "${PSOCKS[$p]}"; fi
    printf '[[peer]]\npublic_key = "%s"\nhostname = "%s"\nendpoint = "%s:%s"\n' \
      "$(key "$p-$3")" "$5" "$4" "$port"
    if [[ ${PMODE[$p]} == userspace && $2 == b ]]; then
      printf '[[expose]]\nport = 8080\nto = "127.0.0.1:8000"\n'
    fi
  } >"$T/$p-$2/config.toml"
}
declare -A DPID URL SOCKSARG
start() { # PAIR NODE NS
  start_daemon "$T/$1-$2" "$3" "${PBIN[$1]}"
  DPID[$1-$2]=$DAEMON_PID
}
for p in "${PAIRS[@]}"; do
  config "$p" a b "$VETH_B" node-b
  config "$p" b a "$VETH_A" node-a
  start "$p" a "$NS_A"; start "$p" b "$NS_B"
  if [[ ${PMODE[$p]} == userspace ]]; then
    SOCKSARG[$p]="--socks5-hostname ${PSOCKS[$p]}"; URL[$p]="http://node-b.pilot:8080"
  else
    SOCKSARG[$p]=""; URL[$p]="http://[$(jq -r .data.ipv6 "$T/$p-b.info")]:8000"
  fi
  # shellcheck disable=SC2086
  wait_path "$NS_A" ${SOCKSARG[$p]} "${URL[$p]}/1000" || { log "$p: no path to ${URL[$p]}"; cat "$T/$p-a.log" "$T/$p-b.log" >&2; exit 1; }
  log "$p: up (${PBIN[$p]}, ${PMODE[$p]})"
done

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
declare -A RATES CPU
# transfer PAIR DIR -> appends Mbit/s to RATES[PAIR DIR]
transfer() {
  local p=$1 d=$2 out size secs r a0 b0 a1 b1 perf_pid=""
  if [[ ${PERF:-} == "$p" && $d == "${PERF_DIR:-down}" && -z ${PERF_DONE:-} ]]; then
    perf record -g -F 999 -p "${DPID[$p-a]},${DPID[$p-b]}" -o "/tmp/pilot-user-perf-$p.data" 2>/dev/null &
    perf_pid=$!; sleep 0.5
  fi
  a0=$(cpu "${DPID[$p-a]}"); b0=$(cpu "${DPID[$p-b]}")
  # shellcheck disable=SC2086
  if [[ $d == down ]]; then
    out=$(ip netns exec "$NS_A" curl -sS --max-time 120 ${SOCKSARG[$p]} "${URL[$p]}/$BYTES" -o /dev/null \
          -w '%{size_download} %{time_total}')
  else
    out=$(ip netns exec "$NS_A" curl -sS --max-time 120 ${SOCKSARG[$p]} "${URL[$p]}/up" -X POST -T "$T/up.bin" \
          -H 'Expect:' -H 'Content-Type: application/octet-stream' -w ' %{size_upload} %{time_total}' | awk '{print $1, $3}')
  fi
  a1=$(cpu "${DPID[$p-a]}"); b1=$(cpu "${DPID[$p-b]}")
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true; PERF_DONE=1
    log "perf profile of both $p daemons: /tmp/pilot-user-perf-$p.data"
  fi
  read -r size secs <<<"$out"
  [[ $size == "$BYTES" ]] || { log "$p $d: $size of $BYTES bytes arrived"; exit 1; }
  r=$(awk -v b="$size" -v s="$secs" 'BEGIN { printf "%.0f", b * 8 / s / 1e6 }')
  RATES[$p $d]+="$r "
  CPU[$p $d]+="$(awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v s="$secs" -v hz="$TCK" \
    'BEGIN { printf "%.0f/%.0f", a / hz / s * 100, b / hz / s * 100 }') "
  log "$p $d: $r Mbit/s"
}
for _ in $(seq 1 "$REPS"); do
  for d in ${DIRS-down up}; do
    for p in "${PAIRS[@]}"; do transfer "$p" "$d"; done
  done
done

declare -A FB FB_CONN FB_PRE
log "first byte: $FB_N rounds of one new connection per pair"
for _ in $(seq 1 "$FB_N"); do
  for p in "${PAIRS[@]}"; do
    # shellcheck disable=SC2086
    read -r c0 c1 c2 < <(ip netns exec "$NS_A" curl -sS --max-time 5 ${SOCKSARG[$p]} "${URL[$p]}/100" -o /dev/null \
      -w '%{time_connect} %{time_pretransfer} %{time_starttransfer}\n')
    FB_CONN[$p]+="$c0 "; FB_PRE[$p]+="$c1 "; FB[$p]+="$c2 "
  done
done

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ v[n++] = $1 } END { print (n % 2 ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2) }'; }
best() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | tail -1; }
# pctl LIST Q -> the Q-th percentile in ms (nearest rank)
pctl() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk -v q="$2" '{ v[n++] = $1 } END { i = int(q / 100 * n + 0.999) - 1; if (i < 0) i = 0; printf "%.3f", v[i] * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }'; }

echo
echo "pilot $("$BIN" --version | awk '{print $2}'), before: ${BEFORE:-none}; $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); ${MB} MB per transfer, $REPS per pair and direction, $(date -u +%FT%TZ)"
echo
echo "| pair | download Mbit/s median (best) | upload Mbit/s median (best) | ÷ tun down | ÷ tun up | daemon CPU % A/B down | up | first byte p50 / p99 ms | − tun p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
for p in "${PAIRS[@]}"; do
  for d in down up; do RATES[$p $d]=${RATES[$p $d]:-0}; CPU[$p $d]=${CPU[$p $d]:-}; done
done
for p in "${PAIRS[@]}"; do
  md=$(median "${RATES[$p down]}"); mu=$(median "${RATES[$p up]}")
  td=$(median "${RATES[tun down]}"); tu=$(median "${RATES[tun up]}")
  f50=$(pctl "${FB[$p]}" 50); f99=$(pctl "${FB[$p]}" 99)
  t50=$(pctl "${FB[tun]}" 50); t99=$(pctl "${FB[tun]}" 99)
  echo "| $p | $md ($(best "${RATES[$p down]}")) | $mu ($(best "${RATES[$p up]}")) | $(ratio "$md" "$td") | $(ratio "$mu" "$tu") | ${CPU[$p down]} | ${CPU[$p up]} | $f50 / $f99 | $(awk -v a="$f50" -v b="$t50" 'BEGIN { printf "%+.3f", a - b }') / $(awk -v a="$f99" -v b="$t99" 'BEGIN { printf "%+.3f", a - b }') |"
done
echo
echo "first byte, p50 in ms of curl's phases (connect: TCP, plus the SOCKS5 exchange through a proxy; request sent; first byte):"
for p in "${PAIRS[@]}"; do
  echo "  $p: connect $(pctl "${FB_CONN[$p]}" 50), request sent $(pctl "${FB_PRE[$p]}" 50), first byte $(pctl "${FB[$p]}" 50)"
done
echo "daemon memory after the transfers, MiB (VmRSS now / VmHWM peak), A and B:"
rss() { awk '/^VmRSS|^VmHWM/ { v[$1] = $2 } END { printf "%.1f / %.1f", v["VmRSS:"] / 1024, v["VmHWM:"] / 1024 }' "/proc/$1/status"; }
for p in "${PAIRS[@]}"; do echo "  $p: $(rss "${DPID[$p-a]}"), $(rss "${DPID[$p-b]}")"; done
echo "every transfer, Mbit/s:"
for p in "${PAIRS[@]}"; do echo "  $p down: ${RATES[$p down]}| up: ${RATES[$p up]}"; done
if [[ -n ${RATES[us-before down]:-} ]]; then
  echo "us ÷ us-before (medians): down $(ratio "$(median "${RATES[us down]}")" "$(median "${RATES[us-before down]}")"), up $(ratio "$(median "${RATES[us up]}")" "$(median "${RATES[us-before up]}")")"
fi
echo "targets (issue 18): us ÷ tun ≥ 0.9 both ways; us first byte p50 within 1 ms of tun's"
