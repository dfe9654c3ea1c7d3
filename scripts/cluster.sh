#!/usr/bin/env bash
# `make cluster`: a 3-server NATS JetStream cluster (replicas 3) and three
# Touchline nodes on loopback, fed by the simulator; prints the URLs and
# runs until Ctrl-C, then stops everything it started.
#
# Node a reads the simulator's feed and publishes its events; b and c read
# none. Each applies the partitions it owns. (Two nodes on redundant
# connections of a real provider would publish byte-identical messages,
# stored once; the simulator plays each connection its own stream, so only
# one reads it here.) State lives in ./data/cluster (removed at
# start: the cluster starts empty).
set -euo pipefail
cd "$(dirname "$0")/.."

NATS=.tools/nats/bin/nats-server
TL=./target/release/touchline
DIR=./data/cluster
TOKEN=${TOUCHLINE_ADMIN_TOKEN:-touchline-demo-admin-token}
[ -x "$NATS" ] || { echo "no $NATS: run make nats" >&2; exit 1; }
[ -x "$TL" ] || { echo "no $TL: run make build" >&2; exit 1; }

rm -rf "$DIR"
mkdir -p "$DIR"
NATS_PIDS=()
PIDS=()
stop() {
    trap - EXIT INT TERM
    # Touchline nodes and the simulator first (the nodes hand their
    # partitions over through NATS), then NATS.
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for pid in "${NATS_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

ROUTES=nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224
URLS=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
for i in 0 1 2; do
    "$NATS" -js -sd "$DIR/nats-$i" -a 127.0.0.1 -p $((4222 + i)) -m $((8222 + i)) \
        --server_name "n$i" --cluster_name touchline \
        --cluster "nats://127.0.0.1:$((6222 + i))" --routes "$ROUTES" \
        >"$DIR/nats-$i.log" 2>&1 &
    NATS_PIDS+=("$!")
done
# JetStream is ready once every server is healthy and names the same
# elected meta leader (/jsz).
leader() { curl -sf "http://127.0.0.1:$((8222 + $1))/jsz" 2>/dev/null | python3 -c \
    'import json,sys; print(json.load(sys.stdin).get("meta_cluster",{}).get("leader",""))' 2>/dev/null || true; }
for _ in $(seq 1 150); do
    l0=$(leader 0); l1=$(leader 1); l2=$(leader 2)
    if [ -n "$l0" ] && [ "$l0" = "$l1" ] && [ "$l1" = "$l2" ] && \
        curl -sf http://127.0.0.1:8222/healthz >/dev/null && curl -sf http://127.0.0.1:8223/healthz >/dev/null && \
        curl -sf http://127.0.0.1:8224/healthz >/dev/null; then
        break
    fi
    sleep 0.2
done
[ -n "$(leader 0)" ] || { echo "the NATS cluster elected no leader: see $DIR/nats-*.log" >&2; exit 1; }

"$TL" simulate --listen 127.0.0.1:0 >"$DIR/sim.out" 2>"$DIR/sim.log" &
PIDS=("$!" "${PIDS[@]}")
for _ in $(seq 1 100); do grep -q '^SIMULATOR' "$DIR/sim.out" 2>/dev/null && break; sleep 0.1; done
SIM=$(grep '^SIMULATOR' "$DIR/sim.out")
FEED=$(echo "$SIM" | sed -E 's/.*feed=([^ ]+).*/\1/')
API=$(echo "$SIM" | sed -E 's/.*api=([^ ]+).*/\1/')

node() { # id http-port [feed]
    local feed=()
    [ -n "${3:-}" ] && feed=(--feed-connect "$3")
    TOUCHLINE_ADMIN_TOKEN=$TOKEN "$TL" serve --cluster "$URLS" --node-id "$1" --cluster-replicas 3 \
        --http "127.0.0.1:$2" --data "$DIR/$1" --api-url "$API" ${feed[@]+"${feed[@]}"} \
        >"$DIR/$1.out" 2>"$DIR/$1.log" &
    PIDS=("$!" "${PIDS[@]}")
}
ready() {
    for _ in $(seq 1 150); do grep -q '^READY' "$DIR/$1.out" 2>/dev/null && return 0; sleep 0.2; done
    echo "node $1 did not start: see $DIR/$1.log" >&2
    exit 1
}
# One after the other: the first creates the streams (replicated three
# times, a Raft group each), the others find them.
node a 8081 "$FEED"; ready a
node b 8082; ready b
node c 8083; ready c

cat <<TXT
Touchline cluster on NATS JetStream (3 servers, replicas 3), fed by the simulator:
  node a: http://127.0.0.1:8081/   (reads the feed)
  node b: http://127.0.0.1:8082/   (no feed: applies the partitions it owns)
  node c: http://127.0.0.1:8083/   (no feed: applies the partitions it owns)
  who owns what: curl http://127.0.0.1:8081/api/nodes
  NATS: $URLS   logs: $DIR/*.log
Kill a node (kill -9 \$(pgrep -f 'node-id b')) and watch the others take over. Ctrl-C stops everything.
TXT
wait
