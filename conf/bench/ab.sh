#!/usr/bin/env bash
# ab.sh — interleaved A/B of several gateway builds under the peer harness's workload, for
# measuring one optimisation at a time (`make bench-ab`). The shared harness
# (../shared/bench/peerbench) compares ONE gateway with HAProxy and NGINX; this compares
# gateways with each other (e.g. Berth before/after a change, Berth vs bare Pingora) and keeps
# HAProxy as a reference row. Same workload: the harness's nginx backends and wrk script
# (`wrk -t1 -c50`, X-Session-Id from a pool of 10,000), the gateways pinned alone on core 0,
# wrk and the backends on core 1, rounds interleaved and rotated (A B C, B C A, ...), medians
# reported.
#
#   GWS='berth=/path/berth -c %CONF%;bare=/tmp/bare-pingora/release/bare-pingora' conf/bench/ab.sh
#
# Each entry is name=command. In the command, %LISTEN% is the address it must listen on and
# %CONF% a Berth config written for it (header affinity; BENCH_MODE=cookie puts cookie insert
# first, as in `make bench-peers`; no forwarding headers, like the peers' configs), %CONF_FWD%
# the same with Berth's default X-Forwarded-For/-Proto; PB_LISTEN/PB_UPSTREAMS/PB_HASH_HEADER are also exported
# (bare-pingora reads them). Knobs: ROUNDS (5), DURATION (8 s), WARMUP (2 s), CONNS (50),
# HAPROXY (1 = include HAProxy with the harness's config), PERF=name (after the rounds, record
# `perf record -g` of that gateway for PERF_SECONDS (10) under the same load into
# $OUT/perf-name.data), AFTER_WARMUP (a command run once between the warm-up and the rounds), SYSCALLS=1 (system calls per request of each gateway), OUT (/tmp/berth-ab/<time>). Loopback only; kills only what it started.
# Several runs pool with `python3 conf/bench/pool.py <baseline> $OUT1/raw.tsv $OUT2/raw.tsv ...`
# (median of the per-round ratios over all rounds, with a bootstrap 95% interval).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PB=${PEERBENCH_DIR:-$HERE/../../../shared/bench/peerbench}
[ -f "$PB/session.lua" ] || { echo "ab.sh: no peer harness at $PB (set PEERBENCH_DIR)" >&2; exit 1; }
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-50}
HAPROXY=${HAPROXY:-1}
MODE=${BENCH_MODE:-header}
PERF=${PERF:-}
PERF_SECONDS=${PERF_SECONDS:-10}
OUT=${OUT:-/tmp/berth-ab/$(date +%Y%m%d-%H%M%S)}
GWS=${GWS:?'GWS="name=command;name=command" (see the header of this file)'}
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
TOOL=ab RUN_PREFIX=berth-ab-run
# shellcheck source=conf/bench/common.sh
. "$HERE/common.sh"

# start NAME CPUS cmd... : own session (killed by group), pinned, niced; pid in LAST_PID
start() {
  local name=$1 cpus=$2; shift 2
  spawn "$RUN/$name.out" taskset -c "$cpus" "$@"
}
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

start_backends taskset -c 1

NAMES=(); declare -A PORT=() PID=()
port=18090
if [ "$HAPROXY" = 1 ]; then
  sed -e "s#@RUN@#$RUN#g" -e "s#@HAPROXY_PORT@#$port#g" \
      -e "s#@COOKIE_LINE@#    cookie SRV insert indirect nocache#" -e "s#@COOKIE_B\([1-4]\)@#cookie b\1#" \
      "$PB/templates/haproxy.cfg.tmpl" >"$RUN/haproxy.cfg"
  start haproxy 0 haproxy -db -f "$RUN/haproxy.cfg"
  NAMES+=(haproxy); PORT[haproxy]=$port; PID[haproxy]=$LAST_PID; port=$((port + 1))
fi
IFS=';' read -r -a entries <<<"$GWS"
for e in "${entries[@]}"; do
  name=${e%%=*}; cmd=${e#*=}
  listen="127.0.0.1:$port"
  cmd=$(gateway_cmd "$name" "$port" "$cmd")
  PB_LISTEN=$listen PB_UPSTREAMS=$UPS PB_HASH_HEADER=X-Session-Id RUST_LOG=warn \
    start "$name" 0 bash -c "exec $cmd"
  NAMES+=("$name"); PORT[$name]=$port; PID[$name]=$LAST_PID; port=$((port + 1))
done
for n in "${NAMES[@]}"; do wait_http "http://127.0.0.1:${PORT[$n]}/" 60; done

run_wrk() { # name seconds -> "rps reqs p99_us errors"
  PB_IDS=10000 PB_SEED=42 detach taskset -c 1 wrk -t1 -c"$CONNS" -d"${2}s" --timeout 5s \
    -s "$PB/session.lua" "http://127.0.0.1:${PORT[$1]}/" 2>&1 | tee -a "$RUN/wrk.log" |
    awk '/^PB_RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
         print v["rps"], v["reqs"], v["p99_us"], v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"] }'
}

log "gateways: ${NAMES[*]} (mode $MODE); $ROUNDS rounds of ${DURATION}s"
for n in "${NAMES[@]}"; do run_wrk "$n" "$WARMUP" >/dev/null; done
# AFTER_WARMUP: a command run between the warm-up and the rounds (fleet.sh reads Redis' counters).
if [ -n "${AFTER_WARMUP:-}" ]; then bash -c "$AFTER_WARMUP"; fi
printf 'round\tname\trps\tp99_us\terrors\tcpu_us_per_req\tuser_us_per_req\tsys_us_per_req\n' >"$OUT/raw.tsv"
for r in $(seq 1 "$ROUNDS"); do
  # Each round starts one gateway later than the previous one, so that no gateway always runs
  # right after the same other one (the machine drifts within a round too).
  order=("${NAMES[@]:$(( (r - 1) % ${#NAMES[@]} ))}" "${NAMES[@]:0:$(( (r - 1) % ${#NAMES[@]} ))}")
  for n in "${order[@]}"; do
    read -r u0 s0 < <(cpu_ticks "${PID[$n]}")
    read -r rps reqs p99 errs < <(run_wrk "$n" "$DURATION")
    read -r u1 s1 < <(cpu_ticks "${PID[$n]}")
    per() { awk -v t="$1" -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }'; }
    cpr=$(per $((u1 - u0 + s1 - s0))); usr=$(per $((u1 - u0))); sys=$(per $((s1 - s0)))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$n" "$rps" "$p99" "$errs" "$cpr" "$usr" "$sys" >>"$OUT/raw.tsv"
    log "round $r $n: $rps req/s, p99 ${p99}us, $cpr us CPU/req ($usr user, $sys system), errors $errs"
  done
done

# Medians per gateway, ratios to the first gateway after HAProxy (the baseline of the A/B).
base=${entries[0]%%=*}
awk -F'\t' -v base="$base" -v order="${NAMES[*]}" '
  NR > 1 { rps[$2] = rps[$2] " " $3; p99[$2] = p99[$2] " " $4; cpu[$2] = cpu[$2] " " $6; usr[$2] = usr[$2] " " $7; sys[$2] = sys[$2] " " $8; err[$2] += $5
           round_cpu[$1, $2] = $6; rounds[$1] = 1 }
  function med(s,   a, n, i, j, t) { n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function lo(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
  function hi(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
  END {
    n = split(order, names, " ")
    # The same ratio round by round (each gateway against the baseline of its own round): the
    # machine drifts between rounds, so the spread shows how much of a difference is noise.
    for (r in rounds) for (i = 1; i <= n; i++) if (round_cpu[r, base] > 0)
      ratios[names[i]] = ratios[names[i]] " " round_cpu[r, names[i]] / round_cpu[r, base]
    printf "%-14s %10s %9s %12s %9s %9s %10s %10s %7s  %s\n", "gateway", "req/s", "p99_us", "cpu_us/req", "user", "system", "cpu/" base, "cpu/haproxy", "errors", "per-round cpu/" base " median [min-max]"
    for (i = 1; i <= n; i++) { g = names[i]
      printf "%-14s %10.0f %9.0f %12.2f %9.2f %9.2f %10s %10s %7d  %.3f [%.3f-%.3f]\n", g, med(rps[g]), med(p99[g]), med(cpu[g]), med(usr[g]), med(sys[g]),
        sprintf("%.3f", med(cpu[g]) / med(cpu[base])), ("haproxy" in cpu) ? sprintf("%.3f", med(cpu[g]) / med(cpu["haproxy"])) : "-", err[g],
        med(ratios[g]), lo(ratios[g]), hi(ratios[g]) }
  }' "$OUT/raw.tsv" | tee "$OUT/table.txt"

if [ "${SYSCALLS:-0}" = 1 ]; then
  # System calls per request of each gateway (perf's syscall tracepoints, 6 s of load each).
  for n in "${NAMES[@]}"; do
    run_wrk "$n" 8 >"$RUN/stat-wrk" &
    load=$!
    sleep 1
    perf stat -x, -e 'syscalls:sys_enter_*' -p "${PID[$n]}" -o "$RUN/stat-$n" -- sleep 6 || true
    wait "$load"
    reqs=$(awk '{ print int($2 * 6 / 8) }' "$RUN/stat-wrk")
    awk -F, -v n="$n" -v reqs="$reqs" '$1 ~ /^[0-9]+$/ && $1 > 0 { sub("syscalls:sys_enter_", "", $3); t += $1
        printf "%s syscalls/req %-16s %.3f\n", n, $3, $1 / reqs }
      END { printf "%s syscalls/req %-16s %.3f\n", n, "TOTAL", t / reqs }' "$RUN/stat-$n" | sort -k4 -rn -t' ' | tee -a "$OUT/syscalls.txt"
  done
fi

if [ -n "$PERF" ]; then
  log "perf: recording $PERF for ${PERF_SECONDS}s under load"
  run_wrk "$PERF" $((PERF_SECONDS + 2)) >/dev/null &
  load=$!
  sleep 1
  perf record -g -F 1999 -p "${PID[$PERF]}" -o "$OUT/perf-$PERF.data" -- sleep "$PERF_SECONDS" 2>"$RUN/perf.err" || cat "$RUN/perf.err" >&2
  wait "$load"
  log "perf report -i $OUT/perf-$PERF.data --no-children"
fi
log "results in $OUT"
