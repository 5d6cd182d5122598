#!/usr/bin/env bash
# What `make test` costs at each of the given revisions, with the berth-tests crate compiled
# from scratch (everything else already built), e.g. before and after the end-to-end tests
# became one binary:
#
#   tests/time-test.sh f6d1265 15b34c0 HEAD      # each revision once, in this order
#   ROUNDS=2 tests/time-test.sh A B               # A B A B
#
# For each it clones this repository once into $WORK (default /tmp/berth-time-test), checks
# the revision out there, builds everything once untimed (its own target dir, shared by all
# revisions: only tests/ differs; CARGO_TARGET_DIR overrides it), then `cargo clean -p
# berth-tests` and times the three steps
# of `make test`: `cargo build -p berth -p berth-tests --bins`, `cargo test --workspace
# --no-run` (compiling and linking the test executables), `cargo test --workspace --
# --test-threads=2`. It prints the seconds of each, the berth-tests test executables (count
# and total size) and the test result. Wall-clock times on a shared machine are noisy: run
# several rounds, interleaved.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/berth-time-test}
ROUNDS=${ROUNDS:-1}
[ $# -gt 0 ] || { sed -n '2,16p' "$0"; exit 2; }
mkdir -p "$WORK"
[ -d "$WORK/src/.git" ] || git clone -q "$ROOT" "$WORK/src"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WORK/target}"
src="$WORK/src"
now() { date +%s.%N; }
secs() { printf '%.1f' "$(echo "$2 - $1" | bc)"; }
n=0
for round in $(seq 1 "$ROUNDS"); do
  for rev in "$@"; do
    n=$((n + 1))
    sha=$(git -C "$ROOT" rev-parse --short "$rev")
    git -C "$src" fetch -q "$ROOT" '+refs/heads/*:refs/remotes/root/*'
    git -C "$src" checkout -q --detach "$(git -C "$ROOT" rev-parse "$rev")"
    log="$WORK/$n-$sha"
    ( cd "$src" && cargo build -q -p berth -p berth-tests --bins && cargo test -q --workspace --no-run ) \
      > "$log.warm" 2>&1
    ( cd "$src" && cargo clean -q -p berth-tests )
    t0=$(now)
    ( cd "$src" && cargo build -p berth -p berth-tests --bins ) > "$log.build" 2>&1
    t1=$(now)
    ( cd "$src" && cargo test --workspace --no-run --message-format=json-render-diagnostics ) \
      > "$log.norun" 2> "$log.norun.err"
    t2=$(now)
    rc=0
    ( cd "$src" && cargo test --workspace -- --test-threads=2 ) > "$log.test" 2>&1 || rc=$?
    t3=$(now)
    # berth-tests' test executables: its lib's and bins' unit tests and its test targets.
    mapfile -t exes < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["profile"]["test"] and "berth-tests" in m["package_id"]:
        print(m["executable"])' "$log.norun")
    size=0
    for e in "${exes[@]}"; do size=$((size + $(stat -c %s "$e"))); done
    passed=$(grep -h '^test result' "$log.test" | awk '{p+=$4; f+=$6} END {print p" passed, "f" failed"}')
    printf '%s round %s: build %ss, compile+link tests %ss, run %ss, total %ss; berth-tests test executables %d, %d MiB; %s; exit %s\n' \
      "$sha" "$round" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(secs "$t2" "$t3")" \
      "$(secs "$t0" "$t3")" "${#exes[@]}" $((size / 1048576)) "$passed" "$rc"
  done
done
