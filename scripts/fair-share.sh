#!/usr/bin/env bash
# How the pool's threads share the CPU, for each scheduling choice: on an idle machine (the
# /health p99 beside a saturating /heavy load) and beside a busy neighbour, one busy loop per
# core at nice 0 (the pool's share: its req/s against the idle run's). Release build.
# The /health probe runs as `offload load --urgent` (as the bench's does) unless PROBE_FLAGS
# says otherwise (PROBE_FLAGS= for a plain client).
# Usage: scripts/fair-share.sh [repeats]   (env: DURATION, default 8; CONNS, the heavy closed
# loop's connections, default 8: enough to keep the cores busy, few enough that requests finish
# within the window even at a tenth of the CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=${CARGO_TARGET_DIR:-target}/release/offload
dur=${DURATION:-8}; reps=${1:-3}
declare -A variants=(
  [nice10]="--nice 10 --pool-policy normal --runtime-slice 0 --runtime-nice 0"
  [nice0]="--nice 0 --pool-policy normal --runtime-slice 0 --runtime-nice 0"
  [batch]="--nice 0 --pool-policy batch --runtime-slice 0 --runtime-nice 0"
  [slice]="--nice 0 --pool-policy normal --runtime-slice 0.1ms --runtime-nice 0"
  [batch+slice]="--nice 0 --pool-policy batch --runtime-slice 0.1ms --runtime-nice 0"
  [rtnice]="--nice 0 --pool-policy normal --runtime-slice 0 --runtime-nice -10"
  [rtnice+slice]="--nice 0 --pool-policy normal --runtime-slice 0.1ms --runtime-nice -10"
)
busy=()
stop_busy() { for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done; busy=(); }
trap 'stop_busy; kill $(jobs -p) 2>/dev/null || true' EXIT
one() { # variant phase
  local port=$((3300 + RANDOM % 500))
  # shellcheck disable=SC2086
  $bin serve --strategy pool --port $port ${variants[$1]} >/dev/null 2>/tmp/fair-$1.log &
  local pid=$!
  for _ in $(seq 100); do curl -sf localhost:$port/health >/dev/null && break; sleep 0.05; done
  if [ "$2" = busy ]; then
    for c in $(seq 0 $(($(nproc) - 1))); do taskset -c "$c" sh -c 'while :; do :; done' & busy+=($!); done
  fi
  # shellcheck disable=SC2086
  $bin load ${PROBE_FLAGS---urgent} "http://127.0.0.1:$port/health" -R 100 -c 4 -d "$dur" --warmup 1 --json --no-progress >/tmp/fair-probe.json &
  local probe=$!
  $bin load "http://127.0.0.1:$port/heavy" -c ${CONNS:-8} -d "$dur" --warmup 1 --json --no-progress >/tmp/fair-heavy.json
  wait $probe
  stop_busy
  kill $pid; wait $pid 2>/dev/null || true
  python3 - "$1" "$2" <<'PY'
import json, sys
h = json.load(open("/tmp/fair-heavy.json")); p = json.load(open("/tmp/fair-probe.json"))
ok = h["requests"]["by_status"].get("200", 0)
print("%-12s %-5s heavy %7.1f req/s  /health p50 %6.2f ms p99 %7.2f ms max %7.2f ms" % (
    sys.argv[1], sys.argv[2], ok / h["duration_s"], p["latency_with_timeouts"]["p50"],
    p["latency_with_timeouts"]["p99"], p["latency_with_timeouts"]["max"]))
PY
}
for r in $(seq "$reps"); do
  for v in ${VARIANTS:-nice10 nice0 batch slice batch+slice rtnice rtnice+slice}; do
    one "$v" idle
    one "$v" busy
  done
done
