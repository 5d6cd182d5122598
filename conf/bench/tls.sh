#!/usr/bin/env bash
# tls.sh — TLS handshakes per second and CPU per request over HTTP/2, Berth beside HAProxy on
# the same certificate (`make bench-tls`). One run, same machine; a benchmark, not a test.
#
#   BERTH=/path/to/release/berth conf/bench/tls.sh
#
# Both gateways terminate TLS (ECDSA P-256 self-signed certificate, generated here; TLS 1.3,
# ALPN h2) with 1 worker thread pinned to core 0 (GW_CPU), in front of the peer harness's nginx
# backends (consistent hash on X-Session-Id, HTTP/1.1 keep-alive to the backends); h2load runs
# on core 1 (LOAD_CPU). Two phases per gateway, gateways one after the other:
#   handshakes: HANDSHAKE_BATCHES runs of `h2load -c 50 -n 50` (50 new TLS connections, one
#               request each): handshakes/s over the wall time, and the gateway's CPU (user +
#               system, from /proc/<pid>/stat) per handshake;
#   requests:   `h2load -c 20 -m 10 -n REQUESTS` (20 connections, 10 streams each): requests/s
#               and the gateway's CPU per request.
# With BARE=/path/to/bare-pingora built by conf/bench/bare-tls.sh, the bare Pingora reference
# terminates TLS too, between the two (Pingora's own cost of the same path).
# Prints a table and the ratios Berth / HAProxy (and Berth / bare Pingora); raw h2load output in $OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PB=${PEERBENCH_DIR:-$HERE/../../../shared/bench/peerbench}
BERTH=${BERTH:?path to a release berth binary}
OUT=${OUT:-/tmp/berth-bench-tls/$(date +%Y%m%d-%H%M%S)}
GW_CPU=${GW_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HANDSHAKE_BATCHES=${HANDSHAKE_BATCHES:-40}
REQUESTS=${REQUESTS:-200000}
for tool in h2load haproxy nginx openssl taskset; do
  command -v "$tool" >/dev/null || { echo "tls.sh: $tool is not installed (make bench-tls installs it)" >&2; exit 1; }
done
[ -f "$PB/templates/backends.nginx.conf.tmpl" ] || { echo "tls.sh: no peer harness at $PB" >&2; exit 1; }
mkdir -p "$OUT"
TOOL=tls RUN_PREFIX=berth-tls-run
# shellcheck source=conf/bench/common.sh
. "$HERE/common.sh"

start_backends taskset -c "$LOAD_CPU"

# One certificate for both.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$RUN/bench.key" -out "$RUN/bench.pem" 2>/dev/null
cat "$RUN/bench.pem" "$RUN/bench.key" >"$RUN/bench-haproxy.pem"

BERTH_PORT=18443 HAPROXY_PORT=18444
cat >"$RUN/berth.yaml" <<EOF
server:
  threads: 1
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  upgrade_sock: $RUN/berth-upgrade.sock
  pid_file: $RUN/berth.pid
listeners:
  - addr: 127.0.0.1:$BERTH_PORT
    tls:
      certificates: [{cert: "$RUN/bench.pem", key: "$RUN/bench.key"}]
admin: { listen: "127.0.0.1:19443" }
upstreams:
  bench:
    affinity: [{ type: header, name: X-Session-Id }]
    forward_headers: false
    sessions: { idle_ttl: 30m, max: 1000000 }
    backends:
      - { id: b1, addr: "127.0.0.1:19001" }
      - { id: b2, addr: "127.0.0.1:19002" }
      - { id: b3, addr: "127.0.0.1:19003" }
      - { id: b4, addr: "127.0.0.1:19004" }
EOF
cat >"$RUN/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    tune.bufsize 16384
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client  60s
    timeout server  60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $RUN/bench-haproxy.pem alpn h2,http/1.1
    default_backend be
backend be
    balance hdr(X-Session-Id)
    hash-type consistent
    http-reuse always
    server b1 127.0.0.1:19001
    server b2 127.0.0.1:19002
    server b3 127.0.0.1:19003
    server b4 127.0.0.1:19004
EOF

# cpu_ticks PID: user + system clock ticks of the process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# measure NAME PID PORT: the two phases against one gateway; appends a row to $OUT/table.tsv.
measure() {
  local name=$1 pid=$2 port=$3 url="https://127.0.0.1:$3/"
  local h2=(detach taskset -c "$LOAD_CPU" h2load --connect-to "127.0.0.1:$port" --tls13-ciphers=TLS_AES_128_GCM_SHA256 -H 'X-Session-Id: sid-00042')
  "${h2[@]}" -c 20 -m 10 -n 20000 "https://bench.test:$port/" >"$OUT/$name-warmup.txt" 2>&1
  local t0 c0 t1 c1
  t0=$(date +%s.%N); c0=$(cpu_ticks "$pid")
  for _ in $(seq 1 "$HANDSHAKE_BATCHES"); do
    "${h2[@]}" -c 50 -n 50 "https://bench.test:$port/" >>"$OUT/$name-handshakes.txt" 2>&1
  done
  t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
  local hs=$(( HANDSHAKE_BATCHES * 50 ))
  local ok_hs
  ok_hs=$(awk '/^requests:/ { s += $8 } END { print s + 0 }' "$OUT/$name-handshakes.txt")
  local hs_rate hs_cpu
  hs_rate=$(awk -v n="$hs" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
  hs_cpu=$(awk -v n="$hs" -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }')
  c0=$(cpu_ticks "$pid")
  "${h2[@]}" -c 20 -m 10 -n "$REQUESTS" "https://bench.test:$port/" >"$OUT/$name-requests.txt" 2>&1
  c1=$(cpu_ticks "$pid")
  local rps ok_req req_cpu
  rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$OUT/$name-requests.txt")
  ok_req=$(awk '/^requests:/ { print $8 }' "$OUT/$name-requests.txt")
  req_cpu=$(awk -v n="$REQUESTS" -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$hs_rate" "$hs_cpu" "$ok_hs/$hs" "$rps" "$req_cpu" "$ok_req/$REQUESTS" | tee -a "$OUT/table.tsv"
  log "$name: $url done"
}

printf 'gateway\thandshakes/s\tCPU us/handshake\tok\th2 req/s\tCPU us/request\tok\n' | tee "$OUT/table.tsv"

RUST_LOG=warn spawn "$OUT/berth.log" taskset -c "$GW_CPU" "$BERTH" -c "$RUN/berth.yaml"
pid=$LAST_PID
for _ in $(seq 1 100); do curl -skf -o /dev/null -H 'X-Session-Id: sid-00001' "https://127.0.0.1:$BERTH_PORT/" && break; sleep 0.1; done
measure berth "$pid" "$BERTH_PORT"
kill -TERM -- "-$pid" 2>/dev/null || true

if [ -n "${BARE:-}" ]; then
  BARE_PORT=18445
  PB_LISTEN=127.0.0.1:$BARE_PORT PB_UPSTREAMS=$UPS PB_TLS_CERT=$RUN/bench.pem PB_TLS_KEY=$RUN/bench.key \
    RUST_LOG=warn spawn "$OUT/bare-pingora.log" taskset -c "$GW_CPU" "$BARE"
  pid=$LAST_PID
  for _ in $(seq 1 100); do curl -skf -o /dev/null -H 'X-Session-Id: sid-00001' "https://127.0.0.1:$BARE_PORT/" && break; sleep 0.1; done
  measure bare-pingora "$pid" "$BARE_PORT"
  kill -TERM -- "-$pid" 2>/dev/null || true
fi

spawn "$OUT/haproxy.log" taskset -c "$GW_CPU" haproxy -db -f "$RUN/haproxy.cfg"
pid=$LAST_PID
for _ in $(seq 1 100); do curl -skf -o /dev/null -H 'X-Session-Id: sid-00001' "https://127.0.0.1:$HAPROXY_PORT/" && break; sleep 0.1; done
measure haproxy "$pid" "$HAPROXY_PORT"

awk -F'\t' 'NR > 1 { hs[$1] = $3; req[$1] = $6 }
  END { printf "ratio berth/haproxy: CPU per handshake %.2f, CPU per h2 request %.2f\n", hs["berth"] / hs["haproxy"], req["berth"] / req["haproxy"]
        if ("bare-pingora" in req) printf "ratio berth/bare-pingora: CPU per handshake %.2f, CPU per h2 request %.2f; bare-pingora/haproxy per h2 request %.2f\n", hs["berth"] / hs["bare-pingora"], req["berth"] / req["bare-pingora"], req["bare-pingora"] / req["haproxy"] }' \
  "$OUT/table.tsv" | tee -a "$OUT/table.tsv"
log "results in $OUT"
