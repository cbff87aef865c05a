#!/usr/bin/env bash
# For each strategy: start a release gateway, load /heavy with wrk at -c 100 for 10 s while a
# light probe (`offload load -R 20`, open loop) measures /health, then report the gateway's peak RSS and
# thread count. Usage: scripts/strategies.sh [strategies...] (env: CONNS, DURATION, EXTRA)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release/offload
conns=${CONNS:-100}; dur=${DURATION:-10}
strategies=("$@"); [ ${#strategies[@]} -gt 0 ] || strategies=(inline spawn blocking pool)
for s in "${strategies[@]}"; do
  port=$((3100 + RANDOM % 500))
  $bin serve --strategy "$s" --port $port ${EXTRA:-} >/dev/null 2>/tmp/offload-bench-$s.log &
  pid=$!
  trap 'kill $pid 2>/dev/null' EXIT
  for _ in $(seq 50); do curl -sf localhost:$port/health >/dev/null && break; sleep 0.1; done
  peak_rss=0; peak_thr=0
  ( while kill -0 $pid 2>/dev/null; do
      awk '/VmRSS|Threads/ {print $2}' /proc/$pid/status | paste -sd' '; sleep 0.2; done ) > /tmp/offload-bench-$s.samples &
  sampler=$!
  # Every probe that fell due counts, at the time it had waited if it never got an answer.
  $bin load http://127.0.0.1:$port/health -R 20 -c 4 -d $dur --json --no-progress |
    python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency_with_timeouts"]; q=r["requests"]
print("probe /health: %d due, %d answered, p50 %.2fms p99 %.2fms max %.2fms" % (l["count"], q["completed"], l["p50"], l["p99"], l["max"]))' \
    > /tmp/offload-bench-$s.probe &
  probe=$!
  echo "== $s (-c $conns -d $dur) =="
  wrk -t 2 -c $conns -d ${dur}s --latency --timeout 30s http://127.0.0.1:$port/heavy \
    | grep -E 'Requests/sec|^ +50%|^ +99%|Socket errors|Non-2xx|requests in'
  wait $probe; cat /tmp/offload-bench-$s.probe
  kill $pid; wait $pid 2>/dev/null || true; wait $sampler 2>/dev/null || true
  awk '{ if ($1>r) r=$1; if ($2>t) t=$2 } END { printf "peak RSS %.1f MiB, peak threads %d\n", r/1024, t }' /tmp/offload-bench-$s.samples
done
