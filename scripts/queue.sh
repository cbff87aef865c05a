#!/usr/bin/env bash
# The queue strategy's figures on SQLite, Redis and Postgres, each run RUNS times (medians at the end):
#  1. accepted/s on /heavy?n=$SMALL_N at -c 100 -d $DURATION (offload load), one worker running on
#     the same machine; the backlog when the load stops, the time to drain it, and completed/s =
#     jobs done / (load time + drain time);
#  2. the same with the default work (count 20,000,000) for a shorter run (-d $DEFAULT_DURATION);
#  3. pickup latency of an idle worker ($PICKUPS jobs, one at a time, with pauses);
#  4. enqueue-to-done latency in an open loop at $RATE jobs/s of the default work (below what
#     one worker sustains), ids recorded by scripts/queue_jobs.py.
# The load generator, the gateway and the worker share this machine's cores. Raw rows in $OUT.
# Usage: scripts/queue.sh [sqlite] [redis] [postgres]
#   (env: REDIS_URL, POSTGRES_URL, RUNS, DURATION, SMALL_N, PICKUPS, ONLY=pickup, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/offload
helper=$PWD/scripts/queue_jobs.py
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
# ONLY=pickup measures the idle pickup alone (the quickest figure).
ONLY=${ONLY:-}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
DEFAULT_DURATION=${DEFAULT_DURATION:-1}
SMALL_N=${SMALL_N:-200000}
PICKUPS=${PICKUPS:-100}
RATE=${RATE:-100}
OUT=${OUT:-$(mktemp -d /tmp/offload-queue-bench.XXXXXX)}
backends=("$@"); [ ${#backends[@]} -gt 0 ] || backends=(sqlite redis)
mkdir -p "$OUT"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

redis_cli() { redis-cli -u "$REDIS_URL" "$@"; }
psql_q() { psql "$POSTGRES_URL" -qtA -v ON_ERROR_STOP=1 "$@"; }

# Starts `offload $@` in the background, waits for the line matching $ready on its stdout,
# and leaves the pid in $started and the line in $line.
start() {
  local ready=$1; shift
  local log; log=$(mktemp -p "$tmp")
  "$bin" "$@" >"$log" 2>>"$OUT/stderr.log" &
  started=$!
  pids+=("$started")
  for _ in $(seq 200); do
    line=$(grep -m1 "$ready" "$log" || true)
    [ -n "$line" ] && return 0
    kill -0 "$started" 2>/dev/null || { echo "offload $* exited" >&2; exit 1; }
    sleep 0.05
  done
  echo "offload $* did not start" >&2; exit 1
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# A fresh, empty queue for backend $1: sets $queue (flags for serve and worker) and $store.
fresh_queue() {
  store=bench-$RANDOM$RANDOM
  case $1 in
    sqlite) queue=(--queue "sqlite://$tmp/$store.db" --queue-name "$store") ;;
    redis) queue=(--queue "$REDIS_URL" --queue-name "$store") ;;
    postgres) queue=(--queue "$POSTGRES_URL" --queue-name "$store") ;;
  esac
}

drop_queue() {
  case $1 in
    sqlite) rm -f "$tmp/$store".db* ;;
    redis) redis_cli --scan --pattern "{$store}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null ;;
    postgres) psql_q -c "DELETE FROM offload_jobs WHERE queue = '$store'" \
                     -c "DELETE FROM offload_queues WHERE queue = '$store'" >/dev/null ;;
  esac
}

# Gateway and one worker on a fresh queue; sets $base, $gw, $wk.
up() {
  fresh_queue "$1"
  start "listening on" serve --strategy queue --port 0 --max-backlog 1000000 "${queue[@]}"
  gw=$started
  base=$(sed -E 's#.*listening on (http://[^ ]+).*#\1#' <<<"$line")
  start "offload worker: running" worker "${queue[@]}"
  wk=$started
}

down() { stop "$wk"; stop "$gw"; drop_queue "$1"; }

# Closed-loop load on $path for $2 seconds, then the drain; one JSON row appended to $3.
throughput() {
  local backend=$1 secs=$2 rows=$3 path=$4
  up "$backend"
  "$bin" load "$base$path" -c 100 -d "$secs" --json --no-progress >"$tmp/load.json"
  python3 "$helper" drain "$base" "$tmp/load.json" | tee -a "$rows"
  down "$backend"
}

for backend in "${backends[@]}"; do
  if [ "$backend" = redis ] && ! redis_cli ping >/dev/null 2>&1; then
    echo "!!!! Redis at $REDIS_URL does not answer: redis NOT measured !!!!" >&2
    continue
  fi
  if [ "$backend" = postgres ] && ! psql_q -c 'select 1' >/dev/null 2>&1; then
    echo "!!!! Postgres at $POSTGRES_URL does not answer: postgres NOT measured !!!!" >&2
    continue
  fi
  for run in $(seq "$RUNS"); do
    echo "== $backend, run $run of $RUNS"
    if [ "$ONLY" = pickup ]; then
      echo "-- idle pickup, $PICKUPS jobs"
      up "$backend"
      python3 "$helper" pickup "$base" "$PICKUPS" | tee -a "$OUT/$backend.pickup.jsonl"
      down "$backend"
      continue
    fi
    echo "-- -c 100 -d $DURATION on /heavy?n=$SMALL_N"
    throughput "$backend" "$DURATION" "$OUT/$backend.small.jsonl" "/heavy?n=$SMALL_N"
    echo "-- -c 100 -d $DEFAULT_DURATION on /heavy (count 20,000,000)"
    throughput "$backend" "$DEFAULT_DURATION" "$OUT/$backend.default.jsonl" "/heavy"
    echo "-- idle pickup, $PICKUPS jobs"
    up "$backend"
    python3 "$helper" pickup "$base" "$PICKUPS" | tee -a "$OUT/$backend.pickup.jsonl"
    down "$backend"
    echo "-- open loop, $RATE jobs/s of the default work for 10 s"
    up "$backend"
    python3 "$helper" open "$base" "$RATE" 10 /heavy | tee -a "$OUT/$backend.open.jsonl"
    down "$backend"
  done
done

echo
echo "== medians over $RUNS runs (raw rows in $OUT)"
keys_tp="accepted_per_s completed_per_s backlog_at_stop drain_s accepted rejected_503 other_errors enqueue_p50_ms enqueue_p99_ms load_s"
for backend in "${backends[@]}"; do
  if [ -s "$OUT/$backend.pickup.jsonl" ] && [ ! -s "$OUT/$backend.small.jsonl" ]; then
    echo "$backend, idle pickup (ms):"
    python3 "$helper" median "$OUT/$backend.pickup.jsonl" pickup_ms.p50 pickup_ms.p99 pickup_ms.max enqueue_to_done_ms.p50 enqueue_to_done_ms.p99
  fi
  [ -s "$OUT/$backend.small.jsonl" ] || continue
  echo "$backend, -c 100 -d $DURATION, n=$SMALL_N:"
  python3 "$helper" median "$OUT/$backend.small.jsonl" $keys_tp
  echo "$backend, -c 100 -d $DEFAULT_DURATION, default work:"
  python3 "$helper" median "$OUT/$backend.default.jsonl" $keys_tp
  echo "$backend, idle pickup (ms):"
  python3 "$helper" median "$OUT/$backend.pickup.jsonl" pickup_ms.p50 pickup_ms.p99 pickup_ms.max enqueue_to_done_ms.p50 enqueue_to_done_ms.p99
  echo "$backend, open loop $RATE/s, default work (ms):"
  python3 "$helper" median "$OUT/$backend.open.jsonl" enqueue_to_done_ms.p50 enqueue_to_done_ms.p90 enqueue_to_done_ms.p99 enqueue_to_done_ms.max pickup_ms.p50 pickup_ms.p99 accepted late_sends not_finished
done
