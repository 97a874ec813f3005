# The NAT lab the traversal, relay and TLS-relay benchmarks share (sourced, root).
#
# A switch bridge (namespace ${P}sw) for the "public" ranges 198.51.100.0/24 and 203.0.113.0/24,
# routers that masquerade a 10.x LAN behind one public address and drop unsolicited inbound on
# their WAN side (as home routers do), and agents on those LANs. The caller defines P (the
# namespace prefix) and NSES (the array its cleanup deletes); every namespace made here is
# appended to NSES.
#
#   nsadd NS                       a namespace with lo up and no duplicate address detection
#   on_switch NS IP                NS's eth0 on the switch with IP/24
#   router NAME WAN LAN NAT-EXPR   a NAT router (nft expression, e.g. "masquerade fully-random")
#   agent NAME ROUTER LAN          a host LAN.2 behind ROUTER (default route via LAN.1)
#   natlab_up N                    switch + registry namespace ${P}reg (203.0.113.10) + routers
#                                  ra, rb (port-preserving) and rc, rd (fully random) at
#                                  198.51.100.N1..N4 with agents a1, b1, a2, b2 on 10.N1.0.0/24 .. 10.N4.0.0/24
#
# Agents (the caller also defines PILOTCTL, WORK and PIDS; the registry listens on
# 203.0.113.10:7946; NATLAB_AGENT_CONFIG holds extra config.toml lines, e.g. a [relay] table):
#   pc DIR ARGS...                 pilotctl against the agent whose state is DIR
#   start_pair A B TAG             fresh identities in $WORK/A-TAG, $WORK/B-TAG; B allow-lists A;
#                                  both daemons started in their namespaces and registered (<= 20 s)
#   first_reply A B TAG            A handshakes B, then pings B's overlay address every 10 ms
#                                  until the first reply; prints the seconds from the handshake
#   stop_pair A B TAG              stops both daemons
#
# Measuring (the caller also defines RUNS and IPERF_T):
#   first_replies KIND A B         RUNS times start_pair A B RUN + first_reply (each run and the
#                                  path A then reports go to stderr); sets FR[KIND] to
#                                  "min / median / max" seconds; the last pair (TAG = RUNS) stays up
#   iperf_tcp A B TAG              iperf3 TCP for IPERF_T s from A to B's overlay address; prints
#                                  Mbit/s (A's path to B on stderr)

# Preamble (the caller defines HERE, its own directory; then natlab_up):
#   natlab_init PREFIX NAME        PILOTCTL (default: this checkout's release build, which must
#                                  exist), IPERF_T (default 10) and RUNS (default 3) from the
#                                  environment; needs root; P=PREFIX<pid % 100000>,
#                                  WORK=/tmp/NAME-XXXXXX, NSES=() and PIDS=(); trap natlab_cleanup EXIT
#   natlab_cleanup                 kills PIDS (SIGKILL after 0.3 s), deletes NSES, removes WORK

natlab_init() { # PREFIX NAME
  PILOTCTL=${PILOTCTL:-$HERE/../target/release/pilotctl}
  IPERF_T=${IPERF_T:-10}
  RUNS=${RUNS:-3}
  [[ $(id -u) == 0 ]] || { echo "needs root" >&2; exit 1; }
  [[ -x $PILOTCTL ]] || { echo "build first: cargo build --release" >&2; exit 1; }
  P=$1$(( $$ % 100000 ))
  WORK=$(mktemp -d "/tmp/$2-XXXXXX")
  NSES=()
  PIDS=()
  trap natlab_cleanup EXIT
}

natlab_cleanup() {
  local pid ns
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for ns in "${NSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}

nsadd() { ip netns add "$1"; NSES+=("$1"); ip -n "$1" link set lo up;
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; }

on_switch() { # ns ip
  ip link add eth0 netns "$1" type veth peer name "p$1" netns "${P}sw"
  ip -n "${P}sw" link set "p$1" master br0
  ip -n "${P}sw" link set "p$1" up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" route add 198.51.100.0/24 dev eth0 2>/dev/null || true
  ip -n "$1" route add 203.0.113.0/24 dev eth0 2>/dev/null || true
}

router() { # name wan lan nat-expr
  local ns=${P}$1
  nsadd "$ns"; on_switch "$ns" "$2"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$ns" link add lanbr type bridge
  ip -n "$ns" addr add "$3.1/24" dev lanbr
  ip -n "$ns" link set lanbr up
  ip netns exec "$ns" nft -f - <<NFT
table ip pilotnat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" $4
  }
}
table ip pilotfw {
  chain forwarding {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lanbr" accept
  }
  chain incoming {
    type filter hook input priority filter; policy accept;
    iifname "eth0" ct state established,related accept
    iifname "eth0" drop
  }
}
NFT
}

agent() { # name router lan
  local ns=${P}$1
  nsadd "$ns"
  ip link add eth0 netns "$ns" type veth peer name "v$1" netns "${P}$2"
  ip -n "${P}$2" link set "v$1" master lanbr
  ip -n "${P}$2" link set "v$1" up
  ip -n "$ns" addr add "$3.2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$3.1"
}

natlab_up() { # N
  local n=$1
  nsadd "${P}sw"
  ip -n "${P}sw" link add br0 type bridge
  ip -n "${P}sw" link set br0 up
  nsadd "${P}reg"; on_switch "${P}reg" 203.0.113.10
  router ra "198.51.100.${n}1" "10.${n}1.0" masquerade
  router rb "198.51.100.${n}2" "10.${n}2.0" masquerade
  router rc "198.51.100.${n}3" "10.${n}3.0" "masquerade fully-random"
  router rd "198.51.100.${n}4" "10.${n}4.0" "masquerade fully-random"
  agent a1 ra "10.${n}1.0"; agent b1 rb "10.${n}2.0"; agent a2 rc "10.${n}3.0"; agent b2 rd "10.${n}4.0"
}

pc() { # agent-dir args...
  local d=$1; shift
  PILOT_HOME=$d PILOT_SOCKET=$d/pilot.sock "$PILOTCTL" "$@"
}

start_pair() { # a b tag
  local a=$1 b=$2 tag=$3
  for n in "$a" "$b"; do
    local d=$WORK/$n-$tag
    mkdir -p "$d"
    printf 'mode = "tun"\n[tunnel]\nlisten_port = 51820\n%b' "${NATLAB_AGENT_CONFIG:-}" >"$d/config.toml"
    # A short userspace start creates the identity; read the key.
    PILOT_HOME=$d timeout 20 "$PILOTCTL" daemon start --mode userspace >/dev/null
    pc "$d" info --json | jq -r .data.public_key >"$d/key"
    pc "$d" info --json | jq -r .data.ipv6 >"$d/ipv6"
    PILOT_HOME=$d timeout 20 "$PILOTCTL" daemon stop >/dev/null
  done
  printf '[trust]\nallow = ["%s"]\n' "$(cat "$WORK/$a-$tag/key")" >>"$WORK/$b-$tag/config.toml"
  for n in "$a" "$b"; do
    local d=$WORK/$n-$tag
    ip netns exec "${P}$n" env PILOT_HOME="$d" PILOT_SOCKET="$d/pilot.sock" \
      PILOT_REGISTRY=203.0.113.10:7946 "$PILOTCTL" --json daemon start >"$d/start.json"
    PIDS+=("$(jq -r .data.pid "$d/start.json")")
  done
  # Wait until both are registered.
  for _ in $(seq 1 400); do
    grep -q ' registered' "$WORK/$a-$tag/daemon.log" 2>/dev/null \
      && grep -q ' registered' "$WORK/$b-$tag/daemon.log" 2>/dev/null && break
    sleep 0.05
  done
}

stop_pair() { # a b tag
  for n in "$1" "$2"; do pc "$WORK/$n-$3" daemon stop >/dev/null 2>&1 || true; done
}

first_reply() { # a b tag -> seconds
  local da=$WORK/$1-$3 db=$WORK/$2-$3
  pc "$da" handshake "$(cat "$db/key")" >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  ip netns exec "${P}$1" ping -6 -n -q -c 1 -i 0.01 -w 20 "$(cat "$db/ipv6")" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

declare -gA FR
first_replies() { # kind a b -> FR[kind]; not in $(...): start_pair records daemon PIDs in PIDS
  local kind=$1 a=$2 b=$3 run v path vals=()
  for run in $(seq 1 "$RUNS"); do
    start_pair "$a" "$b" "$run"
    v=$(first_reply "$a" "$b" "$run")
    path=$(pc "$WORK/$a-$run" peers --json | jq -r '.data.peers[0].path')
    printf '%s run %s: first reply after %.3f s (path now %s)\n' "$kind" "$run" "$v" "$path" >&2
    vals+=("$v")
    if [[ $run != "$RUNS" ]]; then stop_pair "$a" "$b" "$run"; fi
  done
  FR[$kind]=$(printf '%s\n' "${vals[@]}" | sort -n \
    | awk '{a[NR]=$1} END {printf "%.3f / %.3f / %.3f", a[1], a[int((NR+1)/2)], a[NR]}')
}

iperf_tcp() { # a b tag -> Mbit/s
  local da=$WORK/$1-$3 db=$WORK/$2-$3 path
  ip netns exec "${P}$2" iperf3 -s -1 -D -B "$(cat "$db/ipv6")" >/dev/null
  sleep 0.3
  ip netns exec "${P}$1" iperf3 -6 -c "$(cat "$db/ipv6")" -t "$IPERF_T" -J >"$WORK/iperf-$1.json"
  jq '.end.sum_received.bits_per_second / 1e6 | floor' "$WORK/iperf-$1.json"
  path=$(pc "$da" peers --json | jq -r '.data.peers[0].path')
  echo "  ($1 -> $2 path: $path)" >&2
}
