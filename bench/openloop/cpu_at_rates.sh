#!/bin/bash
# Server CPU per request (user, system) and latency at fixed request rates.
#   bash bench/openloop/cpu_at_rates.sh "20000 60000" 'fetch=deno run -A main.ts serve --port $PORT --module bench/apps/hello.ts' ...
# Each server is started in its own session with PORT set, warmed up with 1 s of wrk, then
# driven by openloop (50 connections, 5 s: 1 s warm-up and 4 s measured) at each rate.
# CPU is read from /proc/PID/stat over 3 s in the middle of the run (all the server's threads).
set -u
rates=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
bin=${OPENLOOP:-/tmp/openloop}
[[ -x $bin ]] || cc -O2 -o "$bin" "$here/openloop.c" || exit 1
hz=$(getconf CLK_TCK)
for spec in "$@"; do
  name=${spec%%=*}
  cmd=${spec#*=}
  port=$((20000 + RANDOM % 20000))
  PORT=$port setsid bash -c "exec $cmd" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1
  for rate in $rates; do
    "$bin" "$port" 50 "$rate" 4 >/tmp/openloop.$$ 2>&1 &
    client=$!
    sleep 1.5
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    sleep 3
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    wait $client
    awk -v n="$name" -v r="$rate" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" \
      -v lat="$(sed 's/.*latency µs: //; s/; late.*//' /tmp/openloop.$$)" \
      'BEGIN { k = 1e6 / hz / (r * 3); printf "%-10s %7d/s  user %5.2f sys %5.2f total %5.2f µs/req  %s\n", n, r, u * k, s * k, (u + s) * k, lat }'
  done
  kill -- -$pid 2>/dev/null
  wait $pid 2>/dev/null
done
rm -f /tmp/openloop.$$
