#!/bin/bash
# Where a server's CPU goes per request: kernel vs user space, by perf samples.
#   bash bench/cpu_split.sh NAME plain|pipelined COMMAND...
# COMMAND must serve "Hello, World!" over HTTP/1.1 on 127.0.0.1:$PORT, e.g.
#   bash bench/cpu_split.sh ours plain deno run -A main.ts serve --app http --port '$PORT'
# Starts the server, warms it up for 1 s, runs wrk -t1 -c50 (16-deep pipelining for
# "pipelined") for 6 s and samples the server's threads with `perf record -F 4999` for 5 s
# of it. Prints kernel and user µs per request (samples x 200 µs / requests) and user
# time split by binary. perf's own overhead inflates every figure by ~10%: compare servers
# measured the same way, several runs each. Needs perf (apt-get install linux-perf) and wrk.
set -u
[[ $# -ge 3 ]] || { sed -n 2,10p "$0" >&2; exit 2; }
name=$1 mode=$2; shift 2
[[ $mode == plain || $mode == pipelined ]] || { echo "cpu_split: mode must be plain or pipelined" >&2; exit 2; }
for tool in perf wrk; do command -v $tool >/dev/null || { echo "cpu_split: $tool is missing" >&2; exit 2; }; done
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
port=$((30000 + RANDOM % 1000))
PORT=$port setsid bash -c "exec $*" >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port/
wrk -t1 -c50 -d1s "$url" >/dev/null
if [[ $mode == plain ]]; then
  wrk -t1 -c50 -d6s "$url" >"$tmp/wrk.out" &
else
  DEPTH=16 wrk -t1 -c50 -d6s -s "$here/pipeline.lua" "$url" >"$tmp/wrk.out" &
fi
wrk_pid=$!
sleep 0.5
perf record -F 4999 -o "$tmp/perf.data" -p "$pid" -- sleep 5 >/dev/null 2>&1
wait "$wrk_pid"
kill -- -"$pid" 2>/dev/null
requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$tmp/wrk.out")
perf report -i "$tmp/perf.data" --sort dso -n --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' |
  awk -v n="$requests" -v name="$name" -v mode="$mode" '
    { if ($3 ~ /kernel/) k += $2; else { u += $2; split_[$3] += $2 } }
    END {
      r = n * 5 / 6  # requests in the 5 sampled seconds of the 6 s run
      printf "%s %s: kernel %.3f user %.3f µs per request (%d requests/s)\n", name, mode, k * 200 / r, u * 200 / r, n / 6
      for (d in split_) printf "  user in %-24s %.3f\n", d, split_[d] * 200 / r
    }'
