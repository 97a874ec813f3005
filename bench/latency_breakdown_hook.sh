#!/usr/bin/env bash
# Called by bench/run-pilot.sh (PILOT_HOOK) from bench/latency_breakdown.sh with both daemons
# up: PID_A, PID_B, NS_A, B_IP, BREAKDOWN_OUT, PING_N in the environment.
set -euo pipefail
out=$BREAKDOWN_OUT
# warm up: handshake done, caches hot
ip netns exec "$NS_A" ping -n -q -c 20 -i 0.01 "$B_IP" >/dev/null
# perf trace: every syscall of both daemons and of ping, with timestamps (µs resolution).
secs=$(python3 -c "print(int($PING_N * 0.01 + 3))")
timeout --signal=INT "$((secs + 2))" perf trace -a -T --no-inherit -o "$out/trace.txt" \
  -e 'poll,ppoll,recvmmsg,recvmsg,recvfrom,sendmsg,sendto,sendmmsg,read,write,readv,writev' \
  -- sleep "$secs" >/dev/null 2>&1 &
tpid=$!
sleep 1
ip netns exec "$NS_A" ping -n -c "$PING_N" -i 0.01 "$B_IP" >"$out/ping-traced.txt" 2>&1 || true
wait "$tpid" || true
# The same pings without the syscall tracer, under perf sched (wake-up delays per thread).
timeout --signal=INT "$((secs + 2))" perf sched record -a -o "$out/sched.data" -- sleep "$secs" \
  >/dev/null 2>&1 &
spid=$!
sleep 1
ip netns exec "$NS_A" ping -n -c "$PING_N" -i 0.01 "$B_IP" >"$out/ping-sched.txt" 2>&1 || true
wait "$spid" || true
perf sched timehist -i "$out/sched.data" --pid "$PID_A,$PID_B" >"$out/timehist.txt" 2>/dev/null || true
# CPU profile of both daemons (cpu-clock samples with call chains) over the same pings:
# latency_breakdown.py sorts the receive threads' samples into kinds of work.
timeout --signal=INT "$((secs + 2))" perf record -F 20000 -g -p "$PID_A,$PID_B" -o "$out/rec.data" \
  -- sleep "$secs" >/dev/null 2>&1 &
rpid=$!
sleep 1
ip netns exec "$NS_A" ping -n -c "$PING_N" -i 0.01 "$B_IP" >"$out/ping-record.txt" 2>&1 || true
wait "$rpid" || true
perf report -i "$out/rec.data" --no-children --sort comm,dso,sym --stdio -g none 2>/dev/null |
  grep -E 'pilot-(udp|inner)-rx' >"$out/syms.txt" || true
# Plain pings last, nothing attached: the reference for this pass.
ip netns exec "$NS_A" ping -n -c "$PING_N" -i 0.01 "$B_IP" >"$out/ping-plain.txt" 2>&1 || true
ip netns exec "$NS_A" ping -n -c "$PING_N" -i 0.01 "$VETH_B" >"$out/ping-veth.txt" 2>&1 || true
for p in "$PID_A" "$PID_B"; do
  for t in /proc/"$p"/task/*; do echo "$p ${t##*/} $(cat "$t/comm")"; done
done >"$out/threads.txt"
