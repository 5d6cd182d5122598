# Berth — every target is documented here; `make help` lists them.
#
#   make run     build and start Berth on conf/berth.yaml with three demo backends (HTTP, h2c, HTTPS)
#   make run-fleet  three Berth processes (:8080, :8081, :8082) sharing sessions through one redis-server
#   make test    run every test (unit, property, config golden files, end-to-end, the JWT example crate)
#   make test-unwind  the plugin-panic end-to-end tests against the release build (LTO, unwinding)
#   make bench   criterion benchmarks of the routing core
#   make sim     load-placement simulation of the routing core (SIM_ARGS=--quick, --large, --help)
#   make bench-peers  Berth vs HAProxy vs NGINX side by side (../shared/bench/peerbench)
#   make bench-ab     Berth vs bare Pingora vs HAProxy, CPU per request, interleaved (conf/bench/ab.sh)
#   make bench-instructions  instructions and allocations per request, Berth vs bare Pingora (callgrind)
#   make bench-plugins  instructions per request of each affinity plugin against header (callgrind)
#   make bench-fleet  the Redis session registry vs the memory registry: req/s, CPU/request, Redis commands/request
#   make bench-tls    TLS handshakes/s and CPU per HTTP/2 request, Berth vs bare Pingora vs HAProxy (conf/bench/tls.sh)
#   make bench-websocket  memory per open idle WebSocket, Berth vs HAProxy (conf/bench/websocket.sh)
#   make bench-tail   p50/p99/p99.9 at 50, 1,000, 2,000 and 5,000 connections and 10,000 idle + 200 active, Berth vs HAProxy, NGINX, bare Pingora (conf/bench/tail.sh)
#   make lint    rustfmt check, clippy with warnings as errors, cargo-deny + cargo-audit
#   make fmt     format the code
#   make check-conf  validate every shipped config file with `berth -t`
#   make upgrade-demo  upgrade Berth twice under load, as systemd reloads it (deploy/upgrade-demo.sh)
#   make upgrade-soak  upgrade Berth again and again under 1,000,000 requests: 0 failed, 0 moved
#   make fuzz    run each fuzz target for FUZZ_SECONDS (default 60)

SHELL := /bin/bash
CARGO ?= cargo
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)
# Secrets for the demo only: real deployments set their own (see README).
export BERTH_ADMIN_TOKEN ?= demo
export BERTH_COOKIE_SECRET ?= demo-cookie-secret-change-me-0123456789
DEMO_BACKENDS := demo1=127.0.0.1:9001 demo2=127.0.0.1:9002 demo3=127.0.0.1:9003

.PHONY: help run run-fleet bench-fleet bench-plugins jwt demo-cert test test-unwind bench sim bench-peers bench-ab bench-tls bench-tail bench-websocket bench-instructions peer-tools bare-pingora lint lint-tools advisories fmt check-conf deps build upgrade-demo upgrade-soak fuzz

help:
	@sed -n '3,22p' Makefile

## deps: install what a fresh Debian machine lacks (cmake for Pingora's zlib-ng build,
## redis-server for the Redis tests, prometheus for promtool in the metrics tests,
## chromium + chromium-driver for the dashboard test, curl as the TLS client of the TLS
## tests). Runs apt-get only when something is missing.
deps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	command -v cc >/dev/null || missing="$$missing build-essential"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps jwt
	$(CARGO) build -p berth -p berth-tests --bins

## jwt: the example plugin crate outside the workspace (plugins/examples/jwt: own Cargo.toml
## and Cargo.lock), built against berth and berth-plugins by path into this target directory,
## so its berth-jwt binary sits beside berth for the end-to-end tests (tests/tests/e2e/jwt.rs).
JWT_MANIFEST := plugins/examples/jwt/Cargo.toml
jwt: deps
	$(CARGO) build --manifest-path $(JWT_MANIFEST) --target-dir $(TARGET_DIR)

## The self-signed certificate of conf/berth.yaml's HTTPS listener (127.0.0.1:8443), generated
## on this machine and never committed; renewed when older than 29 days.
DEMO_TLS_DIR := target/demo-tls
demo-cert: build
	@$(TARGET_DIR)/debug/berth-demo-cert $(DEMO_TLS_DIR)

run: build demo-cert
	@echo "demo cookie secret: $$BERTH_COOKIE_SECRET (set BERTH_COOKIE_SECRET to change it)"
	@pids=""; \
	trap 'kill $$pids 2>/dev/null; wait' EXIT; trap 'exit 130' INT TERM; \
	for b in $(DEMO_BACKENDS); do \
	  $(TARGET_DIR)/debug/berth-demo-backend $${b%%=*} $${b#*=} >/dev/null & pids="$$pids $$!"; \
	done; \
	echo "Berth on http://localhost:8080 (HTTP/1.1 and h2c) and https://127.0.0.1:8443 (TLS, HTTP/2; self-signed: $(DEMO_TLS_DIR)/berth-demo.pem); admin/metrics on http://127.0.0.1:9180."; \
	echo "Try: curl -i localhost:8080/   curl -k -i https://127.0.0.1:8443/   curl --http2-prior-knowledge -i localhost:8080/"; \
	echo "WebSocket: $(TARGET_DIR)/debug/berth-ws ws://localhost:8080/ws -H 'X-Session-Id: alice'"; \
	$(TARGET_DIR)/debug/berth -c conf/berth.yaml & pids="$$pids $$!"; \
	wait $$!

## run-fleet: redis-server on 127.0.0.1:$(FLEET_REDIS_PORT) (no persistence), the demo backends
## and three Berth processes on :8080, :8081, :8082 (admin :9180, :9181, :9182) from
## conf/examples/fleet.yaml, sharing sessions through that Redis. Ctrl-C stops them all.
FLEET_REDIS_PORT := 6390
FLEET_DIR := target/fleet
run-fleet: build
	@mkdir -p $(FLEET_DIR)
	@pids=""; \
	trap 'kill $$pids 2>/dev/null; wait' EXIT; trap 'exit 130' INT TERM; \
	redis-server --port $(FLEET_REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly no >$(FLEET_DIR)/redis.log & pids="$$pids $$!"; \
	for b in $(DEMO_BACKENDS); do \
	  $(TARGET_DIR)/debug/berth-demo-backend $${b%%=*} $${b#*=} >/dev/null & pids="$$pids $$!"; \
	done; \
	for n in 0 1 2; do \
	  sed -e "s/0.0.0.0:8080/0.0.0.0:808$$n/" -e "s/127.0.0.1:9180/127.0.0.1:918$$n/" \
	      -e "s/berth_fleet_upgrade.sock/berth_fleet_upgrade_$$n.sock/" -e "s/berth_fleet.pid/berth_fleet_$$n.pid/" \
	      -e "s/6390/$(FLEET_REDIS_PORT)/" conf/examples/fleet.yaml > $(FLEET_DIR)/gw$$n.yaml; \
	  $(TARGET_DIR)/debug/berth -c $(FLEET_DIR)/gw$$n.yaml >$(FLEET_DIR)/gw$$n.log 2>&1 & pids="$$pids $$!"; \
	done; \
	sleep 2; \
	echo "Fleet: Berth on :8080, :8081, :8082 (admin :9180, :9181, :9182), Redis on 127.0.0.1:$(FLEET_REDIS_PORT), logs in $(FLEET_DIR)/."; \
	echo "Try:"; \
	echo "  for p in 8080 8081 8082 8080; do curl -s -H 'X-Session-Id: alice' localhost:\$$p/; done   # one backend, whichever gateway"; \
	echo "  curl -s -H 'Authorization: Bearer $$BERTH_ADMIN_TOKEN' -X POST 127.0.0.1:9180/admin/backends/demo2/drain"; \
	echo "  curl -s -H 'Authorization: Bearer $$BERTH_ADMIN_TOKEN' 127.0.0.1:9182/admin/backends   # draining on :9182 too"; \
	echo "  redis-cli -p $(FLEET_REDIS_PORT) --scan --pattern 'berth:*'                       # the shared pins"; \
	echo "  curl -s 127.0.0.1:9181/metrics | grep berth_registry_                                 # round trips, cache hits"; \
	wait

test: build
	$(CARGO) test --workspace -- --test-threads=2
	$(CARGO) test --manifest-path $(JWT_MANIFEST) --target-dir $(TARGET_DIR) -- --test-threads=2

## test-unwind: tests/tests/e2e/plugin_sdk.rs (a plugin that panics is caught and counted, the
## next 1,000 requests served) against berth-test-plugins built with the `release` profile, the
## one `make run` and the deploy kit ship: that its LTO build, too, catches the panic. Not part
## of `make test`, which builds no release binary. (Built with `--profile release-abort`, the
## gateway dies on the panicking request and this fails.)
test-unwind: deps
	$(CARGO) build --release -p berth-tests --bin berth-test-plugins
	BERTH_TEST_PLUGINS_BIN=$(TARGET_DIR)/release/berth-test-plugins \
	  $(CARGO) test -p berth-tests --test e2e plugin_sdk -- --test-threads=2

bench: deps
	$(CARGO) bench -p berth-routing

## sim: one synthetic session trace replayed against Ketama alone, + overlay, + bounded load,
## + idle rebalancing (gateway/routing/SIMULATION.md). Release build; a few minutes by default.
SIM_ARGS ?=
sim:
	$(CARGO) build --release -p berth-routing --example sim
	$(TARGET_DIR)/release/examples/sim $(SIM_ARGS)

## bench-peers: release build, then the shared peer harness twice (header affinity, then cookie
## insert), each with HAProxy, NGINX and direct-to-backend interleaved. Needs root (priorities).
## Berth adds no forwarding headers there, as the peers' configs add none (BENCH_FORWARD=1: on).
PEERBENCH ?= ../shared/bench/peerbench/peerbench.sh
bench-peers: deps peer-tools
	$(CARGO) build --release -p berth
	for mode in header cookie; do \
	  BERTH_BIN=$(TARGET_DIR)/release/berth BENCH_MODE=$$mode GW_NAME=berth-$$mode \
	  GW_CMD='exec $(CURDIR)/conf/bench/peerbench.sh' GW_WAIT=60 $(PEERBENCH) || exit 1; \
	done

peer-tools:
	@command -v haproxy >/dev/null && command -v nginx >/dev/null && command -v wrk >/dev/null \
	  && command -v valgrind >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq haproxy nginx-light wrk curl valgrind; }

## The reference: ../shared/bench/bare-pingora, built with Berth's release settings + mimalloc.
BARE_PINGORA_DIR ?= /tmp/bare-pingora
bare-pingora:
	CARGO_TARGET_DIR=$(BARE_PINGORA_DIR) $(CARGO) build --release --features mimalloc \
	  --manifest-path ../shared/bench/bare-pingora/Cargo.toml

## bench-ab: Berth (BENCH_MODE=header|cookie) against bare Pingora and HAProxy, gateways pinned
## alone on core 0, ROUNDS interleaved rounds, medians of CPU per request (user and system).
## `berth` adds no forwarding headers, like the peers; `berth-fwd` is Berth's default.
bench-ab: deps peer-tools bare-pingora
	$(CARGO) build --release -p berth
	GWS='bare-pingora=$(BARE_PINGORA_DIR)/release/bare-pingora;berth=$(TARGET_DIR)/release/berth -c %CONF%;berth-fwd=$(TARGET_DIR)/release/berth -c %CONF_FWD%' \
	  conf/bench/ab.sh

## bench-tls: TLS handshakes per second and CPU per request over HTTP/2, Berth (release, 1
## thread) beside bare Pingora (conf/bench/bare-tls.sh) and HAProxy on the same certificate, one run (conf/bench/tls.sh; h2load from
## Debian's nghttp2-client, installed when missing).
bench-tls: deps peer-tools
	@command -v h2load >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nghttp2-client; }
	$(CARGO) build --release -p berth
	conf/bench/bare-tls.sh $(BARE_PINGORA_DIR)-tls
	BERTH=$(TARGET_DIR)/release/berth BARE=$(BARE_PINGORA_DIR)-tls/target/release/bare-pingora conf/bench/tls.sh

## bench-tail: tail latency under many connections (conf/bench/tail.sh): the peer harness's
## workload at CONNS_LIST (50 1000 2000 5000) connections through Berth, HAProxy, NGINX and bare
## Pingora, each alone on core 0, in one run; then 10,000 idle + 200 active connections
## (Berth, NGINX, bare Pingora): active p99 with and without the idle ones, RSS per idle one.
bench-tail: deps peer-tools bare-pingora
	$(CARGO) build --release -p berth
	BERTH=$(TARGET_DIR)/release/berth BARE=$(BARE_PINGORA_DIR)/release/bare-pingora conf/bench/tail.sh

## bench-websocket: memory per open idle WebSocket through Berth and HAProxy, 9,000 sockets each
## by default: 2 descriptors per socket under a 20,000 descriptor limit (conf/bench/websocket.sh;
## SOCKETS=N to change).
bench-websocket: deps peer-tools
	$(CARGO) build --release -p berth -p berth-tests --bins
	BIN=$(TARGET_DIR)/release conf/bench/websocket.sh

## bench-fleet: the same release Berth on the memory registry and on a redis-server (interleaved
## rounds of conf/bench/ab.sh), plus Redis commands per warm request (conf/bench/fleet.sh).
bench-fleet: deps peer-tools
	$(CARGO) build --release -p berth
	BERTH=$(TARGET_DIR)/release/berth conf/bench/fleet.sh

## bench-instructions: the same workload under callgrind: user-space instructions and heap
## allocations per request, independent of the machine's load.
bench-instructions: deps peer-tools bare-pingora
	$(CARGO) build --release -p berth
	GWS='berth=$(TARGET_DIR)/release/berth -c %CONF%;berth-fwd=$(TARGET_DIR)/release/berth -c %CONF_FWD%;bare-pingora=$(BARE_PINGORA_DIR)/release/bare-pingora' \
	  conf/bench/instructions.sh

## bench-plugins: what each affinity plugin costs per request under callgrind (instructions and
## allocations, conf/bench/plugins.sh): header, query, path, connection and the example crate's
## jwt (HS256), each alone in the chain, on one request stream carrying all their keys.
## BASE_BERTH=<another release berth> adds it beside this one on the header plugin.
bench-plugins: deps peer-tools
	$(CARGO) build --release -p berth
	$(CARGO) build --release --manifest-path $(JWT_MANIFEST) --target-dir $(TARGET_DIR)
	BERTH=$(TARGET_DIR)/release/berth BERTH_JWT=$(TARGET_DIR)/release/berth-jwt conf/bench/plugins.sh

## lint: formatting, clippy, then the dependency policy in deny.toml: licenses, bans and
## sources (cargo-deny, no network needed), and the RustSec advisories (cargo-deny and
## cargo-audit). The advisory database is fetched from GitHub; when it cannot be fetched the
## advisory check prints BLOCKED with the error and the rest of lint still decides.
lint: deps lint-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path $(JWT_MANIFEST) -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path $(JWT_MANIFEST) --target-dir $(TARGET_DIR) --all-targets -- -D warnings
	$(CARGO) deny --offline check --hide-inclusion-graph licenses bans sources
	@$(MAKE) --no-print-directory advisories

lint-tools:
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked cargo-deny
	@command -v cargo-audit >/dev/null || $(CARGO) install --locked cargo-audit

advisories: lint-tools
	@if out=$$($(CARGO) deny fetch db 2>&1); then \
	  $(CARGO) deny check --hide-inclusion-graph advisories && $(CARGO) audit; \
	else \
	  echo "advisories: BLOCKED: the RustSec advisory database could not be fetched:"; \
	  echo "$$out" | tail -n 5; \
	fi

## upgrade-soak: tests/tests/e2e/upgrade_soak.rs at full size: Berth (debug build, as the tests)
## upgraded at least SOAK_UPGRADES times, one after the other, under at least SOAK_REQUESTS
## requests from SOAK_THREADS client threads (half keep-alive, half a new connection per
## request; header, cookie and learned sessions). Fails if a request fails or a session moves;
## prints a line per upgrade and the totals. `make test` runs it small (20,000 requests, 3).
SOAK_REQUESTS ?= 1000000
SOAK_UPGRADES ?= 10
SOAK_THREADS ?= 12
upgrade-soak: build
	BERTH_SOAK_REQUESTS=$(SOAK_REQUESTS) BERTH_SOAK_UPGRADES=$(SOAK_UPGRADES) \
	  BERTH_SOAK_THREADS=$(SOAK_THREADS) \
	  $(CARGO) test -p berth-tests --test e2e -- upgrade_soak:: --nocapture

## fuzz: each target in tests/fuzz/ (token, chain, xff, config) for FUZZ_SECONDS seconds with
## cargo-fuzz (libFuzzer) on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the
## instrumentation flags cargo-fuzz passes; no sanitizer (Berth is safe Rust: the run looks for
## panics, overflows, hangs and memory blow-ups). A crash stops the run and is saved in
## tests/fuzz/artifacts/<target>/; the corpus grows in tests/fuzz/corpus/<target>/ (seeds: tests/fuzz/seeds/).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= token chain xff config
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd tests/fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -s none $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    || exit 1; \
	done

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path $(JWT_MANIFEST)

check-conf: build demo-cert
	@for f in conf/*.yaml conf/examples/*.yaml deploy/docker/berth.yaml; do $(TARGET_DIR)/debug/berth -t -c $$f || exit 1; done

## upgrade-demo: three demo backends, `berth -d`, 200 sessions under load, an admin drain, then
## two upgrades as deploy/systemd/berth.service reloads (berth -u -d; kill -QUIT old) and one
## refused (broken config). Fails if a request failed or a session moved.
upgrade-demo: build
	@command -v curl >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq curl; }
	BIN=$(TARGET_DIR)/debug ./deploy/upgrade-demo.sh
