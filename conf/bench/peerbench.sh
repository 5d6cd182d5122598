#!/usr/bin/env bash
# Runs Berth as the gateway under test of ../shared/bench/peerbench (see `make bench-peers`).
# Writes a config from the harness's environment (PB_LISTEN, PB_UPSTREAMS, PB_HASH_HEADER,
# PB_RUN_DIR) and execs Berth in the foreground. BENCH_MODE=header (default) keys sessions on
# the X-Session-Id header; BENCH_MODE=cookie puts a cookie plugin in insert mode first (the
# benchmark client keeps no cookies, so every response carries a freshly signed cookie, as
# HAProxy's `cookie SRV insert` does in the same run). CONF_ONLY=path writes the config there
# and exits (used by conf/bench/ab.sh). BENCH_MODE=query|path|connection|jwt puts that plugin
# alone in the chain (conf/bench/plugins.sh: the cost of each plugin against header; jwt needs
# the berth-jwt binary and JWT_SECRET).
#
# Like for like: the harness's HAProxy and NGINX add no forwarding headers, nor does bare
# Pingora, so Berth runs with `forward_headers: false` (it still sends its X-Berth-Affinity
# signal). BENCH_FORWARD=1 keeps Berth's default (X-Forwarded-For and -Proto on every request,
# about 2,900 more instructions per request: `make bench-instructions` prints both).
set -euo pipefail
bin=${BERTH_BIN:?path to the berth binary}
mode=${BENCH_MODE:-header}
mkdir -p "$PB_RUN_DIR"
conf=${CONF_ONLY:-$PB_RUN_DIR/berth-$mode.yaml}
admin_port=$(( ${PB_PORT:-18082} + 1000 ))
{
  echo "server:"
  echo "  threads: 1"
  echo "  grace_period_seconds: 1"
  echo "  graceful_shutdown_timeout_seconds: 1"
  echo "  upgrade_sock: $PB_RUN_DIR/berth-upgrade.sock"
  echo "  pid_file: $PB_RUN_DIR/berth.pid"
  echo "listeners: [{ addr: \"$PB_LISTEN\" }]"
  echo "admin: { listen: \"127.0.0.1:$admin_port\" }"
  echo "upstreams:"
  echo "  bench:"
  echo "    affinity:"
  case "$mode" in
    cookie)
      echo "      - type: cookie"
      echo "        keys: [{ id: k1, secret: \"peerbench-cookie-secret-0123456789abcdef\" }]"
      echo "      - { type: header, name: \"${PB_HASH_HEADER:-X-Session-Id}\" }" ;;
    header) echo "      - { type: header, name: \"${PB_HASH_HEADER:-X-Session-Id}\" }" ;;
    query) echo "      - { type: query, name: room }" ;;
    path) echo "      - { type: path, pattern: \"/doc/{id}/...\" }" ;;
    connection) echo "      - { type: connection }" ;;
    jwt) echo "      - { type: jwt, claim: sub, secret_env: JWT_SECRET }" ;;
    *) echo "peerbench.sh: unknown BENCH_MODE $mode" >&2; exit 1 ;;
  esac
  [ "${BENCH_FORWARD:-0}" = 1 ] || echo "    forward_headers: false"
  echo "    sessions: { idle_ttl: 30m, max: 1000000 }"
  echo "    backends:"
  i=1
  for addr in ${PB_UPSTREAMS//,/ }; do
    echo "      - { id: b$i, addr: \"$addr\" }"
    i=$((i + 1))
  done
} > "$conf"
[ -z "${CONF_ONLY:-}" ] || exit 0
RUST_LOG=${RUST_LOG:-warn} exec "$bin" -c "$conf"
