#!/usr/bin/env bash
# with-registry.sh BERTH CONF REDIS_URL — run BERTH on a copy of CONF (a benchmark config
# written by common.sh) whose upstreams share their sessions through the Redis at REDIS_URL
# (a top-level `registry:`). Used by fleet.sh as the "redis" gateway.
set -euo pipefail
bin=$1 conf=$2 url=$3
out="${conf%.yaml}-redis.yaml"
cp "$conf" "$out"
printf '\nregistry:\n  type: redis\n  url: %s\n  key_prefix: bench\n' "$url" >>"$out"
exec "$bin" -c "$out"
