#!/usr/bin/env bash
# The daemon's resolver under load (unprivileged, loopback): queries per second and p50/p99
# latency for a found name (AAAA), an A query (NOERROR, empty) and an unknown name (NXDOMAIN),
# in one run. The daemon runs in userspace mode with `[dns] loopback`; the resolver code is
# the same one TUN mode serves on <prefix>::53.
#
#   bench/dns.sh                 # SECONDS_EACH=5 INFLIGHT=32 PILOTCTL=target/release/pilotctl
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PILOTCTL=${PILOTCTL:-$ROOT/target/release/pilotctl}
SECONDS_EACH=${SECONDS_EACH:-5}
INFLIGHT=${INFLIGHT:-32}
[[ -x $PILOTCTL ]] || (cd "$ROOT" && cargo build --release --quiet --bin pilotctl)
T=$(mktemp -d /tmp/pilot-dnsbench.XXXXXX)
PORT=$(python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export PILOT_HOME=$T
cat > "$T/config.toml" <<CONF
mode = "userspace"
log_level = "warn"
[socks5]
listen = "127.0.0.1:0"
[dns]
loopback = "127.0.0.1:$PORT"
CONF
cleanup() { "$PILOTCTL" daemon stop --timeout 3 >/dev/null 2>&1 || true; rm -rf "$T"; }
trap cleanup EXIT
"$PILOTCTL" daemon start --hostname dns-bench-node >/dev/null
ADDR=$("$PILOTCTL" --json info | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["address"].replace(".","-"))')
echo "# resolver at 127.0.0.1:$PORT, $SECONDS_EACH s each, $INFLIGHT in flight (measured on a shared, busy machine)"
printf '%-28s %s\n' "case" "result"
run() { printf '%-28s ' "$1"; shift; python3 "$HERE/dns_load.py" "127.0.0.1:$PORT" "$@" --seconds "$SECONDS_EACH" --inflight "$INFLIGHT"; }
run "AAAA own hostname" dns-bench-node.pilot
run "AAAA address form" "$ADDR.pilot"
run "A (NOERROR, empty)" dns-bench-node.pilot --type a
run "unknown name (NXDOMAIN)" nobody-here.pilot
run "outside .pilot (REFUSED)" example.com
