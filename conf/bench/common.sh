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

# detach CMD...: exec CMD in a new session (its own process group, killed by group at exit)
# whose scheduler autogroup and nice are BENCH_NICE (-20 as root). With
# sched_autogroup_enabled=1 every session is an autogroup and a plain nice only ranks tasks
# inside their own: without this a benchmark's processes get no more CPU than a build running
# beside them (peerbench's `pin` does the same). Same PID as CMD (setsid and bash exec).
BENCH_NICE=${BENCH_NICE:-$([ "$(id -u)" = 0 ] && echo -20 || echo 0)}
# With DETACH_PIDFILE set, CMD's PID is written there (a backgrounded shell function's $! is
# the subshell's, not CMD's): see `spawn`.
detach() {
  setsid bash -c 'if [ "$0" != 0 ] && [ -w /proc/self/autogroup ]; then echo "$0" >/proc/self/autogroup 2>/dev/null || true; fi
    if [ -n "${DETACH_PIDFILE:-}" ]; then echo $$ >"$DETACH_PIDFILE"; fi
    exec nice -n "$0" "$@"' "$BENCH_NICE" "$@"
}

# spawn LOG CMD...: `detach CMD` in the background, output to LOG; CMD's PID in LAST_PID,
# tracked (killed with its process group at exit).
spawn() {
  local log=$1 pidfile
  shift
  pidfile=$(mktemp "$RUN/pid.XXXXXX")
  rm -f "$pidfile"
  DETACH_PIDFILE=$pidfile detach "$@" >"$log" 2>&1 &
  for _ in $(seq 1 100); do [ -s "$pidfile" ] && break; sleep 0.05; done
  LAST_PID=$(cat "$pidfile")
  track "$LAST_PID"
}

# track PID: killed (with its process group) at exit; not reported by the shell when it is.
track() { PIDS+=("$1"); disown "$1" 2>/dev/null || true; }

# start_backends [taskset-prefix...]: the harness's four nginx backends on 127.0.0.1:19001-4.
start_backends() {
  sed -e "s#@RUN@#$RUN#g" "$PB/templates/backends.nginx.conf.tmpl" >"$RUN/backends.conf"
  spawn /dev/null "$@" nginx -p "$RUN" -e "$RUN/backends.err.log" -c "$RUN/backends.conf" \
    -g 'daemon off;'
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
