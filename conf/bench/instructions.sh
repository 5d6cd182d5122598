#!/usr/bin/env bash
# instructions.sh — user-space instructions per request of each gateway, counted by valgrind's
# callgrind under the peer harness's workload (`make bench-instructions`). Unlike CPU time,
# the count does not depend on the machine's load or on how the kernel schedules the other
# side, so a change of a few percent is visible in one run. It does not count the kernel.
#
#   GWS='berth=/path/berth -c %CONF%;bare=/tmp/bare-pingora/release/bare-pingora' conf/bench/instructions.sh
#
# Same GWS syntax as ab.sh; BENCH_LUA replaces the harness's wrk script (conf/bench/plugins.sh). Each gateway runs alone under callgrind: warm-up, counters zeroed,
# REQUESTS_SECONDS (10) of `wrk -c10` load, counters dumped; the table gives instructions per
# request and heap allocations per request (calls into the allocator, conf/bench/allocs.py);
# $OUT/callgrind-<name>.out.* can be read with callgrind_annotate (--inclusive=yes).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PB=${PEERBENCH_DIR:-$HERE/../../../shared/bench/peerbench}
[ -f "$PB/session.lua" ] || { echo "instructions.sh: no peer harness at $PB" >&2; exit 1; }
SECONDS_LOAD=${REQUESTS_SECONDS:-10}
OUT=${OUT:-/tmp/berth-instructions/$(date +%Y%m%d-%H%M%S)}
GWS=${GWS:?'GWS="name=command;name=command"'}
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 1; }
mkdir -p "$OUT"
TOOL=instructions RUN_PREFIX=berth-instr-run
# shellcheck source=conf/bench/common.sh
. "$HERE/common.sh"
# served ADMIN_PORT -> requests Berth counted in berth_requests_total (empty for other gateways).
served() {
  curl -s --max-time 20 "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk '/^berth_requests_total/ { n += $NF } END { if (NR) printf "%d", n }'
}
run_wrk() { # url seconds -> requests
  PB_IDS=10000 PB_SEED=42 wrk -t1 -c10 -d"${2}s" --timeout 10s -s "${BENCH_LUA:-$PB/session.lua}" "$1" 2>&1 |
    tee -a "$RUN/wrk.log" | awk '/^PB_RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "reqs") print kv[2] } }'
}

start_backends

printf '%-14s %10s %14s %12s %11s\n' gateway requests instructions instr/req allocs/req | tee "$OUT/table.txt"
port=18095
IFS=';' read -r -a entries <<<"$GWS"
for e in "${entries[@]}"; do
  name=${e%%=*}; cmd=${e#*=}
  listen="127.0.0.1:$port"; cmd=$(gateway_cmd "$name" "$port" "$cmd")
  out="$OUT/callgrind-$name.out"
  PB_LISTEN=$listen PB_UPSTREAMS=$UPS PB_HASH_HEADER=X-Session-Id RUST_LOG=warn \
    setsid valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out" $cmd >"$RUN/$name.log" 2>&1 &
  pid=$!; track "$pid"
  wait_http "http://127.0.0.1:$port/" 120
  run_wrk "http://127.0.0.1:$port/" 5 >/dev/null   # warm-up: pins, pooled connections
  before=$(served $((port + 1000)))
  callgrind_control -z "$pid" >/dev/null
  reqs=$(run_wrk "http://127.0.0.1:$port/" "$SECONDS_LOAD")
  callgrind_control -d "$name-load" "$pid" >/dev/null
  sleep 1
  # Berth's own count when it has one: wrk leaves out requests it gave up on (read errors,
  # timeouts under valgrind), which the gateway did serve and callgrind did count.
  after=$(served $((port + 1000)))
  if [ -n "$before" ] && [ -n "$after" ]; then
    log "$name: wrk counted $reqs requests, Berth served $((after - before))"
    reqs=$((after - before))
  fi
  dump=$(ls -t "$out".* | head -1)
  ir=$(awk '/^summary:/ { print $2 }' "$dump")
  allocs=$(python3 "$HERE/allocs.py" "$dump" "$reqs")
  printf '%-14s %10s %14s %12.0f %11s\n' "$name" "$reqs" "$ir" "$(awk -v i="$ir" -v n="$reqs" 'BEGIN { print i / n }')" "$allocs" | tee -a "$OUT/table.txt"
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  port=$((port + 1))
done
log "results in $OUT (callgrind_annotate --inclusive=yes $OUT/callgrind-<name>.out.<pid>.<n>)"
