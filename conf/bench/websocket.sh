#!/usr/bin/env bash
# websocket.sh — memory per open idle WebSocket, Berth beside HAProxy on the same load
# (`make bench-websocket`). One run, same machine; a benchmark, not a test.
#
#   BIN=/path/to/release/bin SOCKETS=9000 conf/bench/websocket.sh
#
# Two demo backends (berth-demo-backend: /ws echo, one thread per socket). For each gateway
# (Berth with 1 worker thread, no affinity plugin; HAProxy 2.6 nbthread 1, mode http, roundrobin,
# timeout tunnel 1h), one after the other: warm up with 200 sockets, read the gateway's RSS
# (VmRSS of /proc/<pid>/status), open SOCKETS idle sockets with berth-ws-hold (each checked: the
# backend's name arrives), read the RSS again while they are held; after HOLD seconds every
# socket must still echo. Prints sockets held, RSS before/after and (after - before) / sockets.
set -euo pipefail
BIN=${BIN:?directory with release berth, berth-demo-backend and berth-ws-hold}
SOCKETS=${SOCKETS:-9000}
HOLD=${HOLD:-20}
OUT=${OUT:-/tmp/berth-bench-websocket/$(date +%Y%m%d-%H%M%S)}
command -v haproxy >/dev/null || { echo "websocket.sh: haproxy is not installed" >&2; exit 1; }
mkdir -p "$OUT"
# Each socket takes 2 descriptors in the gateway (client and backend side): the most sockets one
# process can hold is about half its descriptor limit. Raise the limit as far as allowed.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "descriptor limit: $(ulimit -n) (at most ~$(( $(ulimit -n) / 2 - 50 )) sockets per gateway process)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_backend() { # name port
  "$BIN/berth-demo-backend" "$1" "127.0.0.1:$2" >"$OUT/$1.out" 2>&1 &
  PIDS+=($!)
}
start_backend ws1 19601
start_backend ws2 19602
sleep 1

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# measure NAME PID PORT: prints "NAME held before_kib after_kib bytes_per_socket echoed"
measure() {
  local name=$1 pid=$2 port=$3
  "$BIN/berth-ws-hold" "127.0.0.1:$port" 200 0 >"$OUT/$name-warmup.out" 2>&1
  sleep 1
  local before; before=$(rss_kib "$pid")
  "$BIN/berth-ws-hold" "127.0.0.1:$port" "$SOCKETS" "$HOLD" >"$OUT/$name-hold.out" 2>&1 &
  local client=$!
  until grep -q '^HELD' "$OUT/$name-hold.out" 2>/dev/null; do sleep 0.5; done
  sleep 2
  local after; after=$(rss_kib "$pid")
  local held; held=$(awk '/^HELD/ {print $2}' "$OUT/$name-hold.out")
  wait "$client"
  local echoed; echoed=$(awk '/^ECHOED/ {print $2}' "$OUT/$name-hold.out")
  local per=$(( (after - before) * 1024 / (held > 0 ? held : 1) ))
  echo "$name $held $before $after $per $echoed"
}

cat >"$OUT/berth.yaml" <<EOF
server:
  threads: 1
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  upgrade_sock: $OUT/berth-upgrade.sock
  pid_file: $OUT/berth.pid
listeners:
  - addr: 127.0.0.1:19610
admin: { listen: "127.0.0.1:19611" }
upstreams:
  ws:
    affinity: []
    backends:
      - { id: ws1, addr: "127.0.0.1:19601" }
      - { id: ws2, addr: "127.0.0.1:19602" }
EOF
"$BIN/berth" -c "$OUT/berth.yaml" >"$OUT/berth.log" 2>&1 &
BERTH_PID=$!; PIDS+=($BERTH_PID)

cat >"$OUT/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $(( SOCKETS + 500 ))
defaults
  mode http
  timeout connect 1s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
frontend fe
  bind 127.0.0.1:19620
  default_backend be
backend be
  balance roundrobin
  server ws1 127.0.0.1:19601
  server ws2 127.0.0.1:19602
EOF
haproxy -f "$OUT/haproxy.cfg" -db >"$OUT/haproxy.log" 2>&1 &
HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)
sleep 2

{
  echo "gateway held rss_before_kib rss_after_kib bytes_per_socket echoed_after_${HOLD}s"
  measure berth "$BERTH_PID" 19610
  measure haproxy "$HAPROXY_PID" 19620
} | tee "$OUT/result.txt" | column -t
awk 'NR==2 {b=$5} NR==3 {h=$5} END {if (h > 0) printf "Berth / HAProxy memory per socket: %.2fx\n", b/h}' "$OUT/result.txt"
echo "raw output in $OUT"
