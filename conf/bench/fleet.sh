#!/usr/bin/env bash
# fleet.sh — the Redis session registry against the memory registry (`make bench-fleet`):
# the same Berth build twice under ab.sh's interleaved rounds (the peer harness's workload:
# X-Session-Id from a pool of 10,000 sessions, `wrk -t1 -c50`, gateways pinned on core 0),
# one gateway on the embedded memory registry and one sharing its pins through a
# redis-server started here (core 1, no persistence). After a warm-up that pins every session
# (WARMUP, default 10 s per gateway), Redis' `INFO commandstats` is read, and again after the
# rounds: the commands per warm request of the redis gateway = every command Redis executed
# (scripts' inner calls included) over the requests it served in the rounds. Knobs: BERTH
# (binary), ROUNDS (5), DURATION (8), WARMUP (10), OUT. Loopback only; kills what it started.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BERTH=${BERTH:?'BERTH=/path/to/release/berth'}
OUT=${OUT:-/tmp/berth-fleet/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "fleet.sh: redis-server is not installed (make deps)" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid taskset -c 1 redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
rpid=$!
trap 'kill -TERM -- "-$rpid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" INFO commandstats >"$OUT/commandstats-start.txt"
GWS="memory=$BERTH -c %CONF%;redis=$HERE/with-registry.sh $BERTH %CONF% redis://127.0.0.1:$port" \
  HAPROXY=0 WARMUP=${WARMUP:-10} OUT="$OUT" \
  AFTER_WARMUP="redis-cli -p $port INFO commandstats >$OUT/commandstats-warm.txt" \
  "$HERE/ab.sh"
redis-cli -p "$port" INFO commandstats >"$OUT/commandstats-end.txt"
sum() { awk -F'[=,:]' '/^cmdstat_/ { t += $3 } END { print t + 0 }' "$1"; }
warm=$(sum "$OUT/commandstats-warm.txt"); end=$(sum "$OUT/commandstats-end.txt")
dur=${DURATION:-8}
reqs=$(awk -F'\t' -v d="$dur" 'NR > 1 && $2 == "redis" { n += $3 * d } END { printf "%.0f", n }' "$OUT/raw.tsv")
{
  echo "redis commands during the rounds: $((end - warm)), by command:"
  python3 - "$OUT/commandstats-warm.txt" "$OUT/commandstats-end.txt" <<'PY'
import re, sys
def calls(path):
    return {m[1]: int(m[2]) for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", open(path).read(), re.M)}
a, b = calls(sys.argv[1]), calls(sys.argv[2])
for name in sorted(b, key=lambda n: -(b[n] - a.get(n, 0))):
    if b[name] - a.get(name, 0):
        print(f"  {name} {b[name] - a.get(name, 0)}")
PY
  echo "requests served by the redis gateway in the rounds: $reqs"
  awk -v c=$((end - warm)) -v r="$reqs" 'BEGIN { printf "redis commands per warm request: %.4f\n", c / r }'
  echo "warm-up (first pins of the session set): $warm commands"
} | tee "$OUT/commands.txt"
