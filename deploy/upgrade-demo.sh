#!/usr/bin/env bash
# `make upgrade-demo`: Berth upgraded twice under load, the way deploy/systemd/berth.service
# reloads it, plus an upgrade with a broken config that is refused.
#
#   1. three demo backends and `berth -d` (a daemon with a pid file, as systemd starts it);
#   2. 200 header sessions under continuous load (berth-upgrade-load: keep-alive and new
#      connections; every request must succeed and reach its session's backend);
#   3. an admin drain of demo2 (state that lives only in Berth's memory);
#   4. twice: `berth -u -d -c FILE` then `kill -QUIT <old pid>` (the unit's ExecReload lines);
#      the old daemon hands over its sockets and sessions, finishes and exits;
#   5. `berth -u -c broken.yaml`: exit 2, the running Berth keeps serving.
# Ends with the load's summary; exits non-zero if a request failed or a session moved.
# Ports: BERTH_DEMO_PORT (proxy, 18080), BERTH_DEMO_ADMIN (19180), backends 19001-19003.
set -euo pipefail

BIN=${BIN:-target/debug}
PORT=${BERTH_DEMO_PORT:-18080}
ADMIN=${BERTH_DEMO_ADMIN:-19180}
SESSIONS=${SESSIONS:-200}
export BERTH_ADMIN_TOKEN=${BERTH_ADMIN_TOKEN:-demo}
dir=$(mktemp -d /tmp/berth-upgrade-demo.XXXXXX)
pids=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { echo "+ $*"; "$@"; }
admin() { curl -sS -H "Authorization: Bearer $BERTH_ADMIN_TOKEN" "$@"; }
# The pid that answers the admin listener (two do during an upgrade).
admin_pid() { curl -sS -o /dev/null -w '%header{x-berth-pid}' "http://127.0.0.1:$ADMIN/healthz" 2>/dev/null || true; }
wait_for() { # wait_for <seconds> <what> <command...>: run the command until it succeeds
  local until=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ $SECONDS -lt $until ] || { echo "timed out waiting for $what"; exit 1; }
    sleep 0.05
  done
}
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
gone() { ! alive "$1"; }
answers() { [ -n "$(admin_pid)" ]; }
serves() { [ "$(admin_pid)" = "$1" ]; }
replaced() { local p; p=$(cat "$dir/berth.pid" 2>/dev/null || true); [ -n "$p" ] && [ "$p" != "$1" ]; }

cleanup() { # SIGTERM to the daemon (it finishes within its grace period) and the rest
  local b; b=$(cat "$dir/berth.pid" 2>/dev/null || true)
  if [ -n "$b" ]; then
    kill "$b" 2>/dev/null || true
    for _ in $(seq 200); do gone "$b" && break; sleep 0.05; done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "logs: $dir"
}
trap cleanup EXIT

step "three demo backends, Berth as a daemon (ExecStart=berth -d -c FILE)"
for i in 1 2 3; do
  "$BIN/berth-demo-backend" "demo$i" "127.0.0.1:1900$i" >/dev/null &
  pids+=($!)
done
cat >"$dir/berth.yaml" <<EOF
server:
  threads: 2
  grace_period_seconds: 2
  graceful_shutdown_timeout_seconds: 2
  upgrade_sock: $dir/upgrade.sock
  pid_file: $dir/berth.pid
  daemon_wait_for_ready: true
listeners:
  - addr: 127.0.0.1:$PORT
admin:
  listen: 127.0.0.1:$ADMIN
upstreams:
  app:
    affinity:
      - { type: header, name: X-Session-Id }
    backends:
      - { id: demo1, addr: 127.0.0.1:19001 }
      - { id: demo2, addr: 127.0.0.1:19002 }
      - { id: demo3, addr: 127.0.0.1:19003 }
EOF
run "$BIN/berth" -d -c "$dir/berth.yaml" 2>>"$dir/berth.log"
wait_for 20 "Berth to answer" answers
echo "berth pid $(cat "$dir/berth.pid")"

step "$SESSIONS sessions under continuous load"
"$BIN/berth-upgrade-load" "127.0.0.1:$PORT" "$SESSIONS" "$dir/stop" &
load=$!
pids+=("$load")
sleep 2

step "drain demo2 through the admin API (state only Berth's memory holds)"
run admin -X POST "http://127.0.0.1:$ADMIN/admin/backends/demo2/drain"
echo

for round in 1 2; do
  old=$(cat "$dir/berth.pid")
  step "upgrade $round (systemctl reload: ExecReload lines of deploy/systemd/berth.service)"
  run "$BIN/berth" -u -d -c "$dir/berth.yaml" 2>>"$dir/berth.log"
  run kill -QUIT "$old"
  quit=$SECONDS
  wait_for 20 "the new pid file" replaced "$old"
  new=$(cat "$dir/berth.pid")
  wait_for 20 "pid $new to serve" serves "$new"
  echo "pid $new serves; pid $old finishes its connections (Pingora's 5 s, then the grace period)"
  wait_for 60 "pid $old to exit" gone "$old"
  echo "pid $old exited after $((SECONDS - quit)) s"
  admin "http://127.0.0.1:$ADMIN/admin/backends/demo2"
  echo
done

step "an upgrade with a broken config is refused; the running Berth keeps serving"
sed 's/threads: 2/threads: two/' "$dir/berth.yaml" >"$dir/broken.yaml"
set +e
"$BIN/berth" -u -c "$dir/broken.yaml"
code=$?
set -e
echo "exit code $code; still serving: pid $(admin_pid)"
[ "$code" = 2 ]

sleep 2
touch "$dir/stop"
step "result"
load_ok=0
wait "$load" || load_ok=$?
grep -h "took over from pid" "$dir/berth.log" | sed 's/^\[[^]]*\] //'
curl -sS "http://127.0.0.1:$ADMIN/metrics" | grep '^berth_upgrade_sessions_received_total'
exit "$load_ok"
