# Shared by ab.sh and instructions.sh (sourced): scratch dir, clean-up by process group, the
# peer harness's nginx backends, and Berth configs written by peerbench.sh.
# Expects TOOL (log prefix), PB (the peer harness directory) and RUN_PREFIX.
UPS="127.0.0.1:19001,127.0.0.1:19002,127.0.0.1:19003,127.0.0.1:19004"
RUN=$(mktemp -d "/tmp/$RUN_PREFIX.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM
log() { echo "[$TOOL $(date +%H:%M:%S)] $*" >&2; }

# wait_http URL SECONDS: until URL answers 2xx, else exit.
wait_http() {
  for _ in $(seq 1 $(( $2 * 10 ))); do
    curl -fs -o /dev/null -H 'X-Session-Id: sid-00001' "$1" && return 0
    sleep 0.1
  done
  echo "$TOOL: nothing answers on $1" >&2
  exit 1
}

# track PID: killed (with its process group) at exit; not reported by the shell when it is.
track() { PIDS+=("$1"); disown "$1" 2>/dev/null || true; }

# start_backends [taskset-prefix...]: the harness's four nginx backends on 127.0.0.1:19001-4.
start_backends() {
  sed -e "s#@RUN@#$RUN#g" "$PB/templates/backends.nginx.conf.tmpl" >"$RUN/backends.conf"
  setsid "$@" nginx -p "$RUN" -e "$RUN/backends.err.log" -c "$RUN/backends.conf" \
    -g 'daemon off;' >/dev/null 2>&1 &
  track $!
  wait_http http://127.0.0.1:19001/ 10
}

# berth_conf NAME PORT [FORWARD]: a Berth config for gateway NAME listening on PORT
# (BENCH_MODE applies; FORWARD=1: with Berth's default forwarding headers, see peerbench.sh).
berth_conf() {
  local fwd=${3:-${BENCH_FORWARD:-0}}
  PB_LISTEN="127.0.0.1:$2" PB_PORT=$2 PB_RUN_DIR=$RUN/$1 PB_UPSTREAMS=$UPS \
    BENCH_MODE=${BENCH_MODE:-header} BENCH_FORWARD=$fwd BERTH_BIN=/bin/true \
    CONF_ONLY="$RUN/$1-fwd$fwd.yaml" "$HERE/peerbench.sh"
  echo "$RUN/$1-fwd$fwd.yaml"
}

# gateway_cmd NAME PORT CMD: CMD with %LISTEN%, %CONF% (like-for-like config) and %CONF_FWD%
# (Berth's default forwarding headers on) filled in.
gateway_cmd() {
  local cmd=$3
  cmd=${cmd//%LISTEN%/127.0.0.1:$2}
  if [[ $cmd == *%CONF_FWD%* ]]; then cmd=${cmd//%CONF_FWD%/$(berth_conf "$1" "$2" 1)}; fi
  if [[ $cmd == *%CONF%* ]]; then cmd=${cmd//%CONF%/$(berth_conf "$1" "$2")}; fi
  echo "$cmd"
}
