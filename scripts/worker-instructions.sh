#!/usr/bin/env bash
# Instructions `offload worker` spends per job, and the queue gateway per job stored, counted by callgrind: a count, not a time, so it
# holds whatever else the machine is doing. For comparing two builds of offload (before and after
# a change to the queue or the worker) when the machine will not hold still for a bench. Then
# the same for a gateway answering tiny requests with each of $STRATEGIES (queue, pool, auto).
#
# A gateway (not counted) stores N tiny jobs (count n=1, so the work itself is nothing) in a
# SQLite file; one worker with one job thread, under callgrind, drains them and is stopped. Run
# with two sizes; the difference over the difference in jobs is the cost per job, without the
# start-up and idle waits both runs share.
#
#   scripts/worker-instructions.sh BIN [SMALL] [LARGE]     e.g. target/release/offload 300 1500
#
# SERVE_ARGS and WORKER_ARGS add flags to the gateway and the worker under count (say
# `--otlp-endpoint http://127.0.0.1:4318` with a collector there, or `--metrics-addr 0`), to
# count what a feature costs per request and per job. KEEP=1 keeps the callgrind files (for
# callgrind_annotate); GATEWAY_ONLY=1 counts the gateways alone.
set -euo pipefail
BIN=$(realpath "$1")
SMALL=${2:-300}
LARGE=${3:-1500}
PORT=${PORT:-3197}
dir=$(mktemp -d)
cleanup() {
    pkill -f "offload serve --strategy [a-z]* --queue sqlite://$dir" 2>/dev/null || true
    pkill -f "offload worker --queue sqlite://$dir" 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "callgrind files kept in $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT

done_jobs() { # DB -> jobs done
    python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"select count(*) from jobs where status='done'\").fetchone()[0])" "$1"
}

# Instructions (Ir) for a worker draining N stored jobs.
count() {
    local n=$1 db="$dir/q-$1-$RANDOM.db"
    "$BIN" serve --strategy queue --queue "sqlite://$db" --bind 127.0.0.1 --port "$PORT" \
        >"$dir/serve.log" 2>&1 &
    local serve=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
        sleep 0.1
    done
    "$BIN" load "http://127.0.0.1:$PORT/heavy" -m POST -H 'content-type: application/json' \
        -b '{"work":"count","n":1}' -a "$n" -c 4 >/dev/null
    kill "$serve"
    wait "$serve" || true
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$n" \
        "$BIN" worker --queue "sqlite://$db" --concurrency 1 ${WORKER_ARGS:-} >"$dir/worker.log" 2>&1 &
    local worker=$!
    until [ "$(done_jobs "$db")" -ge "$n" ]; do sleep 0.5; done
    kill -TERM "$worker"
    wait "$worker" || true
    grep -E '^(summary|totals):' "$dir/cg.$n" | head -1 | awk '{print $2}'
}

# Instructions (Ir) for a gateway answering N requests of count n=1 with `strategy` (queue:
# storing N jobs; pool and auto: running them, the pool's threads counted too).
count_gateway() {
    local n=$1 strategy=$2 db="$dir/g-$1-$RANDOM.db"
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.g$n" "$BIN" serve --strategy "$strategy" \
        --queue "sqlite://$db" --bind 127.0.0.1 --port "$PORT" ${SERVE_ARGS:-} >"$dir/serve.log" 2>&1 &
    local serve=$!
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
        sleep 0.1
    done
    "$BIN" load "http://127.0.0.1:$PORT/heavy" -m POST -H 'content-type: application/json' \
        -b '{"work":"count","n":1}' -a "$n" -c 4 --timeout 60s >/dev/null
    kill -TERM "$serve"
    wait "$serve" || true
    grep -E '^(summary|totals):' "$dir/cg.g$n" | head -1 | awk '{print $2}'
}

if [ -z "${GATEWAY_ONLY:-}" ]; then
    small=$(count "$SMALL")
    large=$(count "$LARGE")
    echo "$BIN worker: $SMALL jobs $small Ir, $LARGE jobs $large Ir, per job $(( (large - small) / (LARGE - SMALL) )) Ir"
fi
for strategy in ${STRATEGIES:-queue pool auto}; do
    small=$(count_gateway "$SMALL" "$strategy")
    large=$(count_gateway "$LARGE" "$strategy")
    echo "$BIN serve --strategy $strategy: $SMALL requests $small Ir, $LARGE requests $large Ir, per request $(( (large - small) / (LARGE - SMALL) )) Ir"
done
