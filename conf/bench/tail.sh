#!/usr/bin/env bash
# tail.sh — tail latency under many client connections (`make bench-tail`): Berth beside
# HAProxy 2.6, NGINX 1.22 and bare Pingora, one run, same machine; a benchmark, not a test.
#
#   BERTH=/path/to/release/berth [BARE=/path/to/bare-pingora] [BERTH_B=/path/to/other/berth] conf/bench/tail.sh
#
# BERTH_B: a second Berth build ("berth-b", same config) in the same run, for before/after.
# Part 1, CONNS_LIST (50 1000 2000 5000): for each number of keep-alive connections, ROUNDS (2)
# interleaved rounds of `wrk -t1 -c<conns> -d<DURATION>` with the peer harness's workload
# (X-Session-Id from a pool of 10,000, conf/bench/tail.lua adds p99.9) against every gateway.
# Each gateway runs alone on core 0 (1 worker), wrk and the harness's nginx backends on core 1,
# everything in its own session at nice -20 as root (common.sh `spawn`). Medians over the
# rounds: req/s, p50, p99, p99.9 and the gateway's CPU (user + system of its process group)
# per request.
# Part 2, the idle mix: IDLE (10,000) keep-alive connections that each made one request and
# then stay idle (conf/bench/idle.py, on core 1), plus ACTIVE (200) connections under wrk:
# the active connections' p99 with and without the idle ones, and the gateway's RSS (its
# process group's) per idle connection. Berth, NGINX and bare Pingora only: HAProxy needs
# two descriptors per connection for `maxconn` and this machine's hard limit (20,000 open
# files) cannot hold 10,200 of them.
#
# Configs: the harness's HAProxy and NGINX templates with their connection limits raised
# (HAProxy maxconn 9000, NGINX worker_connections 16384) and everything else as in
# `make bench-peers`; Berth as `make bench-peers` writes it (header affinity, no forwarding
# headers) with `limits.keepalive_timeout: 300s` (NGINX's, so idle connections stay).
# Results: $OUT/table.txt, $OUT/idle.txt, raw rows in $OUT/raw.tsv.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PB=${PEERBENCH_DIR:-$HERE/../../../shared/bench/peerbench}
BERTH=${BERTH:?path to a release berth binary}
BARE=${BARE:-}
CONNS_LIST=${CONNS_LIST:-50 1000 2000 5000}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
IDLE=${IDLE:-10000}
ACTIVE=${ACTIVE:-200}
OUT=${OUT:-/tmp/berth-bench-tail/$(date +%Y%m%d-%H%M%S)}
for tool in wrk haproxy nginx python3 taskset; do
  command -v "$tool" >/dev/null || { echo "tail.sh: $tool is not installed (make bench-tail installs it)" >&2; exit 1; }
done
[ -f "$PB/templates/nginx-proxy.conf.tmpl" ] || { echo "tail.sh: no peer harness at $PB" >&2; exit 1; }
mkdir -p "$OUT"
TOOL=tail RUN_PREFIX=berth-tail-run
# shellcheck source=conf/bench/common.sh
. "$HERE/common.sh"
HZ=$(getconf CLK_TCK)

start_backends taskset -c 1

# group_ticks PGID: user + system clock ticks of every process of the group so far.
group_ticks() {
  local s=0 f
  for f in /proc/[0-9]*/stat; do
    read -r -a st 2>/dev/null <"$f" || continue
    # Fields after the command name (which has no spaces for these programs): 5 = pgrp.
    [ "${st[4]}" = "$1" ] && s=$((s + st[13] + st[14]))
  done
  echo "$s"
}
# group_rss_kb PGID: resident memory of every process of the group.
group_rss_kb() {
  local s=0 p
  for p in $(pgrep -g "$1"); do
    s=$((s + $(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$s"
}

NAMES=(); declare -A PORT=() PID=()
port=18100
add() { NAMES+=("$1"); PORT[$1]=$2; PID[$1]=$LAST_PID; }

sed -e "s#@RUN@#$RUN#g" -e "s#@HAPROXY_PORT@#$port#g" -e "s#maxconn 4096#maxconn 9000#" \
    -e "s#@COOKIE_LINE@#    cookie SRV insert indirect nocache#" -e "s#@COOKIE_B\([1-4]\)@#cookie b\1#" \
    "$PB/templates/haproxy.cfg.tmpl" >"$RUN/haproxy.cfg"
spawn "$RUN/haproxy.out" taskset -c 0 haproxy -db -f "$RUN/haproxy.cfg"
add haproxy $port; port=$((port + 1))

sed -e "s#@RUN@#$RUN#g" -e "s#@NGINX_PORT@#$port#g" \
    -e "s#worker_connections 8192;#worker_connections 16384;#" \
    -e "s#^worker_processes 1;#worker_processes 1;\nworker_rlimit_nofile 20000;#" \
    "$PB/templates/nginx-proxy.conf.tmpl" >"$RUN/nginx-proxy.conf"
spawn "$RUN/nginx.out" taskset -c 0 nginx -p "$RUN" -c "$RUN/nginx-proxy.conf" -g 'daemon off;'
add nginx $port; port=$((port + 1))

if [ -n "$BARE" ]; then
  PB_LISTEN=127.0.0.1:$port PB_UPSTREAMS=$UPS PB_HASH_HEADER=X-Session-Id RUST_LOG=warn \
    spawn "$RUN/bare.out" taskset -c 0 "$BARE"
  add bare-pingora $port; port=$((port + 1))
fi

conf=$(berth_conf berth $port)
printf 'limits:\n  keepalive_timeout: 300s\n' >>"$conf"
RUST_LOG=warn spawn "$RUN/berth.out" taskset -c 0 "$BERTH" -c "$conf"
add berth $port; port=$((port + 1))
if [ -n "${BERTH_B:-}" ]; then
  conf=$(berth_conf berthb $port)
  printf 'limits:\n  keepalive_timeout: 300s\n' >>"$conf"
  RUST_LOG=warn spawn "$RUN/berthb.out" taskset -c 0 "$BERTH_B" -c "$conf"
  add berth-b $port; port=$((port + 1))
fi

for n in "${NAMES[@]}"; do wait_http "http://127.0.0.1:${PORT[$n]}/" 60; done

run_wrk() { # name conns seconds -> "rps p50 p99 p999 reqs errors"
  PB_IDS=10000 PB_SEED=42 PB_SESSION_LUA="$PB/session.lua" detach taskset -c 1 wrk -t1 -c"$2" -d"${3}s" --timeout 10s \
    -s "$HERE/tail.lua" "http://127.0.0.1:${PORT[$1]}/" 2>&1 | tee -a "$RUN/wrk.log" |
    awk '/^TAIL_RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
         print v["rps"], v["p50_us"], v["p99_us"], v["p999_us"], v["reqs"], v["errors"] }'
}

printf 'conns\tround\tname\trps\tp50_us\tp99_us\tp999_us\terrors\tcpu_us_per_req\n' >"$OUT/raw.tsv"
for conns in $CONNS_LIST; do
  log "$conns connections: warm-up"
  for n in "${NAMES[@]}"; do run_wrk "$n" "$conns" "$WARMUP" >/dev/null; done
  for r in $(seq 1 "$ROUNDS"); do
    order=("${NAMES[@]:$(( (r - 1) % ${#NAMES[@]} ))}" "${NAMES[@]:0:$(( (r - 1) % ${#NAMES[@]} ))}")
    for n in "${order[@]}"; do
      t0=$(group_ticks "${PID[$n]}")
      read -r rps p50 p99 p999 reqs errs < <(run_wrk "$n" "$conns" "$DURATION")
      t1=$(group_ticks "${PID[$n]}")
      cpr=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", n ? t * 1e6 / hz / n : 0 }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$conns" "$r" "$n" "$rps" "$p50" "$p99" "$p999" "$errs" "$cpr" >>"$OUT/raw.tsv"
      log "$conns conns, round $r, $n: $rps req/s, p50 ${p50}us p99 ${p99}us p99.9 ${p999}us, $cpr us CPU/req, errors $errs"
    done
  done
done

awk -F'\t' -v order="${NAMES[*]}" '
  NR > 1 { k = $1 SUBSEP $3; rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6
           p999[k] = p999[k] " " $7; cpu[k] = cpu[k] " " $9; err[k] += $8; if (!($1 in seen)) { seen[$1] = 1; cl[++nc] = $1 } }
  function med(s,   a, n, i, j, t) { n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  END {
    n = split(order, names, " ")
    printf "%6s %-13s %9s %9s %9s %10s %10s %8s %9s %9s %s\n", "conns", "gateway", "req/s", "p50_ms", "p99_ms", "p99.9_ms", "cpu_us/req", "errors", "p99/nginx", "p99/hapx", "rps/nginx"
    for (c = 1; c <= nc; c++) { C = cl[c]
      for (i = 1; i <= n; i++) { g = names[i]; k = C SUBSEP g
        printf "%6s %-13s %9.0f %9.2f %9.2f %10.2f %10.2f %8d %9.2f %9.2f %.2f\n", C, g, med(rps[k]), med(p50[k]) / 1000, med(p99[k]) / 1000, med(p999[k]) / 1000, med(cpu[k]), err[k],
          med(p99[k]) / med(p99[C SUBSEP "nginx"]), med(p99[k]) / med(p99[C SUBSEP "haproxy"]), med(rps[k]) / med(rps[C SUBSEP "nginx"]) } }
  }' "$OUT/raw.tsv" | tee "$OUT/table.txt"

# Part 2: the idle mix.
printf '%-13s %12s %12s %9s %12s %12s %14s\n' gateway "p99_ms" "p99_ms+idle" ratio "rss_MiB" "rss+idle_MiB" "KiB/idle_conn" | tee "$OUT/idle.txt"
for n in "${NAMES[@]}"; do
  [ "$n" = haproxy ] && continue
  run_wrk "$n" "$ACTIVE" "$WARMUP" >/dev/null
  read -r _ _ base _ _ _ < <(run_wrk "$n" "$ACTIVE" "$DURATION")
  rss0=$(group_rss_kb "${PID[$n]}")
  spawn "$RUN/idle-$n.out" taskset -c 1 python3 "$HERE/idle.py" "127.0.0.1:${PORT[$n]}" "$IDLE"
  idle_pid=$LAST_PID
  for _ in $(seq 1 600); do grep -q '^ready' "$RUN/idle-$n.out" 2>/dev/null && break; sleep 0.2; done
  ready=$(cat "$RUN/idle-$n.out")
  rss1=$(group_rss_kb "${PID[$n]}")
  read -r _ _ mixed _ _ errs < <(run_wrk "$n" "$ACTIVE" "$DURATION")
  kill -TERM -- "-$idle_pid" 2>/dev/null || true
  log "$n: $ready idle connections; active p99 ${base}us alone, ${mixed}us with them; RSS ${rss0} -> ${rss1} KiB; errors $errs"
  awk -v n="$n" -v b="$base" -v m="$mixed" -v r0="$rss0" -v r1="$rss1" -v idle="$IDLE" -v ready="$ready" 'BEGIN {
    printf "%-13s %12.2f %12.2f %9.2f %12.1f %12.1f %14.2f  (%s)\n", n, b / 1000, m / 1000, m / b, r0 / 1024, r1 / 1024, (r1 - r0) / idle, ready }' | tee -a "$OUT/idle.txt"
  sleep 2
done
log "results in $OUT"
