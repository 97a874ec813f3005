#!/usr/bin/env bash
# Registry capacity (issue 15): real registries (`pilotctl registry run`) on loopback, driven by
# the load generator examples/registry_load.rs (simulated nodes, real Ed25519 signatures, real
# UDP). Prints, from one run:
#   1. signature verification alone (one core): the floor of a request's cost;
#   2. signed requests answered per second of registry CPU, redb and PostgreSQL, for a
#      heartbeat+lookup mix and for trust requests (each one a stored, held message);
#   3. NODES simulated nodes (default 100,000) heartbeating at the default 20 s interval on one
#      instance: CPU share, RSS per registered node, p50/p99 answer latency;
#   4. two instances on one PostgreSQL: each one's throughput, SQL statements per request,
#      cross-instance push latency p50/p99.
# Needs PostgreSQL for 2 and 4 (as .ci/run sets it up: root may create databases over the Unix
# socket); without it those parts are skipped, loudly. Figures on a shared machine are noisy.
#
# Usage: bench/registry.sh            (NODES=20000 SECS=20 bench/registry.sh for a short run;
#        PILOTCTL=... REGISTRY_LOAD=... to run prebuilt binaries;
#        BASELINE=/path/to/older/pilotctl: part 2 runs that binary too, interleaved with this
#        one ROUNDS times (default 2), and prints same-run ratios;
#        ONLY=2 runs parts 1 and 2 only; ONLY=3 runs part 3 only, the NODES steady run)
set -euo pipefail
cd "$(dirname "$0")/.."
NODES="${NODES:-100000}"
SECS="${SECS:-40}"
FLOOD_SECS="${FLOOD_SECS:-8}"
PGHOST_DIR="${PILOT_TEST_PG_HOST:-/var/run/postgresql}"
# PILOTCTL and REGISTRY_LOAD name prebuilt binaries (then nothing is built).
if [ -z "${PILOTCTL:-}" ] || [ -z "${REGISTRY_LOAD:-}" ]; then
  cargo build --release --bin pilotctl --example registry_load >/dev/null 2>&1 ||
    cargo build --release --bin pilotctl --example registry_load
fi
BIN="${PILOTCTL:-$PWD/target/release/pilotctl}"
LOAD="${REGISTRY_LOAD:-$PWD/target/release/examples/registry_load}"
WORK="$(mktemp -d)"
PIDS=()
DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$DB" ]; then
    psql "host=$PGHOST_DIR dbname=postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME PORT [STORE]: a registry with limits far above the defaults (all load comes from
# 127.0.0.1); sets REG_PID.
start() {
  local name=$1 port=$2 store=${3:-}
  mkdir -p "$WORK/$name"
  {
    echo "listen = \"127.0.0.1:$port\""
    echo "state_dir = \"$WORK/$name\""
    echo "recv_buffer_bytes = 33554432"
    echo "instance = \"$name\""
    echo "key_file = \"$WORK/registry.key\""
    [ -n "$store" ] && echo "store = \"$store\""
    cat <<'LIMITS'
[limits]
max_nodes = 400000
max_registered = 1000000
ip_burst = 4000000
ip_per_sec = 4000000
global_burst = 4000000
global_per_sec = 4000000
key_burst = 1000000
key_per_sec = 1000000
query_burst = 1000000
query_per_sec = 1000000
challenge_burst = 4000000
challenge_per_sec = 4000000
unproven_burst = 4000000
unproven_per_sec = 4000000
LIMITS
  } >"$WORK/$name.toml"
  PILOT_LOG=warn,pilot::registry=info "$BIN" registry run --config "$WORK/$name.toml" >/dev/null 2>"$WORK/$name.log" &
  REG_PID=$!
  PIDS+=("$REG_PID")
  for _ in $(seq 100); do
    grep -q "registry running" "$WORK/$name.log" && return 0
    sleep 0.1
  done
  echo "registry $name did not start:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

field() { grep "^$1=" | cut -d= -f2; }

status_field() { # status_field NAME key -> value from the instance's status.json
  python3 -c "import json,sys; s=json.load(open('$WORK/$1/status.json')); print(eval('s' + sys.argv[1]))" "$2"
}

echo "== registry capacity, $(date -u +%FT%TZ), $(nproc) cores (shared: figures are noisy)"
# Part 3: NODES nodes registered, then heartbeating at the default interval (redb).
steady() {
  echo "-- 3. $NODES nodes heartbeating every 20 s on one instance (redb), ${SECS}s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  start steady 17921
  "$LOAD" steady --registry 127.0.0.1:17921 --pid "$REG_PID" --nodes "$NODES" --secs "$SECS" | sed 's/^/   /'
  echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  stop "$REG_PID"
}
if [ "${ONLY:-}" = 3 ]; then
  steady
  exit 0
fi
echo "-- 1. signature verification alone (one core)"
"$LOAD" verify --count 30000 | sed 's/^/   /'

HAVE_PG=0
if psql "host=$PGHOST_DIR dbname=postgres" -qAtc "SELECT 1" >/dev/null 2>&1; then
  HAVE_PG=1
else
  echo "!!! SKIPPED the PostgreSQL parts: no server at $PGHOST_DIR (apt-get install postgresql; pg_ctlcluster VERSION main start; su postgres -c 'createuser -s root')"
fi

# floods LABEL: part 2 with the binary in $BIN; appends "LABEL store mix per_core" to $WORK/rates.
floods() {
  local label=$1 db
  start redb 17901
  for mix in hb trust; do
    echo "   [$label] redb, mix=$mix:"
    "$LOAD" flood --registry 127.0.0.1:17901 --pid "$REG_PID" --nodes 2000 --secs "$FLOOD_SECS" --mix "$mix" | tee "$WORK/flood" | sed 's/^/     /'
    echo "$label redb $mix $(field per_core_per_sec <"$WORK/flood")" >>"$WORK/rates"
  done
  stop "$REG_PID"
  rm -rf "$WORK/redb"
  [ "$HAVE_PG" = 1 ] || return 0
  db="pilot_bench_flood_$$"
  psql "host=$PGHOST_DIR dbname=postgres" -qc "CREATE DATABASE $db" >/dev/null
  start pgflood 17902 "postgresql://${PGHOST_DIR//\//%2F}/$db"
  for mix in hb trust; do
    echo "   [$label] postgres, mix=$mix:"
    s0=$(status_field pgflood "['statements']"); a0=$(status_field pgflood "['counters']['accepted']")
    "$LOAD" flood --registry 127.0.0.1:17902 --pid "$REG_PID" --nodes 2000 --secs "$FLOOD_SECS" --mix "$mix" | tee "$WORK/flood" | sed 's/^/     /'
    echo "$label postgres $mix $(field per_core_per_sec <"$WORK/flood")" >>"$WORK/rates"
    sleep 2.5
    s1=$(status_field pgflood "['statements']"); a1=$(status_field pgflood "['counters']['accepted']")
    echo "     statements_per_request=$(python3 -c "print(round(($s1-$s0)/max(1,$a1-$a0),3))")"
  done
  stop "$REG_PID"
  rm -rf "$WORK/pgflood"
  psql "host=$PGHOST_DIR dbname=postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
}

echo "-- 2. signed requests per second of registry CPU (one instance; ${FLOOD_SECS}s each)"
: >"$WORK/rates"
THIS_BIN=$BIN
for round in $(seq "${ROUNDS:-$([ -n "${BASELINE:-}" ] && echo 2 || echo 1)}"); do
  if [ -n "${BASELINE:-}" ]; then
    BIN=$BASELINE floods "baseline-$round"
  fi
  BIN=$THIS_BIN floods "this-$round"
done
BIN=$THIS_BIN
if [ -n "${BASELINE:-}" ]; then
  echo "   same-run ratios (this build / baseline, per second of registry CPU):"
  python3 - "$WORK/rates" <<'PY'
import sys, collections
r = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, store, mix, v = line.split()
    if v:
        r[(label.split("-")[0], store, mix)].append(float(v))
for (who, store, mix), this in sorted(r.items()):
    if who != "this":
        continue
    base = r.get(("baseline", store, mix), [])
    if base:
        print(f"     {store} {mix}: this {sum(this)/len(this):.0f} / baseline {sum(base)/len(base):.0f} = {sum(this)/len(this)/(sum(base)/len(base)):.2f}x (rounds: this {[round(x) for x in this]}, baseline {[round(x) for x in base]})")
PY
fi
[ "${ONLY:-}" = 2 ] && exit 0

if [ "$HAVE_PG" = 1 ]; then
  DB="pilot_bench_$$"
  psql "host=$PGHOST_DIR dbname=postgres" -qc "CREATE DATABASE $DB" >/dev/null
  URL="postgresql://${PGHOST_DIR//\//%2F}/$DB"
  start one 17911 "$URL"
  ONE=$REG_PID
  echo "-- 4. two instances on one PostgreSQL"
  start two 17912 "$URL"
  TWO=$REG_PID
  "$LOAD" push --registry 127.0.0.1:17911 --other 127.0.0.1:17912 --pairs 300 | sed 's/^/   /'
  echo "   both instances flooded at once (mix=hb):"
  "$LOAD" flood --registry 127.0.0.1:17911 --pid "$ONE" --nodes 1000 --secs "$FLOOD_SECS" >"$WORK/f1" &
  f1=$!
  "$LOAD" flood --registry 127.0.0.1:17912 --pid "$TWO" --nodes 1000 --secs "$FLOOD_SECS" >"$WORK/f2" &
  f2=$!
  wait "$f1" "$f2"
  echo "     one: answered_per_sec=$(field answered_per_sec <"$WORK/f1") per_core_per_sec=$(field per_core_per_sec <"$WORK/f1")"
  echo "     two: answered_per_sec=$(field answered_per_sec <"$WORK/f2") per_core_per_sec=$(field per_core_per_sec <"$WORK/f2")"
  "$BIN" registry status --store "$URL" | sed 's/^/   /'
  stop "$ONE"
  stop "$TWO"
fi

steady
