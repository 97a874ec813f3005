#!/usr/bin/env bash
# Request/reply round trip through the local API, over a direct path: two release daemons in
# userspace mode on loopback (static peers, WireGuard over 127.0.0.1, no root), A asks with
# POST /v1/messages + wait_ms, a responder on B answers from B's event stream with
# POST /v1/messages/{id}/reply (examples/reqreply.rs). Prints p50/p99/max of the round trip and,
# in the same run, of a plain send until acked and of a one-probe ping, with the ratios.
#
#   bench/reqreply.sh                 # N=1000, state directories under /tmp (disk: fsyncs count)
#   STATE_ROOT=/dev/shm bench/reqreply.sh   # the same with the state on tmpfs
#   BIN_DIR=/tmp/old bench/reqreply.sh      # an older build's pilotctl and reqreply, no build
#
# Only loopback traffic. Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
STATE_ROOT=${STATE_ROOT:-/tmp}
PROFILE=${PROFILE:-release}   # PROFILE=debug to try the script quickly (figures meaningless)
# BIN_DIR=DIR: use DIR/pilotctl and DIR/reqreply as they are (e.g. an older build), no build.
if [[ -n ${BIN_DIR:-} ]]; then
    BIN=$BIN_DIR/pilotctl; EXAMPLE=$BIN_DIR/reqreply
else
    if [[ $PROFILE == release ]]; then
        cargo build --release --quiet --bin pilotctl --example reqreply
    else
        cargo build --quiet --bin pilotctl --example reqreply
    fi
    BIN=$PWD/target/$PROFILE/pilotctl; EXAMPLE=$PWD/target/$PROFILE/examples/reqreply
fi
T=$(mktemp -d "$STATE_ROOT/pilot-rr-bench.XXXXXX")
cleanup() {
    for h in "$T/a" "$T/b"; do PILOT_HOME=$h "$BIN" daemon stop --timeout 3 >/dev/null 2>&1 || true; done
    rm -rf "$T"
}
trap cleanup EXIT
[[ -n ${KEEP:-} ]] && trap - EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }

mkdir -p "$T/a" "$T/b"
for n in a b; do
    printf '[socks5]\nenabled = false\n' > "$T/$n/config.toml"
    PILOT_HOME=$T/$n "$BIN" daemon start --mode userspace >/dev/null
    PILOT_HOME=$T/$n "$BIN" --json info | json public_key > "$T/$n.key"
    PILOT_HOME=$T/$n "$BIN" daemon stop >/dev/null
done
PA=$(free_port); PB=$(free_port)
cfg() { # own-port peer-key peer-name peer-port
    printf 'mode = "userspace"\n[tunnel]\nlisten_port = %s\n[socks5]\nenabled = false\n' "$1"
    printf '[messages]\ninbox_max_messages = 10000000\ninbox_max_messages_per_sender = 10000000\n'
    printf 'inbox_max_bytes = 17179869184\ninbox_max_bytes_per_sender = 17179869184\n'
    printf '[[peer]]\npublic_key = "%s"\nhostname = "%s"\nendpoint = "127.0.0.1:%s"\n' "$2" "$3" "$4"
}
cfg "$PA" "$(cat "$T/b.key")" node-b "$PB" > "$T/a/config.toml"
cfg "$PB" "$(cat "$T/a.key")" node-a "$PA" > "$T/b/config.toml"
PILOT_HOME=$T/a "$BIN" daemon start >/dev/null
PILOT_HOME=$T/b "$BIN" daemon start >/dev/null

echo "request/reply over a direct path ($BIN) (userspace mode, loopback), state in $STATE_ROOT, $(nproc) CPUs"
echo "(measured on a machine shared with other builds: figures are noisy; compare the ratios)"
"$EXAMPLE" "$T/a/pilot.sock" "$T/b/pilot.sock" node-b "$N"
PILOT_HOME=$T/a "$BIN" --json peers | python3 -c \
    'import json,sys; p=json.load(sys.stdin)["data"]["peers"][0]; print("path:", p["path"], p["endpoint"])'
