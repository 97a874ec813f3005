# The veth lab the mode, file and userspace benchmarks share (sourced; root for the namespaces).
#
# Two namespaces $NS_A and $NS_B on one veth, 198.51.100.1/24 <-> 198.51.100.2/24
# (documentation range, no route off the box), real `pilotctl daemon run` in each. The caller
# defines ROOT (the checkout), NS_A and NS_B, then calls veth_init.
#
#   VETH_A, VETH_B                 the two addresses (set here)
#   veth_init TAG NAME             pilot_bin; T = a new /tmp/NAME.XXXXXX (the work directory);
#                                  PIDS=() (the daemons to stop); SERVER_PID="" (the test
#                                  server's, if any); log prints "[time TAG] ..." to stderr;
#                                  trap veth_cleanup EXIT
#   pilot_bin                      BIN = $PILOTCTL, or this checkout's release build (built here)
#   veth_up DEV_A DEV_B            deletes any namespaces left by an earlier run, makes both with
#                                  lo up and no duplicate address detection, and the veth
#                                  (DEV_A in A, DEV_B in B) with the two addresses, up
#   veth_down                      deletes both namespaces
#   stop_pids                      SIGTERM to PIDS, SIGKILL after 5 s, reaped; PIDS emptied
#   veth_cleanup                   for `trap veth_cleanup EXIT`: stop_pids, stops the server,
#                                  veth_down, removes $T (KEEP=1 keeps it)
#   make_identity HOME [BIN]       a short userspace start creates HOME's key; `--json info`
#                                  is left in HOME.info
#   start_daemon HOME NS [BIN]     `daemon run` in NS (log HOME.log, PILOT_LOG=warn) until its
#                                  API answers (<= 10 s); DAEMON_PID, also appended to PIDS
#   wait_path NS CURL-ARGS...      curl in NS (2 s each) until it succeeds, at most 100 times
#   stream_server NS               bench/lib/stream_server.py on [::]:8000 in NS (GET /N streams N
#                                  bytes, POST drains); SERVER_PID; waits until it listens

VETH_A=198.51.100.1
VETH_B=198.51.100.2

pilot_bin() {
  if [[ -n ${PILOTCTL:-} ]]; then
    BIN=$PILOTCTL # a binary built earlier, e.g. to compare before/after in one session
  else
    (cd "$ROOT" && cargo build --release --quiet --bin pilotctl)
    BIN=$ROOT/target/release/pilotctl
  fi
}

veth_init() { # TAG NAME
  pilot_bin
  T=$(mktemp -d "/tmp/$2.XXXXXX")
  PIDS=()
  SERVER_PID=""
  LOG_TAG=$1
  trap veth_cleanup EXIT
}

log() { printf '[%s %s] %s\n' "$(date +%T)" "$LOG_TAG" "$*" >&2; }

veth_down() {
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
}

veth_up() { # DEV_A DEV_B
  local ns
  veth_down
  ip netns add "$NS_A"; ip netns add "$NS_B"
  ip link add "$1" netns "$NS_A" type veth peer name "$2" netns "$NS_B"
  for ns in "$NS_A" "$NS_B"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "$ns" link set lo up
  done
  ip -n "$NS_A" addr add "$VETH_A/24" dev "$1"
  ip -n "$NS_B" addr add "$VETH_B/24" dev "$2"
  ip -n "$NS_A" link set "$1" up
  ip -n "$NS_B" link set "$2" up
}

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

veth_cleanup() {
  stop_pids
  if [[ -n ${SERVER_PID:-} ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  veth_down
  [[ ${KEEP:-0} == 1 ]] && log "kept $T" || rm -rf "$T"
}

make_identity() { # HOME [BIN]
  local bin=${2:-$BIN}
  mkdir -p "$1"
  PILOT_HOME=$1 timeout 20 "$bin" daemon start --mode userspace >/dev/null
  PILOT_HOME=$1 "$bin" --json info >"$1.info"
  PILOT_HOME=$1 timeout 20 "$bin" daemon stop >/dev/null
}

start_daemon() { # HOME NS [BIN]
  local bin=${3:-$BIN}
  ip netns exec "$2" env PILOT_HOME="$1" PILOT_LOG=warn "$bin" daemon run >>"$1.log" 2>&1 &
  DAEMON_PID=$!
  PIDS+=("$DAEMON_PID")
  for _ in $(seq 1 200); do PILOT_HOME=$1 "$bin" info >/dev/null 2>&1 && return 0; sleep 0.05; done
  log "daemon $1 did not start"; cat "$1.log" >&2; return 1
}

wait_path() { # NS CURL-ARGS...
  local ns=$1
  shift
  for _ in $(seq 1 100); do
    ip netns exec "$ns" curl -s --max-time 2 "$@" -o /dev/null && return 0
    sleep 0.1
  done
  return 1
}

stream_server() { # NS
  ip netns exec "$1" python3 "$ROOT/bench/lib/stream_server.py" :: 8000 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do ip netns exec "$1" ss -ltn | grep -q ':8000 ' && break; sleep 0.05; done
}
